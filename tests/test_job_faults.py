"""Jobs that die or hang, with real `rq_worker.py` processes: every viewer sees a clear error."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from rq import Worker
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry

from chatapp import store
from chatapp.waiting import REMOVED
from harness.client import ChatClient, Event
from harness.fake_openai import FakeModel, fake_openai_server
from harness.servers import Stack, rq_worker, running_stack, wait_until

SETTINGS = {
    "CHATAPP_OFFLINE_TOKENS_PER_SECOND": "10",  # answers that last half a minute
    "CHATAPP_JOB_TIMEOUT_SECONDS": "2",
    "CHATAPP_HEARTBEAT_TTL_SECONDS": "2",
    "CHATAPP_HEARTBEAT_SECONDS": "0.5",
    "CHATAPP_CHECK_SECONDS": "0.5",
}
ANSWERS = 20  # running at once in the worker that is killed
RUNNING = ("queued", "streaming")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with running_stack(tmp_path, **SETTINGS) as running:
        yield running


def start_answer(stack: Stack, client: ChatClient | None = None) -> tuple[ChatClient, str, str]:
    client = client or ChatClient(stack.base)
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
    shown = client.page_shows_ended(chat_id, answer_id)  # a tab on the chat page
    events = client.stream(chat_id, answer_id)
    stored = store.get_message(stack.redis(), chat_id, answer_id)
    assert stored is not None and stored.status == "error"
    assert stored.error == "The answer took longer than the 2 s limit."
    assert stored.text  # the text so far is kept
    assert events[-1].event == "end" and stored.error in events[-1].data
    assert stored.error in shown.data
    job = job_of(stack, stored)
    wait_until(lambda: job.get_status() == JobStatus.FAILED, what="RQ to record the failure")


class Viewers:
    """`count` tabs on the answer's chat page, each noting when it showed the answer ended."""

    def __init__(self, client: ChatClient, chat_id: str, answer_id: str, count: int = 10) -> None:
        self.ends: list[tuple[float, Event]] = []
        self.threads = [
            threading.Thread(target=self._follow, args=(client, chat_id, answer_id))
            for _ in range(count)
        ]
        for thread in self.threads:
            thread.start()

    def _follow(self, client: ChatClient, chat_id: str, answer_id: str) -> None:
        ended = client.page_shows_ended(chat_id, answer_id)  # a tab on the chat page
        self.ends.append((time.monotonic(), ended))

    def wait(self) -> list[tuple[float, Event]]:
        for thread in self.threads:
            thread.join(timeout=60)
        assert len(self.ends) == len(self.threads)
        return self.ends


def report(capsys: pytest.CaptureFixture[str], what: str, viewers: int, seconds: float) -> None:
    with capsys.disabled():
        print(f"\nkill to every viewer's end: {what}: {seconds:.2f} s ({viewers} viewers)")


def test_a_killed_worker_ends_every_running_answer_and_the_next_worker_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = {**SETTINGS, "CHATAPP_JOB_TIMEOUT_SECONDS": "300"}
    with running_stack(tmp_path, **settings) as stack:
        client = ChatClient(stack.base)
        answers = [start_answer(stack, client) for _ in range(ANSWERS)]
        _, chat_id, answer_id = answers[0]
        viewers = Viewers(client, chat_id, answer_id)
        wait_until(
            lambda: stack.redis().pubsub_numsub(store.channel(chat_id))[0][1] > 0,
            what="the viewers to follow",
        )
        killed_at = time.monotonic()
        os.kill(stack.worker_pid, signal.SIGKILL)  # nobody is left to report it: heartbeats tell
        with rq_worker(stack.env):  # the next worker, as a process manager starts it
            ends = viewers.wait()
            report(capsys, "worker SIGKILL", len(ends), max(at for at, _ in ends) - killed_at)
            assert all(end.event == "end" and store.DEAD_PRODUCER in end.data for _, end in ends)
            r = stack.redis()
            for _, chat, answer in answers:  # watched or not
                stored = wait_until(
                    lambda chat=chat, answer=answer: ended(r, chat, answer), timeout=30
                )
                assert (stored.status, stored.error) == ("error", store.DEAD_PRODUCER)
            jobs = [job_of(stack, ended(r, chat, answer)) for _, chat, answer in answers]
            wait_until(
                lambda: all(job.get_status() == JobStatus.FAILED for job in jobs),
                timeout=60,
                what="RQ to record every failure",
            )
            started = StartedJobRegistry(jobs[0].origin, connection=jobs[0].connection)
            assert started.get_job_ids() == []
            _, chat_id, answer_id = start_answer(stack, client)
            assert 'data-status="done"' in client.page_shows_ended(chat_id, answer_id).data


def ended(r: redis.Redis, chat_id: str, answer_id: str) -> store.Message | None:
    """The answer, once it has ended."""
    message = store.get_message(r, chat_id, answer_id)
    return message if message is not None and message.status not in RUNNING else None


def test_a_stop_before_the_model_answers_frees_the_job_at_once(tmp_path: Path) -> None:
    hanging = FakeModel(["never sent"], headers_delay=600)  # the model server never answers
    with (
        fake_openai_server(hanging) as base_url,
        running_stack(tmp_path, OPENAI_API_KEY="k", OPENAI_BASE_URL=base_url) as stack,
    ):
        client, chat_id, answer_id = start_answer(stack)
        wait_until(lambda: hanging.requests, what="the model server to be asked")
        client.stop(chat_id, answer_id)
        stored = store.get_message(stack.redis(), chat_id, answer_id)
        assert stored is not None and stored.status == "stopped"
        job = job_of(stack, stored)  # its slot is free: the job ended, not the model's timeout
        wait_until(lambda: job.get_status() == JobStatus.FINISHED, timeout=30, what="the job")
        assert hanging.disconnected.wait(timeout=30)  # the request to the model was dropped


def test_a_full_redis_ends_the_answer_with_an_error_and_the_worker_goes_on(
    tmp_path: Path,
) -> None:
    settings = {**SETTINGS, "CHATAPP_JOB_TIMEOUT_SECONDS": "300"}
    with running_stack(tmp_path, **settings) as stack:
        client, chat_id, answer_id = start_answer(stack)
        r = stack.redis()
        used = int(r.info("memory")["used_memory"])
        r.config_set("maxmemory", used // 2)  # noeviction: every write that adds is refused
        try:
            stored = wait_until(lambda: ended(r, chat_id, answer_id), timeout=60)
        finally:
            r.config_set("maxmemory", 0)
        assert stored.status == "error" and "storage is full" in stored.error
        assert "storage is full" in client.page_shows_ended(chat_id, answer_id).data
        chat_id = client.new_chat()
        answer_id = client.send_ok(chat_id, "And now?")
        wait_until(lambda: ended(r, chat_id, answer_id), timeout=60, what="the next answer")
        assert status_of(r, chat_id, answer_id) == "done"  # the same worker wrote it
        assert Worker.count(connection=redis.Redis.from_url(stack.queue_url)) == 1


def status_of(r: redis.Redis, chat_id: str, answer_id: str) -> str:
    message = store.get_message(r, chat_id, answer_id)
    return message.status if message is not None else ""


def test_an_answer_whose_job_is_emptied_from_the_queue_ends_at_once(tmp_path: Path) -> None:
    settings = {"CHATAPP_WORKER_CONCURRENCY": "1", "CHATAPP_OFFLINE_TOKENS_PER_SECOND": "5"}
    with running_stack(tmp_path, **settings) as stack:
        client, _, _ = start_answer(stack)  # it takes the worker's one slot
        chat_id = client.new_chat()
        waiting = client.send_ok(chat_id, "Will anyone write this?")
        assert httpx.get(stack.base + "/healthz").json()["waiting"] == 1
        queue = stack.env["CHATAPP_QUEUE_NAME"]
        rq_empty = [sys.executable, "-m", "rq.cli", "empty", "--url", stack.queue_url, queue]
        subprocess.run(rq_empty, check=True, capture_output=True, timeout=60)
        r = stack.redis()
        stored = wait_until(lambda: ended(r, chat_id, waiting), timeout=30, what="its end")
        assert (stored.status, stored.error) == ("error", REMOVED)
        assert httpx.get(stack.base + "/healthz").json()["waiting"] == 0
