"""The hub's pub/sub connections: where a channel lives (one Redis, or a Cluster's shard
that holds its slot) and the link to each server with the channels it holds there."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

import redis
from redis.client import PubSub
from redis.cluster import RedisCluster


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
