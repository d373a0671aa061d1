"""The whole path through real processes: gunicorn (gevent), a real RQ worker, redis-server."""

from __future__ import annotations

import redis
from rq.job import Job, JobStatus

from chatapp import store
from tests.client import ChatClient
from tests.servers import Stack


def test_a_sent_message_is_answered_by_the_worker_and_streamed_to_the_end(stack: Stack) -> None:
    client = ChatClient(stack.base)
    chat_id = client.new_chat()
    answer_id = client.send_ok(chat_id, "How do resumable streams work?")
    events = client.stream(chat_id, answer_id)
    assert events[0].event == "snapshot"
    assert events[-1].event == "end"
    stored = store.get_message(stack.redis(), chat_id, answer_id)
    assert stored is not None and stored.status == "done"
    assert stored.html in events[-1].data
    assert "resumable streams" in stored.text
    job = Job.fetch(f"answer-{stored.gen}", connection=redis.Redis.from_url(stack.redis_url))
    assert job.get_status() == JobStatus.FINISHED
    assert job.return_value() == "done"
