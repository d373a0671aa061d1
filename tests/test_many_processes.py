"""Several web processes and several RQ workers on one machine share one Redis, or a Redis
Cluster: answers are spread over the workers, and a viewer gets the same bytes through any
web process."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from rq import Queue, Worker

from chatapp import store
from harness.client import ChatClient
from harness.servers import (
    ClusterData,
    RedisServer,
    Stack,
    rq_worker,
    stack_env,
    wait_until,
    web_server,
)

SETTINGS = {"CHATAPP_OFFLINE_TOKENS_PER_SECOND": "60", "CHATAPP_FLUSH_MS": "20"}


@pytest.mark.parametrize("data", ["one Redis", "Redis Cluster"])
def test_answers_spread_over_workers_and_read_the_same_through_any_web_process(
    tmp_path: Path, data: str
) -> None:
    cluster = data == "Redis Cluster"
    server = ClusterData(tmp_path) if cluster else RedisServer(tmp_path)
    env = stack_env(server.url, tmp_path, **(server.settings if cluster else {}), **SETTINGS)
    r = Stack("", server.url, env, 0, cluster=cluster).redis()
    try:
        with (
            rq_worker(env),
            rq_worker(env),
            web_server(env) as (first, _),
            web_server(env) as (second, _),
        ):
            writer = ChatClient(first)
            other = ChatClient(second, same_user_as=writer)  # the same person, elsewhere
            answers = []
            for number in range(4):
                chat_id = writer.new_chat()
                answers.append((chat_id, writer.send_ok(chat_id, f"Question {number}")))

            for chat_id, answer_id in answers:
                live_elsewhere = other.stream(chat_id, answer_id)  # while it is written
                assert live_elsewhere[-1].event == "end"
                message = store.get_message(r, chat_id, answer_id)
                assert message is not None and message.status == "done"
                assert message.html in live_elsewhere[-1].data  # the end carries it whole
                if len(live_elsewhere) > 1:  # joined while it was written: built byte for byte
                    built = writer.answer_page(answer_id).apply(live_elsewhere[:-1])
                    assert built.shows(answer_id, message.html)
                # From the first entry on, both processes replay the same events, field for field.
                start = f"{message.gen}:0"
                here = writer.stream(chat_id, answer_id, last_event_id=start)
                there = other.stream(chat_id, answer_id, last_event_id=start)
                assert here == there and here[-1].event == "end"

            queues = redis.Redis.from_url(env.get("REDIS_QUEUE_URL") or server.url)
            queue = Queue(env["CHATAPP_QUEUE_NAME"], connection=queues)

            def both_worked() -> list[int]:
                counts = [w.successful_job_count for w in Worker.all(queue=queue)]
                return counts if sum(counts) == 4 else []

            counts = wait_until(both_worked, what="the workers to record their jobs")
            assert len(counts) == 2 and min(counts) >= 1, counts  # both wrote answers
    finally:
        server.stop()
