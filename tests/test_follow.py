"""Following an answer (hub + replay + live) against a real redis-server, in threads."""

from __future__ import annotations

import json
import os
import random
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.client import PubSub
from redis.exceptions import RedisClusterException
from redis.retry import Retry

from chatapp import contract, store
from chatapp.answer_stream import Follow, follow
from chatapp.connections import make_hub, make_redis
from chatapp.contract import ChatListChanged
from chatapp.follow import StreamSettings
from chatapp.frames import Cursor
from chatapp.hub import Hub, HubUnavailable
from chatapp.pubsub_links import OneServer
from chatapp.store import Terminal
from chatapp.subscription import DRAIN, REFILL, TICK
from harness.client import Event
from harness.page import parse_fragment
from harness.servers import RedisServer, wait_until
from tests.following import deltas_text, final, seqs, watch
from tests.storing import NewAnswer, delta, new_answer
from tests.tcp_proxy import BlackholeProxy

_timers: list[threading.Timer] = []


def start_later(delay: float, function: Any, args: tuple[Any, ...] = ()) -> None:
    """Run `function` in a moment, in another thread (a writer racing the viewer)."""
    timer = threading.Timer(delay, function, args=args)
    _timers.append(timer)
    timer.start()


@pytest.fixture(autouse=True)
def writers_finish(r: redis.Redis) -> Iterator[None]:
    """Each test's writers finish before its Redis client (`r`) is closed."""
    yield
    while _timers:
        _timers.pop().join()


def subscribed(r: redis.Redis, chat_id: str) -> bool:
    """Whether a hub has subscribed to the chat's channel (a hub of an earlier test may
    still hold a pub/sub connection of its own: only this channel says it is ours)."""
    return bool(r.pubsub_numsub(store.channel(chat_id))[0][1])


def finish(r: redis.Redis, sent: NewAnswer, length: int) -> None:
    chat_id = sent.chat_id
    done = Terminal("done", text="t", html="<p>t</p>")
    assert store.append(r, chat_id, sent.answer_id, sent.generation_id, [], length, done).ok


def test_reconnect_with_last_event_id_sends_only_missing_entries(r: redis.Redis, hub: Hub) -> None:
    sent = new_answer(r)
    chat_id = sent.chat_id
    store.append(
        r, chat_id, sent.answer_id, sent.generation_id, [delta(f"e{i}") for i in range(1, 6)], 0
    )
    finish(r, sent, 5)
    # The answer is done, so a viewer gets `end` from history; resume while it runs instead:
    sent = new_answer(r)
    chat_id = sent.chat_id
    store.append(
        r, chat_id, sent.answer_id, sent.generation_id, [delta(f"e{i}") for i in range(1, 6)], 0
    )
    start_later(0.3, finish, args=(r, sent, 5))
    events = watch(r, hub, chat_id, sent.answer_id, Cursor(sent.generation_id, 3))
    assert [e.event for e in events] == ["delta", "delta", "end"]
    assert deltas_text(events) == ["e4", "e5"]
    assert seqs(events) == [4, 5, 6]
    assert events[-1].data == "FINAL done"


def test_without_a_cursor_one_snapshot_then_the_tail(r: redis.Redis, hub: Hub) -> None:
    sent = new_answer(r)
    chat_id = sent.chat_id
    store.append(r, chat_id, sent.answer_id, sent.generation_id, [delta("a"), delta("b")], 0)

    def later() -> None:
        store.append(r, chat_id, sent.answer_id, sent.generation_id, [delta("c")], 2)
        finish(r, sent, 3)

    start_later(0.3, later)
    events = watch(r, hub, chat_id, sent.answer_id)
    assert [e.event for e in events] == ["snapshot", "delta", "end"]
    assert "<p>a</p>\n<p>b</p>\n" in events[0].data and events[0].id == f"{sent.generation_id}:2"
    assert deltas_text(events) == ["c"]


@pytest.mark.parametrize(
    "cursor",
    ["other-generation", "beyond-the-log"],
)
def test_a_cursor_the_log_cannot_serve_gets_a_snapshot(
    r: redis.Redis, hub: Hub, cursor: str
) -> None:
    sent = new_answer(r)
    chat_id = sent.chat_id
    store.append(r, chat_id, sent.answer_id, sent.generation_id, [delta("a")], 0)
    start_later(0.2, finish, args=(r, sent, 1))
    bad = (
        Cursor(store.new_id(), 1) if cursor == "other-generation" else Cursor(sent.generation_id, 9)
    )
    events = watch(r, hub, chat_id, sent.answer_id, bad)
    assert [e.event for e in events] == ["snapshot", "end"]


def test_a_connect_at_or_past_the_terminal_entry_gets_end_again(r: redis.Redis, hub: Hub) -> None:
    sent = new_answer(r)
    chat_id = sent.chat_id
    store.append(r, chat_id, sent.answer_id, sent.generation_id, [delta("a")], 0)
    finish(r, sent, 1)
    for cursor in (None, Cursor(sent.generation_id, 2), Cursor(sent.generation_id, 1)):
        events = watch(r, hub, chat_id, sent.answer_id, cursor)
        assert [(e.event, e.id, e.data) for e in events] == [
            ("end", f"{sent.generation_id}:2", "FINAL done")
        ]


def test_an_unknown_answer_ends_the_stream(r: redis.Redis, hub: Hub) -> None:
    sent = new_answer(r)
    chat_id = sent.chat_id
    for message_id in (store.new_id(), sent.user_id):
        events = watch(r, hub, chat_id, message_id)
        assert [(e.event, e.data) for e in events] == [("end", "FINAL gone")]


def test_a_queued_answer_with_no_entries_waits_for_them(r: redis.Redis, hub: Hub) -> None:
    sent = new_answer(r)
    chat_id = sent.chat_id

    def later() -> None:
        store.append(r, chat_id, sent.answer_id, sent.generation_id, [delta("a")], 0)
        finish(r, sent, 1)

    start_later(0.3, later)
    events = watch(r, hub, chat_id, sent.answer_id)
    assert [e.event for e in events] == ["snapshot", "delta", "end"]
    assert events[0].id == f"{sent.generation_id}:0"


def test_entries_appended_during_replay_arrive_once_and_in_order(r: redis.Redis, hub: Hub) -> None:
    """Many viewers join at random moments with random cursors while entries keep coming."""
    sent = new_answer(r)
    chat_id = sent.chat_id
    total, viewers = 150, 40
    joined = threading.Semaphore(0)
    results: dict[int, tuple[Cursor | None, list[Event]]] = {}

    def writer() -> None:
        for i in range(1, total + 1):
            store.append(r, chat_id, sent.answer_id, sent.generation_id, [delta(f"e{i}")], i - 1)
            time.sleep(random.random() * 0.004)
        for _ in range(viewers):  # everyone joins before the end
            joined.acquire(timeout=30)
        finish(r, sent, total)

    def viewer(n: int) -> None:
        time.sleep(random.random() * 0.5)
        length = store.log_length(r, chat_id, sent.generation_id)
        cursor = None if n % 3 == 0 else Cursor(sent.generation_id, random.randint(0, length))
        joined.release()
        results[n] = (cursor, watch(r, hub, chat_id, sent.answer_id, cursor))

    threads = [threading.Thread(target=writer)] + [
        threading.Thread(target=viewer, args=(n,)) for n in range(viewers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == viewers
    for cursor, events in results.values():
        assert events[-1].event == "end"
        if cursor is None and len(events) == 1:
            # It subscribed after the finish (a busy machine: it counted as joined just
            # before): `end` alone, with the whole answer, is all it needs.
            assert events[0].data == "FINAL done"
            assert seqs(events) == [total + 1]
            continue
        if cursor is None:
            assert events[0].event == "snapshot"
            start = int(events[0].id.split(":")[1])  # type: ignore[union-attr]
            assert [p.text_content() for p in parse_fragment(events[0].data).iter("p")] == [
                f"e{i}" for i in range(1, start + 1)
            ]
            events = events[1:]
        else:
            start = cursor.seq
        assert deltas_text(events) == [f"e{i}" for i in range(start + 1, total + 1)]
        assert seqs(events) == list(range(start + 1, total + 2))


def test_an_entry_missing_from_the_live_feed_is_filled_from_the_log(
    r: redis.Redis, hub: Hub
) -> None:
    sent = new_answer(r)
    chat_id = sent.chat_id
    store.append(r, chat_id, sent.answer_id, sent.generation_id, [delta("a")], 0)

    def lose_one_then_continue() -> None:
        # Entry 2 reaches the log but its publish is lost; entry 3 is published normally.
        r.rpush(store.log_key(chat_id, sent.generation_id), json.dumps(delta("b")))
        store.append(r, chat_id, sent.answer_id, sent.generation_id, [delta("c")], 2)
        finish(r, sent, 3)

    start_later(0.3, lose_one_then_continue)
    events = watch(r, hub, chat_id, sent.answer_id, Cursor(sent.generation_id, 1), check_seconds=60)
    assert deltas_text(events) == ["b", "c"]
    assert seqs(events) == [2, 3, 4]


def test_a_lost_terminal_message_is_found_by_the_idle_check(r: redis.Redis, hub: Hub) -> None:
    sent = new_answer(r)
    chat_id = sent.chat_id
    store.append(r, chat_id, sent.answer_id, sent.generation_id, [delta("a")], 0)

    def end_without_publishing() -> None:
        r.rpush(store.log_key(chat_id, sent.generation_id), json.dumps({"t": "done", "html": "x"}))

    start_later(0.3, end_without_publishing)
    events = watch(
        r, hub, chat_id, sent.answer_id, Cursor(sent.generation_id, 1), check_seconds=0.5
    )
    assert [e.event for e in events] == ["end"]


def test_after_the_hub_reconnects_streams_refill_what_was_published_meanwhile(
    r: redis.Redis, hub: Hub
) -> None:
    sent = new_answer(r)
    chat_id = sent.chat_id
    store.append(r, chat_id, sent.answer_id, sent.generation_id, [delta("a")], 0)
    results: list[list[Event]] = []
    viewer = threading.Thread(
        target=lambda: results.append(
            watch(r, hub, chat_id, sent.answer_id, Cursor(sent.generation_id, 1), check_seconds=60)
        )
    )
    viewer.start()
    wait_until(lambda: subscribed(r, chat_id), what="the hub to subscribe")
    reconnects = hub.reconnects
    r.client_kill_filter(_type="pubsub")
    # Published while the hub has no subscription: lost for pub/sub, kept in the log.
    store.append(r, chat_id, sent.answer_id, sent.generation_id, [delta("b")], 1)
    wait_until(lambda: hub.reconnects > reconnects, what="the hub to reconnect")
    store.append(r, chat_id, sent.answer_id, sent.generation_id, [delta("c")], 2)
    finish(r, sent, 3)
    viewer.join(timeout=30)
    assert deltas_text(results[0]) == ["b", "c"]
    assert seqs(results[0]) == [2, 3, 4]


def test_a_viewer_that_falls_behind_reads_the_log_instead(r: redis.Redis, hub: Hub) -> None:
    sent = new_answer(r)
    chat_id = sent.chat_id
    subscription = hub.subscribe(store.channel(chat_id))
    try:
        for i in range(1, 1100):  # more than the inbox holds
            subscription.deliver({"m": sent.answer_id, "g": sent.generation_id, "s": i, "e": []})
        assert subscription.get(timeout=1) == "refill"
    finally:
        hub.release(subscription)


def test_an_idle_stream_pings_and_closes_with_retry_after_its_maximum_age(
    r: redis.Redis, hub: Hub
) -> None:
    sent = new_answer(r)
    chat_id = sent.chat_id
    request = Follow(
        chat_id, sent.answer_id, None, StreamSettings(ping_seconds=0.2, max_seconds=1.0)
    )
    raw = b"".join(follow(r, hub, request, final)).decode()
    assert raw.startswith(": following\n\nid: ") and "event: snapshot\n" in raw
    assert raw.count(": ping\nevent: ping\ndata: \n\n") >= 2
    last_block = raw.strip("\n").split("\n\n")[-1]
    assert re.fullmatch(r": try again shortly\nretry: \d+", last_block)
    assert "event: end" not in raw


def test_a_malformed_message_on_a_chat_channel_does_not_break_the_hub(
    r: redis.Redis, hub: Hub
) -> None:
    sent = new_answer(r)
    chat_id = sent.chat_id
    store.append(r, chat_id, sent.answer_id, sent.generation_id, [delta("a")], 0)

    def garbage_then_more() -> None:
        r.publish(store.channel(chat_id), "not json")
        store.append(r, chat_id, sent.answer_id, sent.generation_id, [delta("b")], 1)
        finish(r, sent, 2)

    start_later(0.3, garbage_then_more)
    events = watch(r, hub, chat_id, sent.answer_id, Cursor(sent.generation_id, 1), check_seconds=60)
    assert deltas_text(events) == ["b"] and hub.alive


@pytest.mark.parametrize("started", [False, True])
def test_an_idle_viewer_ends_an_answer_whose_producer_is_gone(
    r: redis.Redis, hub: Hub, started: bool
) -> None:
    sent = new_answer(r)
    chat_id = sent.chat_id
    if started:
        store.append(r, chat_id, sent.answer_id, sent.generation_id, [delta("a")], 0)
    r.delete(store.heartbeat_key(chat_id, sent.generation_id))  # as if its TTL ran out
    events = watch(r, hub, chat_id, sent.answer_id, check_seconds=0.3)
    assert [e.event for e in events][-1] == "end" and events[-1].data == "FINAL error"
    message = store.get_message(r, chat_id, sent.answer_id)
    reason = store.DEAD_PRODUCER if started else store.DEAD_QUEUED
    assert message is not None and (message.status, message.error) == ("error", reason)


def test_an_idle_viewer_leaves_a_live_producer_alone(r: redis.Redis, hub: Hub) -> None:
    sent = new_answer(r)
    chat_id = sent.chat_id
    request = Follow(
        chat_id, sent.answer_id, None, StreamSettings(check_seconds=0.1, max_seconds=1.0)
    )
    raw = b"".join(follow(r, hub, request, final)).decode()
    assert "event: end" not in raw
    assert store.get_message(r, chat_id, sent.answer_id).status == "queued"  # type: ignore[union-attr]


def test_a_subscriber_cut_by_its_output_buffer_limit_refills_and_ends(
    r: redis.Redis, hub: Hub
) -> None:
    sent = new_answer(r)
    chat_id = sent.chat_id
    original = r.config_get("client-output-buffer-limit")["client-output-buffer-limit"]
    r.config_set("client-output-buffer-limit", "pubsub 1024 0 0")  # every big publish cuts
    big = [contract.delta_entry(f"e{i}", f"<p>e{i}</p>" + " " * 40_000) for i in range(1, 21)]
    results: list[list[Event]] = []
    viewer = threading.Thread(
        target=lambda: results.append(
            watch(r, hub, chat_id, sent.answer_id, Cursor(sent.generation_id, 0))
        )
    )
    try:
        viewer.start()
        wait_until(lambda: subscribed(r, chat_id), what="the hub to subscribe")
        reconnects = hub.reconnects
        for i, entry in enumerate(big):
            store.append(r, chat_id, sent.answer_id, sent.generation_id, [entry], i)
            time.sleep(0.02)
        finish(r, sent, len(big))
        viewer.join(timeout=60)
    finally:
        r.config_set("client-output-buffer-limit", original)
    assert hub.reconnects > reconnects  # the cuts happened
    assert deltas_text(results[0]) == [f"e{i}" for i in range(1, 21)]
    assert seqs(results[0]) == list(range(1, 22))


def test_a_cursor_into_an_expired_log_gets_the_stored_answer(r: redis.Redis, hub: Hub) -> None:
    sent = new_answer(r)
    chat_id = sent.chat_id
    store.append(r, chat_id, sent.answer_id, sent.generation_id, [delta("a"), delta("b")], 0)
    finish(r, sent, 2)
    r.delete(store.log_key(chat_id, sent.generation_id))  # its retention ran out
    for cursor in (Cursor(sent.generation_id, 1), Cursor(store.new_id(), 5), None):
        events = watch(r, hub, chat_id, sent.answer_id, cursor)
        assert [(e.event, e.data) for e in events] == [("end", "FINAL done")]


def test_a_cursor_into_a_finished_answer_gets_the_rest_then_end(r: redis.Redis, hub: Hub) -> None:
    sent = new_answer(r)
    chat_id = sent.chat_id
    store.append(r, chat_id, sent.answer_id, sent.generation_id, [delta("a"), delta("b")], 0)
    finish(r, sent, 2)
    events = watch(r, hub, chat_id, sent.answer_id, Cursor(sent.generation_id, 1))
    assert [(e.event, e.id) for e in events] == [
        ("delta", f"{sent.generation_id}:2"),
        ("end", f"{sent.generation_id}:3"),
    ]
    assert deltas_text(events) == ["b"]


def test_a_blackholed_hub_connection_is_detected_and_refilled(
    r: redis.Redis, redis_server: RedisServer
) -> None:
    proxy = BlackholeProxy(int(redis_server.url.rsplit(":", 1)[1].split("/")[0]))
    url = f"redis://127.0.0.1:{proxy.port}/0"
    hub = make_hub(url, unsubscribe_delay=0.2, ping_interval=0.3, tick_seconds=0.05)
    hub.start()
    try:
        sent = new_answer(r)
        chat_id = sent.chat_id
        store.append(r, chat_id, sent.answer_id, sent.generation_id, [delta("a")], 0)
        results: list[list[Event]] = []
        cursor = Cursor(sent.generation_id, 1)
        viewer = threading.Thread(
            target=lambda: results.append(
                watch(r, hub, chat_id, sent.answer_id, cursor, check_seconds=60)
            )
        )
        viewer.start()
        wait_until(lambda: subscribed(r, chat_id), what="the hub to subscribe")
        proxy.blackhole()  # the hub's connection goes silent, and nothing closes it
        store.append(r, chat_id, sent.answer_id, sent.generation_id, [delta("b")], 1)
        wait_until(lambda: hub.reconnects > 0, what="the hub to notice")
        finish(r, sent, 2)
        viewer.join(timeout=30)
    finally:
        hub.stop()
        proxy.close()
    assert deltas_text(results[0]) == ["b"]
    assert [e.event for e in results[0]] == ["delta", "end"]


def test_an_answer_ended_by_an_idle_viewer_keeps_its_log_for_the_configured_time(
    r: redis.Redis, hub: Hub
) -> None:
    sent = new_answer(r)
    chat_id = sent.chat_id
    r.delete(store.heartbeat_key(chat_id, sent.generation_id))
    timing = store.Timing(retention_seconds=123)
    request = Follow(
        chat_id, sent.answer_id, None, StreamSettings(check_seconds=0.3, timing=timing)
    )
    b"".join(follow(r, hub, request, final))
    assert 0 < r.ttl(store.log_key(chat_id, sent.generation_id)) <= 123


def test_the_hub_works_in_a_process_with_more_than_1024_open_files(
    r: redis.Redis, redis_server: RedisServer
) -> None:
    """A process holding 1,000 viewers has sockets past select()'s limit (FD_SETSIZE)."""
    spare = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        crowded = make_hub(redis_server.url, unsubscribe_delay=0.2, ping_interval=0.5)
        crowded.start()
        subscription = crowded.subscribe("crowded")
        r.publish("crowded", json.dumps({"u": 1, "out": ["s"]}))
        news = (item for item in iter(lambda: subscription.get(timeout=5), None) if item != TICK)
        assert next(news) == REFILL  # the subscription's own refill
        assert next(news) == ChatListChanged(("s",))
        assert crowded.reconnects == 0
        crowded.stop()
    finally:
        for fd in spare:
            os.close(fd)


def test_streams_wait_with_no_timer_and_keep_time_by_the_hubs_ticks(hub: Hub) -> None:
    subscription = hub.subscribe("ticking")
    try:
        items = [subscription.get() for _ in range(4)]  # no timeout: the ticks come anyway
        assert items.count(TICK) >= 3
    finally:
        hub.release(subscription)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_streams_of_a_hub_whose_thread_dies_are_told_to_close(
    redis_server: RedisServer,
) -> None:
    """Streams wait for the hub's ticks with no timer of their own: a hub thread ending for
    any reason (here, a BaseException no handler catches) must not leave them waiting."""
    dying = make_hub(redis_server.url, unsubscribe_delay=0.2, ping_interval=0.5)
    dying.start()
    subscription = dying.subscribe("dying")

    def end_the_thread() -> None:
        raise SystemExit("the hub's thread ends")

    dying._check_health = end_the_thread  # type: ignore[method-assign]
    dying._wake()
    news = (item for item in iter(lambda: subscription.get(timeout=5), None) if item != TICK)
    assert next(news, None) in (REFILL, DRAIN)
    assert DRAIN in (next(news, None), subscription.get(timeout=5))
    wait_until(lambda: not dying.alive, what="the hub's thread to end")


def test_after_a_cut_the_hub_subscribes_again_at_once_even_with_long_intervals(
    redis_server: RedisServer, r: redis.Redis
) -> None:
    # Pings, ticks and unsubscribes every minute: nothing but the cut wakes the hub.
    hub = make_hub(redis_server.url, unsubscribe_delay=60, ping_interval=60, tick_seconds=60)
    hub.start()
    try:
        subscription = hub.subscribe(store.channel("cut"))
        assert subscription.get() == REFILL
        r.client_kill_filter(_type="pubsub")
        # It used to wait for its next ping (30 s here) before subscribing again.
        wait_until(lambda: subscription.ready() == [REFILL], what="the refill after the cut")
    finally:
        hub.stop()


class SlotMapThatFails(OneServer):
    """Two shards (on one redis-server) whose slot map cannot be read for a while: a
    cluster that is not reachable."""

    def __init__(self, client: redis.Redis, failures: int) -> None:
        super().__init__(client)
        self.failures = failures

    def server_of(self, channel: str) -> str:
        return "first shard" if "{a}" in channel else "second shard"

    def refresh(self) -> None:
        if self.failures:
            self.failures -= 1
            raise RedisClusterException("Redis Cluster cannot be connected")


def test_a_slot_map_that_cannot_be_read_does_not_stop_the_hub(
    redis_server: RedisServer, r: redis.Redis
) -> None:
    client = make_redis(redis_server.url, max_connections=2, retry=Retry(NoBackoff(), 0))
    hub = Hub(SlotMapThatFails(client, failures=2), unsubscribe_delay=0.2, ping_interval=0.5)
    hub.start()
    try:
        channels = (store.channel("a"), store.channel("b"))
        subscription = hub.subscribe(*channels)
        wait_until(lambda: subscription.ready().count(REFILL) == 2, what="both shards")
        r.client_kill_filter(_type="pubsub")  # the hub asks where the channels live now
        received: list[Any] = []
        wait_until(
            lambda: received.extend(subscription.ready()) or received.count(REFILL) == 2,
            what="both shards again",
        )
        assert hub.alive and DRAIN not in received and hub.reconnects == 2
        for channel in channels:
            r.publish(channel, json.dumps({"u": 1, "out": [channel]}))
            nudge = ChatListChanged((channel,))
            wait_until(lambda n=nudge: n in subscription.ready(), what="a live message")
    finally:
        hub.stop()


@contextmanager
def dropping_connects() -> Iterator[int]:
    """Yield a port whose connects hang, as to a server whose packets are dropped: its
    listener's accept queue is full and never served."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)):  # fills the queue
            yield port


class OneServerAndOneThatDropsConnects(OneServer):
    def __init__(self, client: redis.Redis, dropping_port: int) -> None:
        super().__init__(client)
        self.dropping_port = dropping_port

    def server_of(self, channel: str) -> str:
        return "dropping" if "{dropped}" in channel else "redis"

    def pubsub(self, server: str) -> PubSub:
        if server == "redis":
            return super().pubsub(server)
        options = {"socket_connect_timeout": 60, "retry": Retry(NoBackoff(), 0)}
        return redis.Redis(port=self.dropping_port, **options).pubsub()  # type: ignore[arg-type]


def test_a_server_that_drops_connects_does_not_hold_up_the_others(
    redis_server: RedisServer, r: redis.Redis
) -> None:
    client = make_redis(redis_server.url, max_connections=2, retry=Retry(NoBackoff(), 0))
    with dropping_connects() as port:
        routes = OneServerAndOneThatDropsConnects(client, port)
        hub = Hub(routes, unsubscribe_delay=0.2, ping_interval=0.5, tick_seconds=0.05)
        hub.start()
        try:
            outcomes: list[str] = []

            def subscribe_on_the_dropping_server() -> None:
                try:
                    hub.subscribe(store.channel("dropped"), timeout=1)
                except HubUnavailable:
                    outcomes.append("unavailable")

            dropped = threading.Thread(target=subscribe_on_the_dropping_server)
            dropped.start()
            # The hub connects to the dropping server for a minute: this one must not wait.
            subscription = hub.subscribe(store.channel("fine"))
            r.publish(store.channel("fine"), contract.chat_list_nudge())
            wait_until(lambda: ChatListChanged() in subscription.ready(), what="a live message")
            dropped.join()
            assert outcomes == ["unavailable"]  # it did try, and its connect still hangs
        finally:
            hub.stop()
