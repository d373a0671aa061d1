"""Rate limits (Flask-Limiter), counted in the app's own Redis so every process shares them.

Limits apply to logging in, signing up, creating chats and sending messages. The SSE
endpoint has none: browsers reconnect to it on their own, and a limit would break resuming.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit, urlunsplit

from flask import Flask, request
from flask_limiter import Limiter

from chatapp.owner import current_user

# Counters live under this prefix, beside (not inside) the chat data.
KEY_PREFIX = "chatapp-limits"


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


limiter = Limiter(key_func=per_address, key_prefix=KEY_PREFIX, headers_enabled=True)


def init_app(app: Flask) -> None:
    if app.config["REDIS_CLUSTER"]:
        # The limits library's cluster storage: each counter is one key, on its own slot.
        url = urlsplit(app.config["REDIS_URL"])
        app.config["RATELIMIT_STORAGE_URI"] = urlunsplit(url._replace(scheme="redis+cluster"))
        app.config["RATELIMIT_STORAGE_OPTIONS"] = {"ssl": url.scheme == "rediss"}
    else:
        # Share the app's connection pool: it speaks to a unix socket or TCP alike, which a
        # storage URI alone cannot say for every Redis URL the app accepts.
        app.config["RATELIMIT_STORAGE_URI"] = "redis://"
        app.config["RATELIMIT_STORAGE_OPTIONS"] = {
            "connection_pool": app.extensions["redis"].connection_pool
        }
    limiter.init_app(app)
