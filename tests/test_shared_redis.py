"""The web process's one Redis connection (chatapp/shared_redis.py): on a real redis-server,
many greenlets' commands and pipelines share it, each with its own replies and errors; and on
the real stack a crowd of pages opening at once adds no connection."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import gevent
import httpx
import pytest
import redis

from chatapp.shared_redis import SharedConnectionRedis
from harness.client import ChatClient, parse_events
from harness.page import status_in
from harness.servers import RedisServer, Stack

GREENLETS = 200


@pytest.fixture
def shared(redis_server: RedisServer, r: redis.Redis) -> Iterator[SharedConnectionRedis]:
    client = SharedConnectionRedis(redis_server.url, decode_responses=True)
    yield client
    client.close()


def test_many_greenlets_each_get_their_own_replies_on_one_connection(
    shared: SharedConnectionRedis, r: redis.Redis
) -> None:
    def work(n: int) -> tuple[str | None, list[str], dict[str, str]]:
        shared.set(f"k{n}", f"v{n}")
        shared.rpush(f"list{n}", *[f"{n}-{i}" for i in range(n % 7 + 1)])
        shared.hset(f"hash{n}", mapping={"n": str(n)})
        return shared.get(f"k{n}"), shared.lrange(f"list{n}", 0, -1), shared.hgetall(f"hash{n}")

    before = len(r.client_list())
    greenlets = [gevent.spawn(work, n) for n in range(GREENLETS)]
    gevent.joinall(greenlets, raise_error=True)

    for n, greenlet in enumerate(greenlets):
        value, items, fields = greenlet.value
        assert value == f"v{n}"
        assert items == [f"{n}-{i}" for i in range(n % 7 + 1)]
        assert fields == {"n": str(n)}  # redis-py's reply callbacks still apply
    assert len(r.client_list()) == before + 1


def test_an_error_reaches_only_the_caller_whose_command_failed(
    shared: SharedConnectionRedis,
) -> None:
    shared.set("text", "not a list")

    def wrong() -> None:
        shared.lrange("text", 0, -1)

    def right(n: int) -> str | None:
        shared.set(f"ok{n}", "yes")
        return shared.get(f"ok{n}")

    failing = [gevent.spawn(wrong) for _ in range(20)]
    fine = [gevent.spawn(right, n) for n in range(20)]
    gevent.joinall(failing + fine)

    assert all(isinstance(g.exception, redis.ResponseError) for g in failing)
    assert [g.value for g in fine] == ["yes"] * 20


def test_pipelines_keep_their_replies_and_transactions_stay_whole(
    shared: SharedConnectionRedis,
) -> None:
    def counted(n: int) -> list[object]:
        pipe = shared.pipeline(transaction=n % 2 == 0)
        pipe.incr("counter")
        pipe.set(f"p{n}", n)
        pipe.get(f"p{n}")
        return pipe.execute()

    greenlets = [gevent.spawn(counted, n) for n in range(GREENLETS)]
    gevent.joinall(greenlets, raise_error=True)

    for n, greenlet in enumerate(greenlets):
        _, stored, value = greenlet.value
        assert stored is True and value == str(n)
    counts = sorted(greenlet.value[0] for greenlet in greenlets)
    assert counts == list(range(1, GREENLETS + 1))  # every INCR once, each reply its own


def test_a_failed_command_in_a_pipeline_raises_for_that_pipeline_only(
    shared: SharedConnectionRedis,
) -> None:
    shared.set("text", "not a list")
    pipe = shared.pipeline(transaction=False)
    pipe.set("before", "1")
    pipe.lpush("text", "x")
    with pytest.raises(redis.ResponseError):
        pipe.execute()
    assert shared.get("before") == "1"  # the rest of it ran, as redis-py's own pipeline does

    pipe.lpush("text", "x")
    replies = pipe.execute(raise_on_error=False)
    assert isinstance(replies[0], redis.ResponseError)


def test_after_redis_comes_back_the_next_commands_connect_again(
    shared: SharedConnectionRedis, r: redis.Redis
) -> None:
    shared.set("a", "1")
    r.client_kill_filter(_type="normal", skipme=True)  # every connection but the test's
    assert shared.get("a") == "1"  # redis-py's retry reconnects, as on its own pool


def test_a_connection_lost_with_commands_in_flight_leaves_nobody_waiting(
    shared: SharedConnectionRedis, r: redis.Redis
) -> None:
    shared.set("a", "1")

    def ask() -> str | None:
        return shared.get("a")

    for _ in range(5):
        greenlets = [gevent.spawn(ask) for _ in range(GREENLETS)]
        gevent.sleep(0)  # they are all sent, waiting for their replies
        r.client_kill_filter(_type="normal", skipme=True)
        finished = gevent.joinall(greenlets, timeout=30)
        assert len(finished) == GREENLETS  # each got its reply, or its error: none hangs
    assert shared.get("a") == "1"  # and the next command has a connection again


def _page_ends(base: str, cookies: httpx.Cookies, chat_id: str, start: threading.Barrier) -> bool:
    """Open the chat page's stream at the barrier; read it until the answer shows ended."""
    with httpx.Client(base_url=base, cookies=cookies, timeout=60) as http:
        start.wait()
        raw = ""
        with http.stream("GET", f"/chats/{chat_id}/live") as response:
            for chunk in response.iter_text():
                raw += chunk
                if any(status_in(e) == "done" for e in parse_events(raw)):
                    return True
    return False


def test_a_crowd_of_pages_opening_at_once_adds_no_redis_connection(
    stack_on_each_redis: Stack,
) -> None:
    """Each page's catch-up reads Redis several times; on a pool, a crowd arriving at once
    took a connection each (up to the pool's limit, then waited for one). On a Cluster the
    process holds one connection per master."""
    stack = stack_on_each_redis
    viewer = ChatClient(stack.base)
    chat_id = viewer.new_chat()
    answer_id = viewer.send_ok(chat_id, "hello")
    viewer.page_shows_ended(chat_id, answer_id)  # the web process's connections are all made
    before = _connections(stack)

    crowd = 150
    start = threading.Barrier(crowd)
    with ThreadPoolExecutor(crowd) as pool:
        args = (stack.base, viewer.http.cookies, chat_id, start)
        ended = list(pool.map(lambda _: _page_ends(*args), range(crowd)))

    assert all(ended)
    assert _connections(stack) <= before + 2  # the worker, idle, may reconnect meanwhile


def _connections(stack: Stack) -> int:
    """Clients connected to the chat data's Redis: on a Cluster, to all its nodes."""
    if stack.local_cluster is None:
        return len(stack.redis().client_list())
    nodes = stack.local_cluster.nodes
    return sum(len(redis.Redis(port=node.port).client_list()) for node in nodes)
