"""Figures counted as they happen, for `/metrics` (ops.py reads the rest at scrape time).

- Delivery latency: from the moment Redis appended an entry (its script stamps the live
  message with Redis's clock) to the moment a stream wrote it to its viewer. Measured in
  each web process, once per write (a write carries what was ready, oldest first).
- Garbage collector pauses: how long each pass stopped a web process (chatapp/heap.py).
- Entries appended and answers ended (by outcome): counted by the answer jobs in the
  queue's Redis, a few seconds at a time (RQ's work horses live for one job: an in-process
  counter would die with them).

Under gunicorn every worker process has its own histogram; gunicorn.conf.py points
prometheus-client's multiprocess mode at one folder, so a scrape of any process adds them
all up.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable

import redis
from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client.multiprocess import MultiProcessCollector

from chatapp.contract import AnswerEntries

ENTRIES_APPENDED_KEY = "chatapp:v1:metrics:entries_appended"
OUTCOMES_KEY = "chatapp:v1:metrics:answers_ended"  # a hash: outcome -> answers

DELIVERY_LATENCY = Histogram(
    "chatapp_delivery_latency_seconds",
    "From an entry appended in Redis to its bytes written to a viewer (per write; the "
    "express lane's: per message, at its first viewer)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=None,  # not the global registry: `register_into` decides how it is read
)

GC_PAUSE = Histogram(
    "chatapp_gc_pause_seconds",
    "How long a pass of the garbage collector stopped a web process (chatapp/heap.py)",
    ["generation"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
    registry=None,
)

GC_FROZEN = Gauge(
    "chatapp_gc_frozen_objects",
    "Objects a web process made at its start, which the garbage collector no longer walks",
    multiprocess_mode="livemax",
    registry=None,
)


def observe_gc_pause(generation: int, seconds: float) -> None:
    GC_PAUSE.labels(generation=str(generation)).observe(seconds)


def observe_delivery(items: Iterable[object]) -> None:
    """Record how late the oldest of the answer entries just written is."""
    stamps = [item.appended_ms for item in items if isinstance(item, AnswerEntries)]
    if stamps:
        DELIVERY_LATENCY.observe(max(0.0, time.time() - min(stamps) / 1000))


_expressed: list[object] = [None]  # the message the express lane last recorded


def observe_expressed(payload: object) -> None:
    """Record how late a message the hub writes itself is (express.py), once: the hub
    writes it to every waiting viewer in one loop, and a record per viewer cost more than
    the write (3.5 µs)."""
    if payload is not _expressed[0]:
        _expressed[0] = payload
        observe_delivery([payload])


def register_into(registry: CollectorRegistry) -> None:
    """Add the in-process figures: every process's (multiprocess mode), or this one's."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)
    else:
        registry.register(DELIVERY_LATENCY)
        registry.register(GC_PAUSE)
        registry.register(GC_FROZEN)


def count_appended(queue_redis: redis.Redis, entries: int) -> None:
    """Add to the install's count of log entries appended (one command, every few seconds)."""
    if entries > 0:
        queue_redis.incrby(ENTRIES_APPENDED_KEY, entries)


def entries_appended(queue_redis: redis.Redis) -> int:
    return int(queue_redis.get(ENTRIES_APPENDED_KEY) or 0)


def count_outcome(queue_redis: redis.Redis, outcome: str) -> None:
    """Count an answer job's end: done, ended (stopped, or ended from outside), stale
    (a newer generation replaced it) or failed."""
    queue_redis.hincrby(OUTCOMES_KEY, outcome, 1)


def outcomes(queue_redis: redis.Redis) -> dict[str, int]:
    counts: dict[bytes | str, bytes | str] = queue_redis.hgetall(OUTCOMES_KEY)
    return {_text(name): int(count) for name, count in counts.items()}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value  # RQ's client gives bytes
