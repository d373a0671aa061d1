"""The express lane (chatapp/express.py): the hub writes an answer's next entries straight to
a waiting stream's socket, without waking the stream.

Run here as under gunicorn's gevent worker: greenlets, gevent's queue and sockets, the hub a
greenlet calling `Subscription.deliver_all`, and the stream's greenlet writing what `relay`
yields as gunicorn does (in HTTP/1.1 chunks). The listener is a small one: each message is
a number, "everything up to n", and the stream sends every number once, in order, the last
one ending it. The chat page's and the answer's own listeners run on gunicorn in every stack
test (the lane is on by default); the benchmark compares the chat page with it and without.
"""

from __future__ import annotations

import queue
import socket
import ssl
from collections.abc import Iterator
from typing import Any

import gevent
import gevent.queue
import gevent.socket
import gevent.ssl
import pytest

from chatapp.express import SocketWriter, writer_for
from chatapp.follow import StreamSettings, relay
from chatapp.subscription import Subscription

LAST = 40


def event(number: int, size: int) -> bytes:
    return b"id: %d\ndata: %s\n\n" % (number, b"x" * size)


class Numbered:
    """A listener: message n means "everything up to n"; each number is sent once, in order."""

    def __init__(self, size: int = 10) -> None:
        self.size = size
        self.sent = 0
        self.woken_for: list[Any] = []  # what reached the stream's greenlet

    def done(self) -> bool:
        return self.sent >= LAST

    def stop(self) -> None:
        self.sent = LAST

    def hears(self, payload: Any) -> bool:
        return True

    def express(self, payload: Any) -> bytes | None:
        if payload > self.sent + 1 or payload == LAST:
            return None  # a gap (read from the log) or the end: the usual way
        return b"".join(self._send(payload))

    def live(self, payload: Any) -> Iterator[bytes]:
        self.woken_for.append(payload)
        yield from self._send(payload)

    def missed(self) -> Iterator[bytes]:
        return iter(())

    def quiet(self, tick: bool) -> Iterator[bytes]:
        return iter(())

    def _send(self, upto: int) -> Iterator[bytes]:
        while self.sent < upto:
            self.sent += 1
            yield event(self.sent, self.size)


@pytest.fixture
def gevent_queues(monkeypatch: pytest.MonkeyPatch) -> None:
    """Subscriptions as under the gevent worker, whose monkey-patching makes the standard
    library's queue gevent's."""
    monkeypatch.setattr(queue, "SimpleQueue", gevent.queue.SimpleQueue)


class Response:
    """One stream's response on a gevent socket pair: `relay` in its own greenlet, writing
    what it yields in chunks as gunicorn does, and the reading end."""

    def __init__(self, listener: Numbered, send_buffer: int | None = None) -> None:
        self.server, self.client = gevent.socket.socketpair()
        if send_buffer:
            self.server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
            self.client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, send_buffer)
        self.subscription = Subscription(("answer",))
        writer = SocketWriter(self.server, chunked=True)
        settings = StreamSettings(ping_seconds=3600, check_seconds=3600, writer=writer)
        self.greenlet = gevent.spawn(self._serve, relay(self.subscription, listener, settings))
        gevent.sleep(0.01)  # the stream starts and waits in its inbox

    def _serve(self, events: Iterator[bytes]) -> None:
        for data in events:
            self.server.sendall(b"%X\r\n%b\r\n" % (len(data), data))
        self.server.sendall(b"0\r\n\r\n")

    def body(self) -> list[int]:
        """Read the whole response; return the ids of its events, in order."""
        raw = b""
        while not raw.endswith(b"0\r\n\r\n"):
            chunk = self.client.recv(65536)
            assert chunk, "the response ended without its last chunk"
            raw += chunk
        self.greenlet.get(timeout=30)
        return [int(line[4:]) for line in _unchunked(raw).split(b"\n") if line.startswith(b"id: ")]


def _unchunked(raw: bytes) -> bytes:
    body = b""
    while True:
        size_line, _, raw = raw.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return body
        assert raw[size : size + 2] == b"\r\n", "a chunk's bytes were broken"
        body, raw = body + raw[:size], raw[size + 2 :]


def test_the_hub_writes_a_waiting_streams_next_entries_without_waking_it(
    gevent_queues: None,
) -> None:
    listener = Numbered()
    response = Response(listener)
    for number in range(1, LAST):
        response.subscription.deliver_all([number])  # the hub, one message at a time
        response.subscription.deliver_all([number])  # a duplicate: nothing more is sent
        gevent.sleep(0)
    assert listener.woken_for == []  # every one written by the "hub"
    response.subscription.deliver_all([LAST])  # the end goes the usual way
    assert response.body() == list(range(1, LAST + 1))
    assert listener.woken_for == [LAST]


def test_a_gap_goes_the_usual_way_and_nothing_is_sent_twice_or_out_of_order(
    gevent_queues: None,
) -> None:
    listener = Numbered()
    response = Response(listener)
    for number in (1, 2, 5, 3, 4, 6, 9, 10, LAST - 1, LAST):
        response.subscription.deliver_all([number])
        gevent.sleep(0)
    assert response.body() == list(range(1, LAST + 1))
    assert listener.woken_for == [5, 9, LAST - 1, LAST]  # the gaps, and the end


def test_messages_that_arrived_together_go_together_up_to_one_that_cannot(
    gevent_queues: None,
) -> None:
    listener = Numbered()
    response = Response(listener)
    response.subscription.deliver_all([1, 2, 3])  # one write
    response.subscription.deliver_all([4, 5, 8, 6, 9, 10])  # 8 leaves a gap: it and what
    response.subscription.deliver_all([11, 12])  # follows go the usual way, in order
    gevent.sleep(0.01)
    response.subscription.deliver_all([13, LAST])
    assert response.body() == list(range(1, LAST + 1))
    assert listener.woken_for == [8, 6, 9, 10, 11, 12, LAST]


def test_a_slow_reader_gets_the_rest_of_a_partial_write_first_then_the_queue(
    gevent_queues: None,
) -> None:
    # Events of 200 KB into a socket whose buffers hold a few KB, nobody reading yet: the
    # first is written in part; the stream's greenlet writes its rest, then the next ones,
    # which the hub queued meanwhile.
    listener = Numbered(size=200_000)
    response = Response(listener, send_buffer=4096)
    for number in range(1, LAST + 1):  # the hub delivers a burst without yielding
        response.subscription.deliver_all([number])
    assert listener.sent == 1  # the first went the express way, in part; the rest queued
    assert response.body() == list(range(1, LAST + 1))
    assert listener.woken_for == list(range(2, LAST + 1))


def test_a_closed_connection_takes_nothing_and_raises_nothing_in_the_hub() -> None:
    server, client = gevent.socket.socketpair()
    client.close()
    writer = SocketWriter(server, chunked=False)
    assert writer.write_now(b"data: x\n\n" * 10_000) == b""  # broken pipe: nothing left
    server.close()
    assert writer.write_now(b"data: x\n\n") == b""  # a closed socket's fd is -1


def test_chunks_are_framed_as_gunicorn_frames_them() -> None:
    server, client = gevent.socket.socketpair()
    with server, client:
        assert SocketWriter(server, chunked=True).write_now(b"data: a\n\n") == b""
        assert SocketWriter(server, chunked=False).write_now(b"data: b\n\n") == b""
        assert client.recv(100) == b"9\r\ndata: a\n\n\r\ndata: b\n\n"


def test_only_plain_http_gevent_sockets_of_a_get_get_a_lane() -> None:
    plain, other = gevent.socket.socketpair()
    stdlib, stdlib_other = socket.socketpair()
    # gunicorn's TLS socket under the gevent worker (monkey-patched ssl): gevent's.
    tls = gevent.ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).wrap_socket(
        gevent.socket.socket(), server_hostname="x", do_handshake_on_connect=False
    )
    assert isinstance(tls, gevent.socket.socket)
    request = {"gunicorn.socket": plain, "REQUEST_METHOD": "GET", "SERVER_PROTOCOL": "HTTP/1.1"}
    try:
        assert writer_for(request) is not None
        assert writer_for({**request, "SERVER_PROTOCOL": "HTTP/1.0"}) is not None
        for refused in (
            {"REQUEST_METHOD": "HEAD"},  # no body
            {"SERVER_PROTOCOL": "HTTP/2"},  # other framing
            {"gunicorn.socket": None},  # another server
            {"gunicorn.socket": stdlib},  # a thread's socket: the hub cannot write beside it
            {"gunicorn.socket": tls},  # the bytes must be encrypted
        ):
            assert writer_for({**request, **refused}) is None, refused
    finally:
        for each in (plain, other, stdlib, stdlib_other, tls):
            each.close()
