"""/healthz and /metrics, against a real redis-server."""

from __future__ import annotations

import html
import json
from pathlib import Path

import pytest
import redis
from flask import Flask
from rq import Queue, SimpleWorker, Worker

from harness.accounts import Person
from harness.servers import RedisServer, free_port, stack_env, web_server
from tests.conftest import make_test_app

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
    assert missing.json == {"redis": "ok", "workers": 0, "waiting": 0, "status": "unavailable"}
    worker = a_live_worker(app)
    try:
        ok = client.get("/healthz", environ_base=OUTSIDE)  # public: load balancers ask it
        assert ok.status_code == 200
        assert ok.json == {"redis": "ok", "workers": 1, "waiting": 0, "status": "ok"}
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


def test_the_job_dashboard_is_the_admins_and_shows_each_answer_job_and_its_progress(
    redis_server: RedisServer, r: redis.Redis, tmp_path: Path
) -> None:
    app = make_test_app(redis_server.url, tmp_path, OFFLINE_TOKENS_PER_SECOND=0)
    admin, someone = Person(app, "admin-jobs"), Person(app, "someone")  # the first is admin
    chat_id = admin.new_chat()
    assert admin.send(chat_id, "What is RQ?").status_code == 200
    queue: Queue = app.extensions["queue"]
    (job,) = queue.jobs
    with app.app_context():  # the job runs in this process, as RQ's work horse runs it
        SimpleWorker([queue], connection=queue.connection).work(burst=True)
    job.refresh()
    assert job.description.startswith("answer ") and chat_id in job.description
    assert job.meta["state"] == "done" and job.meta["entries"] > 0

    page = admin.client.get(f"/admin/rq/0/view/job/{job.id}")
    assert page.status_code == 200
    scripts = page.headers["Content-Security-Policy"].split("script-src ")[1].split(";")[0]
    assert "'sha256-" in scripts and "'unsafe-inline'" not in scripts  # its own script only
    shown = admin.client.get(f"/admin/rq/0/data/job/{job.id}.json").json  # what its page shows
    assert html.unescape(shown["description"]) == job.description  # escaped: shown as HTML
    assert json.loads(html.unescape(shown["metadata"])) == job.meta
    assert admin.client.get("/admin/rq/").status_code == 200
    assert someone.client.get("/admin/rq/").status_code == 403
    logged_out = app.test_client().get("/admin/rq/")
    assert logged_out.status_code == 302 and "/login" in logged_out.headers["Location"]
    # Its own buttons post without a CSRF token: a post from another site is refused.
    elsewhere = {"Origin": "https://evil.example"}
    assert admin.client.post(f"/job/{job.id}/delete", headers=elsewhere).status_code == 404
    refused = admin.client.post(f"/admin/rq/job/{job.id}/delete", headers=elsewhere)
    assert refused.status_code == 403 and queue.fetch_job(job.id) is not None
    # Nothing changes through GET, which a link on another site can make the browser send.
    assert admin.client.get(f"/admin/rq/requeue/{queue.name}").status_code == 405
    cross_site = {"Sec-Fetch-Site": "cross-site"}
    assert admin.client.get("/admin/rq/", headers=cross_site).status_code == 403
    # The rest of the site keeps its strict policy.
    assert "'unsafe-inline'" not in admin.client.get("/").headers["Content-Security-Policy"]


def test_the_job_dashboard_answers_a_missing_job_with_404(
    redis_server: RedisServer, r: redis.Redis, tmp_path: Path
) -> None:
    admin = Person(make_test_app(redis_server.url, tmp_path), "admin-missing")
    for job_id in ("no-such-job", "not a job id", "%00"):
        missing = admin.client.get(f"/admin/rq/0/data/job/{job_id}.json")
        assert missing.status_code == 404 and b"no such job" in missing.data


@pytest.mark.stack  # it starts gunicorn itself
def test_gunicorn_keeps_a_metrics_folder_while_it_runs_and_removes_it_at_exit(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = stack_env(redis_server.url, tmp_path, TMPDIR=str(temp))
    with web_server(env, workers=2):
        assert len(list(temp.glob("chatapp-metrics-*"))) == 1  # one for every worker
    assert not list(temp.glob("chatapp-metrics-*"))
