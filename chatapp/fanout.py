"""The hub's table of streams: which subscriptions listen to which channels, and which
channels the hub must subscribe to, may unsubscribe from, or must confirm again.

Streams (any thread or greenlet) add and release subscriptions; the hub's thread reads what
to subscribe and delivers what Redis sends. One lock guards it all; nothing here does I/O.
"""

from __future__ import annotations

import threading
import time

from chatapp.contract import Published
from chatapp.subscription import DRAIN, REFILL, TICK, Subscription


class Draining(Exception):
    """The process is stopping: no new subscriptions."""


class FanOut:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: dict[str, set[Subscription]] = {}
        self._subscriptions: set[Subscription] = set()  # every stream's, once
        self._confirmed: dict[str, threading.Event] = {}  # the channels streams want
        self._idle_since: dict[str, float] = {}  # wanted by no stream since
        self._pending: list[str] = []  # channels to subscribe, in order
        self._draining = False

    # -- used by streams ------------------------------------------------------------------

    def add(self, channels: tuple[str, ...]) -> tuple[Subscription, list[threading.Event]]:
        """Add a subscription to `channels`; return it and, for each channel, the event set
        when Redis confirms it. A channel no stream wanted yet waits to be subscribed."""
        subscription = Subscription(channels)
        waits = []
        with self._lock:
            if self._draining:
                raise Draining
            self._subscriptions.add(subscription)
            for channel in channels:
                self._listeners.setdefault(channel, set()).add(subscription)
                self._idle_since.pop(channel, None)
                confirmed = self._confirmed.get(channel)
                if confirmed is None:
                    confirmed = self._confirmed[channel] = threading.Event()
                    self._pending.append(channel)
                waits.append(confirmed)
        return subscription, waits

    def release(self, subscription: Subscription) -> None:
        """Stop delivering to `subscription`; a channel left without streams becomes idle."""
        with self._lock:
            self._subscriptions.discard(subscription)
            for channel in subscription.channels:
                listeners = self._listeners.get(channel, set())
                listeners.discard(subscription)
                if not listeners:
                    self._idle_since[channel] = time.monotonic()

    def drain(self) -> None:
        """Tell every stream to close now (the process is stopping); refuse new ones."""
        with self._lock:
            self._draining = True
            subscriptions = list(self._subscriptions)
        for subscription in subscriptions:
            subscription.deliver(DRAIN)

    @property
    def stream_count(self) -> int:
        with self._lock:
            return len(self._subscriptions)

    # -- used by the hub's thread ---------------------------------------------------------

    def deliver(self, channel: str, payloads: list[Published]) -> None:
        """Hand messages published on `channel` to every stream on it, in order."""
        with self._lock:
            listeners = list(self._listeners.get(channel, ()))
        for subscription in listeners:
            subscription.deliver_all(payloads)

    def confirmed(self, channel: str) -> None:
        """Redis confirmed a subscription: its waiting streams go on, and every stream on
        it refills from the logs (anything published while unsubscribed is lost)."""
        with self._lock:
            confirmed = self._confirmed.get(channel)
            listeners = list(self._listeners.get(channel, ()))
        if confirmed is not None:
            confirmed.set()
        for subscription in listeners:
            subscription.deliver(REFILL)

    def tick(self) -> None:
        """Deliver TICK to every stream: its clock for pings and idle checks."""
        with self._lock:
            subscriptions = list(self._subscriptions)
        for subscription in subscriptions:
            subscription.deliver(TICK)

    def wanted(self, channel: str) -> bool:
        with self._lock:
            return channel in self._confirmed

    def requeue(self, channels: set[str]) -> None:
        """These channels were cut: the wanted ones wait to be subscribed (and confirmed)
        again."""
        with self._lock:
            again = [channel for channel in channels if channel in self._confirmed]
            for channel in again:
                self._confirmed[channel].clear()
            self._pending.extend(again)

    def take_pending(self) -> list[str]:
        """The channels to subscribe now (each once, still wanted)."""
        with self._lock:
            channels = [c for c in dict.fromkeys(self._pending) if c in self._confirmed]
            self._pending = []
        return channels

    def put_back(self, channels: list[str]) -> None:
        """Channels that could not be subscribed yet: first in line next time."""
        with self._lock:
            self._pending[:0] = channels

    def has_pending(self) -> bool:
        return bool(self._pending)

    def take_idle(self, delay: float) -> list[str]:
        """The channels no stream has wanted for `delay` seconds, forgotten now."""
        now = time.monotonic()
        with self._lock:
            idle = [channel for channel, since in self._idle_since.items() if now - since >= delay]
            for channel in idle:
                del self._idle_since[channel]
                del self._confirmed[channel]
                self._listeners.pop(channel, None)
        return idle
