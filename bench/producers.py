"""The floor's and the peer's producers, run as threads of the benchmark process
(chatapp's answers are written by its own answer worker, `rq_worker.py`).

They read the same paced model with the same openai client and publish every
token as it arrives, one event per token, each the way its server expects it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

import openai
import redis

Publish = Callable[[int, str], None]  # (seq, token); an empty token ends the stream


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
