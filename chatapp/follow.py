"""Following an answer over SSE: subscribe, replay after the cursor, then relay live.

Order matters. The stream subscribes (and waits for Redis to confirm) *before* it reads the
log, so every entry is in the log read, in the live feed, or in both; duplicates are dropped
by sequence number and a jump in the sequence is filled from the log. A viewer never sees
an entry twice or misses one, whatever the timing of appends around the replay.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import redis

from chatapp import frames, metrics, probes, store
from chatapp.frames import Cursor
from chatapp.hub import DRAIN, REFILL, TICK, Hub, HubUnavailable, Subscription
from chatapp.sse import ServerSentEvent
from chatapp.store import Message

log = logging.getLogger(__name__)

RenderFinal = Callable[[Message | None], str]


@dataclass(frozen=True)
class Follow:
    """What a stream needs, as plain data (no request context inside the generator)."""

    chat_id: str
    message_id: str
    cursor: Cursor | None
    ping_seconds: float = 15.0
    check_seconds: float = 5.0
    max_streams: int = 900
    max_seconds: float = 600.0  # then close; the browser reconnects with its Last-Event-ID
    # For ending an answer whose producer is gone: the configured retention.
    timing: store.Timing = field(default_factory=store.Timing)


def retry_later() -> bytes:
    """Return the answer to a temporary condition: reconnect soon, keeping Last-Event-ID."""
    return frames.retry_event(random.randint(1000, 3000)).encode()


def serve(
    hub: Hub,
    channels: tuple[str, ...],
    max_streams: int,
    name: str,
    run: Callable[[Subscription], Iterator[bytes]],
) -> Iterator[bytes]:
    """Subscribe to `channels` and yield what `run` makes of them; every stream goes
    through here. Temporary conditions (the process's stream cap, Redis down, failing
    over or out of memory) end the response with `retry:`, keeping the browser's cursor."""
    if hub.stream_count >= max_streams:
        log.warning("%s: this process holds its maximum of %d streams", name, max_streams)
        yield retry_later()
        return
    try:
        subscription = hub.subscribe(*channels)
    except HubUnavailable as exc:
        log.warning("%s: %s", name, exc)
        yield retry_later()
        return
    try:
        yield from run(subscription)
    except redis.RedisError as exc:
        log.warning("%s: Redis unavailable (%s)", name, exc)
        yield retry_later()
    finally:
        hub.release(subscription)


def relay(
    subscription: Subscription,
    max_seconds: float,
    on: Callable[[dict[str, Any] | str | None], Iterator[bytes]],
    ended: Callable[[], bool],
) -> Iterator[bytes]:
    """Hand each inbox item to `on` and send what it makes, until `ended()`; every
    stream's live part runs here. After `max_seconds` the stream closes with `retry:`."""
    close_at = time.monotonic() + max_seconds
    while not ended():
        if time.monotonic() >= close_at:
            # Long-lived responses pin a viewer to one process; closing them now and then
            # spreads viewers after a deploy or scale-out. Nothing is lost: native resume.
            yield retry_later()
            return
        item = subscription.get()  # a TICK at least every few seconds
        # Whatever else has arrived meanwhile goes out in the same write: a busy process
        # makes fewer, larger writes instead of falling further behind.
        out: list[bytes] = []
        sent = []  # the items that made bytes (not a duplicate, not another answer's)
        for each in (item, *subscription.ready()):
            pieces = list(on(each))
            if pieces:
                out += pieces
                sent.append(each)
        if out:
            yield b"".join(out)
            metrics.observe_delivery(sent)  # written: the gevent worker's send returned


def follow(r: redis.Redis, hub: Hub, request: Follow, render_final: RenderFinal) -> Iterator[bytes]:
    """Yield the SSE bytes of one viewer of one answer until its terminal entry."""
    yield from serve(
        hub,
        (store.channel(request.chat_id),),
        request.max_streams,
        f"stream {request.message_id}",
        lambda subscription: _Stream(r, request, subscription, render_final).run(),
    )


class _Stream:
    def __init__(
        self, r: redis.Redis, request: Follow, subscription: Subscription, render_final: RenderFinal
    ) -> None:
        self.r = r
        self.request = request
        self.subscription = subscription
        self.render_final = render_final
        self.generation_id = ""
        self.sent = 0  # sequence number of the last entry sent
        self.finished = False

    def run(self) -> Iterator[bytes]:
        message = store.get_message(self.r, self.request.chat_id, self.request.message_id)
        if message is None or message.role != "assistant":
            yield self._final(None)
            return
        self.generation_id = message.gen
        if not message.running:
            if self._log_serves(self.request.cursor, message):
                yield from self._start(self.request.cursor)  # the rest, then `end`
            else:
                yield self._final(message)
            return
        yield from self._start(self.request.cursor)
        yield from self._relay()

    def _log_serves(self, cursor: Cursor | None, message: Message) -> bool:
        """Return whether a finished answer's log still holds what comes after `cursor`."""
        return (
            cursor is not None
            and cursor.generation_id == message.gen
            and cursor.seq < message.length
            and store.log_length(self.r, self.request.chat_id, message.gen) == message.length
        )

    def _start(self, cursor: Cursor | None) -> Iterator[bytes]:
        entries = self._read_log(after=0)
        ended = bool(entries) and frames.is_terminal(entries[-1])
        resumable = (
            cursor is not None
            and cursor.generation_id == self.generation_id
            and cursor.seq <= len(entries)
        )
        if resumable and cursor is not None:
            # At or past the terminal entry, the viewer gets `end` again, every time.
            start = min(cursor.seq, len(entries) - 1) if ended else cursor.seq
        else:
            # No usable cursor: one snapshot of everything so far, then the tail.
            start = len(entries) - 1 if ended else len(entries)
            snapshot_at = Cursor(self.generation_id, start)
            snapshot = frames.snapshot_event(self.request.message_id, snapshot_at, entries[:start])
            yield snapshot.encode()
        self.sent = start
        yield from self._send(entries[start:], first_seq=start + 1)

    def _relay(self) -> Iterator[bytes]:
        self.last_ping = self.last_heard = time.monotonic()
        yield from relay(
            self.subscription, self.request.max_seconds, self._on, lambda: self.finished
        )

    def _on(self, item: dict[str, Any] | str | None) -> Iterator[bytes]:
        """What one inbox item makes this stream send."""
        if self.finished:
            return
        if item == DRAIN:
            self.finished = True
            yield retry_later()  # the process is stopping: reconnect to another one
            return
        now = time.monotonic()
        if item == REFILL:  # told we may have missed something: read the log
            self.last_heard = now
            yield from self._refill()
        elif now - self.last_heard >= self.request.check_seconds:
            # Quiet for a while: anything missed, or a producer gone? (Asked once per
            # answer per process, not once per viewer.)
            self.last_heard = now
            sent = self.sent
            if probes.log_length(self.r, self.request.chat_id, self.generation_id) > self.sent:
                yield from self._refill()
            if item == TICK and self.sent == sent and not self.finished:
                yield from self._end_if_dead()
        if isinstance(item, dict):
            self.last_heard = now
            yield from self._live(item)
        if not self.finished and now - self.last_ping >= self.request.ping_seconds:
            self.last_ping = now
            yield frames.ping_event().encode()

    def _live(self, payload: dict[str, Any]) -> Iterator[bytes]:
        if payload.get("m") != self.request.message_id or payload.get("g") != self.generation_id:
            return
        first = int(payload["s"])
        if first > self.sent + 1:
            yield from self._refill()  # a gap: something was published that we did not get
            return
        skip = self.sent + 1 - first  # entries we already sent
        yield from self._send(payload["e"][skip:], first_seq=self.sent + 1)

    def _end_if_dead(self) -> Iterator[bytes]:
        """Nothing new for a while: if the producer is gone, end the answer with an error."""
        chat_id, message_id = self.request.chat_id, self.request.message_id
        if probes.end_if_dead(self.r, chat_id, message_id, self.request.timing):
            log.warning("stream %s: producer gone; answer ended", self.request.message_id)
            yield from self._refill()

    def _refill(self) -> Iterator[bytes]:
        entries = self._read_log(after=self.sent)
        yield from self._send(entries, first_seq=self.sent + 1)

    def _send(self, entries: list[dict[str, Any]], first_seq: int) -> Iterator[bytes]:
        for offset, entry in enumerate(entries):
            if self.finished:
                return
            cursor = Cursor(self.generation_id, first_seq + offset)
            self.sent = cursor.seq
            if frames.is_terminal(entry):
                self.finished = True
                yield frames.built_once(entry, "answer stream", self._end_event, cursor, entry)
            else:
                yield frames.built_once(
                    entry,
                    "answer stream",
                    frames.delta_event,
                    self.request.message_id,
                    cursor,
                    entry,
                )

    def _end_event(self, cursor: Cursor, entry: dict[str, Any]) -> ServerSentEvent:
        final = _final_message(self.request.message_id, entry)
        return frames.end_event(cursor, self.render_final(final))

    def _read_log(self, after: int) -> list[dict[str, Any]]:
        raw = store.read_log(self.r, self.request.chat_id, self.generation_id, after)
        return [json.loads(item) for item in raw]

    def _final(self, message: Message | None) -> bytes:
        cursor = Cursor(message.gen, message.length) if message and message.gen else None
        event: ServerSentEvent = frames.end_event(cursor, self.render_final(message))
        return event.encode()


def _final_message(message_id: str, entry: dict[str, Any]) -> Message:
    return Message(
        id=message_id,
        role="assistant",
        status=entry["t"],
        html=entry.get("html", ""),
        error=entry.get("message", ""),
        model=entry.get("model", ""),
    )
