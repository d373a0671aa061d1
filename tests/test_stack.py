"""The whole path through real processes: gunicorn (gevent), a real RQ worker, redis-server."""

from __future__ import annotations

import json
import re

import httpx
import pytest
import redis
from rq.job import Job, JobStatus

from chatapp import store
from chatapp.providers import offline_answer
from harness.client import ChatClient
from harness.servers import Stack, wait_until


@pytest.fixture(scope="module")
def stack(stack_on_each_redis: Stack) -> Stack:
    """These run on one Redis and on a Redis Cluster."""
    return stack_on_each_redis


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
    job = Job.fetch(f"answer-{stored.gen}", connection=redis.Redis.from_url(stack.queue_url))
    # RQ records the job's end after the answer's last append, which the stream already
    # delivered: on a busy machine the status may still say "started" for a moment.
    wait_until(lambda: job.get_status() == JobStatus.FINISHED, timeout=30, what="RQ's record")
    assert job.return_value() == "done"


def test_stop_from_another_device_ends_the_answer_for_every_viewer(stack: Stack) -> None:
    phone = ChatClient(stack.base)
    chat_id = phone.new_chat()
    answer_id = phone.send_ok(chat_id, "Stop me halfway")
    laptop = ChatClient(stack.base)  # the same user on another device: the same session cookie
    laptop.http.cookies = phone.http.cookies
    laptop.token = phone.token
    first = laptop.stream(chat_id, answer_id, max_events=3)
    assert first[0].event == "snapshot"
    stop = phone.http.post(
        f"/chats/{chat_id}/messages/{answer_id}/stop",
        headers={"X-CSRFToken": phone.token, "HX-Request": "true"},
    )
    assert stop.status_code == 204
    events = laptop.stream(chat_id, answer_id, last_event_id=first[-1].id)
    assert events[-1].event == "end" and 'data-status="stopped"' in events[-1].data
    r = stack.redis()
    stored = store.get_message(r, chat_id, answer_id)
    assert stored is not None and stored.status == "stopped"
    whole = offline_answer("Stop me halfway")
    assert stored.text and whole.startswith(stored.text) and stored.text != whole  # kept so far
    job = Job.fetch(f"answer-{stored.gen}", connection=redis.Redis.from_url(stack.queue_url))
    wait_until(lambda: job.get_status() == JobStatus.FINISHED, what="the job to return")
    assert job.return_value() == "ended"  # the producer stopped at its next append
    kinds = [json.loads(entry)["t"] for entry in store.read_log(r, chat_id, stored.gen)]
    assert kinds[-1] == "stopped" and kinds.count("stopped") == 1 and "done" not in kinds


def test_metrics_count_answers_entries_and_the_latency_of_their_delivery(stack: Stack) -> None:
    def figures() -> dict[str, float]:
        text = httpx.get(stack.base + "/metrics").text  # from this host: no token needed
        found = re.findall(r'^(chatapp_\w+(?:{outcome="\w+"})?) ([0-9.e+-]+)$', text, re.M)
        return {name: float(value) for name, value in found}

    before = figures()
    client = ChatClient(stack.base)
    chat_id = client.new_chat()
    answer_id = client.send_ok(chat_id, "Count me")
    assert client.stream(chat_id, answer_id, max_events=2)[-1].event == "delta"
    assert figures()["chatapp_answers_running"] == 1  # being written now
    assert client.stream(chat_id, answer_id)[-1].event == "end"
    stored = store.get_message(stack.redis(), chat_id, answer_id)
    assert stored is not None and stored.length > 1

    # The job counts its entries and its outcome as it ends (after the viewer saw the end).
    done = 'chatapp_answers_ended_total{outcome="done"}'
    counted = wait_until(
        lambda: (f := figures())[done] == before.get(done, 0) + 1 and f, what="the job's count"
    )
    appended = counted["chatapp_entries_appended_total"]
    assert appended == before.get("chatapp_entries_appended_total", 0) + stored.length
    assert counted["chatapp_answers_running"] == 0
    assert counted["chatapp_delivery_latency_seconds_count"] >= 1  # this viewer's writes
    mean = (
        counted["chatapp_delivery_latency_seconds_sum"]
        / counted["chatapp_delivery_latency_seconds_count"]
    )
    assert 0 < mean < 3600  # seconds, from Redis's clock: not milliseconds, not 1970


def test_the_web_process_keeps_what_it_made_at_its_start_out_of_the_collectors_passes(
    stack: Stack,
) -> None:
    # Walking the app and its modules in every full pass stopped every stream of the
    # process for 100 ms every few seconds at 1,000 viewers (chatapp/heap.py).
    text = httpx.get(stack.base + "/metrics").text
    frozen = re.search(r"^chatapp_gc_frozen_objects ([0-9.e+]+)$", text, re.M)
    assert frozen is not None and float(frozen.group(1)) > 10_000  # the app, its modules


def test_health_and_rate_limits_use_the_configured_redis(stack: Stack) -> None:
    health = httpx.get(stack.base + "/healthz")
    assert health.status_code == 200 and health.json()["redis"] == "ok"
    ChatClient(stack.base)  # signs up and logs in: both are rate limited
    counters = list(stack.redis().scan_iter("*chatapp-limits*"))  # on a cluster: every node
    assert counters, "no rate-limit counters"


def test_an_answer_resumed_at_its_newest_word_starts_with_its_headers(stack: Stack) -> None:
    # Resumed where its log ends, a stream has nothing to send until the next word, which
    # the hub then writes to the socket itself (chatapp/express.py): the status line and
    # headers must have gone out first (they once did not: the client read a chunk).
    client = ChatClient(stack.base)
    chat_id = client.new_chat()
    answer_id = client.send_ok(chat_id, "Resume me at my newest word, again and again")
    r = stack.redis()
    for _ in range(10):
        message = store.get_message(r, chat_id, answer_id)
        assert message is not None
        if not message.running:
            break
        newest = f"{message.gen}:{store.log_length(r, chat_id, message.gen)}"
        events = client.stream(chat_id, answer_id, last_event_id=newest, max_events=1)
        assert events and events[0].event in ("delta", "end"), events
    assert client.stream(chat_id, answer_id)[-1].event == "end"
