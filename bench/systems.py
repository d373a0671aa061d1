"""The systems under test, each started the same way on loopback.

- chatapp: its gunicorn (gunicorn.conf.py, one gevent worker) and its answer worker
  (`rq_worker.py`, one process writing every answer at once); viewers
  on each answer's own stream.
- chatapp page: the same, with viewers on the chat page's one stream (`/chats/<id>/live`),
  which carries the chat's events beside the answer.
- chatapp page, no express: the same with the express lane off (`CHATAPP_EXPRESS_WRITES`,
  chatapp/express.py): every event through its stream's greenlet, the baseline in the run.
- floor: bench/floor.py, the barest pub/sub relay, one event per token.
- peer: flask-sse (bench/peer.py), one event per token, one Redis connection per viewer.

Every one runs under gunicorn with one gevent worker and the same connection settings,
against its own redis-server, fed by the same paced model.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import redis

from bench.producers import run_publishers
from chatapp import store
from chatapp.config import DEFAULTS
from harness.accounts import sign_up
from harness.servers import (
    PROJECT_DIR,
    RedisServer,
    children,
    free_port,
    rq_worker,
    stack_env,
    wait_until,
)
from harness.servers import web_server as chatapp_web_server

SYSTEMS = ("chatapp", "chatapp page", "chatapp page, no express", "floor", "peer")
WORKER_CONNECTIONS = "16000"  # gunicorn's per-process cap; the fd limit here is 20,000
FLUSH_MS = DEFAULTS["FLUSH_MS"]  # chatapp's own coalescing window


@dataclass
class Running:
    """A started system: where viewers go, and the threads writing its answers."""

    name: str
    base: str
    worker_pid: int
    redis_url: str
    paths: list[str]
    cookies: dict[str, str] = field(default_factory=dict)  # chatapp: each path's asker's
    producers: list[threading.Thread] = field(default_factory=list)
    answers: list[tuple[str, str]] = field(default_factory=list)  # chatapp: (chat, answer)

    def stored_answers(self) -> list[store.Message]:
        """chatapp's answers as stored once written (the viewers' pages are checked
        against them), in the order of `paths`."""
        r = redis.Redis.from_url(self.redis_url, decode_responses=True)
        stored = [store.get_message(r, chat_id, answer_id) for chat_id, answer_id in self.answers]
        return [message for message in stored if message is not None]

    def server_cpu_seconds(self) -> float:
        times = psutil.Process(self.worker_pid).cpu_times()
        return times.user + times.system

    def redis_connections(self) -> tuple[int, int]:
        """The web process's connections to Redis: (pub/sub ones, all)."""
        port = int(self.redis_url.rsplit(":", 1)[1].split("/")[0])
        connections = psutil.Process(self.worker_pid).net_connections(kind="tcp")
        ours = {
            f"127.0.0.1:{c.laddr.port}" for c in connections if c.raddr and c.raddr.port == port
        }
        clients = redis.Redis.from_url(self.redis_url).client_list()
        subscribed = [c for c in clients if c["addr"] in ours and "P" in c["flags"]]
        return len(subscribed), len(ours)

    def subscribers(self) -> int:
        """Redis pub/sub subscriptions, all channels (the peer has one per viewer)."""
        r = redis.Redis.from_url(self.redis_url)
        channels = r.pubsub_channels()
        return sum(count for _, count in r.pubsub_numsub(*channels)) if channels else 0


@contextmanager
def started(
    name: str,
    directory: Path,
    model_url: str,
    answers: int,
    flush_ms: int = FLUSH_MS,
    produce: bool = True,
) -> Iterator[Running]:
    """Start `name` with `answers` answers waiting on the model's `go` (chatapp: left
    queued, with no one to write them, unless `produce`)."""
    directory.mkdir(parents=True, exist_ok=True)
    with ExitStack() as exits:
        server = RedisServer(directory)
        exits.callback(server.stop)
        if name.startswith("chatapp"):
            express = name != "chatapp page, no express"
            running = exits.enter_context(
                _chatapp(server.url, directory, model_url, answers, flush_ms, produce, express)
            )
            running.answers = [
                (path.split("/")[2], path.split("/")[4]) for path in running.paths
            ]  # /chats/<chat>/messages/<answer>/stream
            if name.startswith("chatapp page"):  # the chat page's one stream, not the answer's
                running.name = name
                page = {path: path.split("/messages/")[0] + "/live" for path in running.paths}
                running.paths = [page[path] for path in running.paths]
                running.cookies = {page[path]: c for path, c in running.cookies.items()}
            yield running
            return
        base, pid = exits.enter_context(_relay_server(f"bench.{name}:app", server.url))
        threads = run_publishers(name, model_url, server.url, answers)
        paths = [
            f"/floor/{n}" if name == "floor" else f"/stream?channel=answer-{n}"
            for n in range(answers)
        ]
        yield Running(name, base, pid, server.url, paths, producers=threads)


@contextmanager
def _chatapp(
    redis_url: str,
    directory: Path,
    model_url: str,
    answers: int,
    flush_ms: int,
    produce: bool,
    express: bool = True,
) -> Iterator[Running]:
    env = stack_env(
        redis_url,
        directory,
        OPENAI_API_KEY="bench",
        OPENAI_BASE_URL=model_url,
        CHATAPP_FLUSH_MS=str(flush_ms),
        CHATAPP_SSE_MAX_PER_PROCESS="15000",
        CHATAPP_WORKER_CONNECTIONS=WORKER_CONNECTIONS,
        CHATAPP_AUTO_TITLES="off",
        CHATAPP_RATE_LIMIT_SIGNUP="10000 per hour",  # one account per answer, one address
        CHATAPP_EXPRESS_WRITES="on" if express else "off",
    )
    with chatapp_web_server(env) as (base, process), ExitStack() as exits:
        # One person per answer, as people ask: a chat's viewers are its asker's tabs, and
        # a change to one's chat list reaches that person's tabs only.
        askers: list[tuple[httpx.Client, str, str]] = []  # (client, CSRF token, path)
        for number in range(answers):
            http = exits.enter_context(httpx.Client(base_url=base, timeout=30))
            token = sign_up(http)
            (path,) = start_answers(http, token, 1, first=number)
            askers.append((http, token, path))
        if produce:  # the answer worker that `make run` starts, writing them all at once
            env["CHATAPP_WORKER_CONCURRENCY"] = str(max(100, answers))
            exits.enter_context(rq_worker(env))
        threads: list[threading.Thread] = []
        paths = [path for _, _, path in askers]
        cookies = {path: _cookie_header(http) for http, _, path in askers}
        (pid,) = children(process.pid)
        try:
            yield Running("chatapp", base, pid, redis_url, paths, cookies, threads)
        finally:
            for http, token, path in askers:  # stop what still runs, so its thread ends too
                stop = path.removesuffix("/stream") + "/stop"
                http.post(stop, headers={"X-CSRFToken": token, "HX-Request": "true"})


def _cookie_header(http: httpx.Client) -> str:
    return "; ".join(f"{key}={value}" for key, value in http.cookies.items())


def start_answers(http: httpx.Client, token: str, count: int, first: int = 0) -> list[str]:
    """Send one message in each of `count` new chats (numbered from `first`); return the
    answers' stream paths."""
    paths = []
    for number in range(first, first + count):
        chat = http.post("/chats", data={"csrf_token": token}).headers["location"]
        chat_id = chat.rsplit("/", 1)[-1]
        sent = http.post(
            f"/chats/{chat_id}/messages",
            data={"text": f"benchmark {number}", "client_id": f"bench-{number:06d}"},
            headers={"X-CSRFToken": token, "HX-Request": "true"},
        )
        answer_id = sent.text.split('id="answer-', 1)[1][:16]
        paths.append(f"/chats/{chat_id}/messages/{answer_id}/stream")
    return paths


@contextmanager
def _relay_server(app: str, redis_url: str) -> Iterator[tuple[str, int]]:
    """Run `app` under gunicorn with chatapp's worker settings (gunicorn.conf.py's)."""
    port = free_port()
    command = [sys.executable, "-m", "gunicorn", "-c", "bench/gunicorn_relays.py", app]
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "CHATAPP_BIND": f"127.0.0.1:{port}",
        "CHATAPP_WEB_WORKERS": "1",
        "CHATAPP_WORKER_CONNECTIONS": WORKER_CONNECTIONS,
    }
    process = subprocess.Popen(command, cwd=PROJECT_DIR, env=env, start_new_session=True)
    try:
        pid = wait_until(lambda: (children(process.pid) or [0])[0], what=f"gunicorn {app}")
        wait_until(lambda: _answers(f"http://127.0.0.1:{port}/"), what=f"gunicorn {app}")
        yield f"http://127.0.0.1:{port}", pid
    finally:
        process.terminate()
        process.wait(timeout=15)


def _answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=1)
        return True
    except httpx.HTTPError:
        return False
