"""What a Durable Stream reads: a Redis list whose entry n sits at position n - 1 (its offset
is that position, durable_streams.py), and whether it has ended.

Two logs of a chat are served as Durable Streams: an answer generation's log (closed at its
terminal entry) and the chat's event log (never closed; gone with the chat). The conformance
suite's streams (conformance.py) are a third kind, in the same layout. Each kind says where
its entries are, how a read learns that it is closed or gone, and which live messages are
news of it; the protocol code reads all kinds the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import redis

from chatapp import contract, probes, store
from chatapp.contract import AnswerEntries, ChatEvents, Published
from chatapp.store import Message

JSON = "application/json"

# A catch-up read returns at most this many entries (or bytes, past its first entry); the
# client reads on from the offset it is given.
PAGE_ENTRIES = 1000
PAGE_BYTES = 1 << 20


@dataclass(frozen=True)
class Page:
    """Entries read from position `start` on, and what the read saw of the stream."""

    entries: list[bytes]
    start: int
    tail: int  # the log's length as read
    closed: bool  # the stream has ended (it may still have entries after `start`)
    gone: bool = False  # the stream no longer exists (deleted, or expired)

    @property
    def end(self) -> int:
        return self.start + len(self.entries)

    @property
    def at_tail(self) -> bool:
        return self.end >= self.tail

    @property
    def finished(self) -> bool:
        """Nothing comes after this page: the stream is closed and this is its tail."""
        return self.closed and self.at_tail


class DurableLog(Protocol):
    """One stream: its name for ETags, content type, live channel and how it is read."""

    @property
    def name(self) -> str: ...

    @property
    def content_type(self) -> str: ...

    @property
    def channel(self) -> str: ...

    def read(self, r: redis.Redis, start: int) -> Page:
        """Entries from position `start` (a page at most), with the state read with them."""

    def concerns(self, payload: Published) -> bool:
        """Whether a live message on `channel` may be news of this stream."""

    def end_if_dead(self, r: redis.Redis, timing: store.Timing) -> bool:
        """On a quiet stream: end it if its producer is gone (only answers have one)."""


def read_page(
    r: redis.Redis, key: str, start: int, *checks: tuple[object, ...]
) -> tuple[list[bytes], int, list[object]]:
    """Up to a page of the list `key` from `start`, its length, and the replies of
    `checks`: Redis commands read in the same round trip, *before* the entries, so that a
    stream seen closed has every entry up to its end in what is read after (an append
    between the commands makes it closed only at the next read, never early)."""
    pipe = r.pipeline(transaction=False)
    for command in checks:
        pipe.execute_command(*command)
    pipe.lrange(key, start, start + PAGE_ENTRIES - 1)
    pipe.llen(key)
    *replies, entries, tail = pipe.execute()
    kept: list[bytes] = []
    size = 0
    for entry in entries:
        data = entry if isinstance(entry, bytes) else entry.encode()
        if kept and size + len(data) > PAGE_BYTES:
            break
        kept.append(data)
        size += len(data)
    return kept, int(tail), replies


@dataclass(frozen=True)
class AnswerGeneration:
    """One generation of an answer: JSON entries (deltas, then the terminal one), closed
    at its terminal entry; gone once its log has expired after the end (404 or 410, never
    other bytes at an offset)."""

    chat_id: str
    message_id: str
    generation_id: str
    content_type: str = JSON

    @property
    def name(self) -> str:
        return self.generation_id

    @property
    def channel(self) -> str:
        return store.channel(self.chat_id)

    def read(self, r: redis.Redis, start: int) -> Page:
        message = store.message_key(self.chat_id, self.message_id)
        key = store.log_key(self.chat_id, self.generation_id)
        entries, tail, (last, gen, status) = read_page(
            r,
            key,
            start,
            ("LINDEX", key, -1),
            ("HGET", message, "gen"),
            ("HGET", message, "status"),
        )
        closed = last is not None and contract.entries([_text(last)])[0].terminal
        running = _text(gen) == self.generation_id and _text(status) in ("queued", "streaming")
        return Page(entries, start, tail, closed, gone=tail == 0 and not running)

    def concerns(self, payload: Published) -> bool:
        if isinstance(payload, ChatEvents):  # the chat may have been deleted
            return any(event.kind == contract.CHAT_DELETED for event in payload.events)
        return isinstance(payload, AnswerEntries) and payload.generation_id == self.generation_id

    def end_if_dead(self, r: redis.Redis, timing: store.Timing) -> bool:
        return probes.end_if_dead(r, self.chat_id, self.message_id, timing)


def answer_generation(
    r: redis.Redis, chat_id: str, message: Message, generation_id: str
) -> AnswerGeneration | None:
    """The stream of `message`'s generation, or None if there is none to read: not an
    answer, not its generation (each answer has one: a regeneration is a new version, a
    message of its own), or its log has expired."""
    if message.role != "assistant" or generation_id != message.gen:
        return None
    log = AnswerGeneration(chat_id, message.id, generation_id)
    if message.running:
        return log  # it may have no entries yet
    return log if store.log_length(r, chat_id, generation_id) else None


@dataclass(frozen=True)
class ChatEventLog:
    """A chat's event log (messages added, answers started and ended, titles...): JSON
    events, never closed; gone with the chat."""

    chat_id: str
    content_type: str = JSON

    @property
    def name(self) -> str:
        return f"events-{self.chat_id}"

    @property
    def channel(self) -> str:
        return store.channel(self.chat_id)

    def read(self, r: redis.Redis, start: int) -> Page:
        key = store.events_key(self.chat_id)
        entries, tail, (exists,) = read_page(
            r, key, start, ("EXISTS", store.chat_key(self.chat_id))
        )
        return Page(entries, start, tail, closed=False, gone=not exists)

    def concerns(self, payload: Published) -> bool:
        return isinstance(payload, ChatEvents)

    def end_if_dead(self, r: redis.Redis, timing: store.Timing) -> bool:
        return False


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")
