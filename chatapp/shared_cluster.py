"""The web process's Redis Cluster client: every greenlet's commands share one connection
per node.

The same idea as shared_redis.py, on a Cluster. redis-py's `RedisCluster` keeps a pool for
each node, and each command in flight holds one of its connections, so a crowd of viewers
took a connection each on every node their chats live on. Here a command with keys goes to
the master that holds its slot (redis-py's own routing: `determine_slot`, the client's slot
map) on that node's one pipelined connection (a `SharedConnectionRedis`).

Whatever that fast path cannot settle goes to redis-py's own cluster code, which owns the
hard cases:

- a reply that the slot moved or is moving (MOVED, ASK), that the cluster is down or busy
  (CLUSTERDOWN, TRYAGAIN), or a node that does not answer: the command is sent again by
  `RedisCluster.execute_command`, which follows the redirect and refreshes the slot map,
  so the next commands go straight to the new owner. Nothing was run by a refused command;
  a command whose connection failed may have run, and redis-py's own retry sends it again
  too (the store's scripts are safe to repeat: each checks what it changes);
- commands without keys, or for several nodes (SCRIPT LOAD, PING, INFO), and explicit
  target nodes.

So the pools stay, and are used only while the cluster changes shape. A pipeline goes out
as one call per node; a transaction must keep to one slot (the store's do: a chat's keys
share one).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ExecAbortError,
    RedisClusterException,
    TryAgainError,
)

from chatapp.shared_redis import SharedConnectionRedis, SharedPipeline

# Replies that say "not here, not now": redis-py's cluster code knows what to do with them.
_REROUTE = (AskError, ClusterDownError, TryAgainError)  # AskError: MOVED is one too
_CONNECTION = (redis.ConnectionError, redis.TimeoutError)
DOWN_SECONDS = 1.0  # after a node's connection failed, its commands go through redis-py


class SharedConnectionCluster(RedisCluster):
    """A Redis Cluster client whose keyed commands share one connection per master."""

    def __init__(
        self, *args: Any, node_client: Callable[[ClusterNode], SharedConnectionRedis], **kw: Any
    ) -> None:
        self._node_client = node_client
        self._shared: dict[str, SharedConnectionRedis] = {}  # by node name (host:port)
        self._down_until: dict[str, float] = {}  # nodes whose connection failed lately
        self._started = False  # redis-py sends its own commands while it starts
        super().__init__(*args, **kw)
        self._started = True

    def execute_command(self, *args: Any, **options: Any) -> Any:
        node = self._node_of(args, options)
        if node is None:
            return RedisCluster.execute_command(self, *args, **options)
        try:
            (reply,) = self._send(node, [(args, options)], transaction=False)
        except _CONNECTION:
            return RedisCluster.execute_command(self, *args, **options)
        if isinstance(reply, _REROUTE):
            return RedisCluster.execute_command(self, *args, **options)
        if isinstance(reply, Exception):
            raise reply
        return reply

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> Any:
        return SharedPipeline(self.run_pipeline, bool(transaction))  # one call per node

    def run_pipeline(self, commands: list[tuple[Any, Any]], transaction: bool) -> list[Any]:
        """Run a pipeline's commands, one call per node; return their replies in order."""
        nodes = [self._node_of(args, options) for args, options in commands]
        groups: dict[str, tuple[ClusterNode, list[int]]] = {}  # by name: the node, its places
        for place, node in enumerate(nodes):
            if node is not None:
                groups.setdefault(node.name, (node, []))[1].append(place)
        if None in nodes or (transaction and len(groups) > 1):
            return self._through_redis_py(commands, transaction)
        replies: list[Any] = [None] * len(commands)
        for node, places in groups.values():
            node_commands = [commands[place] for place in places]
            node_replies = self._run_on(node, node_commands, transaction)
            for place, reply in zip(places, node_replies, strict=True):
                replies[place] = reply
        return replies

    def _run_on(
        self, node: ClusterNode, commands: list[tuple[Any, Any]], transaction: bool
    ) -> list[Any]:
        try:
            replies = self._send(node, commands, transaction)
        except (*_CONNECTION, *_REROUTE, ExecAbortError):  # a transaction refused whole
            return self._through_redis_py(commands, transaction)
        if transaction and any(isinstance(reply, _REROUTE) for reply in replies):
            return self._through_redis_py(commands, transaction)
        return [
            self._again(args, options) if isinstance(reply, _REROUTE) else reply
            for reply, (args, options) in zip(replies, commands, strict=True)
        ]

    def _again(self, args: Any, options: Any) -> Any:
        """One command of a pipeline, refused where it went: through redis-py."""
        try:
            return RedisCluster.execute_command(self, *args, **options)
        except (redis.RedisError, RedisClusterException) as exc:
            return exc  # this command's reply: the others' stand (they ran)

    def _through_redis_py(self, commands: list[tuple[Any, Any]], transaction: bool) -> list[Any]:
        pipe = RedisCluster.pipeline(self, transaction=transaction)
        for args, options in commands:
            pipe.execute_command(*args, **options)
        replies: list[Any] = pipe.execute(raise_on_error=False)
        return replies

    def _send(
        self, node: ClusterNode, commands: list[tuple[Any, Any]], transaction: bool
    ) -> list[Any]:
        """Send on the node's shared connection once (redis-py retries, elsewhere if need
        be); a node that fails is left to redis-py for `DOWN_SECONDS`, so that callers do
        not each wait on it in turn while the cluster moves its slots elsewhere."""
        try:
            return self._shared_for(node)._run(commands, transaction, retry=False)
        except _CONNECTION:
            self._down_until[node.name] = time.monotonic() + DOWN_SECONDS
            raise

    def _node_of(self, args: tuple[Any, ...], options: dict[str, Any]) -> ClusterNode | None:
        """The master that holds the command's keys, or None for redis-py to decide."""
        if "target_nodes" in options or not self._started:
            return None
        if str(args[0]).upper() in self.command_flags:  # routed by a rule of redis-py's
            return None
        try:
            slot = self.determine_slot(*args)
        except Exception:  # no keys, keys in several slots, or a command redis-py routes
            return None  # by a policy of its own first (SCAN, whose cursor is no key)
        if slot is None:
            return None
        try:
            node: ClusterNode = self.nodes_manager.get_node_from_slot(slot)
        except RedisClusterException:  # a slot no master holds now (SlotNotCoveredError)
            return None
        if self._down_until.get(node.name, 0.0) > time.monotonic():
            return None
        return node

    def close(self) -> None:
        for shared in self._shared.values():
            shared.close()
        super().close()

    def _shared_for(self, node: ClusterNode) -> SharedConnectionRedis:
        shared = self._shared.get(node.name)
        if shared is None:
            shared = self._shared[node.name] = self._node_client(node)
        return shared
