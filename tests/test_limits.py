"""Limits: rate limits on logging in, signing up and sending; answers running at once per
user; messages per chat; request size. Each is refused with a clear 4xx/429 and leaves the
stored data as it was."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import pytest
import redis
from flask import Flask

from chatapp import store, users
from chatapp.ratelimit import cluster_storage
from chatapp.store import nudges
from harness.accounts import PASSWORD, Person, csrf_token, sign_up
from harness.client import ChatClient
from harness.page import answer_in
from harness.servers import RedisServer, stack_env, wait_until, web_server
from tests.conftest import make_test_app
from tests.storing import keys_and_values


@pytest.fixture
def make_app(redis_server: RedisServer, r: redis.Redis, tmp_path: Path):
    def make(**overrides: object) -> Flask:
        return make_test_app(redis_server.url, tmp_path, **overrides)

    return make


def answer_id_of(response) -> str:
    return answer_in(response.text)


def log_in(app: Flask, name: str, password: str = PASSWORD, address: str = "127.0.0.1"):
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    token = csrf_token(client.get("/login").text)
    response = client.post("/login", data={"csrf_token": token, "name": name, "password": password})
    return client, response


def test_logins_are_rate_limited_per_address(make_app, r: redis.Redis) -> None:
    app = make_app(RATE_LIMIT_LOGIN="3 per minute")
    sign_up(app.test_client(), "alice")
    for _ in range(3):
        assert log_in(app, "alice", "wrong password")[1].status_code == 401
    before = keys_and_values(r)
    _, limited = log_in(app, "alice")  # even the right password, from this address
    assert limited.status_code == 429
    assert "Too many login attempts" in limited.text
    assert int(limited.headers["Retry-After"]) > 0
    assert keys_and_values(r) == before
    assert log_in(app, "alice", address="10.0.0.2")[1].status_code == 303  # another address


def test_behind_a_trusted_proxy_the_limit_follows_the_address_it_saw(make_app) -> None:
    app = make_app(RATE_LIMIT_LOGIN="2 per minute", TRUSTED_PROXIES=1)
    sign_up(app.test_client(), "alice")

    def attempt(forwarded_for: str) -> int:
        client = app.test_client()
        token = csrf_token(client.get("/login").text)
        form = {"csrf_token": token, "name": "alice", "password": "wrong password"}
        return client.post(
            "/login", data=form, headers={"X-Forwarded-For": forwarded_for}
        ).status_code

    # nginx appends the address it saw; what the client put before it changes nothing.
    assert [attempt(f"{n}.{n}.{n}.{n}, 10.0.0.5") for n in range(1, 4)] == [401, 401, 429]
    assert attempt("10.0.0.6") == 401


def test_an_ipv6_client_counts_by_its_network(make_app) -> None:
    app = make_app(RATE_LIMIT_LOGIN="3 per minute")
    sign_up(app.test_client(), "alice")
    statuses = [log_in(app, "alice", "wrong", f"2001:db8::{n}")[1].status_code for n in range(1, 5)]
    assert statuses == [401, 401, 401, 429]  # one /64: one client
    assert log_in(app, "alice", "wrong", "2001:db8:0:1::1")[1].status_code == 401


def test_new_chats_are_rate_limited_per_user(make_app, r: redis.Redis) -> None:
    app = make_app(RATE_LIMIT_NEW_CHAT="2 per minute")
    alice, bob = Person(app), Person(app)
    alice.new_chat()
    alice.new_chat()
    before = keys_and_values(r)
    refused = alice.client.post("/chats", data={"csrf_token": alice.token})
    assert refused.status_code == 429 and "starting chats too fast" in refused.text
    assert keys_and_values(r) == before
    bob.new_chat()
    chat_id = bob.new_chat()
    for title in ("one", "two"):
        assert bob.post(f"/chats/{chat_id}/title", title=title).status_code == 204
    before = keys_and_values(r)
    renamed = bob.post(f"/chats/{chat_id}/title", title="three")
    assert renamed.status_code == 429 and "renaming chats too fast" in renamed.text
    assert keys_and_values(r) == before


def test_refused_requests_do_not_count_against_a_users_limits(make_app, r: redis.Redis) -> None:
    """Sends, renames and regenerations that were refused (400, 404, 409) changed nothing:
    only the ones that did something count."""
    app = make_app(RATE_LIMIT_SEND="2 per minute", RATE_LIMIT_NEW_CHAT="3 per minute")
    alice = Person(app)
    chat_id = alice.new_chat()
    missing = "0" * 16
    for _ in range(5):
        assert alice.send(chat_id, text="").status_code == 400  # nothing written
        assert alice.send(missing).status_code == 404
        assert alice.post(f"/chats/{chat_id}/title", title="").status_code == 400
        regenerate = f"/chats/{chat_id}/messages/{missing}/regenerate"
        assert alice.post(regenerate).status_code == 404
    assert alice.post(f"/chats/{chat_id}/title", title="A title").status_code == 204
    assert alice.send(chat_id, client_id="client-0001").status_code == 200
    assert alice.send(chat_id, client_id="client-0002").status_code == 409  # still running
    assert alice.send(alice.new_chat(), client_id="client-0003").status_code == 200
    assert alice.send(alice.new_chat(), client_id="client-0004").status_code == 429  # the third


def test_every_action_counts_against_a_ceiling_refused_or_not(make_app, r: redis.Redis) -> None:
    """Refused requests cost nothing against the send limit, but all of them count against
    a higher ceiling (counted on the way in, so a burst cannot slip past it)."""
    app = make_app(RATE_LIMIT_ACTIONS="5 per minute")
    alice = Person(app)
    chat_id = alice.new_chat()  # 1
    for _ in range(4):  # 2..5
        assert alice.send(chat_id, text="").status_code == 400
    limited = alice.send(chat_id)
    assert limited.status_code == 429 and "doing that too fast" in limited.text


def test_guessing_ones_current_password_is_rate_limited(make_app) -> None:
    app = make_app(RATE_LIMIT_LOGIN="3 per minute")
    alice = Person(app)
    wrong = {"current": "not it", "password": "a new password"}
    statuses = [alice.post("/account/password", **wrong).status_code for _ in range(4)]
    assert statuses == [403, 403, 403, 429]


def test_sign_ups_are_rate_limited_per_address(make_app) -> None:
    app = make_app(RATE_LIMIT_SIGNUP="2 per hour")
    sign_up(app.test_client())
    sign_up(app.test_client())
    client = app.test_client()
    token = csrf_token(client.get("/signup").text)  # the form still shows
    refused = client.post(
        "/signup", data={"csrf_token": token, "name": "third", "password": PASSWORD}
    )
    assert refused.status_code == 429 and "Too many sign-ups" in refused.text


def test_sending_is_rate_limited_per_user_and_streams_are_not(make_app, r: redis.Redis) -> None:
    app = make_app(RATE_LIMIT_SEND="2 per minute")
    alice, bob = Person(app), Person(app)
    chats = [alice.new_chat() for _ in range(3)]
    answers = [
        answer_id_of(alice.send(chat, client_id=f"client-000{i}"))
        for i, chat in enumerate(chats[:2])
    ]
    before = keys_and_values(r)
    limited = alice.send(chats[2], client_id="client-0009")
    assert limited.status_code == 429
    assert "sending messages too fast" in limited.text
    assert limited.headers["HX-Retarget"] == "#flash"  # shown on the page, above the composer
    assert keys_and_values(r) == before
    assert bob.send(bob.new_chat()).status_code == 200  # a limit per user, not for everyone
    for _ in range(20):  # browsers reconnect on their own: never limited
        alice.post(f"/chats/{chats[0]}/messages/{answers[0]}/stop")
        stream = alice.client.get(f"/chats/{chats[0]}/messages/{answers[0]}/stream")
        assert stream.status_code == 200 and "\nevent: end\n" in stream.text


def test_past_the_cap_an_answer_waits_behind_the_users_own_and_says_so(
    make_app, r: redis.Redis
) -> None:
    app = make_app(MAX_RUNNING_PER_USER=2, MAX_WAITING_PER_USER=1)
    alice, bob = Person(app), Person(app)
    chats = [alice.new_chat() for _ in range(4)]
    first = answer_id_of(alice.send(chats[0]))
    second = alice.send(chats[1])
    assert "Queued behind your other answers" not in second.text
    third = alice.send(chats[2])
    assert third.status_code == 200
    assert "Queued behind your other answers: it starts when one of them ends" in third.text
    page = alice.client.get(f"/chats/{chats[2]}")  # and on every screen that shows it
    assert "Queued behind your other answers" in page.text
    before = keys_and_values(r)
    refused = alice.send(chats[3])
    assert refused.status_code == 429
    assert "You have 3 answers being written or waiting already" in refused.text
    assert keys_and_values(r) == before
    assert bob.send(bob.new_chat()).status_code == 200  # a limit per user, not for everyone
    assert alice.post(f"/chats/{chats[0]}/messages/{first}/stop").status_code == 204
    assert alice.send(chats[3]).status_code == 200


def test_an_answer_says_it_is_queued_behind_the_users_own_before_anyone_is_told(
    make_app, r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every page that hears of the answer (its event, the owner's lists) reads the note: it
    # is stored in the same step as the answer, for a send and for a regenerate alike.
    app = make_app(MAX_RUNNING_PER_USER=1, MAX_WAITING_PER_USER=2)
    alice = Person(app)
    chats = [alice.new_chat() for _ in range(2)]
    alice.send(chats[0])  # running (no worker here): alice is at her cap
    told: list[str] = []
    nudge = nudges.nudge  # as the store calls it when an answer starts

    def note_when_told(client: redis.Redis, owner: str) -> None:
        chat_id = chats[1]
        answer_id = store.get_chat(r, chat_id).running  # type: ignore[union-attr]
        told.append(r.hget(store.message_key(chat_id, answer_id), "behind_own") or "")
        nudge(client, owner)

    monkeypatch.setattr(nudges, "nudge", note_when_told)
    answer = answer_id_of(alice.send(chats[1]))
    monkeypatch.setattr(nudges, "nudge", nudge)
    assert alice.post(f"/chats/{chats[1]}/messages/{answer}/stop").status_code == 204
    monkeypatch.setattr(nudges, "nudge", note_when_told)
    again = alice.post(f"/chats/{chats[1]}/messages/{answer}/regenerate")
    assert again.status_code == 204
    assert told == ["1", "1"]


def test_a_first_message_past_the_users_cap_starts_no_chat(make_app, r: redis.Redis) -> None:
    app = make_app(MAX_RUNNING_PER_USER=1, MAX_WAITING_PER_USER=0)
    alice = Person(app)
    assert alice.send(alice.new_chat()).status_code == 200
    before = keys_and_values(r)
    data = {"text": "One more", "client_id": "client-0002", "csrf_token": alice.token}
    refused = alice.client.post("/chats", data=data)
    assert refused.status_code == 429
    assert keys_and_values(r) == before


def test_racing_sends_from_many_devices_cannot_pass_the_cap(make_app, r: redis.Redis) -> None:
    app = make_app(MAX_RUNNING_PER_USER=1, MAX_WAITING_PER_USER=1)
    owner = Person(app, "racer")
    devices = []
    for _ in range(6):
        client, response = log_in(app, "racer")
        assert response.status_code == 303
        devices.append((client, csrf_token(client.get("/").text), owner.new_chat()))
    barrier = threading.Barrier(len(devices))
    statuses: list[int] = []

    def send(client, token: str, chat_id: str) -> None:
        barrier.wait()
        response = client.post(
            f"/chats/{chat_id}/messages",
            data={"text": "at once", "client_id": f"client-{chat_id}"},
            headers={"X-CSRFToken": token, "HX-Request": "true"},
        )
        statuses.append(response.status_code)

    threads = [threading.Thread(target=send, args=device) for device in devices]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200, 200, 429, 429, 429, 429]
    (user,) = users.list_users(r)
    assert len([chat for chat in store.list_chats(r, user.id) if chat.running]) == 2


def test_answers_whose_job_died_do_not_count(make_app, r: redis.Redis) -> None:
    app = make_app(MAX_RUNNING_PER_USER=1, MAX_WAITING_PER_USER=0, QUEUE_WAIT_SECONDS=1)
    alice = Person(app)
    first_chat, second_chat = alice.new_chat(), alice.new_chat()
    lost = answer_id_of(alice.send(first_chat))  # no worker runs in this test: never picked up
    time.sleep(1.2)  # past the queue wait: its producer counts as dead
    assert alice.send(second_chat).status_code == 200
    ended = store.get_message(r, first_chat, lost)
    assert ended is not None and ended.status == "error" and ended.error == store.DEAD_QUEUED


def test_a_full_chat_takes_no_more_messages(make_app, r: redis.Redis) -> None:
    app = make_app(MAX_CHAT_MESSAGES=4)
    alice = Person(app)
    chat_id = alice.new_chat()
    for number in range(2):
        answer = answer_id_of(alice.send(chat_id, client_id=f"client-000{number}"))
        alice.post(f"/chats/{chat_id}/messages/{answer}/stop")
    before = keys_and_values(r)
    full = alice.send(chat_id, client_id="client-0009")
    assert full.status_code == 409
    assert "reached its limit of 4 messages" in full.text and "Start a new chat" in full.text
    assert keys_and_values(r) == before


def test_an_oversize_request_body_is_refused_with_its_limit(make_app, r: redis.Redis) -> None:
    app = make_app()
    alice = Person(app)
    chat_id = alice.new_chat()
    before = keys_and_values(r)
    response = alice.send(chat_id, text="x" * 200_000)
    assert response.status_code == 413
    assert "too large" in response.text
    assert keys_and_values(r) == before


def test_on_a_cluster_the_limits_storage_gets_the_urls_credentials_and_tls() -> None:
    uri, options = cluster_storage("rediss://ops:p%40ss@10.0.0.1:7000/0?ssl_cert_reqs=none", 50)
    assert uri == "redis+cluster://10.0.0.1:7000"
    assert options["username"] == "ops" and options["password"] == "p@ss"  # decoded
    assert options["ssl"] is True and options["ssl_cert_reqs"] == "none"
    assert options["max_connections"] == 50 and options["socket_timeout"] > 0
    uri, options = cluster_storage("redis://cache.internal/0", 50)
    assert uri == "redis+cluster://cache.internal:6379" and "ssl" not in options


def test_on_a_cluster_the_limits_storage_gets_every_node_named() -> None:
    uri, _ = cluster_storage("redis://a:7000,b:7001,[::1]:7002/0", 50)
    assert uri == "redis+cluster://a:7000,b:7001,[::1]:7002"


@pytest.mark.stack  # it starts gunicorn itself
def test_one_user_holds_at_most_their_share_of_a_processs_streams(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """Through gunicorn: a user's streams past STREAMS_PER_USER (of every kind: the chat
    page's, the front page's, an answer's, a Durable Streams read) are refused with 429
    and a reason, while another user's open; a stream that closes frees its place."""
    # Pings every second: a closed stream is noticed at its next write.
    settings = {"CHATAPP_STREAMS_PER_USER": "3", "CHATAPP_PING_SECONDS": "1"}
    env = stack_env(redis_server.url, tmp_path, **settings)
    with web_server(env) as (base, _), contextlib.ExitStack() as held:
        greedy, other = ChatClient(base), ChatClient(base)
        chat = greedy.new_chat()
        paths = [f"/chats/{chat}/live", "/live", f"/chats/{chat}/live"]
        streams = [held.enter_context(greedy.http.stream("GET", path)) for path in paths]
        assert [s.status_code for s in streams] == [200, 200, 200]
        refused = greedy.http.get(f"/chats/{chat}/live")
        assert refused.status_code == 429 and "live pages open" in refused.text
        assert refused.headers["Retry-After"] == "30"
        # A Durable Streams live read holds a place too (stream_share.held_by).
        durable = greedy.http.get(f"/chats/{chat}/events", params={"offset": "-1", "live": "sse"})
        assert durable.status_code == 429 and "live streams" in durable.text
        with other.http.stream("GET", f"/chats/{other.new_chat()}/live") as theirs:
            assert theirs.status_code == 200
        streams[0].close()

        def room_again() -> bool:
            with greedy.http.stream("GET", "/live") as again:
                return again.status_code == 200

        wait_until(room_again, timeout=30, what="a closed stream to free its place")
