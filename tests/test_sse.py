from __future__ import annotations

import pytest

from chatapp.sse import ServerSentEvent


@pytest.mark.parametrize(
    ("event", "wire"),
    [
        (ServerSentEvent(data="hello"), b"data: hello\n\n"),
        (ServerSentEvent(data=""), b"data: \n\n"),
        (ServerSentEvent(data="a\nb"), b"data: a\ndata: b\n\n"),
        (ServerSentEvent(data="a\r\nb\rc"), b"data: a\ndata: b\ndata: c\n\n"),
        (ServerSentEvent(data="x", event="delta", id="g:1"), b"id: g:1\nevent: delta\ndata: x\n\n"),
        (
            ServerSentEvent(data="x", event="de\nlta", id="g\r:1\n"),
            b"id: g:1\nevent: delta\ndata: x\n\n",
        ),
        (ServerSentEvent(id="a\0b", data="x"), b"id: ab\ndata: x\n\n"),
        (ServerSentEvent(comment="ping"), b": ping\n\n"),
        (ServerSentEvent(comment="a\nb"), b": a\n: b\n\n"),
        (
            ServerSentEvent(comment="ping", event="ping", data=""),
            b": ping\nevent: ping\ndata: \n\n",
        ),
        (ServerSentEvent(retry=1500, comment="later"), b": later\nretry: 1500\n\n"),
        (ServerSentEvent(data="é ✓"), "data: é ✓\n\n".encode()),
    ],
)
def test_event_encodes_to_exact_bytes(event: ServerSentEvent, wire: bytes) -> None:
    assert event.encode() == wire
