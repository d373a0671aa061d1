"""Per-process clients, kept in `app.extensions` behind one accessor each."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit, urlunsplit

import redis
from flask import Flask, current_app
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import ClusterDownError, SlotNotCoveredError, TryAgainError
from redis.retry import Retry
from rq import Queue

if TYPE_CHECKING:
    from chatapp.hub import Hub


_hub_lock = threading.Lock()

# Redis is away for now: restarting, or a cluster failing over, resharding or down until a
# shard is back. Whoever meets one of these tries again later (or asks the client to).
UNAVAILABLE: tuple[type[Exception], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    ClusterDownError,  # CLUSTERDOWN, and MASTERDOWN
    TryAgainError,  # a multi-key command during a slot's migration
    SlotNotCoveredError,
)


def init_app(app: Flask) -> None:
    """Create the process's Redis clients; the hub starts on first use (after any fork)."""
    config = app.config
    if config["REDIS_CLUSTER"] and not config["REDIS_QUEUE_URL"]:
        raise ValueError(
            "REDIS_CLUSTER is on, so REDIS_QUEUE_URL must name a standalone Redis for the "
            "answer queue: RQ does not run on a Redis Cluster"
        )
    app.extensions["redis"] = make_redis(config["REDIS_URL"], config)
    queue_url = config["REDIS_QUEUE_URL"] or config["REDIS_URL"]
    # RQ stores pickled bytes: its client must not decode responses. Its pool waits for a
    # free connection (redis-py's default raises past 100, which a busy worker reaches).
    queue_pool = redis.BlockingConnectionPool.from_url(
        queue_url,
        max_connections=config["REDIS_MAX_CONNECTIONS"],
        timeout=20,
        socket_connect_timeout=5,
        socket_timeout=30,
    )
    queue_redis = redis.Redis(connection_pool=queue_pool)
    app.extensions["queue"] = Queue(config["QUEUE_NAME"], connection=queue_redis)
    # Titles and other short jobs: a lane of their own, so they never wait behind answers.
    app.extensions["small_queue"] = Queue(f"{config['QUEUE_NAME']}-small", connection=queue_redis)
    app.extensions["hub"] = None


def share_one_connection(app: Flask) -> None:
    """In a gevent web process, send every request's and stream's commands through one
    shared connection instead of a pool (one per master on a Cluster)."""
    from gevent import monkey

    if monkey.is_module_patched("socket"):
        config = app.config
        app.extensions["shared_redis"] = make_shared_redis(config["REDIS_URL"], config)


def make_shared_redis(url: str, config: Mapping[str, Any]) -> redis.Redis:
    """Return a client whose commands, from any greenlet, share one connection
    (chatapp/shared_redis.py), or one per master on a Cluster (chatapp/shared_cluster.py)."""
    from chatapp.shared_cluster import SharedConnectionCluster
    from chatapp.shared_redis import SharedConnectionRedis

    options = redis_options(url)
    del options["max_connections"], options["timeout"]  # a pool's, not a connection's
    if not config["REDIS_CLUSTER"]:
        return SharedConnectionRedis(url, **options)

    def node_client(node: ClusterNode) -> SharedConnectionRedis:
        return SharedConnectionRedis(_same_credentials(url, node.host, node.port), **options)

    # Its pools (redis-py's own cluster code) serve only while the cluster changes shape.
    pooled = redis_options(url, config)
    return make_cluster_client(url, pooled, SharedConnectionCluster, node_client=node_client)


def make_redis(
    url: str, config: Mapping[str, Any] | None = None, **overrides: object
) -> redis.Redis:
    """Return a client on a blocking pool sized on purpose (not redis-py's default of 100)."""
    options = redis_options(url, config, **overrides)
    if (config or {}).get("REDIS_CLUSTER"):
        return make_cluster_client(url, options)
    pool = redis.BlockingConnectionPool.from_url(url, **options)
    return redis.Redis(connection_pool=pool)


def redis_options(
    url: str, config: Mapping[str, Any] | None = None, **overrides: object
) -> dict[str, object]:
    """The settings of every chat-data client: timeouts, keepalive, decoded replies."""
    max_connections = (config or {}).get("REDIS_MAX_CONNECTIONS", 50)
    options: dict[str, object] = {
        "max_connections": max_connections,
        "timeout": 20,  # wait this long for a free connection, then raise
        "decode_responses": True,
        "socket_connect_timeout": 5,
        "socket_timeout": 10,
        "socket_keepalive": True,
        "health_check_interval": 30,
    }
    if url.startswith("unix://"):
        del options["socket_keepalive"]  # TCP only
    options.update(overrides)
    return options


def make_cluster_client(
    url: str,
    options: dict[str, object],
    client_class: type[RedisCluster] = RedisCluster,
    **extra: Any,
) -> redis.Redis:
    """Return a Redis Cluster client (`url` names one node or several; it finds the rest
    from the first that answers), with a blocking pool of `max_connections` per node.

    Typed as redis.Redis: it takes the same commands, and the store's keys keep each
    script and transaction within one chat's slot."""
    options = {k: v for k, v in options.items() if k != "health_check_interval"}  # not taken
    first, nodes = split_cluster_url(url)
    cluster = client_class.from_url(
        first,
        startup_nodes=[ClusterNode(host, port) for host, port in nodes[1:]],
        connection_pool_class=redis.BlockingConnectionPool,
        **options,
        **extra,
    )
    return cast(redis.Redis, cluster)


def make_hub(url: str, cluster: bool = False, **options: float) -> Hub:
    """Return a (not yet started) hub, on connections of its own that never retry silently.

    redis-py's default retry would reconnect and resubscribe without telling anyone, and
    whatever was published meanwhile would be lost unnoticed; the hub must see every cut.
    """
    from chatapp.hub import Hub
    from chatapp.pubsub_links import ClusterShards, OneServer, Routes

    def pubsub_client(node_url: str) -> redis.Redis:
        # A short connect timeout: a shard that does not answer is tried again soon.
        retry = Retry(NoBackoff(), 0)
        return make_redis(node_url, max_connections=2, retry=retry, socket_connect_timeout=2)

    routes: Routes
    if cluster:
        slot_map = make_cluster_client(
            # Read by the hub's own thread: a node that stopped answering must not hold it.
            url,
            {"decode_responses": True, "socket_connect_timeout": 2, "socket_timeout": 5},
        )
        routes = ClusterShards(
            cast(RedisCluster, slot_map),
            lambda host, port: pubsub_client(_same_credentials(url, host, port)),
        )
    else:
        routes = OneServer(pubsub_client(url))
    return Hub(routes, **options)


def split_cluster_url(url: str) -> tuple[str, list[tuple[str, int]]]:
    """Split a cluster's REDIS_URL, which may name several nodes (`redis://a:7000,b:7000/0`,
    so that a process starts while one of them is down): return the URL with its first node
    alone, and every node's (host, port)."""
    hosts = urlsplit(url).netloc.rpartition("@")[2]
    nodes = []
    for address in hosts.split(","):
        if address.startswith("["):  # [IPv6]:port
            host, _, rest = address[1:].partition("]")
            port = rest.removeprefix(":")
        else:
            host, _, port = address.partition(":")
        nodes.append((host, int(port or 6379)))
    return _same_credentials(url, *nodes[0]), nodes


def _same_credentials(url: str, host: str, port: int) -> str:
    """Return `url` (scheme, user, password, options) pointed at another node."""
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    address = node_address(host, port)
    netloc = f"{credentials}@{address}" if credentials else address
    return urlunsplit(parts._replace(netloc=netloc))


def node_address(host: str, port: int) -> str:
    """Return `host:port`, an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def get_redis() -> redis.Redis:
    """Return the process's Redis client for chat data: in a web process its shared
    connection, where it has one; else the pooled client."""
    client: redis.Redis = (
        current_app.extensions.get("shared_redis") or current_app.extensions["redis"]
    )
    return client


def get_append_client() -> redis.Redis:
    """Return the client that answer jobs append through: the answer worker's batching one
    (chatapp/batching.py) where it made one, else the process's client."""
    client: redis.Redis = current_app.extensions.get("batched_redis") or get_redis()
    return client


def get_queue() -> Queue:
    """Return the RQ queue that answer jobs go to."""
    queue: Queue = current_app.extensions["queue"]
    return queue


def get_small_queue() -> Queue:
    """Return the RQ queue of short jobs (titles), which workers take beside answers."""
    queue: Queue = current_app.extensions["small_queue"]
    return queue


def hub_if_started() -> Hub | None:
    """Return this process's hub if it is running, without starting one."""
    hub: Hub | None = current_app.extensions["hub"]
    return hub if hub is not None and hub.belongs_to_this_process() and hub.alive else None


def get_hub() -> Hub:
    """Return this process's pub/sub hub, starting it on first use in this process."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    with _hub_lock:
        hub: Hub | None = app.extensions["hub"]
        if hub is None or not hub.belongs_to_this_process() or not hub.alive:
            if hub is not None and hub.belongs_to_this_process():
                hub.drain()  # its streams wait for its ticks: close them, they reconnect
            config = app.config
            # A stream's clock (see hub.TICK): fine enough for its pings and idle checks.
            tick = min(2.5, config["CHECK_SECONDS"] / 2, config["PING_SECONDS"] / 2)
            hub = make_hub(config["REDIS_URL"], config["REDIS_CLUSTER"], tick_seconds=tick)
            hub.start()
            app.extensions["hub"] = hub
    return hub
