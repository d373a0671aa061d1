"""A running answer as far as its log goes: what a page is rendered with, and the position
its stream carries on from (the page and the stream start from the same place); and a
whole chat as a page shows it."""

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


@dataclass(frozen=True)
class ChatPage:
    """A chat as a page shows it: each message (a running answer with its body so far), and
    the cursor its stream carries on from."""

    shown: list[tuple[Message, AnswerBody | None]]
    cursor: frames.ChatCursor


def chat_as_it_is(r: redis.Redis, chat_id: str, timing: store.Timing) -> ChatPage:
    """Read the chat as it is now; an answer whose producer is gone is ended first."""
    events, messages = store.read_chat(r, chat_id)
    if messages and store.end_if_dead(r, chat_id, messages[-1], timing):
        events, messages = store.read_chat(r, chat_id)
    shown, answer_cursor = [], None
    for message in messages:
        current, body, position = answer_so_far(r, chat_id, message)
        shown.append((current, body))
        if body is not None:
            answer_cursor = frames.Cursor(current.gen, position)
    return ChatPage(shown, frames.ChatCursor(events, answer_cursor))
