"""Jobs that die or hang, with real RQ worker processes: every viewer sees a clear error."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from rq.job import Job, JobStatus

from chatapp import store
from tests.client import ChatClient
from tests.servers import Stack, children, running_stack, wait_until

SETTINGS = {
    "CHATAPP_OFFLINE_TOKENS_PER_SECOND": "10",  # answers that last half a minute
    "CHATAPP_JOB_TIMEOUT_SECONDS": "2",
    "CHATAPP_HEARTBEAT_TTL_SECONDS": "2",
    "CHATAPP_HEARTBEAT_SECONDS": "0.5",
    "CHATAPP_CHECK_SECONDS": "0.5",
}


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with running_stack(tmp_path, **SETTINGS) as running:
        yield running


def start_answer(stack: Stack) -> tuple[ChatClient, str, str]:
    client = ChatClient(stack.base)
    chat_id = client.new_chat()
    answer_id = client.send_ok(chat_id, "Take your time")
    r = stack.redis()
    wait_until(
        lambda: store.get_message(r, chat_id, answer_id).status == "streaming",  # type: ignore[union-attr]
        what="the answer to start",
    )
    return client, chat_id, answer_id


def job_of(stack: Stack, message: store.Message) -> Job:
    return Job.fetch(f"answer-{message.gen}", connection=redis.Redis.from_url(stack.redis_url))


def test_a_job_past_its_timeout_ends_with_a_readable_error(stack: Stack) -> None:
    client, chat_id, answer_id = start_answer(stack)
    events = client.stream(chat_id, answer_id)
    stored = store.get_message(stack.redis(), chat_id, answer_id)
    assert stored is not None and stored.status == "error"
    assert stored.error == "The answer took longer than the 2 s limit."
    assert stored.text  # the text so far is kept
    assert events[-1].event == "end" and stored.error in events[-1].data
    assert job_of(stack, stored).get_status() == JobStatus.FAILED


def test_a_killed_worker_and_work_horse_are_noticed_by_the_heartbeat(stack: Stack) -> None:
    client, chat_id, answer_id = start_answer(stack)
    horses = children(stack.worker_pid)
    os.kill(stack.worker_pid, signal.SIGKILL)  # nobody is left to report the horse's death
    for horse in horses:
        os.kill(horse, signal.SIGKILL)
    events = client.stream(chat_id, answer_id)
    stored = store.get_message(stack.redis(), chat_id, answer_id)
    assert stored is not None and (stored.status, stored.error) == ("error", store.DEAD_PRODUCER)
    assert events[-1].event == "end" and store.DEAD_PRODUCER in events[-1].data
