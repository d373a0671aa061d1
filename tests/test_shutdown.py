"""Stopping processes: a web process that stops closes its streams so that viewers move on."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import redis
from rq import Worker

from chatapp import store
from chatapp.worker import SHUT_DOWN
from harness.client import ChatClient
from harness.servers import RedisServer, rq_worker, stack_env, wait_until, web_server


def test_sigterm_to_gunicorn_ends_each_stream_with_a_retry_hint(tmp_path: Path) -> None:
    """The chat page's stream (what a tab holds) and an answer's own stream, both open
    mid-answer when gunicorn is told to stop: each ends with a retry hint, not cut."""
    server = RedisServer(tmp_path)
    env = stack_env(server.url, tmp_path, CHATAPP_OFFLINE_TOKENS_PER_SECOND="20")
    try:
        with rq_worker(env), web_server(env) as (base, gunicorn):
            client = ChatClient(base)
            chat_id = client.new_chat()
            answer_id = client.send_ok(chat_id, "A long answer, please")
            urls = [f"/chats/{chat_id}/live", f"/chats/{chat_id}/messages/{answer_id}/stream"]
            with (
                client.http.stream("GET", urls[0], timeout=30) as page,
                client.http.stream("GET", urls[1], timeout=30) as answer,
            ):
                reads = [page.iter_text(), answer.iter_text()]
                raws = [next(read) for read in reads]  # both are streaming
                gunicorn.send_signal(signal.SIGTERM)  # mid-answer
                raws = [raw + "".join(read) for raw, read in zip(raws, reads, strict=True)]
            assert gunicorn.wait(timeout=30) == 0
    finally:
        server.stop()
    for raw in raws:
        last_block = raw.strip("\n").split("\n\n")[-1]
        assert re.fullmatch(r": try again shortly\nretry: \d+", last_block)  # not cut mid-air
        assert "event: end" not in raw


def test_sigterm_to_the_worker_takes_no_new_answers_and_ends_the_running_ones_at_the_deadline(
    tmp_path: Path,
) -> None:
    server = RedisServer(tmp_path)
    env = stack_env(
        server.url,
        tmp_path,
        CHATAPP_OFFLINE_TOKENS_PER_SECOND="5",
        CHATAPP_WORKER_DRAIN_SECONDS="1",
    )
    r = redis.Redis.from_url(server.url, decode_responses=True)
    try:
        with rq_worker(env) as worker, web_server(env) as (base, _):
            client = ChatClient(base)
            running = []
            for number in range(RUNNING):
                chat_id = client.new_chat()
                running.append((chat_id, client.send_ok(chat_id, f"A very slow answer {number}")))
            for chat_id, answer_id in running:
                wait_until(
                    lambda chat_id=chat_id, answer_id=answer_id: (
                        status(r, chat_id, answer_id) == "streaming"
                    ),
                    what="the answers to start",
                )
            worker.send_signal(signal.SIGTERM)
            wait_until(lambda: shutdown_requested(server.url), what="the worker to hear it")
            late_chat = client.new_chat()
            late = client.send_ok(late_chat, "Sent while the worker stops")
            assert worker.wait(timeout=60) == 0  # it did not wait for whole answers
            ends = [client.stream(chat_id, answer_id)[-1] for chat_id, answer_id in running]
            shown = [client.page_shows_ended(chat_id, answer_id) for chat_id, answer_id in running]
            stored = [store.get_message(r, chat_id, answer_id) for chat_id, answer_id in running]
            late_status = status(r, late_chat, late)
    finally:
        server.stop()
    for message, end, page in zip(stored, ends, shown, strict=True):
        assert message is not None and (message.status, message.error) == ("error", SHUT_DOWN)
        assert message.text  # what was written before the deadline is kept
        assert end.event == "end" and SHUT_DOWN in end.data
        assert SHUT_DOWN in page.data  # the chat page shows why too (a snapshot of it)
    assert late_status == "queued"  # left for the next worker


RUNNING = 5


def status(r: redis.Redis, chat_id: str, answer_id: str) -> str:
    message = store.get_message(r, chat_id, answer_id)
    return message.status if message is not None else ""


def shutdown_requested(queue_url: str) -> bool:
    workers = Worker.all(connection=redis.Redis.from_url(queue_url))
    return any(worker.shutdown_requested_date for worker in workers)
