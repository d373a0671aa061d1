"""Chat titles: made by a real model after the first answer, never over a person's rename."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from rq import Queue

from chatapp import store, titles
from chatapp.contract import TITLE_CHANGED, ChatEvent
from harness.fake_openai import FakeModel, fake_openai_server
from harness.servers import RedisServer
from tests.conftest import make_test_app
from tests.storing import new_answer
from tests.test_jobs import run_job


def queued_titles(redis_server: RedisServer) -> list[tuple[str, ...]]:
    """The title jobs in the test queue: (chat id, the title it may replace)."""
    queue = Queue("test-small", connection=redis.Redis.from_url(redis_server.url))  # their lane
    return [tuple(job.args) for job in queue.jobs if job.func_name.endswith("make_title")]


@pytest.mark.parametrize("renamed_first", [False, True])
def test_a_real_model_titles_the_chat_after_its_first_answer(
    r: redis.Redis, redis_server: RedisServer, tmp_path: Path, renamed_first: bool
) -> None:
    # A reasoning model: its thoughts come first, and are not the title.
    model = FakeModel(["# Hi", "\n\nThis is ", "**the** answer."], thinking=["Think...\n"])
    with fake_openai_server(model) as base_url:
        app = make_test_app(
            redis_server.url, tmp_path, OPENAI_API_KEY="sk-test", OPENAI_BASE_URL=base_url
        )
        sent = new_answer(r, "What is this about?")
        chat_id = sent.chat_id
        assert run_job(app, sent, r) == "done"
        (queued,) = queued_titles(redis_server)
        assert queued == (chat_id, "What is this about?")
        if renamed_first:
            store.rename_chat(r, chat_id, "Mine")
        with app.app_context():
            outcome = titles.make_title(*queued)
    chat = store.get_chat(r, chat_id)
    assert chat is not None
    if renamed_first:
        assert (outcome, chat.title) == ("kept", "Mine")
    else:
        assert (outcome, chat.title) == ("titled", "Hi")
        assert store.chat_events(r, chat_id)[-1] == ChatEvent(TITLE_CHANGED, title="Hi")
    asked = model.requests[-1]["messages"]
    assert asked[0] == {"role": "system", "content": titles.PROMPT}
    assert "user: What is this about?" in asked[1]["content"]


def test_titles_turned_off_keep_the_first_message_with_a_real_model(
    r: redis.Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    model = FakeModel(["An answer."])
    with fake_openai_server(model) as base_url:
        app = make_test_app(
            redis_server.url,
            tmp_path,
            OPENAI_API_KEY="sk-test",
            OPENAI_BASE_URL=base_url,
            AUTO_TITLES=False,
        )
        sent = new_answer(r, "Keep this title")
        assert run_job(app, sent, r) == "done"
    assert queued_titles(redis_server) == []
    assert len(model.requests) == 1  # the answer only


def test_the_offline_model_keeps_the_first_message_as_the_title(
    r: redis.Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    app = make_test_app(redis_server.url, tmp_path)
    sent = new_answer(r, "Offline question")
    assert run_job(app, sent, r) == "done"
    assert queued_titles(redis_server) == []


@pytest.mark.parametrize(
    ("reply", "title"),
    [
        ('"Resumable streams, explained."', "Resumable streams, explained"),
        ("\n# A heading\nand more", "A heading"),
        ("**Bold title**", "Bold title"),
        ("Streams with **math**, a `table` and _more_", "Streams with math, a table and more"),
        ("snake_case and 2 * 3", "snake_case and 2 * 3"),
        ("\u201cCurly\u201d", "Curly"),
        ("", ""),
        ("x" * 300, "x" * 59 + "…"),
    ],
)
def test_a_reply_becomes_a_one_line_title(reply: str, title: str) -> None:
    assert titles.clean(reply) == title
