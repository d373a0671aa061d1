"""Jobs that die or hang, with real RQ worker processes: every viewer sees a clear error."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from rq.job import Job, JobStatus

from chatapp import store
from tests.client import ChatClient, Event
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
    return Job.fetch(f"answer-{message.gen}", connection=redis.Redis.from_url(stack.queue_url))


def test_a_job_past_its_timeout_ends_with_a_readable_error(stack: Stack) -> None:
    client, chat_id, answer_id = start_answer(stack)
    events = client.stream(chat_id, answer_id)
    stored = store.get_message(stack.redis(), chat_id, answer_id)
    assert stored is not None and stored.status == "error"
    assert stored.error == "The answer took longer than the 2 s limit."
    assert stored.text  # the text so far is kept
    assert events[-1].event == "end" and stored.error in events[-1].data
    job = job_of(stack, stored)
    wait_until(lambda: job.get_status() == JobStatus.FAILED, what="RQ to record the failure")


class Viewers:
    """`count` viewers following one answer to its end, each noting when `end` arrived."""

    def __init__(self, client: ChatClient, chat_id: str, answer_id: str, count: int = 10) -> None:
        self.ends: list[tuple[float, Event]] = []
        self.threads = [
            threading.Thread(target=self._follow, args=(client, chat_id, answer_id))
            for _ in range(count)
        ]
        for thread in self.threads:
            thread.start()

    def _follow(self, client: ChatClient, chat_id: str, answer_id: str) -> None:
        last_id = None
        for _ in range(100):  # like a browser: resume after every close
            events = client.stream(chat_id, answer_id, last_event_id=last_id)
            last_id = next((e.id for e in reversed(events) if e.id), last_id)
            if events and events[-1].event == "end":
                self.ends.append((time.monotonic(), events[-1]))
                return

    def wait(self) -> list[tuple[float, Event]]:
        for thread in self.threads:
            thread.join(timeout=60)
        assert len(self.ends) == len(self.threads)
        return self.ends


def report(capsys: pytest.CaptureFixture[str], what: str, viewers: int, seconds: float) -> None:
    with capsys.disabled():
        print(f"\nkill to every viewer's end: {what}: {seconds:.2f} s ({viewers} viewers)")


@pytest.mark.parametrize("whole_worker", [False, True], ids=["work-horse", "worker-and-horse"])
def test_a_killed_producer_ends_the_answer_with_an_error_for_every_viewer(
    stack: Stack, capsys: pytest.CaptureFixture[str], whole_worker: bool
) -> None:
    client, chat_id, answer_id = start_answer(stack)
    viewers = Viewers(client, chat_id, answer_id)
    wait_until(
        lambda: stack.redis().pubsub_numsub(store.channel(chat_id))[0][1] > 0,
        what="the viewers to follow",
    )
    horses = children(stack.worker_pid)
    killed_at = time.monotonic()
    if whole_worker:  # nobody is left to report the horse's death: the heartbeat tells
        os.kill(stack.worker_pid, signal.SIGKILL)
    for horse in horses:
        os.kill(horse, signal.SIGKILL)
    ends = viewers.wait()
    stored = store.get_message(stack.redis(), chat_id, answer_id)
    assert stored is not None and (stored.status, stored.error) == ("error", store.DEAD_PRODUCER)
    assert all(end.event == "end" and store.DEAD_PRODUCER in end.data for _, end in ends)
    if not whole_worker:
        job = job_of(stack, stored)  # RQ's records agree
        wait_until(lambda: job.get_status() == JobStatus.FAILED, what="RQ to record the failure")
    what = "worker and work horse SIGKILL" if whole_worker else "work horse SIGKILL"
    report(capsys, what, len(ends), max(at for at, _ in ends) - killed_at)
