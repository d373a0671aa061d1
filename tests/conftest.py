from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from playwright.sync_api import Browser, sync_playwright

from chatapp import create_app
from chatapp.connections import make_hub
from chatapp.hub import Hub
from harness.accounts import GENEROUS_LIMITS, Person
from harness.servers import RedisServer, Stack, running_stack


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def r(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def hub(redis_server: RedisServer, r: redis.Redis) -> Iterator[Hub]:
    """A running pub/sub hub on the session's Redis, quick to unsubscribe and to ping."""
    running = make_hub(
        redis_server.url, unsubscribe_delay=0.2, ping_interval=0.5, tick_seconds=0.05
    )
    running.start()
    yield running
    running.stop()


def make_test_app(redis_url: str, data_dir: Path, **overrides: object) -> Flask:
    config = {
        "TESTING": True,
        "REDIS_URL": redis_url,
        "DATA_DIR": str(data_dir),
        "SECRET_KEY": "test-secret",
        "OFFLINE_TOKENS_PER_SECOND": 0,  # as fast as possible
        "FLUSH_MS": 0,
        "QUEUE_NAME": "test",
        "OPENAI_API_KEY": None,
        **GENEROUS_LIMITS,
    }
    config.update(overrides)
    return create_app(config)


@pytest.fixture
def app(r: redis.Redis, redis_server: RedisServer, tmp_path: Path) -> Flask:
    return make_test_app(redis_server.url, tmp_path)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def alice(app: Flask) -> Person:
    return Person(app)


@pytest.fixture
def bob(app: Flask) -> Person:
    return Person(app)


def _stack(tmp_path_factory: pytest.TempPathFactory, cluster: bool = False) -> Iterator[Stack]:
    settings = {"CHATAPP_OFFLINE_TOKENS_PER_SECOND": "100", "CHATAPP_FLUSH_MS": "20"}
    with running_stack(tmp_path_factory.mktemp("stack"), cluster=cluster, **settings) as running:
        yield running


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A whole app for a test module: redis-server, gunicorn (gevent) and a real RQ worker."""
    yield from _stack(tmp_path_factory)


@pytest.fixture(scope="module", params=["one Redis", "Redis Cluster"])
def stack_on_each_redis(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """A whole app on one redis-server, then on a local 3-master Redis Cluster (chat data)
    beside a standalone Redis (the RQ queue)."""
    yield from _stack(tmp_path_factory, cluster=request.param == "Redis Cluster")


# -- tiers: every test gets one marker, its heaviest need (pyproject.toml lists them) -----

STACK_MODULES = {  # modules whose tests start the app's processes themselves
    "test_bench", "test_cluster", "test_concurrent_worker", "test_fanout_faults",
    "test_install", "test_job_faults", "test_launcher", "test_many_processes", "test_nginx",
    "test_redis_restart", "test_shutdown", "test_stack",
}  # fmt: skip


TIERS = ("browser", "stack", "redis", "unit")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if not any(item.get_closest_marker(tier) for tier in TIERS):  # (else marked by hand)
            item.add_marker(_tier(item))


def _tier(item: pytest.Item) -> str:
    fixtures = set(getattr(item, "fixturenames", ()))
    module = item.nodeid.split("::")[0].rsplit("/", 1)[-1].removesuffix(".py")
    if "browser" in fixtures:
        return "browser"
    processes = any(word in name for name in fixtures for word in ("stack", "gunicorn"))
    if processes or module in STACK_MODULES:
        return "stack"
    if "redis_server" in fixtures:
        return "redis"
    return "unit"


# Debian's chromium, launched by Playwright (it cannot download its own browsers here). The
# background-networking flags keep it from calling out of this closed network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless=new",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """One headless Chromium for every browser test."""
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()
