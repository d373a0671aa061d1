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

import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import redis

from chatapp import contract, frames, metrics, probes, store
from chatapp.contract import AnswerEntries, Entry, Published
from chatapp.express import Lane, SocketWriter
from chatapp.hub import Hub, HubUnavailable
from chatapp.subscription import DRAIN, REFILL, TICK, Subscription

log = logging.getLogger(__name__)

Item = Published | str | None  # what a subscription's inbox holds (see hub.py)


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
        # Something at once: the response (and the browser's `open`) starts now, even when
        # nothing is new (a resumed page may wait minutes for its next event). gunicorn
        # sends the status line and headers with these first bytes, so they are out before
        # the hub may write to the socket itself (express.py).
        yield frames.following_comment()
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

    def live(self, payload: Published) -> Iterator[bytes]:
        """A message published on one of the stream's channels."""

    def missed(self) -> Iterator[bytes]:
        """Live messages may have been lost (a reconnect, an overflow): read the logs."""

    def quiet(self, tick: bool) -> Iterator[bytes]:
        """Nothing heard for a while: check the logs cheaply (see probes.py), and on a
        `tick` (an idle inbox, not a busy one) whether a producer is gone."""

    def hears(self, payload: Published) -> bool:
        """Whether a live message is news of what the stream follows (it resets the
        quiet clock; a chat-list nudge does not, for a chat page)."""

    def express(self, payload: Published) -> bytes | None:
        """What `live` would send for `payload`, if it needs no I/O and changes nothing
        but the stream's position: the hub may then write it itself (express.py)."""


@dataclass(frozen=True)
class StreamSettings:
    """A stream's pings, checks and limits (the configuration's: live_views.py)."""

    ping_seconds: float = 15.0
    check_seconds: float = 5.0  # heard nothing this long: check the logs and the producer
    max_streams: int = 900  # in this process; past it, a stream is told to come back
    max_seconds: float = 600.0  # then close; the browser reconnects with its Last-Event-ID
    # For ending an answer whose producer is gone: the configured retention.
    timing: store.Timing = field(default_factory=store.Timing)
    # The response's socket, when the hub may write an answer's entries to it (express.py).
    writer: SocketWriter | None = None
    # A keep-alive: the page's is a comment and an event it can see (frames.ping_event).
    ping: bytes = frames.ping_event().encode()


def relay(
    subscription: Subscription, listener: Listener, settings: StreamSettings
) -> Iterator[bytes]:
    """Hand each inbox item to `listener` and send what it makes, until it is done; every
    stream's live part runs here. After `max_seconds` the stream closes with `retry:`."""
    close_at = time.monotonic() + settings.max_seconds
    clock = _Clock(listener, settings)
    lane = None
    if settings.writer is not None:  # serve's first bytes (and the headers) have gone out
        lane = Lane(subscription, settings.writer, listener, clock.heard)
        subscription.express = lane.take
    while not listener.done():
        if time.monotonic() >= close_at:
            # Long-lived responses pin a viewer to one process; closing them now and then
            # spreads viewers after a deploy or scale-out. Nothing is lost: native resume.
            yield retry_later()
            return
        item = subscription.get()  # a TICK at least every few seconds
        if lane is not None:
            lane.finish()  # what the hub began writing goes out before anything else
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

    def __init__(self, listener: Listener, settings: StreamSettings) -> None:
        self.listener = listener
        self.settings = settings
        self.last_ping = self.last_heard = time.monotonic()

    def heard(self) -> None:
        """News arrived another way (the express lane): no idle check for a while."""
        self.last_heard = time.monotonic()

    def on(self, item: Item) -> Iterator[bytes]:
        """What one inbox item makes the stream send."""
        listener = self.listener
        if listener.done():
            return
        # A signal (a string) or a message: comparing a message with a string would call its
        # dataclass __eq__, three times for every event every viewer receives.
        signal, message = (item, None) if isinstance(item, str) else (None, item)
        if signal == DRAIN:
            listener.stop()
            yield retry_later()  # the process is stopping: reconnect to another one
            return
        now = time.monotonic()
        if signal == REFILL:
            self.last_heard = now
            yield from listener.missed()
        elif message is None and now - self.last_heard >= self.settings.check_seconds:
            # Quiet means a signal found nothing heard for a while; a message is news
            # itself, though a busy process may hand it over late (no check then: it
            # reads Redis, and a late stream's check read whole logs for nothing).
            self.last_heard = now
            yield from listener.quiet(tick=signal == TICK)
        if message is not None and not listener.done():
            if listener.hears(message):
                self.last_heard = now
            yield from listener.live(message)
        if not listener.done() and now - self.last_ping >= self.settings.ping_seconds:
            self.last_ping = now
            yield self.settings.ping


@dataclass
class AnswerLog:
    """One answer generation's log, followed from a position by one stream: what it has
    sent of it (`sent`, the sequence number of the last entry) and what comes next."""

    r: redis.Redis
    chat_id: str
    message_id: str
    generation_id: str
    sent: int

    def entries_in(self, payload: Published) -> list[Entry]:
        """The entries of a live message that this stream has not sent, in order (none if
        it is not this generation's); if some were published that it did not get, those
        are read from the log."""
        if not isinstance(payload, AnswerEntries) or payload.generation_id != self.generation_id:
            return []
        if payload.first > self.sent + 1:
            return self.missed()
        return payload.entries[self.sent + 1 - payload.first :]

    def expressible(self, payload: AnswerEntries) -> list[Entry] | None:
        """The entries of a live message that follow what this stream sent, if sending
        them needs no I/O (express.py): None if it is another generation's, leaves a gap
        (the log is read) or ends the answer (its end is read and rendered)."""
        if payload.generation_id != self.generation_id or payload.first > self.sent + 1:
            return None
        entries = payload.entries[self.sent + 1 - payload.first :]
        return None if any(entry.terminal for entry in entries) else entries

    def missed(self) -> list[Entry]:
        """The entries after the last one sent, from the log."""
        return contract.entries(store.read_log(self.r, self.chat_id, self.generation_id, self.sent))

    def quiet(self, tick: bool, timing: store.Timing) -> list[Entry]:
        """Nothing heard for a while: the entries missed, if any; else, on a tick, end the
        answer if its producer is gone, and return its terminal entry."""
        if probes.log_length(self.r, self.chat_id, self.generation_id) > self.sent:
            return self.missed()
        if tick and probes.end_if_dead(self.r, self.chat_id, self.message_id, timing):
            log.warning("answer %s: producer gone; answer ended", self.message_id)
            return self.missed()
        return []

    def numbered(self, entries: list[Entry]) -> Iterator[tuple[int, Entry]]:
        """Each entry with its sequence number; `sent` names it as it is handed out."""
        for entry in entries:
            self.sent += 1
            yield self.sent, entry
