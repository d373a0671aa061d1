"""The answers' producers, run as threads of the benchmark process.

chatapp: `chatapp.jobs.generate_answer`, the function its RQ job runs, taken off the RQ
queue and called in a thread. One RQ worker process per answer would not fit beside
10,000 viewers on 2 cores; the job's code is the same, only RQ's fork is left out. (The
Redis-cost scenario runs a real RQ worker.)

floor and peer: read the same paced model with the same openai client and publish every
token as it arrives, one event per token, each the way its server expects it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

import openai
import redis

from chatapp import create_app
from chatapp.config import from_environ
from chatapp.connections import get_queue
from chatapp.jobs import generate_answer

Publish = Callable[[int, str], None]  # (seq, token); an empty token ends the stream


def run_queued_answers(env: dict[str, str], count: int) -> list[threading.Thread]:
    """Take the `count` queued answer jobs off chatapp's RQ queue; run each in a thread."""
    settings = from_environ(env)
    settings["REDIS_MAX_CONNECTIONS"] = 2 * count + 20  # a job and its heartbeat, each
    app = create_app(settings)
    with app.app_context():
        queue = get_queue()
        deadline = time.monotonic() + 30
        while queue.count < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{queue.count} of {count} answers were queued")
            time.sleep(0.05)
        jobs = [queue.fetch_job(job_id) for job_id in queue.get_job_ids()]
        queue.empty()

    def run(args: tuple[str, str, str]) -> None:
        with app.app_context():
            generate_answer(*args)

    return _started(run, [tuple(job.args) for job in jobs if job is not None])


def run_publishers(kind: str, model_url: str, redis_url: str, count: int) -> list[threading.Thread]:
    """Start `count` answers for the floor or the peer: answer n goes to its stream n."""
    make = _floor_publisher if kind == "floor" else _peer_publisher
    return _started(
        lambda number: _relay_model(model_url, make(redis_url, number)), list(range(count))
    )


def _relay_model(model_url: str, publish: Publish) -> None:
    client = openai.OpenAI(base_url=model_url, api_key="bench", max_retries=0)
    stream = client.chat.completions.create(
        model="paced", messages=[{"role": "user", "content": "go"}], stream=True
    )
    seq = 0
    for chunk in stream:
        text = chunk.choices[0].delta.content if chunk.choices else None
        if text:
            seq += 1
            publish(seq, text)
    publish(seq + 1, "")


def _floor_publisher(redis_url: str, number: int) -> Publish:
    r = redis.Redis.from_url(redis_url)

    def publish(seq: int, text: str) -> None:
        if text:
            frame = f"event: delta\nid: {seq}\ndata: {json.dumps(text)}\n\n"
        else:
            frame = f"event: end\nid: {seq}\ndata: \n\n"
        r.publish(f"floor:{number}", frame)

    return publish


def _peer_publisher(redis_url: str, number: int) -> Publish:
    from bench.peer import app, sse

    app.config["REDIS_URL"] = redis_url

    def publish(seq: int, text: str) -> None:
        with app.app_context():
            if text:
                sse.publish({"t": text}, type="delta", id=seq, channel=f"answer-{number}")
            else:
                sse.publish("", type="end", id=seq, channel=f"answer-{number}")

    return publish


def _started(target: Callable, arguments: list) -> list[threading.Thread]:
    threads = [
        threading.Thread(target=target, args=(argument,), daemon=True) for argument in arguments
    ]
    for thread in threads:
        thread.start()
    return threads
