"""The answer job in-process (the openai path, failures, fencing) against a real redis-server."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import redis
from rq import Queue

from chatapp import jobs, store, waiting
from chatapp.connections import get_queue
from chatapp.heartbeat import Heartbeat
from chatapp.render import render_markdown
from harness.fake_openai import FakeModel, fake_openai_server
from harness.servers import RedisServer, wait_until
from tests.conftest import make_test_app
from tests.storing import NewAnswer, new_answer


def run_job(app, sent: NewAnswer, r: redis.Redis) -> str:
    with app.app_context():
        return jobs.generate_answer(sent.chat_id, sent.answer_id, sent.generation_id)


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
    chat_id = sent.chat_id
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


# The server's own words, but never an address of the operator's network: a proxy's
# "upstream request to http://10.0.0.7:11434/... failed" would tell every user.
ADDRESS_HIDDEN = "upstream request to (an address) failed"


@pytest.mark.parametrize(
    ("status", "said", "shown"),
    [
        (500, "boom", "boom"),
        (
            502,
            "upstream request to http://10.20.0.7:11434/v1/chat/completions failed",
            ADDRESS_HIDDEN,
        ),
        (502, "upstream request to 10.20.0.7:11434 failed", ADDRESS_HIDDEN),
        (502, "upstream request to ollama.internal:11434 failed", ADDRESS_HIDDEN),
    ],
)
def test_a_model_server_error_ends_the_answer_with_a_readable_error(
    r: redis.Redis, redis_server: RedisServer, tmp_path: Path, status: int, said: str, shown: str
) -> None:
    with fake_openai_server(FakeModel([], status=status, error=said)) as base_url:
        app = make_test_app(
            redis_server.url, tmp_path, OPENAI_API_KEY="k", OPENAI_BASE_URL=base_url
        )
        sent = new_answer(r)
        with pytest.raises(Exception, match=said.split()[0]):
            run_job(app, sent, r)
    message = store.get_message(r, sent.chat_id, sent.answer_id)
    assert message is not None and message.status == "error"
    assert message.error == f"The model server answered with an error ({status}): {shown}"


def test_an_unreachable_model_server_ends_the_answer_with_a_readable_error(
    r: redis.Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    app = make_test_app(
        redis_server.url, tmp_path, OPENAI_API_KEY="k", OPENAI_BASE_URL="http://127.0.0.1:9/v1"
    )
    sent = new_answer(r)
    with pytest.raises(Exception, match="Connection"):
        run_job(app, sent, r)
    message = store.get_message(r, sent.chat_id, sent.answer_id)
    assert message is not None and message.status == "error"
    assert message.error == "Could not reach the model server."  # not its address


def answer_from(
    model: FakeModel, r: redis.Redis, redis_server: RedisServer, tmp_path: Path, **settings: object
) -> store.Message:
    """Run one answer job against `model`; return the stored answer."""
    with fake_openai_server(model) as base_url:
        app = make_test_app(
            redis_server.url, tmp_path, OPENAI_API_KEY="k", OPENAI_BASE_URL=base_url, **settings
        )
        sent = new_answer(r)
        try:
            run_job(app, sent, r)
        except Exception:
            pass  # RQ records it; the answer must say what happened
    message = store.get_message(r, sent.chat_id, sent.answer_id)
    assert message is not None
    return message


TOOL_CALL = {
    "choices": [
        {
            "index": 0,
            "delta": {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "search", "arguments": "{}"},
                    }
                ]
            },
            "finish_reason": None,
        }
    ]
}


@pytest.mark.parametrize(
    ("model", "error"),
    [
        (FakeModel(["Half an ans"], finish=None, done=False), "closed the stream before the end"),
        (FakeModel(["Half an ans"], finish=None, done=True), ""),  # [DONE] alone: complete
        (FakeModel(["Half an ans"], finish="stop", done=False), ""),  # finish_reason alone
        (FakeModel(["Half an ans"], finish="length"), "reached its length limit"),
        (FakeModel(["Half an ans"], finish="content_filter"), "content filter"),
        (FakeModel([], extra=[TOOL_CALL], finish="tool_calls"), "asked to use a tool"),
        (
            FakeModel(
                ["Half"],
                extra=[{"error": {"message": "Overloaded, try later"}}],
                finish=None,
                done=False,
            ),
            "reported an error: Overloaded, try later",
        ),
        (FakeModel([], status=400, error="Invalid model name"), "(400): Invalid model name"),
    ],
    ids=[
        "cut",
        "done-only",
        "finish-only",
        "length",
        "filter",
        "tool-calls",
        "error-in-stream",
        "status-400",
    ],
)
@pytest.mark.parametrize("chunked", [False, True], ids=["until-close", "http-chunks"])
def test_how_the_model_stream_ended_is_what_the_answer_says(
    r: redis.Redis,
    redis_server: RedisServer,
    tmp_path: Path,
    model: FakeModel,
    error: str,
    chunked: bool,
) -> None:
    """Both ways a server may frame its stream: a body that ends when the connection
    closes, and HTTP/1.1 chunks (where a cut stream is a body with no last chunk)."""
    model.chunked = chunked
    message = answer_from(model, r, redis_server, tmp_path)
    if not error:
        assert (message.status, message.text) == ("done", "Half an ans")
        return
    assert message.status == "error" and error in message.error
    assert "127.0.0.1" not in message.error
    assert message.text == "".join(model.pieces)  # what was written is kept


def test_a_silent_model_server_ends_the_answer_after_the_timeout_once(
    r: redis.Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    silent = FakeModel(["never sent"], headers_delay=30)  # reached, then nothing
    message = answer_from(silent, r, redis_server, tmp_path, MODEL_TIMEOUT_SECONDS=0.5)
    assert (message.status, message.error) == ("error", "The model server sent nothing for 0.5 s.")
    assert len(silent.requests) == 1  # not asked again (the client's retries tripled the wait)
    midway = FakeModel(["some text"], first_delay=30)
    message = answer_from(midway, r, redis_server, tmp_path, MODEL_TIMEOUT_SECONDS=0.5)
    assert (message.status, message.error) == ("error", "The model server sent nothing for 0.5 s.")


def test_the_offline_model_answers_about_the_message(
    r: redis.Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    app = make_test_app(redis_server.url, tmp_path)
    sent = new_answer(r, "Why is the sky blue?")
    assert run_job(app, sent, r) == "done"
    message = store.get_message(r, sent.chat_id, sent.answer_id)
    assert message is not None and message.status == "done"
    assert "Why is the sky blue?" in message.text
    for part in ("<h2>", "<ul>", '<pre><code class="language-python">'):
        assert part in message.html


def test_a_job_for_a_stopped_answer_does_nothing(
    r: redis.Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    app = make_test_app(redis_server.url, tmp_path)
    sent = new_answer(r)
    chat_id = sent.chat_id
    store.append(
        r, chat_id, sent.answer_id, sent.generation_id, [], None, store.Terminal("stopped")
    )
    assert run_job(app, sent, r) == (
        "not run: this answer already ended (stopped); use Regenerate in the chat to write it again"
    )
    assert store.log_length(r, chat_id, sent.generation_id) == 1


def test_a_stop_during_the_answer_fences_the_producer_off(
    r: redis.Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    sent = new_answer(r)
    chat_id = sent.chat_id
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
        chat_id = sent.chat_id
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
    chat_id = sent.chat_id
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


def test_the_heartbeat_skips_its_beats_while_the_producer_appends(
    r: redis.Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    """Each append renews the heartbeat; a beat beside it would be a second round trip."""
    sent = new_answer(r)
    chat_id = sent.chat_id
    appended_at = [time.monotonic() + 3600.0]  # the producer appended "just now", always
    timing = store.Timing(heartbeat_ms=10_000)
    beat = Heartbeat(
        r, chat_id, sent.answer_id, sent.generation_id, 0.05, timing,
        appended_at=lambda: appended_at[0],
    )  # fmt: skip
    with beat:
        r.delete(store.heartbeat_key(chat_id, sent.generation_id))
        time.sleep(0.5)  # ten beats' time
        assert not store.is_alive(r, chat_id, sent.generation_id)
        appended_at[0] = 0.0  # the producer went quiet: the beats resume
        wait_until(lambda: store.is_alive(r, chat_id, sent.generation_id), what="a beat")


def test_a_sweep_for_removed_jobs_at_any_moment_of_queueing_leaves_the_answer_alone(
    r: redis.Redis, redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker's sweep (waiting.py) ends listed answers whose job is gone. It ran between
    an answer being listed and its job being saved, and ended a fresh answer as "taken off
    the queue" (seen with 500 sent at once)."""
    app = make_test_app(redis_server.url, tmp_path)
    sent = new_answer(r)
    chat_id = sent.chat_id
    real_enqueue_job, ended = Queue.enqueue_job, []

    def sweep() -> None:
        ended.append(waiting.end_removed(get_queue(), r, store.Timing()))

    def enqueue_job(queue: Queue, job: object, *args: object, **kwargs: object) -> object:
        sweep()
        queued = real_enqueue_job(queue, job, *args, **kwargs)  # type: ignore[arg-type]
        sweep()
        return queued

    monkeypatch.setattr(Queue, "enqueue_job", enqueue_job)
    with app.app_context():
        jobs.enqueue_answer(get_queue(), chat_id, sent.answer_id, sent.generation_id, "me", "t")
        sweep()
        assert waiting.count(get_queue()) == 1
    assert ended == [0, 0, 0]
    message = store.get_message(r, chat_id, sent.answer_id)
    assert message is not None and message.status == "queued"


def test_a_model_that_splits_a_character_across_chunks_gets_a_replacement_character(
    r: redis.Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    """Half an emoji per chunk (lone surrogates, escaped in each chunk's JSON) could not be
    stored as UTF-8: the answer stayed "streaming" until its heartbeat ran out."""
    model = FakeModel(["smile \ud83d", "\ude00 ok"], chunked=True)  # json.dumps escapes each
    message = answer_from(model, r, redis_server, tmp_path)
    assert (message.status, message.text) == ("done", "smile \ufffd\ufffd ok")
