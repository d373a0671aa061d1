"""The hub's pub/sub connections: where a channel lives (one Redis, or a Cluster's shard
that holds its slot), the link to each server with the channels it holds there, and when a
server that failed is tried again."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import redis
from redis.client import PubSub
from redis.cluster import RedisCluster

RECONNECT_DELAY = 0.5  # after a cut; doubled after each failed try, up to the next
MAX_RECONNECT_DELAY = 2.0  # a failover takes a few seconds: look again soon


class Routes(Protocol):
    """Where a channel lives: which server to subscribe to it on, and how."""

    sharded: bool  # SSUBSCRIBE (a Cluster's shard channels) rather than SUBSCRIBE

    def server_of(self, channel: str) -> str: ...

    def pubsub(self, server: str) -> PubSub: ...

    def refresh(self) -> None: ...


class OneServer:
    """Every channel on one Redis server."""

    sharded = False

    def __init__(self, client: redis.Redis) -> None:
        self._client = client

    def server_of(self, channel: str) -> str:
        return "redis"

    def pubsub(self, server: str) -> PubSub:
        return self._client.pubsub()

    def refresh(self) -> None:
        pass


class ClusterShards:
    """A channel on the shard (master) that holds its slot, as the cluster's slot map says."""

    sharded = True

    def __init__(self, cluster: RedisCluster, node_client: Callable[[str, int], redis.Redis]):
        self._cluster = cluster
        self._node_client = node_client  # a client that never retries, for one node
        self._clients: dict[str, redis.Redis] = {}

    def server_of(self, channel: str) -> str:
        return str(self._cluster.get_node_from_key(channel).name)  # "host:port"

    def pubsub(self, server: str) -> PubSub:
        client = self._clients.get(server)
        if client is None:
            host, port = server.rsplit(":", 1)
            client = self._clients[server] = self._node_client(host, int(port))
        return client.pubsub()

    def refresh(self) -> None:
        """Read the slot map again (after a cut: a slot moved, or a master failed over)."""
        self._cluster.nodes_manager.initialize()


class Link:
    """The hub's pub/sub connection to one server, and the channels it holds there."""

    def __init__(self, pubsub: PubSub, sharded: bool) -> None:
        self.pubsub = pubsub
        self.sharded = sharded
        self.channels: set[str] = set()
        self.unsubscribing: dict[str, int] = {}  # our unsubscribes not yet confirmed
        self.last_reply = self.last_ping = time.monotonic()

    def subscribe(self, channels: list[str]) -> None:
        self.channels.update(channels)  # before sending: a cut then subscribes them again
        if self.sharded:  # one command per channel: a command's channels share one slot
            for channel in channels:
                self.pubsub.ssubscribe(channel)
        else:
            self.pubsub.subscribe(*channels)
        self.last_reply = time.monotonic()

    def unsubscribe(self, channels: list[str]) -> None:
        self.channels.difference_update(channels)
        for channel in channels:
            self.unsubscribing[channel] = self.unsubscribing.get(channel, 0) + 1
        if self.sharded:
            for channel in channels:
                self.pubsub.sunsubscribe(channel)
        else:
            self.pubsub.unsubscribe(*channels)

    def confirms_our_unsubscribe(self, channel: str) -> bool:
        """Whether an unsubscribe reply answers one of ours (else the server dropped it)."""
        count = self.unsubscribing.pop(channel, 0)
        if count > 1:
            self.unsubscribing[channel] = count - 1
        return count > 0

    def fileno(self) -> int | None:
        sock = getattr(self.pubsub.connection, "_sock", None) if self.pubsub.subscribed else None
        return sock.fileno() if sock is not None else None

    def next_message(self) -> dict[str, Any] | None:
        message = self.pubsub.get_message(timeout=0) if self.pubsub.subscribed else None
        if message is not None:
            self.last_reply = time.monotonic()
        return message

    def ready_messages(self, limit: int) -> list[dict[str, Any]]:
        """The messages that have arrived (at most `limit`), without waiting."""
        messages: list[dict[str, Any]] = []
        while len(messages) < limit:
            message = self.next_message()
            if message is None:
                break
            messages.append(message)
        return messages

    def check_health(self, ping_interval: float) -> None:
        """Ping now and then; raise if Redis stopped answering (a half-open connection)."""
        if not self.pubsub.subscribed:
            return
        now = time.monotonic()
        if now - self.last_reply > 3 * ping_interval:
            raise redis.ConnectionError("no reply from Redis to the hub's pings")
        if now - self.last_ping >= ping_interval:
            self.pubsub.ping()
            self.last_ping = now

    def close(self) -> None:
        try:
            self.pubsub.reset()  # and leave Redis's list of subscribers now
        except (redis.RedisError, OSError):
            pass


class Backoff:
    """When each server (or the slot map) that failed may be tried again: after a pause
    that doubles while it keeps failing, and starts afresh once it works."""

    def __init__(self) -> None:
        self._next: dict[str, tuple[float, float]] = {}  # name -> (when, pause)

    def failed(self, name: str) -> None:
        _, pause = self._next.get(name, (0.0, RECONNECT_DELAY / 2))
        pause = min(pause * 2, MAX_RECONNECT_DELAY)
        self._next[name] = (time.monotonic() + pause, pause)

    def pausing(self, name: str, now: float) -> bool:
        return name in self._next and self._next[name][0] > now

    def worked(self, name: str) -> None:
        self._next.pop(name, None)


class Connector:
    """Connects to a server and subscribes to its first channels in a helper thread: a
    server that does not answer (its packets dropped) would otherwise hold the hub's thread,
    and every other server's messages, for its whole connect timeout. The hub adopts each
    link when it is ready (`finished`), woken by `wake`."""

    def __init__(self, routes: Routes, wake: Callable[[], None]) -> None:
        self._routes = routes
        self._wake = wake
        self.connecting: set[str] = set()  # servers whose helper thread has not finished
        self._finished: queue.SimpleQueue[tuple[str, Link, Exception | None]] = queue.SimpleQueue()

    def connect(self, server: str, channels: list[str]) -> None:
        link = Link(self._routes.pubsub(server), self._routes.sharded)
        self.connecting.add(server)

        def connect() -> None:
            try:
                link.subscribe(channels)
            except Exception as exc:
                self._finished.put((server, link, exc))
            else:
                self._finished.put((server, link, None))
            self._wake()

        threading.Thread(target=connect, name="chatapp-hub-connect", daemon=True).start()

    def finished(self) -> Iterator[tuple[str, Link, Exception | None]]:
        """Each link whose helper thread has finished: connected, or failed (the error)."""
        while True:
            try:
                server, link, error = self._finished.get_nowait()
            except queue.Empty:
                return
            self.connecting.discard(server)
            yield server, link, error
