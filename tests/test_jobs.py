"""The answer job in-process (the openai path, failures, fencing) against a real redis-server."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import redis

from chatapp import jobs, store
from chatapp.producer import Heartbeat
from chatapp.render import render_markdown
from tests.conftest import make_test_app
from tests.fake_openai import FakeModel, fake_openai_server
from tests.servers import RedisServer, wait_until
from tests.storing import chat_of, new_answer


def run_job(app, sent: store.SendResult, r: redis.Redis) -> str:
    with app.app_context():
        return jobs.generate_answer(chat_of(r, sent.answer_id), sent.answer_id, sent.generation_id)


def test_the_openai_path_streams_the_answer_with_the_history_as_context(
    r: redis.Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    model = FakeModel(["# Hi", "\n\nThis is ", "**the** answer", ".\n\n```py\nx = 1\n```\n"])
    with fake_openai_server(model) as base_url:
        app = make_test_app(
            redis_server.url,
            tmp_path,
            OPENAI_API_KEY="sk-test",
            OPENAI_BASE_URL=base_url,
            MODEL="fake-model",
            SYSTEM_PROMPT="Be brief.",
        )
        sent = new_answer(r, "What is this?")
        assert run_job(app, sent, r) == "done"
    chat_id = chat_of(r, sent.answer_id)
    message = store.get_message(r, chat_id, sent.answer_id)
    text = "".join(model.pieces)
    assert message is not None
    assert (message.status, message.text, message.html) == ("done", text, render_markdown(text))
    assert model.requests[0]["model"] == "fake-model" and model.requests[0]["stream"] is True
    assert model.requests[0]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is this?"},
    ]
    assert model.authorization == ["Bearer sk-test"]
    log = [json.loads(e) for e in store.read_log(r, chat_id, sent.generation_id)]
    assert "".join(e.get("text", "") for e in log) == text
    assert [e["t"] for e in log][-1] == "done" and all(e["t"] == "delta" for e in log[:-1])


def test_a_model_server_error_ends_the_answer_with_a_readable_error(
    r: redis.Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    with fake_openai_server(FakeModel([], status=500)) as base_url:
        app = make_test_app(
            redis_server.url, tmp_path, OPENAI_API_KEY="k", OPENAI_BASE_URL=base_url
        )
        sent = new_answer(r)
        with pytest.raises(Exception, match="boom"):
            run_job(app, sent, r)
    message = store.get_message(r, chat_of(r, sent.answer_id), sent.answer_id)
    assert message is not None and message.status == "error"
    assert message.error == "The model server answered with an error (500)."


def test_an_unreachable_model_server_ends_the_answer_with_a_readable_error(
    r: redis.Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    app = make_test_app(
        redis_server.url, tmp_path, OPENAI_API_KEY="k", OPENAI_BASE_URL="http://127.0.0.1:9/v1"
    )
    sent = new_answer(r)
    with pytest.raises(Exception, match="Connection"):
        run_job(app, sent, r)
    message = store.get_message(r, chat_of(r, sent.answer_id), sent.answer_id)
    assert message is not None and message.status == "error"
    assert message.error == "Could not reach the model server (http://127.0.0.1:9/v1)."


def test_the_offline_model_answers_about_the_message(
    r: redis.Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    app = make_test_app(redis_server.url, tmp_path)
    sent = new_answer(r, "Why is the sky blue?")
    assert run_job(app, sent, r) == "done"
    message = store.get_message(r, chat_of(r, sent.answer_id), sent.answer_id)
    assert message is not None and message.status == "done"
    assert "Why is the sky blue?" in message.text
    for part in ("<h2>", "<ul>", '<pre><code class="language-python">'):
        assert part in message.html


def test_a_job_for_a_stopped_answer_does_nothing(
    r: redis.Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    app = make_test_app(redis_server.url, tmp_path)
    sent = new_answer(r)
    chat_id = chat_of(r, sent.answer_id)
    store.append(
        r, chat_id, sent.answer_id, sent.generation_id, [], None, store.Terminal("stopped")
    )
    assert run_job(app, sent, r) == "skipped"
    assert store.log_length(r, chat_id, sent.generation_id) == 1


def test_a_stop_during_the_answer_fences_the_producer_off(
    r: redis.Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    sent = new_answer(r)
    chat_id = chat_of(r, sent.answer_id)
    pieces = ["one ", "two ", "three"]

    def stop_after_first(*args, **kwargs):
        yield pieces[0]
        store.append(
            r, chat_id, sent.answer_id, sent.generation_id, [], None, store.Terminal("stopped")
        )
        yield from pieces[1:]

    app = make_test_app(redis_server.url, tmp_path)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("chatapp.providers.OfflineModel.stream", stop_after_first)
        assert run_job(app, sent, r) == "ended"
    message = store.get_message(r, chat_id, sent.answer_id)
    assert message is not None and (message.status, message.text) == ("stopped", "one ")
    log = [json.loads(e) for e in store.read_log(r, chat_id, sent.generation_id)]
    assert [e["t"] for e in log] == ["delta", "stopped"]


def test_a_stop_while_the_model_is_silent_ends_the_job_at_once(
    r: redis.Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    # The model says nothing for longer than the test may run: only closing its stream
    # (from the heartbeat, which learns of the stop) lets the job return.
    model = FakeModel(["never sent"], first_delay=600)
    with fake_openai_server(model) as base_url:
        app = make_test_app(
            redis_server.url,
            tmp_path,
            OPENAI_API_KEY="k",
            OPENAI_BASE_URL=base_url,
            HEARTBEAT_SECONDS=0.05,
        )
        sent = new_answer(r)
        chat_id = chat_of(r, sent.answer_id)
        stop = store.Terminal("stopped")
        threading.Timer(
            0.5, store.append, args=(r, chat_id, sent.answer_id, sent.generation_id, [], None, stop)
        ).start()
        assert run_job(app, sent, r) == "ended"
        assert model.disconnected.wait(timeout=30)
    message = store.get_message(r, chat_id, sent.answer_id)
    assert message is not None and message.status == "stopped"


def test_the_heartbeat_keeps_a_slow_answer_alive_and_stops_after_the_end(
    r: redis.Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    sent = new_answer(r)
    chat_id = chat_of(r, sent.answer_id)
    timing = store.Timing(heartbeat_ms=10_000)
    with Heartbeat(r, chat_id, sent.answer_id, sent.generation_id, 0.05, timing) as beat:
        r.delete(store.heartbeat_key(chat_id, sent.generation_id))  # as if the TTL ran out
        wait_until(lambda: store.is_alive(r, chat_id, sent.generation_id), what="a beat")
        message = store.get_message(r, chat_id, sent.answer_id)
        assert message is not None and not store.end_if_dead(r, chat_id, message)
        store.append(
            r, chat_id, sent.answer_id, sent.generation_id, [], None, store.Terminal("stopped")
        )
        assert beat.fenced.wait(timeout=10)
    assert not store.is_alive(r, chat_id, sent.generation_id)
