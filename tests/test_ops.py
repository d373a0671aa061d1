"""/healthz and /metrics, against a real redis-server."""

from __future__ import annotations

from pathlib import Path

import redis
from flask import Flask
from rq import Queue, Worker

from tests.accounts import Person
from tests.conftest import make_test_app
from tests.servers import RedisServer, free_port

OUTSIDE = {"REMOTE_ADDR": "203.0.113.9"}  # a client on another host


def a_live_worker(app: Flask) -> Worker:
    queue = app.extensions["queue"]
    worker = Worker([queue], connection=queue.connection)
    worker.register_birth()
    return worker


def test_healthz_is_ok_with_redis_and_a_worker_and_says_what_is_missing(app: Flask) -> None:
    client = app.test_client()
    missing = client.get("/healthz")
    assert missing.status_code == 503
    assert missing.json == {"redis": "ok", "workers": 0, "status": "unavailable"}
    worker = a_live_worker(app)
    try:
        ok = client.get("/healthz", environ_base=OUTSIDE)  # public: load balancers ask it
        assert ok.status_code == 200
        assert ok.json == {"redis": "ok", "workers": 1, "status": "ok"}
    finally:
        worker.register_death()


def test_healthz_says_unavailable_when_redis_is_down(tmp_path: Path) -> None:
    app = make_test_app(f"redis://127.0.0.1:{free_port()}/0", tmp_path)
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.json["status"] == "unavailable"
    assert response.json["redis"].startswith("unreachable")


def test_metrics_count_jobs_by_state_workers_and_viewers(app: Flask, r: redis.Redis) -> None:
    queue: Queue = app.extensions["queue"]
    queue.enqueue("chatapp.titles.make_title", "chat", "title")
    worker = a_live_worker(app)
    try:
        response = app.test_client().get("/metrics")  # the test client is on this host
    finally:
        worker.register_death()
    assert response.status_code == 200
    text = response.text
    assert 'chatapp_jobs{state="queued"} 1.0' in text
    assert 'chatapp_jobs{state="failed"} 0.0' in text
    assert "chatapp_workers 1.0" in text
    assert "chatapp_viewers 0.0" in text
    assert "# HELP chatapp_hub_reconnects" in text


def test_metrics_from_another_host_need_the_token_or_the_admin(
    redis_server: RedisServer, r: redis.Redis, tmp_path: Path
) -> None:
    open_app = make_test_app(redis_server.url, tmp_path)
    assert open_app.test_client().get("/metrics", environ_base=OUTSIDE).status_code == 403
    admin = Person(open_app, "admin-metrics")  # the first account is the admin
    assert admin.client.get("/metrics", environ_base=OUTSIDE).status_code == 200
    someone = Person(open_app, "someone")
    assert someone.client.get("/metrics", environ_base=OUTSIDE).status_code == 403

    token_app = make_test_app(redis_server.url, tmp_path, METRICS_TOKEN="s3cret-token")
    scraper = token_app.test_client()
    headers = {"Authorization": "Bearer s3cret-token"}
    assert scraper.get("/metrics", environ_base=OUTSIDE, headers=headers).status_code == 200
    wrong = {"Authorization": "Bearer guess"}
    assert scraper.get("/metrics", environ_base=OUTSIDE, headers=wrong).status_code == 403
    assert scraper.get("/metrics").status_code == 403  # with a token set, this host needs it too
