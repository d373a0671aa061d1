"""Stopping processes: a web process that stops closes its streams so that viewers move on."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import redis

from chatapp import store
from chatapp.worker import SHUT_DOWN
from tests.client import ChatClient
from tests.servers import RedisServer, rq_worker, stack_env, wait_until, web_server


def test_sigterm_to_gunicorn_ends_each_stream_with_a_retry_hint(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    env = stack_env(server.url, tmp_path, CHATAPP_OFFLINE_TOKENS_PER_SECOND="20")
    try:
        with rq_worker(env), web_server(env) as (base, gunicorn):
            client = ChatClient(base)
            chat_id = client.new_chat()
            answer_id = client.send_ok(chat_id, "A long answer, please")
            raw = ""
            url = f"/chats/{chat_id}/messages/{answer_id}/stream"
            with client.http.stream("GET", url, timeout=30) as response:
                for chunk in response.iter_text():
                    if not raw:
                        gunicorn.send_signal(signal.SIGTERM)  # mid-answer
                    raw += chunk
            assert gunicorn.wait(timeout=30) == 0
    finally:
        server.stop()
    last_block = raw.strip("\n").split("\n\n")[-1]
    assert re.fullmatch(r": try again shortly\nretry: \d+", last_block)  # not cut mid-air
    assert "event: end" not in raw


def test_sigterm_to_the_worker_ends_a_long_answer_at_its_deadline(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    env = stack_env(
        server.url,
        tmp_path,
        CHATAPP_OFFLINE_TOKENS_PER_SECOND="5",
        CHATAPP_WORKER_DRAIN_SECONDS="1",
    )
    try:
        with rq_worker(env) as worker, web_server(env) as (base, _):
            client = ChatClient(base)
            chat_id = client.new_chat()
            answer_id = client.send_ok(chat_id, "A very slow answer")
            r = redis.Redis.from_url(server.url, decode_responses=True)
            wait_until(
                lambda: store.get_message(r, chat_id, answer_id).status == "streaming",  # type: ignore[union-attr]
                what="the answer to start",
            )
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(timeout=60) == 0  # it did not wait for the whole answer
            events = client.stream(chat_id, answer_id)
            stored = store.get_message(r, chat_id, answer_id)
    finally:
        server.stop()
    assert stored is not None and (stored.status, stored.error) == ("error", SHUT_DOWN)
    assert stored.text  # what was written before the deadline is kept
    assert events[-1].event == "end" and SHUT_DOWN in events[-1].data
