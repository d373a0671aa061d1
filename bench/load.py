"""The load client: many SSE viewers in one asyncio process, measuring what each receives.

It runs in its own process (`watch` is started with multiprocessing's spawn), so the
model, the producers and the orchestration do not share its event loop or its GIL.
Each viewer is a bare asyncio Protocol speaking HTTP/1.0 (no chunked encoding to undo):
the client has to be much cheaper per event than the servers it measures.

A viewer follows one stream to its `end` event and records, for every stamp (see
paced_model.py) it sees first, the time from the model emitting it to this viewer
receiving it. It checks the sequence number in each event's id: an entry twice is a
duplicate, a jump is a loss. A ticker measures the client's own scheduling lag, so a
saturated client is not mistaken for a slow server.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import re
import time
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event

STAMP = re.compile(rb"ts(\d{16})")
MAX_RECONNECTS = 20
CONNECTING_AT_ONCE = 50  # a ramp, not a stampede; and below the listen backlog


@dataclass
class Plan:
    """Who watches what: `viewers` viewers spread round-robin over `paths`."""

    host: str
    port: int
    paths: list[str]
    viewers: int
    cookies: dict[str, str] = field(default_factory=dict)  # a path's Cookie header, if any
    ready_on_headers: bool = True  # else ready once the request is sent
    timeout: float = 120.0
    one_at_a_time: bool = False  # each viewer connects after the previous one is done
    until_caught_up: bool = False  # a viewer leaves once it has what was written before it


@dataclass
class Outcome:
    latencies_ms: list[float] = field(default_factory=list)
    events: int = 0  # events received, all viewers (pings and comments not counted)
    duplicates: int = 0
    losses: int = 0
    unfinished: int = 0
    reconnects: int = 0  # viewers told to come back later (`retry:`), as browsers do
    errors: list[str] = field(default_factory=list)
    client_lag_ms: list[float] = field(default_factory=list)
    catch_up_ms: list[float] = field(default_factory=list)  # request to snapshot or end
    bytes_read: int = 0  # response bodies, all viewers
    chat_list_bytes: int = 0  # of which the chat list (a chat page's `chats` events)
    # Every event body the first viewer of each path read, in order (its connections
    # joined): what its page applied, to compare with the stored answers afterwards.
    bodies: dict[str, bytes] = field(default_factory=dict)


class _Viewer(asyncio.Protocol):
    def __init__(
        self, plan: Plan, path: str, ready: asyncio.Event, count_ready, keep: bool = False
    ) -> None:
        self.plan, self.path, self.count_ready = plan, path, count_ready
        self.keep = keep  # keep every body byte (else only counted)
        self.body = bytearray()
        self.bytes_read = self.chat_list_bytes = 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.ready = ready
        self.buffer = b""
        self.in_head = True
        self.seen: set[bytes] = set()
        self.last_seq: int | None = None
        self.latencies: list[float] = []
        self.events = self.duplicates = self.losses = 0
        self.ended = False
        self.error = ""
        self.started = time.perf_counter()
        self.caught_up_ms: float | None = None
        self.last_id = b""
        self.retry_ms = 1000
        self.reconnects = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.buffer, self.in_head = b"", True
        headers = f"Host: {self.plan.host}\r\n"
        if cookie := self.plan.cookies.get(self.path):
            headers += f"Cookie: {cookie}\r\n"
        if self.keep and not self.body.endswith(b"\n\n"):  # an event cut off: never applied
            cut = self.body.rfind(b"\n\n")
            del self.body[cut + 2 if cut >= 0 else 0 :]
        if self.last_id:  # as a browser's EventSource does when it reconnects
            headers += f"Last-Event-ID: {self.last_id.decode()}\r\n"
        transport.write(f"GET {self.path} HTTP/1.0\r\n{headers}\r\n".encode())
        if not self.plan.ready_on_headers and not self.reconnects:
            self.count_ready()

    def data_received(self, data: bytes) -> None:
        received_us = time.time_ns() // 1000
        self.buffer += data
        if self.in_head:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status = self.buffer[: self.buffer.find(b"\r\n")]
            if b" 200 " not in status + b" ":
                self._fail(status.decode(errors="replace"))
                return
            self.buffer = self.buffer[end + 4 :]
            self.in_head = False
            data = self.buffer  # the body's first bytes
            if self.plan.ready_on_headers and not self.reconnects:
                self.count_ready()
        self.bytes_read += len(data)
        if self.keep:
            self.body += data
        if b"\n\n" not in self.buffer:
            return
        *blocks, self.buffer = self.buffer.split(b"\n\n")
        for block in blocks:
            self._event(block, received_us)

    def _event(self, block: bytes, received_us: int) -> None:
        if block.startswith(b":"):
            return  # a comment (a ping)
        kind, event_id = b"message", b""
        for line in block.split(b"\n"):
            if line.startswith(b"event:"):
                kind = line[6:].strip()
            elif line.startswith(b"id:"):
                event_id = line[3:].strip()
            elif line.startswith(b"retry:"):
                self.retry_ms = int(line[6:])
        if kind == b"chats":
            self.chat_list_bytes += len(block) + 2
        if not event_id and kind != b"end":
            return  # `retry:` and the like
        self.events += 1
        # An answer's entry number ends the id: `5` (floor, peer), `<gen>:5` (an answer's
        # stream), `c2.<gen>:5` (a chat page's, whose other events carry no entry).
        number = event_id.rsplit(b":", 1)[-1]
        if number.isdigit() and kind in (b"delta", b"end", b"snapshot"):
            seq = int(number)
            if kind == b"snapshot":
                self.seen.update(STAMP.findall(block))  # written before this viewer came
            elif self.last_seq is not None and seq <= self.last_seq:
                self.duplicates += 1
                return
            elif self.last_seq is not None and seq > self.last_seq + 1:
                self.losses += seq - self.last_seq - 1
            self.last_seq, self.last_id = seq, event_id
        if kind in (b"snapshot", b"end") and self.caught_up_ms is None:
            self.caught_up_ms = (time.perf_counter() - self.started) * 1000
            if self.plan.until_caught_up:
                self.ended = True
                self.transport.close()
                return
        if kind != b"snapshot":
            for emitted in STAMP.findall(block):
                if emitted not in self.seen:
                    self.seen.add(emitted)
                    self.latencies.append((received_us - int(emitted)) / 1000)
        if kind == b"end":
            self.ended = True
            self.transport.close()

    def _fail(self, error: str) -> None:
        self.error = error
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and not self.error:
            self.error = repr(exc)
        if not self.ended and not self.error and self.reconnects < MAX_RECONNECTS:
            # Closed before the end (the server said `retry:`): come back, as a browser does.
            self.reconnects += 1
            asyncio.get_running_loop().call_later(self.retry_ms / 1000, self._reconnect)
        elif not self.done.done():
            self.done.set_result(None)

    def _reconnect(self) -> None:
        async def connect() -> None:
            try:
                await asyncio.get_running_loop().create_connection(
                    lambda: self, self.plan.host, self.plan.port
                )
            except OSError as exc:
                self.error = repr(exc)
                self.done.set_result(None)

        self.reconnecting = asyncio.ensure_future(connect())  # kept: tasks are weakly held


async def _watch(plan: Plan, connected: Event | None) -> Outcome:
    loop = asyncio.get_running_loop()
    ready, ready_count = asyncio.Event(), 0

    def count_ready() -> None:
        nonlocal ready_count
        ready_count += 1
        if ready_count == plan.viewers:
            ready.set()

    stop, lags = asyncio.Event(), list[float]()
    ticker = asyncio.create_task(_measure_lag(stop, lags))
    gate = asyncio.Semaphore(CONNECTING_AT_ONCE)

    async def open_viewer(number: int) -> _Viewer:
        path = plan.paths[number % len(plan.paths)]
        keep = number < len(plan.paths)  # the first viewer of each path
        async with gate:
            for attempt in range(5):
                try:
                    _, viewer = await loop.create_connection(
                        lambda: _Viewer(plan, path, ready, count_ready, keep),
                        plan.host,
                        plan.port,
                    )
                    return viewer
                except OSError:
                    await asyncio.sleep(0.2 * (attempt + 1))
            raise ConnectionError(f"could not connect to {plan.host}:{plan.port}")

    if plan.one_at_a_time:
        viewers = []
        for number in range(plan.viewers):
            viewers.append(await open_viewer(number))
            await viewers[-1].done
    else:
        viewers = await asyncio.gather(*(open_viewer(number) for number in range(plan.viewers)))
    await asyncio.wait_for(ready.wait(), timeout=plan.timeout)
    if connected is not None:
        connected.set()
    await asyncio.wait([viewer.done for viewer in viewers], timeout=plan.timeout)
    stop.set()
    await ticker
    outcome = Outcome(client_lag_ms=lags)
    for viewer in viewers:
        if not viewer.done.done():
            viewer.error = f"still open after {plan.timeout:.0f} s"
            viewer.transport.abort()
        elif not viewer.ended and not viewer.error:
            viewer.error = f"closed by the server before the end (after entry {viewer.last_seq})"
        outcome.latencies_ms.extend(viewer.latencies)
        outcome.events += viewer.events
        outcome.duplicates += viewer.duplicates
        outcome.losses += viewer.losses
        outcome.unfinished += not viewer.ended
        outcome.reconnects += viewer.reconnects
        if viewer.error:
            outcome.errors.append(viewer.error)
        if viewer.caught_up_ms is not None:
            outcome.catch_up_ms.append(viewer.caught_up_ms)
        outcome.bytes_read += viewer.bytes_read
        outcome.chat_list_bytes += viewer.chat_list_bytes
        if viewer.keep:
            outcome.bodies[viewer.path] = bytes(viewer.body)
    return outcome


async def _measure_lag(stop: asyncio.Event, lags_ms: list[float], period: float = 0.01) -> None:
    """How late the client's own loop wakes up: its share of any latency measured."""
    while not stop.is_set():
        expected = time.perf_counter() + period
        await asyncio.sleep(period)
        lags_ms.append(max(0.0, (time.perf_counter() - expected) * 1000))


def watch(plan: Plan, connected: Event | None = None) -> Outcome:
    """Open the viewers, set `connected` once all are on, follow every one to its end."""
    try:
        import uvloop

        return uvloop.run(_watch(plan, connected))
    except ImportError:
        return asyncio.run(_watch(plan, connected))


def _watch_into(plan: Plan, connected: Event, results: multiprocessing.SimpleQueue) -> None:
    results.put(watch(plan, connected))


class Watching:
    """`watch` in a separate process: start it, wait for `connected`, then for its outcome."""

    def __init__(self, plan: Plan) -> None:
        context = multiprocessing.get_context("spawn")
        self.connected = context.Event()
        self._results: multiprocessing.SimpleQueue[Outcome] = context.SimpleQueue()
        self._process = context.Process(
            target=_watch_into, args=(plan, self.connected, self._results), daemon=True
        )
        self._process.start()

    def wait_connected(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.connected.wait(0.2):
            if not self._process.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the load client could not connect its viewers")

    def outcome(self) -> Outcome:
        outcome = self._results.get()
        self._process.join()
        return outcome


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]
