"""A stream's inbox: what the hub delivers to one stream, and the signals beside messages.

The hub (hub.py) puts each decoded message (chatapp/contract.py) into the inbox of every
stream on its channel, and these signals: REFILL when the stream may have missed messages
(it reads the logs), DRAIN when the process stops, TICK as the stream's clock.
"""

from __future__ import annotations

import queue
from collections.abc import Callable

from chatapp.contract import Published

REFILL = "refill"  # delivered to streams when they may have missed messages
DRAIN = "drain"  # delivered to streams when the process shuts down: close, let them reconnect
# Delivered to every stream every `tick_seconds`: its clock for pings and idle checks. A
# stream then waits for its next item with no timeout of its own, and a timeout costs a
# timer for every wait, that is for every event every viewer receives.
TICK = "tick"
# Delivered when the stream has bytes of its own to finish writing first (express.py).
WAKE = "wake"


class Subscription:
    """One stream's inbox for one or more channels: decoded live messages, or REFILL."""

    def __init__(self, channels: tuple[str, ...], size: int = 1024) -> None:
        self.channels = channels
        # SimpleQueue: the lightest queue there is (C in threads, gevent's own under the
        # gevent worker); the hub puts into thousands of these for every message.
        self._inbox: queue.SimpleQueue[Published | str] = queue.SimpleQueue()
        self._size = size
        self.overflowed = False  # set when the stream fell behind: it reads the log instead
        self.draining = False  # set when the process stops: never lost in a full inbox
        # The hub writes messages itself when this takes them (express.py): it returns
        # how many, from the first. Only while the stream waits in `get`, its inbox empty.
        self.express: Callable[[list[Published]], int] | None = None
        self._waiting = False

    def deliver_all(self, payloads: list[Published]) -> None:
        """Deliver messages published together, in order."""
        taken = 0
        if self._waiting and self.express and self._inbox.empty():
            taken = self.express(payloads)  # written by the hub itself
        for payload in payloads[taken:]:
            self.deliver(payload)

    def deliver(self, item: Published | str) -> None:
        # isinstance first: comparing a message with a string calls its dataclass __eq__,
        # for every stream, for every message.
        if isinstance(item, str) and item == DRAIN:
            self.draining = True
        if self._inbox.qsize() >= self._size:
            self.overflowed = True  # the stream is busy with the rest: it will see this
        else:
            self._inbox.put(item)

    def get(self, timeout: float | None = None) -> Published | str | None:
        """Return DRAIN once the process stops, the next item, REFILL if the inbox
        overflowed, or None after `timeout` (streams wait without one: see TICK)."""
        flag = self._flag()
        if flag is not None:
            return flag
        self._waiting = True
        try:
            return self._inbox.get(timeout=timeout)
        except queue.Empty:
            return None
        finally:
            self._waiting = False

    def ready(self, limit: int = 64) -> list[Published | str]:
        """Return what has been delivered already (at most `limit` items), without waiting."""
        items: list[Published | str] = []
        while len(items) < limit:
            flag = self._flag()
            if flag is not None:
                items.append(flag)
                break
            if self._inbox.empty():  # cheaper than the exception of an empty get_nowait
                break
            items.append(self._inbox.get_nowait())  # one reader: nobody took it meanwhile
        return items

    def _flag(self) -> str | None:
        """DRAIN once the process stops; REFILL (the inbox emptied) after an overflow."""
        if self.draining:
            return DRAIN
        if self.overflowed:
            self.overflowed = False
            self._drain()
            return REFILL
        return None

    def _drain(self) -> None:
        while True:
            try:
                self._inbox.get_nowait()
            except queue.Empty:
                return
