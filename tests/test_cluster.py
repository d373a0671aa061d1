"""Chats on a real local Redis Cluster of three masters: sharded pub/sub with one hub
connection per shard, a cut that touches one shard only, and slots that move while an answer
is being written and watched. (The whole app on a cluster: test_stack, test_chat_stream and
test_many_processes run on one Redis and on a cluster.)"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gevent
import pytest
import redis
from redis.crc import key_slot

from chatapp import store
from chatapp.connections import make_hub, make_redis, make_shared_redis
from chatapp.contract import ANSWER_STARTED, ChatEvents, ChatListChanged
from chatapp.frames import Cursor
from chatapp.hub import Hub
from chatapp.subscription import REFILL, TICK, Subscription
from harness.accounts import Person
from harness.client import ChatClient, Event
from harness.page import Page
from harness.servers import LocalCluster, RedisServer, Stack, free_port, running_stack, wait_until
from tests.conftest import make_test_app
from tests.following import deltas_text, seqs, watch
from tests.storing import delta, new_answer


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    running = LocalCluster(tmp_path_factory.mktemp("cluster"))
    yield running
    running.stop()


@pytest.fixture
def r(cluster: LocalCluster) -> redis.Redis:
    for node in cluster.nodes:
        plain(node).flushall()
    return make_redis(cluster.url, {"REDIS_CLUSTER": True})


@pytest.fixture
def hub(cluster: LocalCluster, r: redis.Redis) -> Iterator[Hub]:
    running = make_hub(
        cluster.url, cluster=True, unsubscribe_delay=0.2, ping_interval=0.5, tick_seconds=0.05
    )
    running.start()
    yield running
    running.stop()
    wait_until(lambda: not any(pubsub_clients(node) for node in cluster.nodes), what="the hub")


def plain(node: RedisServer) -> redis.Redis:
    return redis.Redis(port=node.port, decode_responses=True)


def pubsub_clients(node: RedisServer) -> int:
    return len(plain(node).client_list(_type="pubsub"))


def chat_on_each_shard(r: redis.Redis, cluster: LocalCluster) -> dict[int, str]:
    """Create chats until every master holds one; return {master's port: chat id}."""
    found: dict[int, str] = {}
    while len(found) < len(cluster.nodes):
        chat = store.create_chat(r, "0" * 16, time.time())
        found.setdefault(cluster.node_of(store.chat_key(chat.id)).port, chat.id)
    return found


def chats_on(r: redis.Redis, cluster: LocalCluster, node: RedisServer, count: int) -> list[str]:
    """Create chats until `count` of them live on `node` (each on a slot of its own)."""
    found: dict[int, str] = {}  # slot -> chat
    while len(found) < count:
        chat_id = store.create_chat(r, "0" * 16, time.time()).id
        key = store.chat_key(chat_id)
        if cluster.node_of(key) is node:
            found.setdefault(key_slot(key.encode()), chat_id)
    return list(found.values())


def collect(subscription: Subscription, until: Callable[[list[Any]], bool]) -> list[Any]:
    """Take what the subscription receives (ticks aside) until `until` says it is enough."""
    items: list[Any] = []

    def enough() -> bool:
        items.extend(item for item in subscription.ready(1000) if item != TICK)
        return until(items)

    wait_until(enough, what="messages")
    return items


def started(answer_id: str) -> Callable[[list[Any]], bool]:
    """Whether the items hold the chat event that says `answer_id` started."""

    def check(items: list[Any]) -> bool:
        events = [event for item in items if isinstance(item, ChatEvents) for event in item.events]
        return any(e.kind == ANSWER_STARTED and e.message_id == answer_id for e in events)

    return check


def follow_to_the_end(client: ChatClient, chat_id: str, answer_id: str) -> list[Event]:
    """Follow an answer as a browser does: after `retry:`, wait and resume from the last
    event's id, until `end`."""
    events: list[Event] = []
    deadline = time.monotonic() + 60
    while not events or events[-1].event != "end":
        assert time.monotonic() < deadline, "the answer did not end"
        last_id = next((event.id for event in reversed(events) if event.id), None)
        more = client.stream(chat_id, answer_id, last_event_id=last_id)
        events += more
        if not more or more[-1].event != "end":
            time.sleep(1)  # the retry: hint says 1 to 3 s
    return events


def send(r: redis.Redis, chat_id: str) -> str:
    sent = store.send_message(r, chat_id, store.new_id(), "hi", "<p>hi</p>", "m", time.time())
    assert sent.status == "ok"
    return sent.answer_id


def test_the_hub_holds_one_connection_per_shard_and_each_channel_where_it_lives(
    r: redis.Redis, hub: Hub, cluster: LocalCluster
) -> None:
    chats = chat_on_each_shard(r, cluster)
    subscriptions = {port: hub.subscribe(store.channel(chat)) for port, chat in chats.items()}
    # What a chat page holds: its chat's channel and its owner's, on two slots, in one call.
    some_chat = next(iter(chats.values()))
    page = hub.subscribe(store.channel(some_chat), store.user_channel("0" * 16))
    for node in cluster.nodes:
        wait_until(lambda node=node: pubsub_clients(node) == 1, what="one connection per shard")
    assert sorted(hub.servers) == sorted(f"127.0.0.1:{node.port}" for node in cluster.nodes)

    answers = {port: send(r, chat) for port, chat in chats.items()}
    for port, answer_id in answers.items():
        collect(subscriptions[port], started(answer_id))
    first = answers[next(iter(chats))]
    # both channels
    collect(page, lambda items: ChatListChanged() in items and started(first)(items))
    for node in cluster.nodes:  # still one each
        assert pubsub_clients(node) == 1
    assert hub.reconnects == 0


def test_a_shard_that_drops_the_hub_refills_its_own_channels_only(
    r: redis.Redis, hub: Hub, cluster: LocalCluster
) -> None:
    chats = chat_on_each_shard(r, cluster)
    subscriptions = {port: hub.subscribe(store.channel(chat)) for port, chat in chats.items()}
    for subscription in subscriptions.values():
        collect(subscription, lambda items: REFILL in items)  # the first subscription's
    victim = cluster.nodes[1]
    plain(victim).client_kill_filter(_type="pubsub")
    wait_until(lambda: hub.reconnects == 1, what="the hub to see the cut")
    collect(subscriptions[victim.port], lambda items: REFILL in items)  # subscribed again
    for port, chat in chats.items():
        answer_id = send(r, chat)
        items = collect(subscriptions[port], started(answer_id))
        assert (REFILL in items) is False  # the victim's refill was taken above; others had none
    assert hub.reconnects == 1


def test_a_channel_whose_slot_moves_follows_it_to_its_new_shard(
    r: redis.Redis, hub: Hub, cluster: LocalCluster
) -> None:
    chats = chat_on_each_shard(r, cluster)
    subscriptions = {port: hub.subscribe(store.channel(chat)) for port, chat in chats.items()}
    for subscription in subscriptions.values():
        collect(subscription, lambda items: REFILL in items)
    before = cluster.nodes[0]
    moving = chats[before.port]
    after = cluster.nodes[1]
    cluster.move_slot_of(store.chat_key(moving), after)
    assert cluster.node_of(store.chat_key(moving)) is after
    collect(subscriptions[before.port], lambda items: REFILL in items)  # a cut: refill
    for port, chat in chats.items():
        answer_id = send(r, chat)
        items = collect(subscriptions[port], started(answer_id))
        assert REFILL not in items  # the other shards' channels were left alone
    assert store.get_chat(r, moving) is not None  # the data moved with the slot
    assert plain(after).pubsub_shardnumsub(store.channel(moving))[0][1] == 1
    assert plain(before).pubsub_shardnumsub(store.channel(moving))[0][1] == 0


def test_a_viewer_keeps_every_entry_while_the_answers_slot_moves(
    r: redis.Redis, hub: Hub, cluster: LocalCluster
) -> None:
    sent = new_answer(r)
    chat_id = sent.chat_id
    append = store.append
    assert append(r, chat_id, sent.answer_id, sent.generation_id, [delta("a")], 0).ok
    results: list[list[Event]] = []
    viewer = threading.Thread(
        target=lambda: results.append(
            watch(r, hub, chat_id, sent.answer_id, Cursor(sent.generation_id, 1), check_seconds=60)
        )
    )
    viewer.start()
    key = store.chat_key(chat_id)
    wait_until(lambda: plain(cluster.node_of(key)).pubsub_shardnumsub(store.channel(chat_id))[0][1])
    assert append(r, chat_id, sent.answer_id, sent.generation_id, [delta("b")], 1).ok
    before = cluster.node_of(key)
    cluster.move_slot_of(key, next(node for node in cluster.nodes if node is not before))
    # Written while the hub follows the channel to its new shard: kept in the log.
    assert append(r, chat_id, sent.answer_id, sent.generation_id, [delta("c")], 2).ok
    assert append(r, chat_id, sent.answer_id, sent.generation_id, [delta("d")], 3).ok
    done = store.Terminal("done", text="abcd", html="<p>abcd</p>")
    assert append(r, chat_id, sent.answer_id, sent.generation_id, [], 4, done).ok
    viewer.join(timeout=30)
    assert deltas_text(results[0]) == ["b", "c", "d"]
    assert seqs(results[0]) == [2, 3, 4, 5]  # each once, in order, then the end


def answer_through_a_fault(
    stack: Stack,
    question: str,
    fault: Callable[[LocalCluster, str], Any],
    viewers: int = 1,
) -> tuple[Any, str]:
    """Send `question` and follow its answer to the end on the chat page of `viewers`
    devices at once (and on the first one's per-answer stream) while `fault(cluster,
    chat id)` runs, as soon as ten entries are written. Check that the answer was running
    then, ended `done`, and that every viewer built it byte for byte, each entry once.
    Return what `fault` returned, and the answer's status right after it."""
    assert stack.local_cluster is not None
    servers = stack.local_cluster
    client = ChatClient(stack.base)
    chat_id = client.new_chat()
    answer_id = client.send_ok(chat_id, question)
    data = stack.redis()
    faults: list[tuple[str, Any, str]] = []
    seen: list[list[Event]] = []  # the answer's own stream
    pages: list[list[Event]] = []  # the chat page's stream, what a tab holds

    def status() -> str:
        return store.get_message(data, chat_id, answer_id).status  # type: ignore[union-attr]

    def when_partly_written() -> None:
        message = wait_until(lambda: store.get_message(data, chat_id, answer_id))
        wait_until(lambda: store.log_length(data, chat_id, message.gen) >= 10, what="entries")
        before = status()
        result = fault(servers, chat_id)
        faults.append((before, result, status()))

    def view(device: ChatClient) -> None:
        seen.append(follow_to_the_end(device, chat_id, answer_id))

    def view_page(device: ChatClient) -> None:
        pages.append(device.follow_page(chat_id, answer_id))

    devices = [client, *(client.another_device() for _ in range(viewers - 1))]
    threads = [threading.Thread(target=when_partly_written)]
    threads.append(threading.Thread(target=view, args=(client,)))
    threads += [threading.Thread(target=view_page, args=(device,)) for device in devices]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    [(before, result, after)] = faults  # the fault ran to its end
    assert before == "streaming"  # it began mid-answer
    stored = store.get_message(data, chat_id, answer_id)
    assert stored is not None and stored.status == "done", stored
    [live] = seen
    built = client.answer_page(answer_id).apply(e for e in live if e.event != "end")
    assert live[-1].event == "end" and built.shows(answer_id, stored.html)  # byte for byte
    assert len(pages) == viewers
    for events in pages:
        entries = [int(e.id.rsplit(":", 1)[1]) for e in events if e.event == "delta" and e.id]
        assert entries == sorted(set(entries))  # each once, in order
        assert Page().apply(events).shows(answer_id, stored.html)  # byte for byte
    return result, after


def test_an_answer_moved_between_shards_mid_stream_arrives_whole_through_either_process(
    tmp_path: Path,
) -> None:
    def move(servers: LocalCluster, chat_id: str) -> tuple[RedisServer, RedisServer]:
        key = store.chat_key(chat_id)
        source = servers.node_of(key)
        servers.move_slot_of(key, next(node for node in servers.nodes if node is not source))
        return source, servers.node_of(key)

    settings = {"CHATAPP_OFFLINE_TOKENS_PER_SECOND": "40", "CHATAPP_FLUSH_MS": "20"}
    with running_stack(tmp_path, cluster=True, web_workers=2, **settings) as stack:
        # Two devices at once, on a two-process gunicorn.
        question = "Tell me about resumable streams"
        (source, owner), status = answer_through_a_fault(stack, question, move, viewers=2)
    assert owner is not source and status == "streaming"  # it moved mid-answer


def test_a_channel_subscribed_on_an_old_slot_map_is_redirected_alone(
    r: redis.Redis, hub: Hub, cluster: LocalCluster
) -> None:
    first, second = chats_on(r, cluster, cluster.nodes[0], count=2)
    staying = hub.subscribe(store.channel(first))
    collect(staying, lambda items: REFILL in items)
    # The hub read the slot map already: for `second`, it now names the wrong master.
    cluster.move_slot_of(store.chat_key(second), cluster.nodes[1])
    moved = hub.subscribe(store.channel(second))  # MOVED, then subscribed where it lives
    collect(moved, lambda items: REFILL in items)
    for chat, subscription in ((second, moved), (first, staying)):
        answer_id = send(r, chat)
        assert REFILL not in collect(subscription, started(answer_id))
    assert hub.reconnects == 0  # no connection was cut


def test_an_answer_written_across_a_failover_arrives_whole(tmp_path: Path) -> None:
    def fail_over(servers: LocalCluster, chat_id: str) -> tuple[RedisServer, RedisServer, str]:
        key = store.chat_key(chat_id)
        master = servers.node_of(key)
        return master, servers.fail_over(master), key

    settings = {"CHATAPP_OFFLINE_TOKENS_PER_SECOND": "40", "CHATAPP_FLUSH_MS": "20"}
    with running_stack(tmp_path, cluster=True, cluster_replicas=1, **settings) as stack:
        question = "Tell me about failovers"
        (master, promoted, key), status = answer_through_a_fault(stack, question, fail_over)
        assert stack.local_cluster is not None
        owner = stack.local_cluster.node_of(key)  # every node knows by now
    assert owner is promoted is not master and status == "streaming"


def test_an_answer_written_across_a_master_crash_arrives_whole(tmp_path: Path) -> None:
    def crash(servers: LocalCluster, chat_id: str) -> tuple[RedisServer, RedisServer]:
        master = servers.node_of(store.chat_key(chat_id))
        promoted = servers.crash(master)  # its replica takes over after the node timeout
        # The web process follows the chat's channel to the promoted replica.
        channel = store.channel(chat_id)
        wait_until(lambda: plain(promoted).pubsub_shardnumsub(channel)[0][1], what="the hub")
        return master, promoted

    settings = {"CHATAPP_OFFLINE_TOKENS_PER_SECOND": "20", "CHATAPP_FLUSH_MS": "20"}
    with running_stack(tmp_path, cluster=True, cluster_replicas=1, **settings) as stack:
        (master, promoted), _ = answer_through_a_fault(stack, "Tell me about crashes", crash)
    assert promoted is not master


def test_an_answer_rides_out_a_cluster_that_is_down_while_another_shard_restarts(
    tmp_path: Path,
) -> None:
    # No replicas: when a master dies, the whole cluster answers CLUSTERDOWN until it is back.
    def restart_another_shard(servers: LocalCluster, chat_id: str) -> str:
        home = servers.node_of(store.chat_key(chat_id))
        other = next(node for node in servers.nodes if node is not home)
        other.process.kill()
        other.process.wait()
        probe = plain(home)
        wait_until(lambda: probe.cluster("info")["cluster_state"] == "fail", what="CLUSTERDOWN")
        state = str(probe.cluster("info")["cluster_state"])
        other.start()  # the same port and nodes.conf: it rejoins with its slots
        wait_until(lambda: probe.cluster("info")["cluster_state"] == "ok", what="the cluster")
        return state

    settings = {"CHATAPP_OFFLINE_TOKENS_PER_SECOND": "20", "CHATAPP_FLUSH_MS": "20"}
    with running_stack(tmp_path, cluster=True, **settings) as stack:
        # Streams are told to come back meanwhile; the viewer resumes as a browser does.
        state, _ = answer_through_a_fault(stack, "Tell me about outages", restart_another_shard)
    assert state == "fail"  # the cluster was down mid-answer


def test_a_process_starts_while_the_first_node_it_names_is_down(
    cluster: LocalCluster, r: redis.Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    down = f"127.0.0.1:{free_port()}"  # nothing listens there
    url = f"redis://{down},127.0.0.1:{cluster.nodes[1].port}/0"
    app = make_test_app(url, tmp_path, REDIS_CLUSTER=True, REDIS_QUEUE_URL=redis_server.url)
    person = Person(app)  # signs up and logs in: accounts and rate limits on the cluster
    chat_id = person.new_chat()
    assert store.get_chat(r, chat_id) is not None
    assert person.client.get(f"/chats/{chat_id}").status_code == 200
    assert app.test_client().get("/healthz").json["redis"] == "ok"  # type: ignore[index]


# -- the web process's client: one connection per master (chatapp/shared_cluster.py) -----


@pytest.fixture
def shared(cluster: LocalCluster, r: redis.Redis) -> Iterator[redis.Redis]:
    client = make_shared_redis(cluster.url, {"REDIS_CLUSTER": True, "REDIS_MAX_CONNECTIONS": 50})
    yield client
    client.close()


def connections(node: RedisServer) -> int:
    return len(plain(node).client_list(_type="normal"))


def test_a_web_process_holds_one_connection_per_master_for_all_its_greenlets(
    r: redis.Redis, shared: redis.Redis, cluster: LocalCluster
) -> None:
    owner = "0" * 16
    chats = list(chat_on_each_shard(r, cluster).values())
    for chat in chats:
        send(r, chat)
    expected = {chat: (store.get_chat(r, chat), store.read_chat(r, chat)) for chat in chats}
    expected_list = store.list_chats(r, owner)
    before = {node.port: connections(node) for node in cluster.nodes}

    def read(n: int) -> None:
        chat = chats[n % len(chats)]
        assert store.get_chat(shared, chat) == expected[chat][0]  # one command
        assert store.read_chat(shared, chat) == expected[chat][1]  # a transaction, pipelines
        assert store.list_chats(shared, owner) == expected_list  # a pipeline over every master

    gevent.joinall([gevent.spawn(read, n) for n in range(200)], raise_error=True)
    for node in cluster.nodes:  # one more each (the pools', for the slot map, made before)
        assert connections(node) <= before[node.port] + 1
    # Commands for every master, or by a rule of redis-py's: through its own cluster code
    assert set(shared.scan_iter(match="*")) == set(r.scan_iter(match="*"))
    assert shared.dbsize() == r.dbsize() > 0
    assert shared.ping()


def test_the_web_process_follows_a_slot_that_moved_and_one_that_is_moving(
    r: redis.Redis, shared: redis.Redis, cluster: LocalCluster
) -> None:
    owner = "0" * 16
    chats = list(chat_on_each_shard(r, cluster).values())
    moving = chats[0]
    key = store.chat_key(moving)
    assert store.get_chat(shared, moving) is not None  # the fast path knows the old owner
    source = cluster.node_of(key)
    target = next(node for node in cluster.nodes if node is not source)

    # Moving: the key is on the target already, the slot still the source's (ASK)
    slot = key_slot(key.encode())
    src, dst = plain(source), plain(target)
    dst.execute_command(
        "CLUSTER", "SETSLOT", slot, "IMPORTING", src.execute_command("CLUSTER", "MYID")
    )
    src.execute_command(
        "CLUSTER", "SETSLOT", slot, "MIGRATING", dst.execute_command("CLUSTER", "MYID")
    )
    src.execute_command("MIGRATE", "127.0.0.1", target.port, key, 0, 5000)
    assert store.get_chat(shared, moving) == store.get_chat(r, moving) is not None

    cluster.move_slot_of(key, target)  # moved (MOVED): the rest of its keys too
    for _ in range(2):  # redirected once; then straight to the new owner
        assert store.get_chat(shared, moving) == store.get_chat(r, moving)
        assert store.read_chat(shared, moving) == store.read_chat(r, moving)
        assert store.list_chats(shared, owner) == store.list_chats(r, owner)
    before = connections(target)
    gevent.joinall([gevent.spawn(store.read_chat, shared, moving) for _ in range(100)])
    assert connections(target) <= before  # all on the connection the fast path has there


def test_a_web_process_whose_connection_to_a_master_drops_loses_no_command(
    r: redis.Redis, shared: redis.Redis, cluster: LocalCluster
) -> None:
    chats = chat_on_each_shard(r, cluster)
    for chat in chats.values():
        assert store.get_chat(shared, chat) is not None  # each master's connection is made
    for node in cluster.nodes:  # cut them all (the server's side), as a restart would
        plain(node).client_kill_filter(_type="normal", skipme=True)
    for _ in range(3):  # the command that finds its connection cut, and those after it
        for chat in chats.values():
            assert store.get_chat(shared, chat) == store.get_chat(r, chat)
            assert store.read_chat(shared, chat) == store.read_chat(r, chat)
