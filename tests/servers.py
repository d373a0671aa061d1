"""Real servers for the tests: redis-server, gunicorn and the RQ worker, on free loopback ports."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import redis

from chatapp.launcher import redis_server_binary
from tests.accounts import GENEROUS_LIMITS

PROJECT_DIR = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check, timeout: float = 15.0, interval: float = 0.05, what: str = "condition"):
    """Return check()'s first truthy value, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def wait_for_page(base: str, what: str) -> None:
    """Wait until `base` serves its front page."""

    def ready() -> bool:
        try:
            return httpx.get(base + "/login", timeout=1, follow_redirects=True).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ready, timeout=30, what=what)


class RedisServer:
    def __init__(self, directory: Path, *extra: str) -> None:
        self.port = free_port()
        self.directory = directory
        self.url = f"redis://127.0.0.1:{self.port}/0"
        command = [
            redis_server_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(directory),
            "--save", "",
            "--appendonly", "no",
            "--logfile", str(directory / "redis.log"),
            *extra,
        ]  # fmt: skip
        self.command = command
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(self.command)
        client = redis.Redis.from_url(self.url)

        def ready() -> bool:
            try:
                return bool(client.ping())
            except (redis.ConnectionError, redis.BusyLoadingError):
                return False

        wait_until(ready, what="redis-server")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def stack_env(redis_url: str, data_dir: Path, **settings: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        REDIS_URL=redis_url,
        CHATAPP_DATA_DIR=str(data_dir),
        CHATAPP_SECRET_KEY="test-secret",
        CHATAPP_QUEUE_NAME=f"test-{os.getpid()}",
        **{f"CHATAPP_{key}": str(value) for key, value in GENEROUS_LIMITS.items()},
    )
    env.pop("OPENAI_API_KEY", None)
    env.update(settings)
    return env


@contextmanager
def web_server(
    env: dict[str, str], workers: int = 1
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Run gunicorn (gevent workers) on a free port; yield its base URL and its process."""
    port = free_port()
    env = {**env, "CHATAPP_BIND": f"127.0.0.1:{port}", "CHATAPP_WEB_WORKERS": str(workers)}
    command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
    process = subprocess.Popen(command, cwd=PROJECT_DIR, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_page(base, "gunicorn")
        yield base, process
    finally:
        _stop(process)


@contextmanager
def rq_worker(env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """Run `rq_worker.py` (a real forking RQ worker)."""
    command = [sys.executable, "rq_worker.py"]
    process = subprocess.Popen(command, cwd=PROJECT_DIR, env=env, start_new_session=True)
    try:
        yield process
    finally:
        _stop(process)


def children(pid: int) -> list[int]:
    """Return the pids of a process's children."""
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(line) for line in out.stdout.split()]


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


class Stack:
    """A whole app: redis-server, a real RQ worker process and gunicorn with gevent workers."""

    def __init__(self, base: str, redis_url: str, env: dict[str, str], worker_pid: int) -> None:
        self.base = base
        self.redis_url = redis_url
        self.env = env
        self.worker_pid = worker_pid
        self.https_base = ""  # behind nginx: its HTTPS (and HTTP/2) address

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url, decode_responses=True)


@contextmanager
def running_stack(
    directory: Path, web_workers: int = 1, redis_server: RedisServer | None = None, **settings: str
) -> Iterator[Stack]:
    """Start redis-server, the worker and gunicorn with CHATAPP_* `settings`; stop them after."""
    server = redis_server or RedisServer(directory)
    env = stack_env(server.url, directory, **settings)
    try:
        with rq_worker(env) as worker, web_server(env, workers=web_workers) as (base, _):
            yield Stack(base, server.url, env, worker.pid)
    finally:
        server.stop()


@contextmanager
def stack_behind_nginx(directory: Path, **settings: str) -> Iterator[Stack]:
    """Like `running_stack`, with two gunicorn processes behind nginx (deploy/nginx.conf)."""
    server = RedisServer(directory)
    settings = {"CHATAPP_TRUSTED_PROXIES": "1", **settings}  # nginx says who the client is
    env = stack_env(server.url, directory, **settings)
    try:
        with (
            rq_worker(env) as worker,
            web_server(env) as (first, _),
            web_server(env) as (second, _),
            nginx(directory, [first, second]) as (base, https_base),
        ):
            stack = Stack(base, server.url, env, worker.pid)
            stack.https_base = https_base
            yield stack
    finally:
        server.stop()


@contextmanager
def nginx(directory: Path, upstreams: list[str]) -> Iterator[tuple[str, str]]:
    """Run Debian's nginx with deploy/nginx.conf in front of `upstreams`, with a self-signed
    certificate; yield its HTTP and its HTTPS (HTTP/2) URLs."""
    port, tls_port = free_port(), free_port()
    site = (PROJECT_DIR / "deploy" / "nginx.conf").read_text()
    site = site.replace("listen 80;", f"listen 127.0.0.1:{port};")
    site = site.replace("listen 443 ssl http2;", f"listen 127.0.0.1:{tls_port} ssl http2;")
    site = site.replace("/srv/chatapp/static/", f"{PROJECT_DIR / 'static'}/")
    for default, upstream in zip(("127.0.0.1:8000", "127.0.0.1:8001"), upstreams, strict=True):
        site = site.replace(f"server {default};", f"server {upstream.removeprefix('http://')};")
    home = directory / f"nginx-{port}"
    home.mkdir()
    certificate, key = self_signed_certificate(home)
    site = site.replace("/etc/ssl/certs/chatapp.pem", str(certificate))
    site = site.replace("/etc/ssl/private/chatapp.key", str(key))
    (home / "site.conf").write_text(site)
    temp = " ".join(
        f"{kind}_temp_path {home / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (home / "nginx.conf").write_text(
        f"daemon off; worker_processes 1; pid {home / 'nginx.pid'};\n"
        f"error_log {home / 'error.log'} warn;\n"
        "events { worker_connections 2048; }\n"
        # mime.types as Debian's nginx.conf includes it: static files need their types.
        f"http {{ access_log off; include /etc/nginx/mime.types; {temp} "
        f"include {home / 'site.conf'}; }}\n"
    )
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    process = subprocess.Popen([binary, "-p", str(home), "-c", str(home / "nginx.conf")])
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_page(base, "nginx")
        yield base, f"https://127.0.0.1:{tls_port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """Make a certificate for 127.0.0.1 with openssl; return its file and its key's."""
    certificate, key = directory / "cert.pem", directory / "key.pem"
    command = [
        "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        "-keyout", str(key), "-out", str(certificate),
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True)
    return certificate, key
