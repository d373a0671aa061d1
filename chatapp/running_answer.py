"""A running answer as far as its log goes: what a page is rendered with, and the position
its stream carries on from (the page and the stream start from the same place)."""

from __future__ import annotations

from dataclasses import dataclass

import redis

from chatapp import contract, frames, store
from chatapp.store import Message


@dataclass(frozen=True)
class AnswerBody:
    """A running answer as far as its log goes: finished blocks, then the open block (its
    last render and the text after it, frames.open_block)."""

    blocks: str
    tail: str
    thinking: str = ""  # the model's reasoning so far, escaped


def answer_so_far(
    r: redis.Redis, chat_id: str, message: Message
) -> tuple[Message, AnswerBody | None, int]:
    """Return the message as it is now and, for a running answer, its body as far as its
    log goes and that position (the page and the stream start from the same place)."""
    if not message.running:
        return message, None, 0
    entries = contract.entries(store.read_log(r, chat_id, message.gen))
    if entries and entries[-1].terminal:  # it ended just now
        return store.get_message(r, chat_id, message.id) or message, None, 0
    return message, AnswerBody(*frames.body_so_far(message.id, entries)), len(entries)
