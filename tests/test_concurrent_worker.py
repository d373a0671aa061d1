"""One `rq_worker.py` process writes many answers at once, each still an RQ job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import redis
from rq import Queue
from rq.job import Job

from chatapp import store
from chatapp.titles import make_title
from harness.client import ChatClient, Event
from harness.servers import (
    PROJECT_DIR,
    RedisServer,
    running_stack,
    stack_env,
    wait_until,
    web_server,
)

PEOPLE = 20
SETTINGS = {"CHATAPP_OFFLINE_TOKENS_PER_SECOND": "10"}  # answers that last about 20 s


def ended(events: list[Event]) -> bool:
    return any(e.event == "end" for e in events)


def _has_delta(events: list[Event]) -> bool:
    return any(e.event == "delta" for e in events)


class Person:
    """Someone with a chat page open, who sends a message when told to and notes when the
    first piece of the answer and its end reach the page."""

    def __init__(self, client: ChatClient) -> None:
        self.client = client
        self.chat_id = client.new_chat()
        opened = client.live(self.chat_id, until=lambda events: len(events) >= 1)
        self.cursor = opened[-1].id
        self.first_delta = self.end = 0.0
        self.answer_id = ""

    def ask(self, go: threading.Barrier) -> None:
        go.wait(timeout=60)
        self.answer_id = self.client.send_ok(self.chat_id, "What happens when we all ask?")
        self.first_delta = self._follow(until=lambda events: ended(events) or _has_delta(events))
        self.end = self._follow(until=ended)

    def _follow(self, until: Callable[[list[Event]], bool]) -> float:
        """Read the page's stream (resuming after any close, like a browser) until `until`
        holds; return when it did."""
        seen: list[Event] = []
        while not until(seen):
            seen += self.client.live(self.chat_id, until=until, last_event_id=self.cursor)
            self.cursor = next((e.id for e in reversed(seen) if e.id), self.cursor)
        return time.monotonic()


def test_twenty_people_asking_at_once_see_their_answers_stream_at_once(tmp_path: Path) -> None:
    with running_stack(tmp_path, **SETTINGS) as stack:
        admin = ChatClient(stack.base)  # the first account of an install is its admin
        people = [Person(ChatClient(stack.base)) for _ in range(PEOPLE)]
        go = threading.Barrier(PEOPLE)
        threads = [threading.Thread(target=person.ask, args=(go,)) for person in people]
        for thread in threads:
            thread.start()

        queue = Queue(
            stack.env["CHATAPP_QUEUE_NAME"], connection=redis.Redis.from_url(stack.queue_url)
        )
        started = wait_until(
            lambda: _started_through_the_dashboard(admin, queue.name, at_least=PEOPLE // 2),
            timeout=60,
            what="the dashboard to list the running answers",
        )
        workers = wait_until(
            lambda: _workers_of(started, queue.connection), what="the jobs to name their worker"
        )
        assert len(workers) == 1  # one worker process runs them all
        for thread in threads:
            thread.join(timeout=120)
        r = stack.redis()
        stored = [store.get_message(r, person.chat_id, person.answer_id) for person in people]

    assert all(message is not None and message.status == "done" for message in stored)
    last_first_token = max(person.first_delta for person in people)
    first_end = min(person.end for person in people)
    assert 0 < last_first_token < first_end  # all were being written at the same time


def _workers_of(job_ids: list[str], connection: redis.Redis) -> set[str]:
    """The workers that run these jobs, once each job names its own (it does so as it starts)."""
    names = {Job.fetch(job_id, connection=connection).worker_name for job_id in job_ids}
    return set() if None in names else names  # type: ignore[return-value]


def _started_through_the_dashboard(admin: ChatClient, queue: str, at_least: int) -> list[str]:
    """The ids of the started jobs that RQ's dashboard lists, once there are enough."""
    response = admin.http.get(f"/admin/rq/0/data/jobs/{queue}/started/100/asc/1.json")
    assert response.status_code == 200, response.text
    ids = [job["id"] for job in response.json()["jobs"]]
    return ids if len(ids) >= at_least else []


def test_rq_own_worker_command_writes_answers_too(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    env = stack_env(server.url, tmp_path, CHATAPP_OFFLINE_TOKENS_PER_SECOND="100")
    queue = env["CHATAPP_QUEUE_NAME"]
    command = [sys.executable, "-m", "rq.cli", "worker", "--url", server.url, queue]
    rq_cli = subprocess.Popen(command, cwd=PROJECT_DIR, env=env, start_new_session=True)
    try:
        with web_server(env) as (base, _):
            client = ChatClient(base)
            chat_id = client.new_chat()
            answer_id = client.send_ok(chat_id, "Who writes this?")
            assert client.stream(chat_id, answer_id)[-1].event == "end"
            stored = store.get_message(
                redis.Redis.from_url(server.url, decode_responses=True), chat_id, answer_id
            )
    finally:
        os.killpg(rq_cli.pid, signal.SIGKILL)
        rq_cli.wait()
        server.stop()
    assert stored is not None and stored.status == "done"


def test_a_title_is_written_while_every_answer_slot_is_busy(tmp_path: Path) -> None:
    settings = {"CHATAPP_WORKER_CONCURRENCY": "1", "CHATAPP_OFFLINE_TOKENS_PER_SECOND": "5"}
    with running_stack(tmp_path, **settings) as stack:
        client = ChatClient(stack.base)
        chat_id = client.new_chat()
        answer_id = client.send_ok(chat_id, "A long answer takes the only slot")
        r = stack.redis()
        wait_until(lambda: _status(r, chat_id, answer_id) == "streaming", what="the answer")
        queues = redis.Redis.from_url(stack.queue_url)
        small = Queue(f"{stack.env['CHATAPP_QUEUE_NAME']}-small", connection=queues)
        title = small.enqueue(make_title, chat_id, "A long answer takes the only slot")
        wait_until(lambda: title.get_status() == "finished", timeout=60, what="the title job")
        assert _status(r, chat_id, answer_id) == "streaming"  # it did not wait for the answer


def _status(r: redis.Redis, chat_id: str, answer_id: str) -> str:
    message = store.get_message(r, chat_id, answer_id)
    return message.status if message is not None else ""


def test_an_answer_past_the_users_cap_starts_when_one_of_theirs_ends(tmp_path: Path) -> None:
    settings = {
        "CHATAPP_MAX_RUNNING_PER_USER": "1",
        "CHATAPP_MAX_WAITING_PER_USER": "1",
        "CHATAPP_OFFLINE_TOKENS_PER_SECOND": "5",
    }
    with running_stack(tmp_path, **settings) as stack:
        client, r = ChatClient(stack.base), stack.redis()
        first_chat, second_chat = client.new_chat(), client.new_chat()
        first = client.send_ok(first_chat, "Mine runs")
        wait_until(lambda: _status(r, first_chat, first) == "streaming", what="the first answer")
        second = client.send_ok(second_chat, "Mine waits")
        queues = redis.Redis.from_url(stack.queue_url)
        job = Job.fetch(f"answer-{_generation(r, second_chat, second)}", connection=queues)
        time.sleep(2)  # the worker has free slots: only the user's cap holds the second back
        assert (job.get_status(), _status(r, second_chat, second)) == ("rate_limited", "queued")
        client.stop(first_chat, first)
        wait_until(lambda: _status(r, second_chat, second) == "streaming", what="the second")
        assert _status(r, first_chat, first) == "stopped"


def _generation(r: redis.Redis, chat_id: str, answer_id: str) -> str:
    message = store.get_message(r, chat_id, answer_id)
    assert message is not None
    return message.gen
