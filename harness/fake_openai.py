"""A small OpenAI-compatible streaming server on loopback, for the `openai` client path."""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeModel:
    """What the fake server answers, and what it was asked."""

    def __init__(
        self,
        pieces: list[str],
        status: int = 200,
        first_delay: float = 0.0,
        finish: str | None = "stop",
        done: bool = True,
        extra: list[dict[str, Any]] | None = None,
        error: str = "boom",
        headers_delay: float = 0.0,
        chunked: bool = False,
        together: bool = False,
        gzipped: bool = False,
        models: list[str] | None = None,
        usage: dict[str, int] | None = None,
        knows_stream_options: bool = True,
        thinking: list[str] | None = None,
        reasoning_field: str = "reasoning_content",
        pace: float = 0.0,
    ) -> None:
        self.pieces = pieces
        self.status = status
        self.first_delay = first_delay  # seconds of silence before the first token
        self.finish = finish  # the last chunk's finish_reason (None: no last chunk)
        self.done = done  # `data: [DONE]` at the end
        self.extra = extra or []  # raw chunks sent after the pieces
        self.error = error  # the error message of a non-200 answer
        self.headers_delay = headers_delay  # seconds of silence before the headers
        # HTTP/1.1 chunks on a kept-alive connection, as model servers stream (else the body
        # ends when the connection closes, as HTTP/1.0 has it)
        self.chunked = chunked
        self.together = together  # the whole body in one write: one network read holds it all
        self.gzipped = gzipped  # the whole body compressed, with its Content-Length
        self.models = models  # listed at GET /models (None: 404, as some servers have it)
        self.usage = usage  # the token counts sent last, when the request asks for them
        # False: a request with `stream_options` is refused (400), as by some servers
        self.knows_stream_options = knows_stream_options
        self.thinking = thinking or []  # reasoning pieces, sent before the answer's
        self.reasoning_field = reasoning_field  # DeepSeek's name; Ollama's is `reasoning`
        self.pace = pace  # seconds between two pieces
        self.listings = 0  # times the list of models was asked for
        self.disconnected = threading.Event()  # the client hung up while we were silent
        self.requests: list[dict[str, Any]] = []
        self.connections = 0  # connections the client opened
        self.authorization: list[str] = []


def _handler(model: FakeModel) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1" if model.chunked else "HTTP/1.0"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def setup(self) -> None:
            model.connections += 1
            super().setup()

        def do_GET(self) -> None:
            model.listings += 1
            if model.models is None or not self.path.endswith("/models"):
                self.send_error(404)
                return
            listed = [{"id": name, "object": "model", "owned_by": "test"} for name in model.models]
            body = json.dumps({"object": "list", "data": listed}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            self.held: list[bytes] | None = None  # what `together` sends in one write
            model.requests.append(body)
            model.authorization.append(self.headers.get("Authorization", ""))
            if model.headers_delay and self._client_hangs_up_within(model.headers_delay):
                model.disconnected.set()
                return
            status, message = model.status, model.error
            if "stream_options" in body and not model.knows_stream_options:
                status, message = 400, "Unrecognized request argument supplied: stream_options"
            self.usage_asked = bool(body.get("stream_options", {}).get("include_usage"))
            if status != 200:
                error = json.dumps({"error": {"message": message, "type": "server_error"}})
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(error)))
                self.end_headers()
                self.wfile.write(error.encode())
                return
            if model.gzipped:
                self._send_compressed()
                return
            self.held = [] if model.together else None
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            if model.chunked:
                self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self._send(b": thinking\n\n")
            if model.first_delay and self._client_hangs_up_within(model.first_delay):
                model.disconnected.set()
                return
            for event in _events(model, self.usage_asked):
                self._send(event)
                time.sleep(model.pace)
            if model.chunked and (model.done or model.finish):
                self._send(b"")  # the last chunk: the body is complete
            else:
                self.close_connection = True  # cut: closed with no end to the body
            if self.held is not None:
                self.wfile.write(b"".join(self.held))

        def _send(self, data: bytes) -> None:
            framed = http_chunk(data) if model.chunked else data
            if self.held is not None:
                self.held.append(framed)
                return
            self.wfile.write(framed)
            self.wfile.flush()

        def flush_headers(self) -> None:
            held = getattr(self, "held", None)
            if held is not None:  # the headers too, in the one write
                held.extend(self._headers_buffer)
                self._headers_buffer = []
                return
            super().flush_headers()

        def _send_compressed(self) -> None:
            body = gzip.compress(b"".join(_events(model, self.usage_asked)))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _client_hangs_up_within(self, seconds: float) -> bool:
            self.connection.settimeout(seconds)
            try:
                return self.connection.recv(1) == b""
            except TimeoutError:
                return False

    return Handler


def _events(model: FakeModel, usage_asked: bool) -> Iterator[bytes]:
    """The server-sent events of an answer: its pieces, then how it ends (then the token
    counts, if asked for: a chunk with no choices, as OpenAI sends it)."""
    for thought in model.thinking:
        yield chunk_event({model.reasoning_field: thought})
    for piece in model.pieces:
        yield chunk_event({"content": piece})
    for chunk in model.extra:
        yield f"data: {json.dumps(chunk)}\n\n".encode()
    if model.finish:
        yield chunk_event({}, finish=model.finish)
    if model.usage is not None and usage_asked:
        yield f"data: {json.dumps({'choices': [], 'usage': model.usage})}\n\n".encode()
    if model.done:
        yield b"data: [DONE]\n\n"


def http_chunk(data: bytes) -> bytes:
    """`data` framed as one HTTP/1.1 chunk (an empty one ends the body)."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def chunk_event(delta: dict[str, str], finish: str | None = None) -> bytes:
    """One streamed chat-completion chunk's server-sent event."""
    chunk = {
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "fake",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(chunk)}\n\n".encode()


@contextmanager
def fake_openai_server(model: FakeModel) -> Iterator[str]:
    """Serve `model` on a free loopback port; yield the base URL for OPENAI_BASE_URL."""
    with serving(ThreadingHTTPServer(("127.0.0.1", 0), _handler(model))) as base_url:
        yield base_url


@contextmanager
def serving(server: ThreadingHTTPServer) -> Iterator[str]:
    """Run `server` (bound to a loopback port) in a thread; yield its OpenAI base URL."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
