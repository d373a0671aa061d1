"""A model server's streamed response body, read as the network hands it over.

Model servers stream one HTTP/1.1 chunk per token. Under httpx, h11 turns each chunk into an
event of its own and every layer above passes each on: about 10 µs of the worker's CPU per
token before any of its text is used, the largest single cost of an answer. Here the body's
bytes come straight from the connection's socket, and a chunked body's framing is taken off
in bulk: one read of the socket is one piece, however many tokens it holds.

Only a plain HTTP/1.1 body is read this way (chunked, or ending when the connection closes);
anything else (a compressed body, a Content-Length, HTTP/2, a client whose insides differ)
is read through httpx as before. h11 sees only the bytes that came with the headers; at the
end of a chunked body it is handed a made-up end for them (`Dechunker.ending`), so that
httpx keeps the connection for the next answer (a new TLS connection per answer would add
round trips to every first token).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import h11

READ_BYTES = 65_536
LONGEST_SIZE_LINE = 4_096  # a chunk's size line, with any extensions


class MalformedBody(Exception):
    """The body's chunked framing is broken: read as a connection cut mid-body."""


def network_reads(http_response: Any, timeout: float | None) -> NetworkReads | None:
    """Return the body of an httpx response as network reads, each all that had arrived;
    or None if this body must be read through httpx. A read that waits longer than
    `timeout` raises the HTTP transport's timeout error."""
    connection = _http11_connection(http_response)
    encoding = http_response.headers.get("content-encoding", "identity").lower()
    framing = http_response.headers.get("transfer-encoding", "").lower()
    plain = encoding == "identity" and "content-length" not in http_response.headers
    if connection is None or not plain or framing not in ("", "chunked"):
        return None
    return NetworkReads(connection, Dechunker() if framing == "chunked" else None, timeout)


class NetworkReads:
    """A response body read straight from its connection's socket."""

    def __init__(self, connection: Any, chunks: Dechunker | None, timeout: float | None) -> None:
        self._connection = connection
        self._chunks = chunks
        self._timeout = timeout
        self._received = connection._h11_state.trailing_data[0]  # what came with the headers
        # What ends the body for h11, which holds only what came with the headers.
        self._ending = b""
        self._told_h11 = False

    def __iter__(self) -> Iterator[bytes]:
        chunks = self._chunks
        body = chunks.decode(self._received) if chunks else self._received
        self._ending = chunks.ending() if chunks else b""
        while True:
            if body:
                yield body
            if chunks and chunks.done:
                self._end_for_h11()
                return
            received = self._connection._network_stream.read(READ_BYTES, timeout=self._timeout)
            if not received:
                if chunks:
                    raise MalformedBody("the connection closed before the last chunk")
                return  # a body that ends when the connection closes
            body = chunks.decode(received) if chunks else received

    def finish(self, wait: float) -> None:
        """The model said it is done: read what is left of the body (its last chunk) for
        at most `wait` seconds, so that the connection can serve the next answer."""
        chunks, deadline = self._chunks, time.monotonic() + wait
        try:
            while chunks and not chunks.done and (left := deadline - time.monotonic()) > 0:
                received = self._connection._network_stream.read(READ_BYTES, timeout=left)
                if not received:
                    return
                chunks.decode(received)
        except Exception:  # a timeout or a cut (httpcore's errors): httpx closes the connection
            return
        self._end_for_h11()

    def _end_for_h11(self) -> None:
        """Let h11 read the body's start it holds and the made-up end after it, to the end
        of the response: httpx then keeps the connection (else it closes it, safe too)."""
        if self._chunks is None or not self._chunks.complete or self._told_h11:
            return
        self._told_h11 = True
        state = self._connection._h11_state
        if self._ending:
            state.receive_data(self._ending)  # (no bytes would tell h11 the connection closed)
        with contextlib.suppress(h11.ProtocolError):
            while (event := state.next_event()) is not h11.NEED_DATA:
                if isinstance(event, h11.EndOfMessage):
                    return


def _http11_connection(http_response: Any) -> Any:
    """The HTTP/1.1 connection under an httpx response (httpcore's), or None."""
    stream = getattr(http_response, "stream", None)
    for _ in range(6):  # httpx's bound stream, its transport's, the pool's, the connection's
        connection = getattr(stream, "_connection", None)
        if hasattr(connection, "_h11_state") and hasattr(connection, "_network_stream"):
            return connection
        stream = getattr(stream, "_stream", None) or getattr(stream, "_httpcore_stream", None)
    return None


class Dechunker:
    """Takes HTTP/1.1 chunked framing off a body fed in any pieces (RFC 9112, 7.1).
    Trailers after the last chunk are not read: the body is complete without them
    (`complete` says whether there were none, so nothing of the response is left unread)."""

    def __init__(self) -> None:
        self.done = False
        self._buffer = b""
        self._left = 0  # bytes of the current chunk's data still to come
        self._end_of_data = False  # the CRLF after a chunk's data is next

    def decode(self, received: bytes) -> bytes:
        """Return the body bytes in `received` (and what was held back before it)."""
        buffer, position, body = self._buffer + received, 0, []
        while not self.done:
            if self._left:
                data = buffer[position : position + self._left]
                body.append(data)
                position += len(data)
                self._left -= len(data)
                if self._left:
                    break
                self._end_of_data = True
            if self._end_of_data:
                if len(buffer) - position < 2:
                    break
                if buffer[position : position + 2] != b"\r\n":
                    raise MalformedBody("a chunk's data did not end with CRLF")
                position += 2
                self._end_of_data = False
            line_end = buffer.find(b"\r\n", position)
            if line_end < 0:
                if len(buffer) - position > LONGEST_SIZE_LINE:
                    raise MalformedBody("a chunk size line is too long")
                break
            self._left = _chunk_size(buffer[position:line_end])
            position = line_end + 2
            self.done = self._left == 0
        self._buffer = buffer[position:]
        return b"".join(body)

    @property
    def complete(self) -> bool:
        """The last chunk and the blank line after it (no trailers) have been read."""
        return self.done and self._buffer == b"\r\n"

    def ending(self) -> bytes:
        """Bytes that, after all that was fed, end the body: the rest of the current
        chunk (filler), and an empty last chunk."""
        if self.done:
            return b""
        rest, buffer = b"", self._buffer
        if self._left:  # inside a chunk's data
            rest = b"-" * self._left + b"\r\n"
        elif self._end_of_data:  # its data is in, the CRLF after it is not (or half of it)
            rest = b"\r\n"[len(buffer) :]
        elif buffer:  # half a size line: finish it, then the chunk it announces
            line_end = b"\n" if buffer.endswith(b"\r") else b"\r\n"
            size = _chunk_size(buffer.rstrip(b"\r"))
            rest = line_end + b"-" * size + b"\r\n"
        return rest + b"0\r\n\r\n"


def _chunk_size(line: bytes) -> int:
    digits = line.split(b";", 1)[0].strip()
    if not digits or digits.strip(b"0123456789abcdefABCDEF"):
        raise MalformedBody(f"a chunk size is not hexadecimal: {line[:40]!r}")
    return int(digits, 16)
