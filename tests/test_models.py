"""Each chat picks its model (from the server's list, or the operator's) and its own
instructions (system prompt); its answers are written with them and say which model wrote
them. Against a real redis-server and an OpenAI-compatible server on loopback."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from flask import Flask

from chatapp import jobs, store
from harness.accounts import Person
from harness.fake_openai import FakeModel, fake_openai_server
from harness.page import Page, answer_in
from harness.servers import RedisServer, free_port
from tests.conftest import make_test_app
from tests.storing import keys_and_values

DEFAULT = "fake-small"


def app_on(redis_server: RedisServer, tmp_path: Path, base_url: str, **settings: object) -> Flask:
    return make_test_app(
        redis_server.url,
        tmp_path,
        OPENAI_API_KEY="sk-test",
        OPENAI_BASE_URL=base_url,
        MODEL=DEFAULT,
        SYSTEM_PROMPT="Be brief.",
        **settings,
    )


def offered(page: str) -> list[str]:
    return [str(v) for v in Page(page).root.xpath('//select[@id="chat-model"]/option/@value')]


def chosen(page: str) -> str:
    [value] = Page(page).root.xpath('//select[@id="chat-model"]/option[@selected]/@value')
    return str(value)


def answer_now(app: Flask, r: redis.Redis, chat_id: str, answer_id: str) -> store.Message:
    """Run the answer's job here, as the worker would; return the answer as it ended."""
    generation = store.get_message(r, chat_id, answer_id).gen  # type: ignore[union-attr]
    with app.app_context():
        assert jobs.generate_answer(chat_id, answer_id, generation) == "done"
    return store.get_message(r, chat_id, answer_id)  # type: ignore[return-value]


def answer_id_of(response) -> str:
    return answer_in(response.text)


def test_a_chat_answers_with_the_model_and_instructions_its_owner_picked(
    redis_server: RedisServer, r: redis.Redis, tmp_path: Path
) -> None:
    model = FakeModel(["Hi."], models=["fake-large", DEFAULT, "fake-medium"])
    with fake_openai_server(model) as base_url:
        app = app_on(redis_server, tmp_path, base_url)
        alice = Person(app)
        chat_id = alice.new_chat()
        page = alice.client.get(f"/chats/{chat_id}").text
        assert offered(page) == [DEFAULT, "fake-large", "fake-medium"]  # the default first
        assert chosen(page) == DEFAULT
        assert ">Be brief.</textarea>" in page  # the configured instructions, to edit

        first = answer_id_of(alice.send(chat_id, "Before"))
        assert answer_now(app, r, chat_id, first).model == DEFAULT

        saved = alice.post(
            f"/chats/{chat_id}/options", model="fake-large", system_prompt="Answer in French."
        )
        assert saved.status_code == 200 and "fake-large" in saved.text
        page = alice.client.get(f"/chats/{chat_id}").text
        assert chosen(page) == "fake-large" and ">Answer in French.</textarea>" in page
        second = answer_id_of(alice.send(chat_id, "After", client_id="client-0002"))
        assert 'class="model">fake-large<' in alice.client.get(f"/chats/{chat_id}").text
        assert answer_now(app, r, chat_id, second).model == "fake-large"
        assert model.requests[-1]["model"] == "fake-large"
        assert model.requests[-1]["messages"][0] == {
            "role": "system",
            "content": "Answer in French.",
        }
        assert model.requests[0]["model"] == DEFAULT  # the earlier answer keeps its model
        assert model.listings == 1  # asked once; every page since read the kept list
        r.delete(store.models_cache_key())  # a send never waits for the server's list
        more = answer_id_of(alice.send(chat_id, "One more", client_id="client-0009"))
        assert answer_now(app, r, chat_id, more).model == "fake-large"
        assert model.listings == 1

        # No instructions at all: the model gets none (not the configured ones).
        alice.post(f"/chats/{chat_id}/options", model=DEFAULT, system_prompt="  ")
        third = answer_id_of(alice.send(chat_id, "Plain", client_id="client-0003"))
        answer_now(app, r, chat_id, third)
        assert model.requests[-1]["messages"][0]["role"] == "user"


def test_chat_options_refuse_what_they_cannot_use_and_change_nothing(
    redis_server: RedisServer, r: redis.Redis, tmp_path: Path
) -> None:
    with fake_openai_server(FakeModel([], models=[DEFAULT, "fake-large"])) as base_url:
        app = app_on(redis_server, tmp_path, base_url, MAX_SYSTEM_PROMPT_CHARS=100)
        alice, mallory = Person(app), Person(app)
        chat_id = alice.new_chat()
        alice.client.get(f"/chats/{chat_id}")  # the list is kept from here on
        before = keys_and_values(r)
        url = f"/chats/{chat_id}/options"
        unknown = alice.post(url, model="gpt-<script>", system_prompt="")
        assert unknown.status_code == 400
        assert "is not offered here" in unknown.text and "<script>" not in unknown.text
        assert alice.post(url, system_prompt="").status_code == 400  # no model at all
        long = alice.post(url, model=DEFAULT, system_prompt="x" * 101)
        assert long.status_code == 413 and "the limit is 100" in long.text
        assert mallory.post(url, model=DEFAULT, system_prompt="Mine").status_code == 404
        assert alice.post("/chats/00000000000000aa/options", model=DEFAULT).status_code == 404
        assert alice.post(url, csrf=False, model=DEFAULT).status_code == 400
        assert keys_and_values(r) == before


def test_the_operator_narrows_the_models_and_an_unreachable_server_leaves_the_default(
    redis_server: RedisServer, r: redis.Redis, tmp_path: Path
) -> None:
    model = FakeModel([], models=[DEFAULT, "fake-large", "fake-costly"])
    with fake_openai_server(model) as base_url:
        app = app_on(redis_server, tmp_path / "narrow", base_url, MODELS="fake-large, fake-tiny")
        alice = Person(app)
        page = alice.client.get(f"/chats/{alice.new_chat()}").text
        assert offered(page) == [DEFAULT, "fake-large", "fake-tiny"]
        assert model.listings == 0  # the operator's list is the list

    nobody = f"http://127.0.0.1:{free_port()}/v1"
    with broken_models_server() as broken:
        for place, base_url in [("away", nobody), ("broken", broken)]:
            r.flushall()
            app = app_on(redis_server, tmp_path / place, base_url)
            alice = Person(app)
            chat_id = alice.new_chat()
            page = alice.client.get(f"/chats/{chat_id}")
            assert page.status_code == 200 and offered(page.text) == [DEFAULT], place
            assert alice.post(f"/chats/{chat_id}/options", model=DEFAULT).status_code == 200
            assert alice.send(chat_id, "Still here?").status_code == 200


@contextlib.contextmanager
def broken_models_server() -> Iterator[str]:
    """A server that answers every request with a status line HTTP does not know."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            with connection:
                connection.recv(65536)
                connection.sendall(b"HTTP/1.1 two hundred\r\n\r\n")

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    finally:
        listener.close()


@pytest.mark.parametrize("picked", ["", "fake-large"])
def test_the_offline_model_is_the_only_one_offered_without_a_key(
    make_app_offline, picked: str
) -> None:
    app, r = make_app_offline
    alice = Person(app)
    chat_id = alice.new_chat()
    assert offered(alice.client.get(f"/chats/{chat_id}").text) == ["offline model"]
    if picked:  # a model of another setup: refused
        response = alice.post(f"/chats/{chat_id}/options", model=picked)
        assert response.status_code == 400
    answer = answer_id_of(alice.send(chat_id, "Hi"))
    assert answer_now(app, r, chat_id, answer).model == "offline model"


@pytest.fixture
def make_app_offline(redis_server: RedisServer, r: redis.Redis, tmp_path: Path):
    return make_test_app(redis_server.url, tmp_path), r


@pytest.mark.parametrize("knows_stream_options", [True, False])
def test_an_answer_shows_the_tokens_the_server_counted(
    redis_server: RedisServer, r: redis.Redis, tmp_path: Path, knows_stream_options: bool
) -> None:
    usage = {"prompt_tokens": 1234, "completion_tokens": 56, "total_tokens": 1290}
    model = FakeModel(["Hi."], usage=usage, knows_stream_options=knows_stream_options)
    with fake_openai_server(model) as base_url:
        app = app_on(redis_server, tmp_path, base_url)
        alice = Person(app)
        chat_id = alice.new_chat()
        answer = answer_now(app, r, chat_id, answer_id_of(alice.send(chat_id, "Count")))
        page = alice.client.get(f"/chats/{chat_id}").text
        exported = json.loads(alice.client.get(f"/chats/{chat_id}/export.json").text)
        again = alice.post(f"/chats/{chat_id}/messages/{answer.id}/regenerate")
        assert again.status_code == 204
        regenerating = store.get_messages(r, chat_id)[-1]  # the answer's new version
    if knows_stream_options:
        assert model.requests[0]["stream_options"] == {"include_usage": True}
        assert (answer.prompt_tokens, answer.answer_tokens) == (1234, 56)
        assert ">1,234 + 56 tokens</span>" in page
        usage_kept = {"prompt_tokens": 1234, "completion_tokens": 56}
        assert exported["messages"][1]["usage"] == usage_kept
        assert regenerating is not None and regenerating.answer_tokens == 0  # a new count
    else:  # refused once, asked again without it: the answer is written, with no count
        assert [("stream_options" in body) for body in model.requests] == [True, False]
        assert answer.text == "Hi." and answer.answer_tokens == 0
        assert " tokens</span>" not in page
