"""Helpers that put chats and answers into the store for tests."""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis

from chatapp import contract, store


def delta(text: str) -> dict[str, str]:
    return contract.delta_entry(text, f"<p>{text}</p>\n", tail="")


@dataclass(frozen=True)
class NewAnswer:
    """A queued answer made for a test, and where it lives."""

    chat_id: str
    user_id: str  # the user's message it answers
    answer_id: str
    generation_id: str


def new_answer(
    r: redis.Redis, text: str = "hello", owner: str = "0" * 16, model: str = ""
) -> NewAnswer:
    """Create a chat with one user message and its queued answer (by `model`, else the
    configured one)."""
    chat = store.create_chat(r, owner, time.time())
    sent = store.send_message(
        r, chat.id, f"client-{store.new_id()}", text, f"<p>{text}</p>", model, 0
    )
    assert sent.status == "ok"
    return NewAnswer(chat.id, sent.user_id, sent.answer_id, sent.generation_id)


def keys_and_values(r: redis.Redis) -> dict[str, object]:
    """Everything in Redis except RQ's bookkeeping, to prove a request changed nothing."""
    snapshot: dict[str, object] = {}
    for key in sorted(r.keys("chatapp:*")):
        kind = r.type(key)
        snapshot[key] = {
            "hash": r.hgetall,
            "list": lambda k: r.lrange(k, 0, -1),
            "zset": lambda k: r.zrange(k, 0, -1),
            "set": lambda k: sorted(r.smembers(k)),
            "string": r.get,
        }[kind](key)
    return snapshot
