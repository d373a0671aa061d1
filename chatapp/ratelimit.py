"""Rate limits (Flask-Limiter), counted in the app's own Redis so every process shares them.

Limits apply to logging in, signing up, creating chats and sending messages. The SSE
endpoint has none: browsers reconnect to it on their own, and a limit would break resuming.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask, Response, current_app, request
from flask_limiter import Limiter
from redis.connection import SSLConnection, parse_url

from chatapp.connections import node_address, split_cluster_url
from chatapp.owner import current_user

# Counters live under this prefix, beside (not inside) the chat data.
KEY_PREFIX = "chatapp-limits"
F = TypeVar("F", bound=Callable[..., Any])


def per_address() -> str:
    """The client's address (the proxy's view of it when TRUSTED_PROXIES is set). An IPv6
    client counts by its /64: one such network is one subscriber, who has all of it."""
    address = request.remote_addr or "unknown"
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return str(parsed)


def per_user() -> str:
    user = current_user()
    return f"user:{user.id}" if user else f"address:{per_address()}"


def done(response: Response) -> bool:
    """Whether a request counts against a user's limit: one that did what it asked. A
    refused one (a bad form, a missing chat, a busy chat, a cap) changed nothing, so
    costs nothing; logins count every try, against guessing."""
    return response.status_code < 400


limiter = Limiter(key_func=per_address, key_prefix=KEY_PREFIX, headers_enabled=True)

# Counted on the way in, refused or not, shared by sending, new chats, renames and
# regenerations: their own limits count only what was done (`done`), and so are checked
# before and counted after, which a burst of simultaneous requests would slip through.
every_action_counts = limiter.shared_limit(
    lambda: current_app.config["RATE_LIMIT_ACTIONS"],
    scope="user actions",
    key_func=per_user,
    error_message="You are doing that too fast. Wait a moment, then try again.",
)


def counts_as_sending(view: F) -> F:
    """The limits of what starts an answer (a send, an edit, a regeneration): the user's
    sends (only what was done counts) and all their actions."""
    limited = limiter.limit(
        lambda: current_app.config["RATE_LIMIT_SEND"],
        key_func=per_user,
        deduct_when=done,
        error_message="You are sending messages too fast. Wait a moment, then send again.",
    )(view)
    return every_action_counts(limited)  # type: ignore[return-value]


def init_app(app: Flask) -> None:
    if app.config["REDIS_CLUSTER"]:
        uri, options = cluster_storage(app.config["REDIS_URL"], app.config["REDIS_MAX_CONNECTIONS"])
        app.config["RATELIMIT_STORAGE_URI"] = uri
        app.config["RATELIMIT_STORAGE_OPTIONS"] = options
    else:
        # Share the app's connection pool: it speaks to a unix socket or TCP alike, which a
        # storage URI alone cannot say for every Redis URL the app accepts.
        app.config["RATELIMIT_STORAGE_URI"] = "redis://"
        app.config["RATELIMIT_STORAGE_OPTIONS"] = {
            "connection_pool": app.extensions["redis"].connection_pool
        }
    # The one Limiter merges every app's storage options into its own: start afresh, or an
    # earlier app's (the tests make many in one process) would reach this one's storage.
    limiter._storage_options = {}
    limiter.init_app(app)


def cluster_storage(url: str, max_connections: int) -> tuple[str, dict[str, Any]]:
    """Return the limits library's cluster storage URI (each counter is one key, on its own
    slot) and its options: the node, credentials and TLS settings of `url` as redis-py reads
    them (the library's own URI parser would keep a password percent-encoded)."""
    first, nodes = split_cluster_url(url)
    options: dict[str, Any] = parse_url(first)
    for name in ("host", "port", "db"):
        options.pop(name, None)
    if options.pop("connection_class", None) is SSLConnection:
        options["ssl"] = True
    options.setdefault("socket_connect_timeout", 5)
    options.setdefault("socket_timeout", 10)
    options.setdefault("max_connections", max_connections)
    return "redis+cluster://" + ",".join(node_address(*node) for node in nodes), options
