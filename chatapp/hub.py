"""The per-process pub/sub hub: one Redis subscription connection for all of a process's streams.

A PubSub object is not safe to share, so one thread (a greenlet under gunicorn's gevent
worker) owns it and does all its I/O; streams talk to the hub through a lock-protected
table and a wake-up pipe. Channels are reference-counted and unsubscribed after a short
delay, so a viewer's refresh does not churn subscriptions.

Redis does not replay what it published while a subscriber was away, so after every
(re)subscription the hub tells each stream on that channel to refill from the log, and it
pings on its own schedule: a half-open connection (Redis gone without a FIN) otherwise
stays silent forever, and redis-py's health check only sends, it never notices a missing reply.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import select
import threading
import time
from typing import Any

import redis
from redis.client import PubSub

log = logging.getLogger(__name__)

REFILL = "refill"  # delivered to streams when they may have missed messages
DRAIN = "drain"  # delivered to streams when the process shuts down: close, let them reconnect
# Delivered to every stream every `tick_seconds`: its clock for pings and idle checks. A
# stream then waits for its next item with no timeout of its own, and a timeout costs a
# timer for every wait, that is for every event every viewer receives.
TICK = "tick"
RECONNECT_DELAY = 0.5


class HubUnavailable(Exception):
    """The hub could not confirm a subscription in time (Redis down or overloaded)."""


class Subscription:
    """One stream's inbox for one or more channels: decoded live messages, or REFILL."""

    def __init__(self, channels: tuple[str, ...], size: int = 1024) -> None:
        self.channels = channels
        # SimpleQueue: the lightest queue there is (C in threads, gevent's own under the
        # gevent worker); the hub puts into thousands of these for every message.
        self._inbox: queue.SimpleQueue[dict[str, Any] | str] = queue.SimpleQueue()
        self._size = size
        self.overflowed = False  # set when the stream fell behind: it reads the log instead
        self.draining = False  # set when the process stops: never lost in a full inbox

    def deliver(self, item: dict[str, Any] | str) -> None:
        if item == DRAIN:
            self.draining = True
        if self._inbox.qsize() >= self._size:
            self.overflowed = True  # the stream is busy with the rest: it will see this
        else:
            self._inbox.put(item)

    def get(self, timeout: float | None = None) -> dict[str, Any] | str | None:
        """Return DRAIN once the process stops, the next item, REFILL if the inbox
        overflowed, or None after `timeout` (streams wait without one: see TICK)."""
        flag = self._flag()
        if flag is not None:
            return flag
        try:
            return self._inbox.get(timeout=timeout)
        except queue.Empty:
            return None

    def ready(self, limit: int = 64) -> list[dict[str, Any] | str]:
        """Return what has been delivered already (at most `limit` items), without waiting."""
        items: list[dict[str, Any] | str] = []
        while len(items) < limit:
            flag = self._flag()
            if flag is not None:
                items.append(flag)
                break
            try:
                items.append(self._inbox.get_nowait())
            except queue.Empty:
                break
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


class Hub:
    """Owns the process's pub/sub connection and fans messages out to subscriptions."""

    def __init__(
        self,
        client: redis.Redis,
        unsubscribe_delay: float = 5.0,
        ping_interval: float = 5.0,
        tick_seconds: float = 2.5,
    ) -> None:
        self._client = client
        self._pid = os.getpid()
        self._unsubscribe_delay = unsubscribe_delay
        self._ping_interval = ping_interval
        self._tick_seconds = tick_seconds
        self._last_tick = time.monotonic()
        self._lock = threading.Lock()
        self._listeners: dict[str, set[Subscription]] = {}
        self._subscriptions: set[Subscription] = set()  # every stream's, once
        self._confirmed: dict[str, threading.Event] = {}
        self._idle_since: dict[str, float] = {}
        self._pending: list[str] = []  # channels to subscribe, in order
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)  # a full pipe must never block the process
        self._pubsub: PubSub = client.pubsub()
        self._stopping = False
        self._draining = False
        self._last_reply = time.monotonic()
        self._last_ping = time.monotonic()
        self.reconnects = 0
        self._thread = threading.Thread(target=self._run, name="chatapp-hub", daemon=True)

    # -- used by streams (any thread or greenlet) -----------------------------------------

    def belongs_to_this_process(self) -> bool:
        return os.getpid() == self._pid

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop the hub; its streams are told to close (they wait for it with no timeout)."""
        self._stopping = True
        self._wake()
        self.drain()

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

    def subscribe(self, *channels: str, timeout: float = 5.0) -> Subscription:
        """Return one subscription to `channels` once Redis has confirmed each of them, or
        raise HubUnavailable."""
        subscription = Subscription(channels)
        waits = []
        with self._lock:
            if self._draining:
                raise HubUnavailable("this process is shutting down")
            self._subscriptions.add(subscription)
            for channel in channels:
                self._listeners.setdefault(channel, set()).add(subscription)
                self._idle_since.pop(channel, None)
                confirmed = self._confirmed.get(channel)
                if confirmed is None:
                    confirmed = self._confirmed[channel] = threading.Event()
                    self._pending.append(channel)
                waits.append(confirmed)
        self._wake()
        deadline = time.monotonic() + timeout
        for channel, confirmed in zip(channels, waits, strict=True):
            if not confirmed.wait(max(0.0, deadline - time.monotonic())):
                self.release(subscription)
                raise HubUnavailable(f"channel {channel} not confirmed within {timeout}s")
        return subscription

    def release(self, subscription: Subscription) -> None:
        """Stop delivering to `subscription`; a channel goes after the unsubscribe delay."""
        with self._lock:
            self._subscriptions.discard(subscription)
            for channel in subscription.channels:
                listeners = self._listeners.get(channel, set())
                listeners.discard(subscription)
                if not listeners:
                    self._idle_since[channel] = time.monotonic()

    def _wake(self) -> None:
        try:
            os.write(self._wake_write, b"x")
        except BlockingIOError:
            pass  # the pipe is full: the hub is awake already

    # -- the owner thread ---------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        try:
            while not self._stopping:
                try:
                    self._serve()
                except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                    log.warning("hub: pub/sub connection lost (%s); reconnecting", exc)
                except Exception:
                    # Whatever went wrong (an ACL error, a redis-py bug), the process's
                    # streams depend on this thread: log it and start over rather than die.
                    log.exception("hub: unexpected error; starting over")
                else:
                    return
                try:
                    self._start_over()
                except Exception:
                    log.exception("hub: could not start over; trying again")
                self._tick()  # streams keep their clock while Redis is away (and find out)
                time.sleep(RECONNECT_DELAY)
        finally:
            # Streams wait for this thread's ticks with no timer of their own: if it ends
            # for any reason, tell them to close (and reconnect, to a new hub).
            self.drain()
            try:
                self._pubsub.reset()  # and leave Redis's list of subscribers now
            except (redis.RedisError, OSError):
                pass

    def _serve(self) -> None:
        while not self._stopping:
            self._subscribe_pending()
            self._unsubscribe_idle()
            self._check_health()
            self._tick()
            message = self._pubsub.get_message(timeout=0) if self._pubsub.subscribed else None
            if message is not None:
                self._last_reply = time.monotonic()
                self._dispatch(message)
                continue
            interval = min(self._ping_interval / 2, self._unsubscribe_delay / 2, self._tick_seconds)
            self._wait(timeout=interval)

    def _tick(self) -> None:
        now = time.monotonic()
        if now - self._last_tick < self._tick_seconds:
            return
        self._last_tick = now
        with self._lock:
            subscriptions = list(self._subscriptions)
        for subscription in subscriptions:
            subscription.deliver(TICK)

    def _subscribe_pending(self) -> None:
        with self._lock:
            channels, self._pending = self._pending, []
        if channels:
            self._pubsub.subscribe(*channels)
            self._last_reply = time.monotonic()

    def _unsubscribe_idle(self) -> None:
        now = time.monotonic()
        with self._lock:
            idle = [
                channel
                for channel, since in self._idle_since.items()
                if now - since >= self._unsubscribe_delay
            ]
            for channel in idle:
                del self._idle_since[channel]
                del self._confirmed[channel]
                self._listeners.pop(channel, None)
        if idle:
            self._pubsub.unsubscribe(*idle)

    def _check_health(self) -> None:
        if not self._pubsub.subscribed:
            return
        now = time.monotonic()
        if now - self._last_reply > 3 * self._ping_interval:
            raise redis.ConnectionError("no reply from Redis to the hub's pings")
        if now - self._last_ping >= self._ping_interval:
            self._pubsub.ping()
            self._last_ping = now

    def _wait(self, timeout: float) -> None:
        """Sleep until Redis sends something, a stream asks for something, or `timeout`.

        poll(), not select(): a process holding a thousand viewers has sockets numbered
        past select()'s limit of 1024."""
        watched = select.poll()
        watched.register(self._wake_read, select.POLLIN)
        connection = self._pubsub.connection
        sock = getattr(connection, "_sock", None) if self._pubsub.subscribed else None
        if sock is not None:
            watched.register(sock.fileno(), select.POLLIN)
        readable = [fd for fd, _ in watched.poll(timeout * 1000)]
        if self._wake_read in readable:
            try:
                while os.read(self._wake_read, 4096):
                    pass
            except BlockingIOError:
                pass

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        channel = message.get("channel")
        if kind == "subscribe" and isinstance(channel, str):
            with self._lock:
                confirmed = self._confirmed.get(channel)
                listeners = list(self._listeners.get(channel, ()))
            if confirmed is not None:
                confirmed.set()
            for subscription in listeners:  # anything published while unsubscribed is lost
                subscription.deliver(REFILL)
        elif kind == "message" and isinstance(channel, str):
            try:
                payload = json.loads(message["data"])
            except ValueError:
                log.warning("hub: ignored a malformed message on %s", channel)
                return
            with self._lock:
                listeners = list(self._listeners.get(channel, ()))
            for subscription in listeners:
                subscription.deliver(payload)

    def _start_over(self) -> None:
        """Drop the connection; every channel that still has streams is subscribed again."""
        self.reconnects += 1
        with self._lock:
            for event in self._confirmed.values():
                event.clear()
            self._pending = list(self._confirmed)
        try:
            self._pubsub.reset()
        except (redis.ConnectionError, OSError):
            pass
        self._pubsub = self._client.pubsub()
        self._last_reply = self._last_ping = time.monotonic()
