"""The run command: embedded Redis configured for durability, and Ctrl-C stops everything."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import redis

from chatapp.launcher import bind_for_web, start_embedded_redis
from tests.servers import PROJECT_DIR, children, free_port, wait_until


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


def test_the_run_command_serves_the_app_and_ctrl_c_stops_every_process(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "OPENAI_API_KEY")}
    env.update(CHATAPP_DATA_DIR=str(tmp_path), CHATAPP_BIND=f"127.0.0.1:{port}")
    launcher = subprocess.Popen(
        [sys.executable, "-m", "chatapp.launcher"],
        cwd=PROJECT_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        def page() -> bool:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/", timeout=1, follow_redirects=True)
            except httpx.HTTPError:
                return False
            return response.status_code == 200 and "Offline model" in response.text

        wait_until(page, timeout=60, what="the app to serve its first page")
        started = children(launcher.pid)
        assert len(started) >= 3  # redis-server, the RQ worker, gunicorn
        launcher.send_signal(signal.SIGINT)
        output, _ = launcher.communicate(timeout=60)
        assert launcher.returncode == 0, output
        assert "chatapp: stopped" in output
        assert f"chatapp: ready: open http://127.0.0.1:{port}/ in a browser" in output
        wait_until(lambda: not any(_alive(pid) for pid in started), timeout=30, what="children")
    finally:
        if launcher.poll() is None:
            launcher.kill()


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
