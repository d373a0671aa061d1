"""A model server's body read as the network hands it over (network_body.py): chunked
framing taken off whatever the pieces, one piece per network read through the `openai`
client, and every other kind of body still read through httpx."""

from __future__ import annotations

from itertools import pairwise

import h11
import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatapp.network_body import Dechunker, MalformedBody
from chatapp.openai_model import OpenAIModel, make_client
from harness.fake_openai import FakeModel, fake_openai_server

chunk_data = st.lists(st.binary(min_size=1, max_size=300), max_size=30)
extension = st.sampled_from([b"", b";name=value", b"; x", b";a=1;b=2"])


@given(
    chunks=chunk_data,
    extensions=st.lists(extension, min_size=31, max_size=31),
    upper=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=20_000), max_size=40),
    trailers=st.sampled_from([b"\r\n", b"Expires: never\r\n\r\n"]),
)
def test_a_chunked_body_is_decoded_whatever_pieces_it_arrives_in(
    chunks: list[bytes], extensions: list[bytes], upper: bool, cuts: list[int], trailers: bytes
) -> None:
    framed = b"".join(
        (b"%X" if upper else b"%x") % len(data) + extensions[n] + b"\r\n" + data + b"\r\n"
        for n, data in enumerate(chunks)
    )
    framed += b"0" + extensions[-1] + b"\r\n"
    last_chunk_read = len(framed)  # done from here: trailers are not waited for
    framed += trailers
    bounds = sorted({0, len(framed), *(cut % (len(framed) + 1) for cut in cuts)})
    dechunker, body = Dechunker(), b""
    for start, end in pairwise(bounds):
        body += dechunker.decode(framed[start:end])
        assert dechunker.done == (end >= last_chunk_read)
    assert body == b"".join(chunks)


@given(
    chunks=chunk_data,
    cut=st.integers(min_value=0, max_value=20_000),
    trailers=st.sampled_from([b"\r\n", b"Expires: never\r\n\r\n"]),
)
def test_h11_reads_to_the_end_of_a_body_it_saw_only_the_start_of(
    chunks: list[bytes], cut: int, trailers: bytes
) -> None:
    """h11 holds what came with the headers (any start of the body); the end made up
    after it completes the response, so httpx keeps the connection."""
    framed = b"".join(b"%x\r\n%s\r\n" % (len(data), data) for data in chunks) + b"0\r\n"
    framed += trailers
    start = framed[: cut % (len(framed) + 1)]
    dechunker = Dechunker()
    dechunker.decode(start)
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="POST", target="/", headers=[("Host", "x")]))
    client.send(h11.EndOfMessage())
    client.receive_data(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert isinstance(client.next_event(), h11.Response)
    client.receive_data(start + dechunker.ending())
    ended = False
    while not ended and (event := client.next_event()) is not h11.NEED_DATA:
        ended = isinstance(event, h11.EndOfMessage)
    if not dechunker.done or dechunker.complete:  # else the connection is closed instead
        assert ended and client.their_state is h11.DONE


@pytest.mark.parametrize(
    "framed",
    [b"zz\r\nhello\r\n", b"5\r\nhelloXX", b"-5\r\nhello\r\n", b"\r\n", b"1" * 5000],
    ids=["not-hex", "no-crlf-after-data", "negative", "empty-size", "endless-size-line"],
)
def test_broken_chunked_framing_is_refused(framed: bytes) -> None:
    with pytest.raises(MalformedBody):
        Dechunker().decode(framed)


@pytest.mark.parametrize("chunked", [True, False], ids=["http-chunks", "until-close"])
def test_what_one_network_read_holds_is_one_piece_of_the_answer(chunked: bool) -> None:
    """50 tokens in one write of the server (headers included) reach the worker as one
    piece: one flush, not 50 (h11 under httpx makes an event of each chunk)."""
    words = [f"word{n} " for n in range(50)]
    model = FakeModel(words, chunked=chunked, together=True)
    with fake_openai_server(model) as base_url:
        answer = OpenAIModel(make_client("k", base_url, 5.0), "fake")
        pieces = list(answer.stream([{"role": "user", "content": "hi"}]))
    assert pieces == ["".join(words)]
    assert answer.ending == "stop" and answer.whole_reads


@pytest.mark.parametrize("together", [False, True], ids=["streamed", "with-the-headers"])
def test_the_connection_to_the_model_server_is_kept_for_the_next_answer(together: bool) -> None:
    model = FakeModel(["Hello ", "again"], chunked=True, together=together)
    with fake_openai_server(model) as base_url:
        client = make_client("k", base_url, 5.0)
        for _ in range(3):
            answer = OpenAIModel(client, "fake")
            assert "".join(answer.stream([{"role": "user", "content": "hi"}])) == "Hello again"
    assert (len(model.requests), model.connections) == (3, 1)


def test_a_compressed_body_is_read_through_the_http_client() -> None:
    words = [f"word{n} " for n in range(50)]
    model = FakeModel(words, gzipped=True)
    with fake_openai_server(model) as base_url:
        answer = OpenAIModel(make_client("k", base_url, 5.0), "fake")
        text = "".join(answer.stream([{"role": "user", "content": "hi"}]))
    assert (text, answer.ending) == ("".join(words), "stop")
    assert not answer.whole_reads  # httpx's pieces: the producer reads on while they come
