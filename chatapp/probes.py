"""Idle checks shared by a process's streams: one Redis question per answer, not per viewer.

A stream that hears nothing for a few seconds checks the logs (a message it may have
missed) and the producer's heartbeat (an answer nobody is writing any more). A thousand
viewers of one answer would ask Redis the same questions a thousand times every few
seconds, idle or not; here the first to ask does, and the others take its answer for a
short while. A cached answer only ever says "nothing new past N yet": a stream that is
told it may have missed something (a refill) always reads the log itself.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

import redis

from chatapp import store

T = TypeVar("T")
FRESH_SECONDS = 1.0  # how long an answer is shared; a lost message is seen this much later
MAX_KEPT = 10_000  # answers kept; past this the oldest are dropped (a bound, not a tuning)

_lock = threading.Lock()
_answers: dict[tuple[str, ...], tuple[float, object]] = {}
_asking: dict[tuple[str, ...], _Question] = {}


class _Question:
    """One stream asking Redis on behalf of the others, who wait for how it went."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: Exception | None = None


def _shared(key: tuple[str, ...], ttl: float, ask: Callable[[], T]) -> T:
    """Return a fresh answer to `key`, asking Redis only if there is none. The streams of a
    process tick together, so many want the same answer at once: one asks, and the others
    wait for its answer instead of all asking (and emptying the connection pool). If the
    question fails (Redis away), they all hear so at once, rather than asking in turn."""
    while True:
        with _lock:
            found = _answers.get(key)
            if found is not None and found[0] > time.monotonic():
                return found[1]  # type: ignore[return-value]
            question = _asking.get(key)
            if question is None:
                question = _asking[key] = _Question()
                break
        if question.done.wait(timeout=30) and question.error is not None:
            raise question.error
    try:
        value = ask()
        with _lock:
            _keep(key, ttl, value)
        return value
    except Exception as exc:
        question.error = exc
        raise
    finally:
        with _lock:
            del _asking[key]
        question.done.set()


def _keep(key: tuple[str, ...], ttl: float, value: object) -> None:
    now = time.monotonic()
    if len(_answers) >= MAX_KEPT:
        for stale in [k for k, (until, _) in _answers.items() if until <= now] or [*_answers]:
            del _answers[stale]
    _answers[key] = (now + ttl, value)


def log_length(r: redis.Redis, chat_id: str, generation_id: str) -> int:
    """The length of an answer's log, as Redis said it within the last second."""
    key = ("log", chat_id, generation_id)
    return _shared(key, FRESH_SECONDS, lambda: store.log_length(r, chat_id, generation_id))


def chat_event_count(r: redis.Redis, chat_id: str) -> int:
    """The length of a chat's event log, as Redis said it within the last second."""
    key = ("events", chat_id)
    return _shared(key, FRESH_SECONDS, lambda: store.chat_event_count(r, chat_id))


def end_if_dead(r: redis.Redis, chat_id: str, message_id: str, timing: store.Timing) -> bool:
    """`store.end_if_dead` on the answer as it is now, asked at most once a second per
    answer per process (a heartbeat lives for many seconds); True only for the stream
    whose call ended it."""
    key = ("dead", chat_id, message_id)
    asked = []

    def ask() -> bool:
        asked.append(True)
        message = store.get_message(r, chat_id, message_id)
        return message is not None and store.end_if_dead(r, chat_id, message, timing)

    ended = _shared(key, FRESH_SECONDS, ask)
    return ended and bool(asked)


def forget() -> None:
    """Drop every shared answer (tests)."""
    with _lock:
        _answers.clear()
