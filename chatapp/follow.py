"""The stream engine: follow Redis pub/sub and logs from a cursor, and relay them over SSE.

Every stream (the chat page's, the per-answer one, the chat list's) runs here:

- `serve` subscribes (the hub confirms with Redis before it returns) and turns temporary
  conditions (the process's stream cap, Redis down) into `retry:`;
- `relay` reads the subscription's inbox until the stream is done, handing each item to
  the stream's `Listener`: live messages, a refill when something may have been missed,
  a quiet check when nothing was heard for a while; it sends pings, closes long streams,
  and writes whatever is ready in one go;
- `AnswerLog` follows one answer's log from a position: each entry once and in order,
  duplicates of what was sent dropped, gaps filled from the log, a dead producer noticed.

Order matters. A stream subscribes *before* it reads a log, so every entry is in the log
read, in the live feed, or in both; duplicates are dropped by sequence number and a jump in
the sequence is filled from the log. A viewer never sees an entry twice or misses one,
whatever the timing of appends around the replay.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import redis

from chatapp import frames, metrics, probes, store
from chatapp.hub import DRAIN, REFILL, TICK, Hub, HubUnavailable, Subscription

log = logging.getLogger(__name__)

Item = dict[str, Any] | str | None  # what a subscription's inbox holds (see hub.py)


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


class Listener(Protocol):
    """What a stream does with its inbox; `relay` decides when each is called."""

    def done(self) -> bool:
        """Whether the stream has sent its last event."""

    def stop(self) -> None:
        """The process is stopping: `relay` sends `retry:` and the stream is done."""

    def live(self, payload: dict[str, Any]) -> Iterator[bytes]:
        """A message published on one of the stream's channels."""

    def missed(self) -> Iterator[bytes]:
        """Live messages may have been lost (a reconnect, an overflow): read the logs."""

    def quiet(self, tick: bool) -> Iterator[bytes]:
        """Nothing heard for a while: check the logs cheaply (see probes.py), and on a
        `tick` (an idle inbox, not a busy one) whether a producer is gone."""

    def hears(self, payload: dict[str, Any]) -> bool:
        """Whether a live message is news of what the stream follows (it resets the
        quiet clock; a chat-list nudge does not, for a chat page)."""


@dataclass(frozen=True)
class Pace:
    """How often a relay pings and checks, and when it closes its stream."""

    ping_seconds: float
    check_seconds: float
    max_seconds: float  # then close; the browser reconnects with its Last-Event-ID


def relay(subscription: Subscription, listener: Listener, pace: Pace) -> Iterator[bytes]:
    """Hand each inbox item to `listener` and send what it makes, until it is done; every
    stream's live part runs here. After `pace.max_seconds` the stream closes with `retry:`."""
    close_at = time.monotonic() + pace.max_seconds
    clock = _Clock(listener, pace)
    while not listener.done():
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
            pieces = list(clock.on(each))
            if pieces:
                out += pieces
                sent.append(each)
        if out:
            yield b"".join(out)
            metrics.observe_delivery(sent)  # written: the gevent worker's send returned


class _Clock:
    """One relay's sense of time: when it last heard news, and when it last pinged."""

    def __init__(self, listener: Listener, pace: Pace) -> None:
        self.listener = listener
        self.pace = pace
        self.last_ping = self.last_heard = time.monotonic()

    def on(self, item: Item) -> Iterator[bytes]:
        """What one inbox item makes the stream send."""
        listener = self.listener
        if listener.done():
            return
        if item == DRAIN:
            listener.stop()
            yield retry_later()  # the process is stopping: reconnect to another one
            return
        now = time.monotonic()
        if item == REFILL:
            self.last_heard = now
            yield from listener.missed()
        elif now - self.last_heard >= self.pace.check_seconds:
            self.last_heard = now
            yield from listener.quiet(tick=item == TICK)
        if isinstance(item, dict) and not listener.done():
            if listener.hears(item):
                self.last_heard = now
            yield from listener.live(item)
        if not listener.done() and now - self.last_ping >= self.pace.ping_seconds:
            self.last_ping = now
            yield frames.ping_event().encode()


@dataclass
class AnswerLog:
    """One answer generation's log, followed from a position by one stream: what it has
    sent of it (`sent`, the sequence number of the last entry) and what comes next."""

    r: redis.Redis
    chat_id: str
    message_id: str
    generation_id: str
    sent: int

    def is_for(self, payload: dict[str, Any]) -> bool:
        """Whether a live message carries this generation's entries."""
        return payload.get("g") == self.generation_id and "s" in payload

    def after_live(self, payload: dict[str, Any]) -> list[dict[str, Any]]:
        """The entries of a live message that this stream has not sent, in order; if some
        were published that it did not get, those are read from the log."""
        first = int(payload["s"])
        if first > self.sent + 1:
            return self.missed()
        return list(payload["e"][self.sent + 1 - first :])

    def missed(self) -> list[dict[str, Any]]:
        """The entries after the last one sent, from the log."""
        raw = store.read_log(self.r, self.chat_id, self.generation_id, self.sent)
        return [json.loads(item) for item in raw]

    def quiet(self, tick: bool, timing: store.Timing) -> list[dict[str, Any]]:
        """Nothing heard for a while: the entries missed, if any; else, on a tick, end the
        answer if its producer is gone, and return its terminal entry."""
        if probes.log_length(self.r, self.chat_id, self.generation_id) > self.sent:
            return self.missed()
        if tick and probes.end_if_dead(self.r, self.chat_id, self.message_id, timing):
            log.warning("answer %s: producer gone; answer ended", self.message_id)
            return self.missed()
        return []

    def numbered(self, entries: list[dict[str, Any]]) -> Iterator[tuple[int, dict[str, Any]]]:
        """Each entry with its sequence number; `sent` names it as it is handed out."""
        for entry in entries:
            self.sent += 1
            yield self.sent, entry
