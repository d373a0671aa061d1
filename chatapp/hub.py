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
from chatapp.pubsub_links import RECONNECT_DELAY, Backoff, Connector, Link, Routes
from chatapp.subscription import Subscription
from chatapp.wakeup import Wakeup

log = logging.getLogger(__name__)

SLOT_MAP = "the cluster's slot map"  # retried like a server when it cannot be read
# Messages read before they are handed out: all that are waiting, up to this many. A
# channel's messages among them go to its streams together (one write each).
READ_BATCH = 1000


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
        self._wakeup = Wakeup()
        self._links: dict[str, Link] = {}  # by server; only the hub's thread touches these
        self._retry = Backoff()  # servers (and the slot map) pausing after a failure
        self._connector = Connector(routes, self._wake)  # a server's first connection
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
        self._wakeup.wake()

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
            if self._connector.connecting:  # not on every message: most have none to adopt
                self._adopt_connections()
            self._subscribe_pending()
            self._unsubscribe_idle()
            self._check_health()
            self._tick()
            if self._read():
                # What it read is handed out: the streams it woke (those it did not write
                # to itself) run before it reads more, or a hub that always finds more
                # would keep them waiting for seconds.
                time.sleep(0)  # under gevent: to the back of the loop's queue
            else:
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
        self._retry.failed(server)
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
        if self._retry.pausing(SLOT_MAP, now):
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
        self._retry.worked(SLOT_MAP)
        waiting: list[str] = []
        for server, mine in by_server.items():
            if self._retry.pausing(server, now) or server in self._connector.connecting:
                waiting += mine
                continue
            link = self._links.get(server)
            if link is None:
                self._connector.connect(server, mine)
                continue
            with self._guard(server):
                link.subscribe(mine)
        return waiting

    def _adopt_connections(self) -> None:
        """Take over the links that helper threads have connected (or failed to)."""
        for server, link, error in self._connector.finished():
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
        """Dispatch what each connection has ready; False if none had any."""
        read = False
        for server, link in list(self._links.items()):
            with self._guard(server):
                messages = link.ready_messages(READ_BATCH)
                read = read or bool(messages)
                self._dispatch_all(server, link, messages)
        return read

    def _wait(self, timeout: float) -> None:
        """Sleep until Redis sends something, a stream asks for something, or `timeout`."""
        sockets = [link.fileno() for link in self._links.values()]
        self._wakeup.sleep([fileno for fileno in sockets if fileno is not None], timeout)

    def _dispatch_all(self, server: str, link: Link, messages: list[dict[str, Any]]) -> None:
        """Hand out messages read together: each channel's published ones together, in
        order (a hub running behind then costs a stream one write for many), and anything
        else after what came before it."""
        published: dict[str, list[contract.Published]] = {}
        for message in messages:
            channel = message.get("channel")
            if message["type"] in ("message", "smessage") and isinstance(channel, str):
                payload = contract.decode(message["data"])  # once, for all its streams
                if payload is not None:
                    published.setdefault(channel, []).append(payload)
            else:
                self._deliver(published)
                published = {}
                self._dispatch(server, link, message)
        self._deliver(published)

    def _deliver(self, published: dict[str, list[contract.Published]]) -> None:
        for channel, payloads in published.items():
            self._table.deliver(channel, payloads)

    def _dispatch(self, server: str, link: Link, message: dict[str, Any]) -> None:
        kind = message["type"]
        channel = message.get("channel")
        if not isinstance(channel, str):
            return
        if kind in ("subscribe", "ssubscribe"):
            self._retry.worked(server)  # the server is back: the next cut starts afresh
            self._table.confirmed(channel)
        elif kind in ("unsubscribe", "sunsubscribe"):
            if link.confirms_our_unsubscribe(channel) or channel not in link.channels:
                return
            # Not asked for: the channel's slot moved to another shard. Follow it there.
            log.info("hub: %s moved to another shard; subscribing there", channel)
            self.reconnects += 1
            self._moved(link, {channel})
