"""Following an answer in-process (the hub, replay and live), as the stream endpoint does."""

from __future__ import annotations

import redis

from chatapp.answer_stream import Follow, follow
from chatapp.follow import StreamSettings
from chatapp.frames import Cursor
from chatapp.hub import Hub
from chatapp.store import Message
from harness.client import Event, parse_events
from harness.page import in_band_text


def final(message: Message | None) -> str:
    return f"FINAL {message.status if message else 'gone'}"


def watch(
    r: redis.Redis,
    hub: Hub,
    chat_id: str,
    answer_id: str,
    cursor: Cursor | None = None,
    **options: float,
) -> list[Event]:
    """Follow until `end` (or until the stream closes) and return the events."""
    request = Follow(chat_id, answer_id, cursor, StreamSettings(**options))  # type: ignore[arg-type]
    return parse_events(b"".join(follow(r, hub, request, final)).decode())


def deltas_text(events: list[Event]) -> list[str]:
    """The text of the blocks each delta adds, in order."""
    return [in_band_text(e).strip() for e in events if e.event == "delta"]


def seqs(events: list[Event]) -> list[int]:
    return [int(e.id.split(":")[1]) for e in events if e.id]
