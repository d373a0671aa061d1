"""A loopback OpenAI-compatible model server that streams tokens at a set pace.

Every `STAMP_EVERY`th token is a stamp, `ts<microseconds since the epoch>`, the moment it
was emitted, so a viewer can measure token-to-screen latency across the whole stack
(the producer's coalescing, Redis, the web process and the network).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from harness.fake_openai import chunk_event, http_chunk

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


TICK_SECONDS = 0.002  # how often the server sends the tokens that are due


@dataclass
class _Answer:
    """One answer being streamed: where it is, and when its next token is due."""

    writer: asyncio.StreamWriter
    question: str
    asked_at: float
    next_at: float
    number: int = 0
    finished: asyncio.Event = field(default_factory=asyncio.Event)


class PacedServer:
    """Streams over HTTP/1.1 in chunks, keeping the connection for the next request, as
    model servers (vLLM, llama.cpp, OpenAI's API) do.

    One asyncio thread sends every answer's due tokens each tick, as a batching inference
    server does: the benchmark's model costs the machine little CPU (a thread per answer
    at 500 answers took a core of the two, and measured its own scheduling)."""

    def __init__(
        self, tokens_per_second: float, tokens: int, burst: int, shape: str, go: threading.Event
    ) -> None:
        self.interval = 1.0 / tokens_per_second
        self.tokens, self.burst, self.shape, self.go = tokens, burst, shape, go
        # question -> (when it was asked, when its first token was sent), epoch seconds
        self.asked: dict[str, tuple[float, float]] = {}
        self.sent = 0  # tokens sent, all answers together
        self.finished = 0  # answers sent to their end
        self._answers: list[_Answer] = []

    async def serve(self, ready: queue.Queue[int | BaseException]) -> None:
        try:
            server = await asyncio.start_server(self._connection, "127.0.0.1", 0, backlog=1024)
        except BaseException as exc:
            ready.put(exc)
            raise
        ready.put(server.sockets[0].getsockname()[1])
        async with server:
            await self._tick_forever()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                body = await _read_request(reader)
                if body is None:
                    return
                if not body:  # not a completion (the app's GET /models): as servers without one
                    writer.write(NOT_FOUND)
                    continue
                asked_at = time.time()  # (not before: a kept-alive connection waits between)
                writer.write(HEADERS)
                while not self.go.is_set():  # every answer starts together, once viewers are on
                    await asyncio.sleep(0.01)
                question = json.loads(body)["messages"][-1]["content"]
                answer = _Answer(writer, question, asked_at, time.monotonic())
                self._answers.append(answer)
                await answer.finished.wait()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(TICK_SECONDS)
            now = time.monotonic()
            for answer in self._answers:
                while answer.next_at <= now and not answer.finished.is_set():
                    self._send_next(answer)
            self._answers = [answer for answer in self._answers if not answer.finished.is_set()]

    def _send_next(self, answer: _Answer) -> None:
        """Send the answer's next token (and its end after the last)."""
        number = answer.number
        if answer.writer.is_closing():
            answer.finished.set()
            return
        if number == 0:
            self.asked[answer.question] = (answer.asked_at, time.time())
        text = stamp() if number % STAMP_EVERY == 0 else "word "
        data = chunk_event({"content": SHAPES[self.shape](number, text)})
        answer.number += 1
        self.sent += 1
        if answer.number >= self.burst:  # the first `burst` tokens come at once
            answer.next_at += self.interval
        framed = http_chunk(data)
        if answer.number == self.tokens:
            framed += http_chunk(chunk_event({}, finish="stop") + b"data: [DONE]\n\n")
            framed += http_chunk(b"")  # the last chunk: the connection stays open for the next
            answer.finished.set()
            self.finished += 1
        answer.writer.write(framed)


HEADERS = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
)


NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"


async def _read_request(reader: asyncio.StreamReader) -> bytes | None:
    """Read one request; return its body, or None when the client closed the connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return await reader.readexactly(length)


@contextmanager
def _running(server: PacedServer) -> Iterator[str]:
    """Run `server` on a free loopback port in a thread of its own; yield its base URL."""
    ready: queue.Queue[int | BaseException] = queue.Queue()
    loop = asyncio.new_event_loop()
    task: list[asyncio.Task[None]] = []

    def run() -> None:
        task.append(loop.create_task(server.serve(ready)))
        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(task[0])

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    port = ready.get(timeout=30)
    if isinstance(port, BaseException):
        raise port
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        loop.call_soon_threadsafe(task[0].cancel)
        thread.join(timeout=10)


@contextmanager
def paced_model(
    tokens_per_second: float, tokens: int, go: threading.Event | None = None, burst: int = 0
) -> Iterator[str]:
    """Run the server on a free loopback port; yield the base URL for OPENAI_BASE_URL.

    Answers start writing when `go` is set (at once if no `go` is given); the first
    `burst` tokens come at once, the rest at the pace."""
    if go is None:
        go = threading.Event()
        go.set()
    with _running(PacedServer(tokens_per_second, tokens, burst, "paragraphs", go)) as base_url:
        yield base_url


@contextmanager
def recorded_paced_model(
    tokens_per_second: float, tokens: int, shape: str = "paragraphs"
) -> Iterator[tuple[str, PacedServer]]:
    """Like `paced_model`, starting at once; also yield the server, which records per
    question when it was asked and when it sent the first token (the model's own latency,
    `asked`), and counts the tokens it sent (`sent`) and the answers it ended (`finished`)."""
    go = threading.Event()
    go.set()
    server = PacedServer(tokens_per_second, tokens, 0, shape, go)
    with _running(server) as base_url:
        yield base_url, server
