"""Settings: defaults, overridden by environment variables (see the README's table)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PROJECT_DIR = Path(__file__).resolve().parent.parent

DEFAULTS: dict[str, Any] = {
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "REDIS_QUEUE_URL": None,  # the RQ queue's Redis; defaults to REDIS_URL
    "REDIS_CLUSTER": False,  # REDIS_URL is a node of a Redis Cluster (then set REDIS_QUEUE_URL)
    # Per pool: the worker's chat data, the queue, the rate limits (per node on a Cluster);
    # a pool blocks (with a timeout) when exhausted. A web process's chat data goes through
    # one shared connection instead (shared_redis.py), one per master on a Cluster.
    "REDIS_MAX_CONNECTIONS": 50,
    "DATA_DIR": str(PROJECT_DIR / "data"),
    "OPENAI_API_KEY": None,
    "OPENAI_BASE_URL": None,
    "MODEL": "gpt-4o-mini",  # the default; each chat may pick another (models.py)
    "MODELS": None,  # comma-separated: the models offered (else the server's /models list)
    "MODEL_TIMEOUT_SECONDS": 120.0,  # the longest silence from the model server
    "SYSTEM_PROMPT": "You are a helpful assistant. Answer in markdown.",  # each chat may change it
    "MAX_SYSTEM_PROMPT_CHARS": 8_000,
    "AUTO_TITLES": True,  # a real model titles each chat after its first answer (one more call)
    "CONTEXT_CHARS": 24_000,  # history sent to the model, trimmed from the oldest
    "MAX_MESSAGE_CHARS": 16_000,
    "OFFLINE_TOKENS_PER_SECOND": 30.0,
    "FLUSH_MS": 20,  # coalescing window of the producer (a token at 30/s is sent at once)
    "HEARTBEAT_SECONDS": 2.0,  # how often a running job proves it is alive
    "HEARTBEAT_TTL_SECONDS": 15,  # a generation silent this long is dead
    "RETENTION_SECONDS": 86_400,  # a finished answer's log is kept this long
    "JOB_TIMEOUT_SECONDS": 600,
    "WORKER_CONCURRENCY": 100,  # answers one worker process writes at once
    "WORKER_DRAIN_SECONDS": 20,  # on SIGTERM, a running answer gets this long to finish
    "QUEUE_WAIT_SECONDS": 600,  # an answer that no worker started by then ends with an error
    "PING_SECONDS": 15.0,  # SSE keep-alive
    "CHECK_SECONDS": 5.0,  # an idle stream re-reads its log this often
    "SSE_MAX_PER_PROCESS": 900,  # below gunicorn's worker_connections, so pages still load
    "STREAMS_PER_USER": 60,  # streams one user may hold in a web process (a tab holds one)
    "STREAM_MAX_SECONDS": 600.0,  # a stream is closed after this long; the browser resumes it
    "EXPRESS_WRITES": True,  # the hub writes an answer's next entries to waiting streams itself
    "DURABLE_LONG_POLL_SECONDS": 20.0,  # a Durable Streams long-poll waits this long for news
    # The conformance suite's write side (conformance.py): for its test run only, never in
    # production (anyone could write streams).
    "DURABLE_STREAMS_TEST_WRITES": False,
    "QUEUE_NAME": "chatapp",
    # Accounts and limits
    "REGISTRATION": "open",  # "open", or "closed": only the admin adds accounts
    "RATE_LIMIT_LOGIN": "10 per minute; 100 per hour",  # per client address
    "RATE_LIMIT_SIGNUP": "10 per hour",  # per client address
    "RATE_LIMIT_SEND": "30 per minute; 500 per hour",  # per user
    "RATE_LIMIT_NEW_CHAT": "30 per minute; 300 per hour",  # per user, and as many renames
    "RATE_LIMIT_ACTIONS": "120 per minute; 1500 per hour",  # per user: those four, refused too
    "RATE_LIMIT_SEARCH": "60 per 10 seconds",  # per user: a search on every pause in typing
    "MAX_RUNNING_PER_USER": 3,  # answers one user may have generating at once
    "MAX_WAITING_PER_USER": 5,  # more of theirs may wait behind those; past that: refused
    "MAX_CHAT_MESSAGES": 500,  # messages in one chat (questions and answers)
    "TRUSTED_PROXIES": 0,  # proxies in front (nginx: 1) whose X-Forwarded-* headers count
    "SESSION_COOKIE_SECURE": False,  # True forces Secure cookies; HTTPS requests get them anyway
    "METRICS_TOKEN": None,  # /metrics wants it as a bearer token; unset: this host or the admin
}

# Environment variable -> (setting, type). CHATAPP_X sets X; a few take their usual names.
_TYPES: dict[str, type] = {key: type(value) for key, value in DEFAULTS.items() if value is not None}
_PLAIN_NAMES = ("REDIS_URL", "REDIS_QUEUE_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL", "SECRET_KEY")


def from_environ(environ: Mapping[str, str]) -> dict[str, Any]:
    """Return the settings that the environment sets, converted to their types."""
    found: dict[str, Any] = {}
    for key in [*DEFAULTS, "SECRET_KEY"]:
        raw = environ.get(f"CHATAPP_{key}")
        if raw is None and key in _PLAIN_NAMES:
            raw = environ.get(key)
        if raw is None or raw == "":
            continue
        kind = _TYPES.get(key, str)
        try:
            found[key] = _parse_bool(raw) if kind is bool else kind(raw)
        except ValueError as exc:
            raise ValueError(f"setting {key}: {raw!r} is not a valid {kind.__name__}") from exc
    return found


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def load_secret_key(data_dir: str) -> str:
    """Return the secret key kept in the data folder, creating a random one on first use."""
    path = Path(data_dir) / "secret_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # Several processes may start at once: write a private temp file, then link it into
        # place, which fails for all but the first; everyone then reads the winner's key.
        temp = path.with_name(f".secret_key.{os.getpid()}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        try:
            os.link(temp, path)
        except FileExistsError:
            pass
        finally:
            temp.unlink()
    return path.read_text().strip()
