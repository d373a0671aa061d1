"""For operators: `/healthz` for load balancers and process managers, `/metrics` for
Prometheus.

Most figures are read when asked (a custom collector), from Redis and RQ's registries, so
every process answers for the whole install, except the figures of its own streams. The
delivery latency is counted as it happens, in every web process (metrics.py).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from ipaddress import ip_address

import redis
from flask import Blueprint, Response, abort, current_app, jsonify, request
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from redis.cluster import RedisCluster
from rq import Queue, Worker
from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry

from chatapp import store, waiting
from chatapp.connections import get_queue, get_redis, hub_if_started
from chatapp.metrics import entries_appended, outcomes, register_into
from chatapp.owner import current_user

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    """200 when Redis answers and at least one answer worker is alive, else 503; with how
    many answers wait for a worker (with none alive, nobody will write them)."""
    report: dict[str, object] = {"redis": "ok", "workers": 0}
    try:
        r = get_redis()
        if store.is_cluster(r):
            r.ping(target_nodes=RedisCluster.PRIMARIES)  # every shard must answer
        else:
            r.ping()
        queue = get_queue()
        queue.connection.ping()
        report["workers"] = Worker.count(queue=queue)
        report["waiting"] = waiting.count(queue)  # answers queued for a worker
    except redis.RedisError as exc:
        report["redis"] = f"unreachable ({type(exc).__name__})"
    healthy = report["redis"] == "ok" and report["workers"]
    report["status"] = "ok" if healthy else "unavailable"
    return jsonify(report), 200 if healthy else 503


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus's text format, for a scraper with the token, the admin, or this host."""
    if not _may_read_metrics():
        abort(403, "Metrics need CHATAPP_METRICS_TOKEN as a bearer token.")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(get_queue()))
    register_into(registry)
    return Response(generate_latest(registry), mimetype="text/plain; version=0.0.4")


def _may_read_metrics() -> bool:
    token = current_app.config["METRICS_TOKEN"]
    if token:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ")
        return hmac.compare_digest(given.encode(), token.encode())
    # No token set: this host only (behind nginx, with TRUSTED_PROXIES, that means the
    # client's own address), or the admin in a browser.
    if ip_address(request.remote_addr or "0.0.0.0").is_loopback:
        return True
    user = current_user()
    return user is not None and user.is_admin


class _Collector:
    """Reads the figures at scrape time."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue

    def collect(self) -> Iterator[Metric]:
        queue = self.queue
        jobs = GaugeMetricFamily(
            "chatapp_jobs",
            "Answer and title jobs by state: queued, started (being written), finished "
            "(kept for an hour), failed (kept for a day)",
            labels=["state"],
        )
        jobs.add_metric(["queued"], queue.count)
        jobs.add_metric(["started"], StartedJobRegistry(queue=queue).count)
        jobs.add_metric(["finished"], FinishedJobRegistry(queue=queue).count)
        jobs.add_metric(["failed"], FailedJobRegistry(queue=queue).count)
        yield jobs
        yield GaugeMetricFamily(
            "chatapp_workers", "RQ workers alive on the answer queue", Worker.count(queue=queue)
        )
        started = StartedJobRegistry(queue=queue).get_job_ids()
        running = sum(job.startswith("answer-") for job in started)  # not the title jobs
        yield GaugeMetricFamily(
            "chatapp_answers_running", "Answers being written by a worker now", running
        )
        ended = CounterMetricFamily(
            "chatapp_answers_ended",
            "Answer jobs by how they ended: done, ended (stopped, or ended from outside), "
            "stale (replaced by a newer generation), failed",
            labels=["outcome"],
        )
        for outcome, count in sorted(outcomes(queue.connection).items()):
            ended.add_metric([outcome], count)
        yield ended
        yield CounterMetricFamily(
            "chatapp_entries_appended",
            "Log entries written by answer jobs (counted every few seconds while they run)",
            entries_appended(queue.connection),
        )
        hub = hub_if_started()
        yield GaugeMetricFamily(
            "chatapp_viewers",
            "Streams (answer, chat page and chat list) held by the process that answered",
            hub.stream_count if hub else 0,
        )
        yield GaugeMetricFamily(
            "chatapp_hub_reconnects",
            "Times the answering process's pub/sub connection was lost and made again",
            hub.reconnects if hub else 0,
        )
