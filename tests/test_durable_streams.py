"""A chat's logs as Durable Streams (chatapp/durable_views.py): what a read returns, who may
read, and bad requests. Through Flask's client on a real Redis; the whole stack, outside
clients and cut connections are in test_durable_interop.py, the official suite in
test_durable_conformance.py."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from flask import Flask
from werkzeug.test import TestResponse

from chatapp import access_tokens, contract, store, users
from chatapp.durable_logs import answer_generation
from harness.accounts import Person
from harness.servers import RedisServer, wait_until
from tests.conftest import make_test_app
from tests.storing import delta, keys_and_values


def _answer(person: Person, r: redis.Redis, question: str = "hello") -> tuple[str, store.Message]:
    chat_id = person.new_chat()
    assert person.send(chat_id, question).status_code == 200
    answer = [m for m in store.get_messages(r, chat_id) if m.role == "assistant"][-1]
    return chat_id, answer


def _url(chat_id: str, answer: store.Message) -> str:
    return f"/chats/{chat_id}/messages/{answer.id}/generations/{answer.gen}"


def _append(r: redis.Redis, chat_id: str, answer: store.Message, *texts: str) -> None:
    length = store.log_length(r, chat_id, answer.gen)
    entries = [delta(text) for text in texts]
    assert store.append(r, chat_id, answer.id, answer.gen, entries, length).ok


def _finish(r: redis.Redis, chat_id: str, answer: store.Message, *texts: str) -> None:
    _append(r, chat_id, answer, *texts)
    text = "".join(texts)
    terminal = store.Terminal(contract.DONE, text=text, html=f"<p>{text}</p>")
    assert store.append(r, chat_id, answer.id, answer.gen, [], None, terminal).ok


def _log(r: redis.Redis, chat_id: str, answer: store.Message) -> list[str]:
    return store.read_log(r, chat_id, answer.gen)


def test_a_finished_answer_reads_as_its_log_closed_at_its_end(
    alice: Person, r: redis.Redis
) -> None:
    chat_id, answer = _answer(alice, r)
    _finish(r, chat_id, answer, "Hello", ", world", " — ünïcode ✓")
    log = _log(r, chat_id, answer)
    response = alice.client.get(_url(chat_id, answer))
    assert response.status_code == 200
    assert response.content_type == "application/json"
    assert response.data == ("[" + ",".join(log) + "]").encode()  # the log's bytes, in order
    assert response.headers["Stream-Next-Offset"] == f"{len(log):016d}"
    assert response.headers["Stream-Up-To-Date"] == "true"
    assert response.headers["Stream-Closed"] == "true"
    assert "no-store" in response.headers["Cache-Control"]
    again = alice.client.get(
        _url(chat_id, answer), headers={"If-None-Match": response.headers["ETag"]}
    )
    assert again.status_code == 304 and again.data == b""


def test_reads_from_each_offset_join_into_the_whole_log(alice: Person, r: redis.Redis) -> None:
    chat_id, answer = _answer(alice, r)
    _finish(r, chat_id, answer, "one", "two", "three", "four")
    log = _log(r, chat_id, answer)
    for start in range(len(log) + 1):
        response = alice.client.get(_url(chat_id, answer), query_string={"offset": f"{start:016d}"})
        assert response.status_code == 200
        assert json.loads(response.data) == [json.loads(entry) for entry in log[start:]]
        assert response.headers["Stream-Next-Offset"] == f"{len(log):016d}"
    head = alice.client.head(_url(chat_id, answer))
    assert head.status_code == 200 and head.data == b""
    assert head.headers["Stream-Next-Offset"] == f"{len(log):016d}"
    assert head.headers["Stream-Closed"] == "true"


def test_a_running_answer_is_open_and_a_long_poll_wakes_on_its_next_entry(
    app: Flask, alice: Person, r: redis.Redis
) -> None:
    chat_id, answer = _answer(alice, r)
    empty = alice.client.get(_url(chat_id, answer))
    assert empty.status_code == 200 and json.loads(empty.data) == []
    assert empty.headers["Stream-Next-Offset"] == "0" * 16
    assert "Stream-Closed" not in empty.headers
    _append(r, chat_id, answer, "first")
    polled: list[TestResponse] = []
    tail = f"{1:016d}"
    query = {"offset": tail, "live": "long-poll"}
    waiting = threading.Thread(
        target=lambda: polled.append(alice.client.get(_url(chat_id, answer), query_string=query))
    )
    waiting.start()
    # Appended while the long-poll waits (or before it subscribed: then its read finds it).
    _append(r, chat_id, answer, "second")
    waiting.join(timeout=60)
    assert polled and polled[0].status_code == 200
    assert [entry["text"] for entry in json.loads(polled[0].data)] == ["second"]
    assert polled[0].headers["Stream-Next-Offset"] == f"{2:016d}"
    assert polled[0].headers["Stream-Cursor"].isdigit()


def test_a_long_poll_with_nothing_new_ends_with_204(
    redis_server: RedisServer, r: redis.Redis, tmp_path: Path
) -> None:
    app = make_test_app(redis_server.url, tmp_path, DURABLE_LONG_POLL_SECONDS=0.2)
    alice = Person(app)
    chat_id, answer = _answer(alice, r)
    response = alice.client.get(
        _url(chat_id, answer), query_string={"offset": "now", "live": "long-poll"}
    )
    assert response.status_code == 204
    assert response.headers["Stream-Up-To-Date"] == "true"
    assert response.headers["Stream-Next-Offset"] == "0" * 16
    _finish(r, chat_id, answer, "done")
    length = len(_log(r, chat_id, answer))
    at_end = {"offset": f"{length:016d}", "live": "long-poll"}
    closed = alice.client.get(_url(chat_id, answer), query_string=at_end)
    assert closed.status_code == 204 and closed.headers["Stream-Closed"] == "true"


def test_sse_sends_the_log_as_data_and_control_events_and_ends_with_the_answer(
    alice: Person, r: redis.Redis
) -> None:
    chat_id, answer = _answer(alice, r)
    _finish(r, chat_id, answer, "a", "b")
    log = _log(r, chat_id, answer)
    response = alice.client.get(_url(chat_id, answer), query_string={"offset": "-1", "live": "sse"})
    assert response.status_code == 200 and response.content_type == "text/event-stream"
    body = response.get_data(as_text=True)
    data = [line[5:] for line in body.splitlines() if line.startswith("data:[")]
    assert data == ["[" + ",".join(log) + "]"]
    control = json.loads([line[5:] for line in body.splitlines() if "streamNextOffset" in line][-1])
    assert control == {
        "streamNextOffset": f"{len(log):016d}",
        "streamClosed": True,
        "upToDate": True,
    }


def test_only_the_owner_reads_and_writes_are_refused(
    app: Flask, alice: Person, bob: Person, r: redis.Redis
) -> None:
    chat_id, answer = _answer(alice, r)
    _finish(r, chat_id, answer, "secret")
    url = _url(chat_id, answer)
    assert alice.client.get(url).status_code == 200
    assert bob.client.get(url).status_code == 404
    assert app.test_client().get(url).status_code == 404  # no session
    assert bob.client.get(f"/chats/{chat_id}/events").status_code == 404
    for method in ("put", "post", "delete", "patch"):
        refused = getattr(alice.client, method)(url, data=b"[]", content_type="application/json")
        assert refused.status_code == 405, method
        assert "GET" in refused.headers["Allow"]
    assert json.loads(alice.client.get(url).data)[0]["text"] == "secret"  # unchanged


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_personal_access_token_reads_its_owners_streams_until_revoked(
    app: Flask, alice: Person, bob: Person, r: redis.Redis
) -> None:
    chat_id, answer = _answer(alice, r)
    _finish(r, chat_id, answer, "for scripts")
    alice_id = store.get_chat(r, chat_id).owner  # type: ignore[union-attr]
    made = alice.post("/account/tokens", name="my script")
    assert made.status_code == 200
    token = _token_on(made.get_data(as_text=True))
    stranger = app.test_client()  # no cookie: the token alone
    assert stranger.get(_url(chat_id, answer), headers=_bearer(token)).status_code == 200
    assert stranger.get(f"/chats/{chat_id}/events", headers=_bearer(token)).status_code == 200
    assert stranger.get("/", headers=_bearer(token)).status_code == 302  # streams only
    bob_chat, bob_answer = _answer(bob, r)
    assert stranger.get(_url(bob_chat, bob_answer), headers=_bearer(token)).status_code == 404
    # Redis keeps its hash, not the token.
    assert token not in json.dumps(keys_and_values(r))
    (listed,) = access_tokens.list_tokens(r, alice_id)
    assert listed.name == "my script"
    page = alice.client.get("/account").get_data(as_text=True)
    assert "my script" in page and token not in page  # shown once
    revoked = alice.post(f"/account/tokens/{listed.id}/revoke")
    assert revoked.status_code == 303
    unauthorized = stranger.get(_url(chat_id, answer), headers=_bearer(token))
    assert unauthorized.status_code == 401
    assert "not valid" in unauthorized.get_data(as_text=True)


@pytest.mark.parametrize(
    "header", ["Bearer chatapp_pat_mistyped", "Bearer ", "bearer x", "Bearer " + "x" * 5000]
)
def test_a_bearer_token_that_is_not_one_of_ours_gets_401(
    app: Flask, alice: Person, r: redis.Redis, header: str
) -> None:
    chat_id, answer = _answer(alice, r)
    response = alice.client.get(_url(chat_id, answer), headers={"Authorization": header})
    assert response.status_code == 401  # even with the owner's cookie: the token is wrong
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_another_scheme_leaves_the_session_to_decide(
    app: Flask, alice: Person, r: redis.Redis
) -> None:
    """A proxy's Basic authentication in front of the app: the page's reads still work."""
    chat_id, answer = _answer(alice, r)
    basic = {"Authorization": "Basic dXNlcjpwYXNz"}
    assert alice.client.get(_url(chat_id, answer), headers=basic).status_code == 200
    assert app.test_client().get(_url(chat_id, answer), headers=basic).status_code == 404


def test_a_token_stops_working_when_its_account_is_disabled(
    app: Flask, alice: Person, r: redis.Redis
) -> None:
    chat_id, answer = _answer(alice, r)
    owner = store.get_chat(r, chat_id).owner  # type: ignore[union-attr]
    token = access_tokens.create(r, owner, "ci")
    url = _url(chat_id, answer)
    assert app.test_client().get(url, headers=_bearer(token)).status_code == 200
    users.set_disabled(r, owner, True)
    assert app.test_client().get(url, headers=_bearer(token)).status_code == 401


def test_token_names_and_counts_are_checked(alice: Person, r: redis.Redis) -> None:
    assert alice.post("/account/tokens", name="   ").status_code == 400
    assert alice.post("/account/tokens", name="x" * 81).status_code == 400
    for number in range(access_tokens.MAX_PER_USER):
        assert alice.post("/account/tokens", name=f"token {number}").status_code == 200
    too_many = alice.post("/account/tokens", name="one more")
    assert too_many.status_code == 400 and "Revoke one" in too_many.get_data(as_text=True)
    assert alice.post("/account/tokens/0123456789abcdef/revoke").status_code == 404


@pytest.mark.parametrize(
    "query",
    [
        "offset=abc",
        "offset=-2",
        "offset=1",
        "offset=00000000000000001",
        "offset=0000000000000001&offset=0000000000000002",
        "offset=-1&live=websocket",
        "live=sse",
        "live=long-poll",
        "offset=9999999999999999",
    ],
)
def test_a_bad_offset_or_mode_gets_400_that_says_why(
    alice: Person, r: redis.Redis, query: str
) -> None:
    chat_id, answer = _answer(alice, r)
    _finish(r, chat_id, answer, "x")
    response = alice.client.get(f"{_url(chat_id, answer)}?{query}")
    assert response.status_code == 400
    assert len(response.get_data(as_text=True)) > 20


@pytest.mark.parametrize(
    "path",
    [
        "/chats/{chat}/messages/{answer}/generations/0123456789abcdef",  # no such generation
        "/chats/{chat}/messages/0123456789abcdef/generations/{gen}",  # no such answer
        "/chats/{chat}/messages/{question}/generations/{gen}",  # a question, not an answer
        "/chats/{chat}/messages/{answer}/generations/..%2f..",
        "/chats/0123456789abcdef/events",
        "/chats/not-an-id/events",
    ],
)
def test_what_does_not_exist_is_404(alice: Person, r: redis.Redis, path: str) -> None:
    chat_id, answer = _answer(alice, r)
    question = next(m for m in store.get_messages(r, chat_id) if m.role == "user")
    url = path.format(chat=chat_id, answer=answer.id, gen=answer.gen, question=question.id)
    assert alice.client.get(url).status_code == 404


def test_an_expired_log_is_gone_never_other_bytes(alice: Person, r: redis.Redis) -> None:
    chat_id, answer = _answer(alice, r)
    _finish(r, chat_id, answer, "kept a while")
    assert alice.client.get(_url(chat_id, answer)).status_code == 200
    r.delete(store.log_key(chat_id, answer.gen))  # what its retention does
    for query in ({}, {"offset": "0000000000000001"}, {"offset": "now"}):
        assert alice.client.get(_url(chat_id, answer), query_string=query).status_code == 404
    assert alice.client.head(_url(chat_id, answer)).status_code == 404


def test_the_chats_events_read_as_a_stream_that_ends_with_the_chat(
    alice: Person, r: redis.Redis
) -> None:
    chat_id, answer = _answer(alice, r)
    response = alice.client.get(f"/chats/{chat_id}/events")
    assert response.status_code == 200
    events = json.loads(response.data)
    assert [event["t"] for event in events][-2:] == [
        contract.MESSAGE_ADDED,
        contract.ANSWER_STARTED,
    ]
    assert events[-1]["m"] == answer.id and events[-1]["g"] == answer.gen  # where to read it
    assert (
        response.data == ("[" + ",".join(r.lrange(store.events_key(chat_id), 0, -1)) + "]").encode()
    )
    assert "Stream-Closed" not in response.headers
    assert alice.post(f"/chats/{chat_id}/delete").status_code == 204  # htmx: done
    wait_until(lambda: alice.client.get(f"/chats/{chat_id}/events").status_code == 404)


def _token_on(page: str) -> str:
    start = page.index(access_tokens.TOKEN_PREFIX)
    return page[start : page.index('"', start)]


@pytest.mark.parametrize("live", ["sse", "long-poll"])
def test_a_live_reader_of_an_answer_whose_producer_is_gone_gets_its_end(
    redis_server: RedisServer, r: redis.Redis, tmp_path: Path, live: str
) -> None:
    app = make_test_app(
        redis_server.url,
        tmp_path,
        CHECK_SECONDS=0.2,
        PING_SECONDS=0.1,
        DURABLE_LONG_POLL_SECONDS=0.3,
    )
    alice = Person(app)
    chat_id, answer = _answer(alice, r)
    _append(r, chat_id, answer, "half an ans")
    r.delete(store.heartbeat_key(chat_id, answer.gen))  # its worker died: no more beats
    query = {"offset": f"{1:016d}", "live": live}
    response = alice.client.get(_url(chat_id, answer), query_string=query)
    body = response.get_data(as_text=True)
    if live == "sse":
        (data,) = [json.loads(line[5:]) for line in body.splitlines() if line.startswith("data:[")]
        assert '"streamClosed":true' in body
    else:
        data = json.loads(body)
        assert response.headers["Stream-Closed"] == "true"
    assert [entry["t"] for entry in data] == [contract.ERROR]
    assert store.DEAD_PRODUCER in data[0]["message"]


class _AppendsDuringARead:
    """A Redis client whose pipelines run their commands one at a time, with `append`
    called before command number `at`: an append landing between a read's commands."""

    def __init__(self, r: redis.Redis, at: int, append: Callable[[], None]) -> None:
        self.r, self.at, self.append = r, at, append

    def pipeline(self, transaction: bool = False) -> _AppendsDuringARead:
        self.commands: list[tuple[object, ...]] = []
        return self

    def execute_command(self, *command: object) -> None:
        self.commands.append(command)

    def lrange(self, key: str, first: int, last: int) -> None:
        self.commands.append(("LRANGE", key, first, last))

    def llen(self, key: str) -> None:
        self.commands.append(("LLEN", key))

    def execute(self) -> list[object]:
        replies = []
        for number, command in enumerate(self.commands):
            if number == self.at:
                self.append()
            replies.append(self.r.execute_command(*command))
        return replies


@pytest.mark.parametrize("at", range(6))
def test_a_read_never_says_closed_before_it_has_the_final_entry(
    alice: Person, r: redis.Redis, at: int
) -> None:
    """Wherever the answer's last append lands among a read's commands."""
    chat_id, answer = _answer(alice, r)
    _append(r, chat_id, answer, "almost")
    log = answer_generation(r, chat_id, answer, answer.gen)
    assert log is not None

    def finish() -> None:
        _finish(r, chat_id, answer, " done")

    page = log.read(_AppendsDuringARead(r, at, finish), 1)  # type: ignore[arg-type]
    if page.closed:
        assert [json.loads(entry)["t"] for entry in page.entries][-1] == contract.DONE
        assert page.finished


def test_an_answers_url_reads_that_answers_generation_only(alice: Person, r: redis.Redis) -> None:
    chat_id, first = _answer(alice, r)
    _finish(r, chat_id, first, "first")
    assert alice.send(chat_id, "again", client_id="client-0002").status_code == 200
    second = store.get_messages(r, chat_id)[-1]
    _finish(r, chat_id, second, "second")
    other = f"/chats/{chat_id}/messages/{first.id}/generations/{second.gen}"
    assert alice.client.get(other).status_code == 404  # no other URL for the same bytes
    assert alice.client.get(_url(chat_id, second)).status_code == 200


def test_a_live_read_ends_once_its_token_is_revoked(
    redis_server: RedisServer, r: redis.Redis, tmp_path: Path
) -> None:
    app = make_test_app(
        redis_server.url, tmp_path, CHECK_SECONDS=0.2, PING_SECONDS=0.1, STREAM_MAX_SECONDS=600
    )
    alice = Person(app)
    chat_id, _ = _answer(alice, r)
    owner = store.get_chat(r, chat_id).owner  # type: ignore[union-attr]
    token = access_tokens.create(r, owner, "soon revoked")
    query = {"offset": "now", "live": "sse"}
    response = app.test_client().get(
        f"/chats/{chat_id}/events", query_string=query, headers=_bearer(token)
    )
    chunks, first = iter(response.response), b""
    while b"event: control" not in first:  # the read is up to date: it waits for news
        first += next(chunks)
    (listed,) = access_tokens.list_tokens(r, owner)
    access_tokens.revoke(r, owner, listed.id)
    rest = b"".join(chunks)  # the response ends: the stream (never closed) stops
    assert b"retry:" not in rest  # not the engine's periodic close: the revocation
    response.close()
