"""The per-process pub/sub hub: one Redis subscription connection (per shard) for all of a
process's streams.

A PubSub object is not safe to share, so one thread (a greenlet under gunicorn's gevent
worker) owns it and does all its I/O; streams talk to the hub through a lock-protected
table (fanout.py) and a wake-up pipe. Channels are reference-counted and unsubscribed after a short
delay, so a viewer's refresh does not churn subscriptions.

Redis does not replay what it published while a subscriber was away, so after every
(re)subscription the hub tells each stream on that channel to refill from the log, and it
pings on its own schedule: a half-open connection (Redis gone without a FIN) otherwise
stays silent forever, and redis-py's health check only sends, it never notices a missing reply.

On a Redis Cluster, channels are sharded (SSUBSCRIBE): a channel lives on the shard that holds
its slot, and the hub keeps one connection per shard it needs. A shard that fails, or a slot
that moves (the shard then unsubscribes its channels), is a cut like any other: those
channels are subscribed again where they now live, and their streams refill from the log.
"""

from __future__ import annotations

import logging
import os
import queue
import select
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from redis.crc import key_slot
from redis.exceptions import AskError

from chatapp import contract
from chatapp.fanout import Draining, FanOut
from chatapp.pubsub_links import Link, Routes
from chatapp.subscription import Subscription

log = logging.getLogger(__name__)

RECONNECT_DELAY = 0.5  # after a cut; doubled after each failed try, up to the next
MAX_RECONNECT_DELAY = 2.0  # a failover takes a few seconds: look again soon
SLOT_MAP = "the cluster's slot map"  # retried like a server when it cannot be read


class HubUnavailable(Exception):
    """The hub could not confirm a subscription in time (Redis down or overloaded)."""


class Hub:
    """Owns the process's pub/sub connections and fans messages out to subscriptions."""

    def __init__(
        self,
        routes: Routes,
        unsubscribe_delay: float = 5.0,
        ping_interval: float = 5.0,
        tick_seconds: float = 2.5,
    ) -> None:
        self._routes = routes
        self._pid = os.getpid()
        self._unsubscribe_delay = unsubscribe_delay
        self._ping_interval = ping_interval
        self._tick_seconds = tick_seconds
        self._last_tick = time.monotonic()
        self._table = FanOut()
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)  # a full pipe must never block the process
        self._links: dict[str, Link] = {}  # by server; only the hub's thread touches these
        self._retry: dict[str, tuple[float, float]] = {}  # server -> (when, delay) after a cut
        # A server's first connection is made by a helper thread (see _connect), which hands
        # the new link over here when it has sent its first subscribe, or failed.
        self._connecting: set[str] = set()
        self._connected: queue.SimpleQueue[tuple[str, Link, Exception | None]] = queue.SimpleQueue()
        self._refresh_needed = False  # read the slot map before routing channels again
        self._stopping = False
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
        self._table.drain()

    @property
    def stream_count(self) -> int:
        return self._table.stream_count

    def subscribe(self, *channels: str, timeout: float = 5.0) -> Subscription:
        """Return one subscription to `channels` once Redis has confirmed each of them, or
        raise HubUnavailable."""
        try:
            subscription, waits = self._table.add(channels)
        except Draining:
            raise HubUnavailable("this process is shutting down") from None
        self._wake()
        deadline = time.monotonic() + timeout
        for channel, confirmed in zip(channels, waits, strict=True):
            if not confirmed.wait(max(0.0, deadline - time.monotonic())):
                self.release(subscription)
                raise HubUnavailable(f"channel {channel} not confirmed within {timeout}s")
        return subscription

    def release(self, subscription: Subscription) -> None:
        """Stop delivering to `subscription`; a channel goes after the unsubscribe delay."""
        self._table.release(subscription)

    def _wake(self) -> None:
        try:
            os.write(self._wake_write, b"x")
        except BlockingIOError:
            pass  # the pipe is full: the hub is awake already

    # -- the owner thread ---------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def servers(self) -> list[str]:
        """The servers the hub holds a pub/sub connection to (one per shard in use)."""
        return list(self._links)

    def _run(self) -> None:
        try:
            while not self._stopping:
                try:
                    self._serve()
                except Exception:
                    # Whatever went wrong (a redis-py bug, a surprise), the process's streams
                    # depend on this thread: log it and start over rather than die.
                    log.exception("hub: unexpected error; starting over")
                else:
                    return
                for server in list(self._links):
                    self._cut(server, "starting over")
                self._tick()  # streams keep their clock while Redis is away (and find out)
                time.sleep(RECONNECT_DELAY)
        finally:
            # Streams wait for this thread's ticks with no timer of their own: if it ends
            # for any reason, tell them to close (and reconnect, to a new hub).
            self.drain()
            self._adopt_connections()
            for link in self._links.values():
                link.close()

    def _serve(self) -> None:
        interval = min(self._ping_interval / 2, self._unsubscribe_delay / 2, self._tick_seconds)
        while not self._stopping:
            if self._connecting:  # not on every message: most loops have none to adopt
                self._adopt_connections()
            self._subscribe_pending()
            self._unsubscribe_idle()
            self._check_health()
            self._tick()
            if not self._read():
                # Channels waiting to be subscribed again (after a cut) are retried soon.
                pending = self._table.has_pending()
                self._wait(timeout=min(interval, RECONNECT_DELAY) if pending else interval)

    @contextmanager
    def _guard(self, server: str) -> Iterator[None]:
        """Treat a Redis error on one server's connection as a cut of that connection only."""
        try:
            yield
        except AskError as exc:  # MOVED (or ASK): the slot map was old for one slot
            self._redirected(server, exc.slot_id)
        except (redis.RedisError, OSError) as exc:
            self._cut(server, exc)

    def _redirected(self, server: str, slot: int) -> None:
        """A server said a slot is not its own: follow that slot's channels only."""
        log.info("hub: slot %s is not on %s; subscribing to its channels again", slot, server)
        link = self._links.get(server)
        if link is not None:
            self._moved(link, {c for c in link.channels if key_slot(c.encode()) == slot})

    def _moved(self, link: Link, channels: set[str]) -> None:
        """These channels live on another server now: take them off `link`, read the slot
        map again and subscribe to them where it says (their streams refill then)."""
        link.channels -= channels
        self._refresh_needed = True
        self._table.requeue(channels)

    def _cut(self, server: str, reason: object) -> None:
        """Drop a server's connection; its channels that still have streams are subscribed
        again (where they live now, after a pause that grows while the server stays away),
        and those streams refill when Redis confirms."""
        log.warning("hub: pub/sub connection to %s lost (%s); subscribing again", server, reason)
        self.reconnects += 1
        link = self._links.pop(server, None)
        if link is not None:
            link.close()
            self._table.requeue(link.channels)
        self._back_off(server)

    def _back_off(self, server: str) -> None:
        _, delay = self._retry.get(server, (0.0, RECONNECT_DELAY / 2))
        delay = min(delay * 2, MAX_RECONNECT_DELAY)
        self._retry[server] = (time.monotonic() + delay, delay)
        self._refresh_needed = True  # the server may be gone for good: ask where slots are

    def _tick(self) -> None:
        now = time.monotonic()
        if now - self._last_tick < self._tick_seconds:
            return
        self._last_tick = now
        self._table.tick()

    def _subscribe_pending(self) -> None:
        channels = self._table.take_pending()
        if not channels:
            return
        waiting = self._route_and_subscribe(channels)
        if waiting:
            self._table.put_back(waiting)

    def _route_and_subscribe(self, channels: list[str]) -> list[str]:
        """Subscribe each channel on its server; return those that must wait (their server,
        or the slot map, is pausing after a failure)."""
        now = time.monotonic()
        if self._retry.get(SLOT_MAP, (0.0, 0.0))[0] > now:
            return channels
        try:
            if self._refresh_needed:
                self._routes.refresh()  # once for every channel that waits
                self._refresh_needed = False
            by_server: dict[str, list[str]] = {}
            for channel in channels:
                by_server.setdefault(self._routes.server_of(channel), []).append(channel)
        except Exception as exc:  # redis-py's cluster errors are not all RedisErrors
            log.warning("hub: could not read where channels live (%s); trying again", exc)
            self._back_off(SLOT_MAP)
            return channels
        self._retry.pop(SLOT_MAP, None)
        waiting: list[str] = []
        for server, mine in by_server.items():
            if self._retry.get(server, (0.0, 0.0))[0] > now or server in self._connecting:
                waiting += mine
                continue
            link = self._links.get(server)
            if link is None:
                self._connect(server, mine)
                continue
            with self._guard(server):
                link.subscribe(mine)
        return waiting

    def _connect(self, server: str, channels: list[str]) -> None:
        """Connect to a server and subscribe to its first channels in a helper thread: a
        server that does not answer (its packets dropped) would otherwise hold this thread,
        and every other server's messages, for its whole connect timeout."""
        link = Link(self._routes.pubsub(server), self._routes.sharded)
        self._connecting.add(server)

        def connect() -> None:
            try:
                link.subscribe(channels)
            except Exception as exc:
                self._connected.put((server, link, exc))
            else:
                self._connected.put((server, link, None))
            self._wake()

        threading.Thread(target=connect, name="chatapp-hub-connect", daemon=True).start()

    def _adopt_connections(self) -> None:
        """Take over the links that helper threads have connected (or failed to)."""
        while True:
            try:
                server, link, error = self._connected.get_nowait()
            except queue.Empty:
                return
            self._connecting.discard(server)
            if self._stopping:
                link.close()
                continue
            self._links[server] = link
            if error is not None:
                self._cut(server, error)  # it closes the link and requeues its channels
                continue
            # A stream may have left while its channel was being subscribed.
            gone = [channel for channel in link.channels if not self._table.wanted(channel)]
            if gone:
                with self._guard(server):
                    link.unsubscribe(gone)

    def _unsubscribe_idle(self) -> None:
        idle = self._table.take_idle(self._unsubscribe_delay)
        if not idle:
            return
        for server, link in list(self._links.items()):
            mine = [channel for channel in idle if channel in link.channels]
            if mine:
                with self._guard(server):
                    link.unsubscribe(mine)

    def _check_health(self) -> None:
        for server, link in list(self._links.items()):
            with self._guard(server):
                link.check_health(self._ping_interval)

    def _read(self) -> bool:
        """Dispatch what each connection has ready (a message each); False if none had any."""
        read = False
        for server, link in list(self._links.items()):
            with self._guard(server):
                message = link.next_message()
                if message is not None:
                    read = True
                    self._dispatch(server, link, message)
        return read

    def _wait(self, timeout: float) -> None:
        """Sleep until Redis sends something, a stream asks for something, or `timeout`.

        poll(), not select(): a process holding a thousand viewers has sockets numbered
        past select()'s limit of 1024."""
        watched = select.poll()
        watched.register(self._wake_read, select.POLLIN)
        for link in self._links.values():
            fileno = link.fileno()
            if fileno is not None:
                watched.register(fileno, select.POLLIN)
        readable = [fd for fd, _ in watched.poll(timeout * 1000)]
        if self._wake_read in readable:
            try:
                while os.read(self._wake_read, 4096):
                    pass
            except BlockingIOError:
                pass

    def _dispatch(self, server: str, link: Link, message: dict[str, Any]) -> None:
        kind = message["type"]
        channel = message.get("channel")
        if not isinstance(channel, str):
            return
        if kind in ("subscribe", "ssubscribe"):
            self._retry.pop(server, None)  # the server is back: the next cut starts afresh
            self._table.confirmed(channel)
        elif kind in ("message", "smessage"):
            payload = contract.decode(message["data"])  # once, for all its streams
            if payload is not None:
                self._table.deliver(channel, payload)
        elif kind in ("unsubscribe", "sunsubscribe"):
            if link.confirms_our_unsubscribe(channel) or channel not in link.channels:
                return
            # Not asked for: the channel's slot moved to another shard. Follow it there.
            log.info("hub: %s moved to another shard; subscribing there", channel)
            self.reconnects += 1
            self._moved(link, {channel})
