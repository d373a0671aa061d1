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
from redis.crc import key_slot

from chatapp.launcher import redis_server_binary
from harness.accounts import GENEROUS_LIMITS

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


class LocalCluster:
    """A Redis Cluster of three masters (and `replicas` for each) on loopback ports, as
    `redis-cli --cluster create` makes it."""

    def __init__(self, directory: Path, masters: int = 3, replicas: int = 0) -> None:
        self.nodes = []
        for number in range(masters * (1 + replicas)):
            home = directory / f"cluster-node-{number}"
            home.mkdir()
            node = RedisServer(
                home, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                # A free bus port: the default (port + 10000) may be taken, or past 65535.
                "--cluster-port", str(free_port()), "--cluster-node-timeout", "2000",
            )  # fmt: skip
            self.nodes.append(node)
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        command = ["redis-cli", "--cluster", "create", *addresses, "--cluster-yes"]
        command += ["--cluster-replicas", str(replicas)]
        subprocess.run(command, check=True, capture_output=True, timeout=60)
        for node in self.nodes:
            wait_until(lambda node=node: self._state(node) == "ok", what="the cluster to form")
        for node in self.nodes:
            wait_until(lambda node=node: self._in_sync(node), what="the replicas to sync")
        self.url = self.nodes[0].url  # any node will do: the client finds the others

    @staticmethod
    def _state(node: RedisServer) -> str:
        info = redis.Redis(port=node.port, decode_responses=True).cluster("info")
        return str(info.get("cluster_state", ""))

    @staticmethod
    def _in_sync(node: RedisServer) -> bool:
        info = redis.Redis(port=node.port, decode_responses=True).info("replication")
        return info["role"] == "master" or info.get("master_link_status") == "up"

    def fail_over(self, master: RedisServer) -> RedisServer:
        """Promote the master's replica with CLUSTER FAILOVER (the managed kind: the old
        master hands over and becomes its replica, nothing is lost); return it."""
        for node in self.nodes:
            info = redis.Redis(port=node.port, decode_responses=True).info("replication")
            if info["role"] == "slave" and int(info["master_port"]) == master.port:
                redis.Redis(port=node.port).execute_command("CLUSTER", "FAILOVER")
                promoted = node
                break
        else:
            raise AssertionError(f"master {master.port} has no replica")

        def done() -> bool:
            info = redis.Redis(port=promoted.port, decode_responses=True).info("replication")
            return info["role"] == "master" and all(self._state(n) == "ok" for n in self.nodes)

        wait_until(done, timeout=30, what="the failover")
        return promoted

    def crash(self, master: RedisServer) -> RedisServer:
        """Kill a master (SIGKILL: no handover); return its replica once the cluster has
        promoted it (after the node timeout) and is whole again."""
        replica = next(
            node
            for node in self.nodes
            if node is not master and self._replica_of(node) == master.port
        )
        master.process.kill()
        master.process.wait()
        others = [node for node in self.nodes if node is not master]

        def promoted() -> bool:
            info = redis.Redis(port=replica.port, decode_responses=True).info("replication")
            return info["role"] == "master" and all(self._state(n) == "ok" for n in others)

        wait_until(promoted, timeout=30, what="the replica to take over")
        self.nodes.remove(master)  # gone for good (stop() leaves it alone)
        return replica

    @staticmethod
    def _replica_of(node: RedisServer) -> int:
        """The port of the master that `node` replicates, or 0."""
        info = redis.Redis(port=node.port, decode_responses=True).info("replication")
        return int(info["master_port"]) if info["role"] == "slave" else 0

    def client(self) -> redis.RedisCluster:
        return redis.RedisCluster(host="127.0.0.1", port=self.nodes[0].port, decode_responses=True)

    def node_of(self, key: str) -> RedisServer:
        """Return the master that holds `key`'s slot now."""
        slot = key_slot(key.encode())
        for asked in self.nodes:  # the first that answers (one may be down on purpose)
            try:
                slots = redis.Redis(port=asked.port).execute_command("CLUSTER", "SLOTS")
            except redis.ConnectionError:
                continue
            for start, end, master, *_replicas in slots:
                if start <= slot <= end:
                    return next(node for node in self.nodes if node.port == master[1])
        raise AssertionError(f"no master holds slot {slot}")

    def move_slot_of(self, key: str, to: RedisServer) -> None:
        """Migrate `key`'s slot (all its keys) to another master, as `redis-cli --cluster
        reshard` does: IMPORTING, MIGRATING, MIGRATE every key, then SETSLOT NODE everywhere."""
        source = self.node_of(key)
        slot = key_slot(key.encode())
        src = redis.Redis(port=source.port, decode_responses=True)
        dst = redis.Redis(port=to.port, decode_responses=True)
        src_id, dst_id = (
            src.execute_command("CLUSTER", "MYID"),
            dst.execute_command("CLUSTER", "MYID"),
        )
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        while keys := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
            src.execute_command("MIGRATE", "127.0.0.1", to.port, "", 0, 5000, "KEYS", *keys)
        others = [node for node in self.nodes if node not in (to, source)]
        for node in [to, source, *others]:  # the new owner first, then the old one
            plain = redis.Redis(port=node.port, decode_responses=True)
            plain.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


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
    env: dict[str, str], workers: int = 1, port: int | None = None, log: Path | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Run gunicorn (gevent workers) on `port` (by default a free one), its log to `log`
    (by default this process's stderr); yield its base URL and its process."""
    port = port or free_port()
    env = {**env, "CHATAPP_BIND": f"127.0.0.1:{port}", "CHATAPP_WEB_WORKERS": str(workers)}
    command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
    stderr = log.open("ab") if log else None
    process = subprocess.Popen(
        command, cwd=PROJECT_DIR, env=env, start_new_session=True, stderr=stderr
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_page(base, "gunicorn")
        yield base, process
    finally:
        _stop(process)
        if stderr:
            stderr.close()


@contextmanager
def rq_worker(env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """Run `rq_worker.py`, the answer worker, as `make run` starts it."""
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
    """A whole app: Redis, a real RQ worker process and gunicorn with gevent workers."""

    def __init__(
        self, base: str, redis_url: str, env: dict[str, str], worker_pid: int, cluster: bool = False
    ) -> None:
        self.base = base
        self.redis_url = redis_url  # chat data: one Redis, or a node of the cluster
        self.queue_url = env.get("REDIS_QUEUE_URL") or redis_url  # RQ's jobs
        self.cluster = cluster
        self.local_cluster: LocalCluster | None = None  # its servers, when `cluster`
        self.env = env
        self.worker_pid = worker_pid
        self.https_base = ""  # behind nginx: its HTTPS (and HTTP/2) address

    def redis(self) -> redis.Redis:
        if self.cluster:
            return redis.RedisCluster.from_url(self.redis_url, decode_responses=True)  # type: ignore[return-value]
        return redis.Redis.from_url(self.redis_url, decode_responses=True)


class ClusterData:
    """Chat data on a local 3-master cluster, and the RQ queue on a standalone Redis beside it."""

    def __init__(self, directory: Path, replicas: int = 0) -> None:
        self.cluster = LocalCluster(directory, replicas=replicas)
        self.queue = RedisServer(directory)
        self.url = self.cluster.url
        self.settings = {"CHATAPP_REDIS_CLUSTER": "1", "REDIS_QUEUE_URL": self.queue.url}

    def stop(self) -> None:
        self.cluster.stop()
        self.queue.stop()


@contextmanager
def running_stack(
    directory: Path,
    web_workers: int = 1,
    redis_server: RedisServer | None = None,
    cluster: bool = False,
    cluster_replicas: int = 0,
    **settings: str,
) -> Iterator[Stack]:
    """Start Redis (one server, or a cluster with `cluster`), the worker and gunicorn with
    CHATAPP_* `settings`; stop them after."""
    data = ClusterData(directory, cluster_replicas) if cluster else None
    server = data or redis_server or RedisServer(directory)
    env = stack_env(server.url, directory, **(data.settings if data else {}), **settings)
    try:
        with rq_worker(env) as worker, web_server(env, workers=web_workers) as (base, _):
            stack = Stack(base, server.url, env, worker.pid, cluster=cluster)
            stack.local_cluster = data.cluster if data else None
            yield stack
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
        site = site.replace(f"server {default} ", f"server {upstream.removeprefix('http://')} ")
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
