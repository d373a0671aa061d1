"""The express lane: the hub writes an answer's next entries straight to a waiting stream's
socket, without waking the stream.

Under gunicorn's gevent worker every stream is a greenlet, and the usual way of an event
is long: the hub puts it into the stream's inbox, the stream's greenlet wakes, its
listener makes the bytes, and gunicorn writes them. At 1,000 viewers of 20 answers that is
30,000 wake-ups a second, about two thirds of the web process's CPU. The commonest event,
an answer's next entries to a stream that is waiting with nothing else to do, needs none
of it: its bytes are made once per process (frames.built_once), and the stream only has to
note its new position. So the hub asks the stream's listener for those bytes and writes
them to the socket itself, without blocking (`SocketWriter.write_now`).

Anything else takes the usual way, in order: another kind of message, a gap, an answer's
end, a stream busy with something else or with items in its inbox. A socket that takes
only part of the bytes (its buffer is full: a slow reader) leaves the rest to the stream's
greenlet, woken to write it before anything else (`Lane.finish`). The hub hands out a
channel's messages that arrived together at once (hub.py): a busy process, whose hub
finds many waiting, writes them to each stream in one go.

It is safe because gevent runs one greenlet at a time in one thread: while the hub writes,
the stream is parked in its inbox's `get` and gunicorn is waiting for the stream's next
bytes, so nobody else writes to that socket. Only plain-HTTP sockets of gevent's get a lane
(`writer_for`); the bytes are framed as gunicorn frames them (chunked for HTTP/1.1).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from chatapp import metrics
from chatapp.contract import Published
from chatapp.subscription import WAKE, Subscription


class SocketWriter:
    """Writes a response's bytes to its socket beside gunicorn, framed as gunicorn does."""

    def __init__(self, sock: Any, chunked: bool) -> None:
        self._sock = sock
        self._chunked = chunked

    def write_now(self, data: bytes) -> bytes:
        """Write what the socket takes without waiting; return the rest (framed) to write
        with `write_rest`. A closed connection takes nothing and returns nothing: its
        stream finds out with its next write, as it would have."""
        framed = b"%X\r\n%b\r\n" % (len(data), data) if self._chunked else data
        try:
            written = os.write(self._sock.fileno(), framed)  # a gevent socket's fd never blocks
        except BlockingIOError:
            return framed
        except OSError:
            return b""
        return framed[written:]

    def write_rest(self, rest: bytes) -> None:
        """Write bytes `write_now` left, waiting as gevent waits (the stream's greenlet)."""
        self._sock.sendall(rest)


def writer_for(environ: Mapping[str, Any]) -> SocketWriter | None:
    """A writer for this request's socket, if the express lane can use it: a plain
    (not TLS) gevent socket under gunicorn, HTTP/1.0 or 1.1, a GET."""
    sock = environ.get("gunicorn.socket")
    protocol = environ.get("SERVER_PROTOCOL")
    if sock is None or environ.get("REQUEST_METHOD") != "GET":
        return None
    if protocol not in ("HTTP/1.0", "HTTP/1.1") or not _plain_gevent_socket(sock):
        return None
    # gunicorn frames a body without Content-Length in chunks for HTTP/1.1 (is_chunked).
    return SocketWriter(sock, chunked=protocol == "HTTP/1.1")


def _plain_gevent_socket(sock: Any) -> bool:
    try:
        import gevent.socket
    except ImportError:  # pragma: no cover - gevent is a dependency of the web tier
        return False
    # A TLS socket has getpeercert; its bytes cannot be written around its encryption.
    return isinstance(sock, gevent.socket.socket) and not hasattr(sock, "getpeercert")


class ExpressListener(Protocol):
    def express(self, payload: Published) -> bytes | None:
        """The bytes a live message makes, if making them needs no I/O and changes nothing
        but the stream's position (b"" when it makes none); None: the usual way."""


class Lane:
    """One stream's express lane, called by the hub from `Subscription.deliver_all`."""

    def __init__(
        self,
        subscription: Subscription,
        writer: SocketWriter,
        listener: ExpressListener,
        heard: Callable[[], None],
    ) -> None:
        self._subscription = subscription
        self._writer = writer
        self._listener = listener
        self._heard = heard  # the stream heard news: no idle check for a while
        self._rest = b""  # bytes the socket did not take: the stream's greenlet writes them

    def take(self, payloads: list[Published]) -> int:
        """Write the bytes of `payloads` to the socket now, as far as they can go this way;
        return how many did (from the first): the rest are queued, in order."""
        if self._rest:
            return 0
        pieces = []
        for payload in payloads:
            data = self._listener.express(payload)
            if data is None:
                break
            pieces.append(data)
        if pieces:
            self._heard()
            self._write(b"".join(pieces))
            metrics.observe_expressed(payloads[0])
        return len(pieces)

    def _write(self, data: bytes) -> None:
        if data:
            self._rest = self._writer.write_now(data)
            if self._rest:
                self._subscription.deliver(WAKE)  # the stream writes the rest, first

    def finish(self) -> None:
        """In the stream's greenlet, before it sends anything: write what the socket did
        not take."""
        rest, self._rest = self._rest, b""
        if rest:
            self._writer.write_rest(rest)
