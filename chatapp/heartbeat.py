"""The heartbeat of an answer's producer: proof that it is alive, whatever the token flow."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import TracebackType

import redis

from chatapp import store
from chatapp.connections import UNAVAILABLE


class Heartbeat:
    """A thread that proves the generation's producer is alive, whatever the token flow.

    It beats through the fenced script (an append of nothing), so it also learns at once
    when the generation was stopped or replaced, even while the model is silent, and then
    calls `on_fenced` (which closes the model's stream) instead of waiting for a token.
    A beat is skipped when the producer appended within the last beat (`appended_at`):
    that append renewed the heartbeat, and would have been refused just the same.
    """

    def __init__(
        self,
        r: redis.Redis,
        chat_id: str,
        message_id: str,
        generation_id: str,
        every: float,
        timing: store.Timing,
        on_fenced: Callable[[], None] = lambda: None,
        appended_at: Callable[[], float] = lambda: 0.0,
    ) -> None:
        self._beat: Callable[[], store.AppendResult] = lambda: store.append(
            r, chat_id, message_id, generation_id, [], expected_length=None, timing=timing
        )
        self._every = every
        self._appended_at = appended_at
        self._on_fenced = on_fenced
        self._stop = threading.Event()
        self.fenced = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()  # its first beat goes out while the model is asked
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self.fenced.is_set():
            # Skipped if the producer's own append was this beat.
            if time.monotonic() - self._appended_at() >= self._every:
                try:
                    self._check(self._beat())
                except UNAVAILABLE:
                    pass  # the next beat tries again; the TTL covers several misses
            if self._stop.wait(self._every):
                return

    def _check(self, result: store.AppendResult) -> None:
        if not result.ok and not self._stop.is_set():
            self.fenced.set()
            self._on_fenced()
