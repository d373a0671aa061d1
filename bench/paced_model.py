"""A loopback OpenAI-compatible model server that streams tokens at a set pace.

Every `STAMP_EVERY`th token is a stamp, `ts<microseconds since the epoch>`, the moment it
was emitted, so a viewer can measure token-to-screen latency across the whole stack
(the producer's coalescing, Redis, the web process and the network).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.fake_openai import chunk_event, http_chunk, serving

STAMP_EVERY = 5


def _paragraphs(number: int, text: str) -> str:
    return text + "\n\n" if number % 40 == 39 else text  # blocks finish, as in real answers


def _code(number: int, text: str) -> str:
    return ("```python\n" if number == 0 else "") + text + ("\n" if number % 8 == 7 else "")


def _table(number: int, text: str) -> str:
    head = "| a | b | c | d |\n|---|---|---|---|\n" if number == 0 else ""
    return head + "| " + text + (" |\n" if number % 4 == 3 else "")


def _items(number: int, text: str) -> str:
    return ("- " if number % 6 == 0 else "") + text + ("\n" if number % 6 == 5 else "")


# What the answers look like (every token keeps its text: stamps stay measurable). The
# shapes whose last block never closes are the ones a renderer pays the square of.
SHAPES: dict[str, Callable[[int, str], str]] = {
    "paragraphs": _paragraphs,
    "one paragraph": lambda number, text: text,
    "code block": _code,
    "table": _table,
    "list": _items,
}


def stamp() -> str:
    return f"ts{time.time_ns() // 1000} "


class _Handler(BaseHTTPRequestHandler):
    """Streams over HTTP/1.1 in chunks, keeping the connection for the next request, as
    model servers (vLLM, llama.cpp, OpenAI's API) do."""

    server: _PacedServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        asked_at = time.time()
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        question = body["messages"][-1]["content"]
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        interval = 1.0 / self.server.tokens_per_second
        next_at = time.monotonic()
        self.server.go.wait(timeout=120)  # every answer starts together, once viewers are on
        try:
            for number in range(self.server.tokens):
                if number >= self.server.burst:  # the first `burst` tokens come at once
                    next_at += interval
                    time.sleep(max(0.0, next_at - time.monotonic()))
                if number == 0:
                    self.server.asked[question] = (asked_at, time.time())
                text = stamp() if number % STAMP_EVERY == 0 else "word "
                self._chunk({"content": SHAPES[self.server.shape](number, text)})
            self._chunk({}, finish="stop")
            self._write(b"data: [DONE]\n\n")
            self._write(b"")  # the last chunk: the connection stays open for the next answer
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _chunk(self, delta: dict[str, str], finish: str | None = None) -> None:
        self._write(chunk_event(delta, finish))

    def _write(self, data: bytes) -> None:
        """Send `data` as one HTTP/1.1 chunk, as model servers stream."""
        self.wfile.write(http_chunk(data))
        self.wfile.flush()


class _PacedServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that closed a kept-alive connection is no error worth a traceback."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    request_queue_size = 1024  # a hundred answers connect at once (socketserver's default: 5)
    tokens_per_second: float
    tokens: int
    burst: int
    shape: str
    go: threading.Event
    # question -> (when it was asked, when its first token was sent), epoch seconds
    asked: dict[str, tuple[float, float]]


@contextmanager
def paced_model(
    tokens_per_second: float, tokens: int, go: threading.Event | None = None, burst: int = 0
) -> Iterator[str]:
    """Run the server on a free loopback port; yield the base URL for OPENAI_BASE_URL.

    Answers start writing when `go` is set (at once if no `go` is given); the first
    `burst` tokens come at once, the rest at the pace."""
    server = _PacedServer(("127.0.0.1", 0), _Handler)
    server.tokens_per_second, server.tokens, server.burst = tokens_per_second, tokens, burst
    server.shape = "paragraphs"
    if go is None:
        go = threading.Event()
        go.set()
    server.go, server.asked = go, {}
    with serving(server) as base_url:
        yield base_url


@contextmanager
def recorded_paced_model(
    tokens_per_second: float, tokens: int, shape: str = "paragraphs"
) -> Iterator[tuple[str, dict[str, tuple[float, float]]]]:
    """Like `paced_model`, starting at once; also yield what it records per question:
    when it was asked and when it sent the first token (the model's own latency)."""
    server = _PacedServer(("127.0.0.1", 0), _Handler)
    server.tokens_per_second, server.tokens, server.burst = tokens_per_second, tokens, 0
    server.shape = shape
    server.go, server.asked = threading.Event(), {}
    server.go.set()
    with serving(server) as base_url:
        yield base_url, server.asked
