"""The floor: the barest relay of Redis pub/sub to SSE viewers that the same stack allows.

One pub/sub connection per process (a pattern subscription read by one greenlet), one
queue per viewer, and each published message written to the viewer's socket as it came:
no replay, no dedup, nothing durable. The publisher sends finished SSE frames. chatapp
cannot be cheaper than this per delivered event under gunicorn's gevent worker, so its
figures are compared with these in the same run.

    gunicorn -k gevent -w 1 bench.floor:app   (REDIS_URL in the environment)
"""

from __future__ import annotations

import os
import queue
import threading

import redis
from flask import Flask, Response

PATTERN = "floor:*"

app = Flask(__name__)
_inboxes: dict[bytes, set[queue.SimpleQueue[bytes]]] = {}
_subscribed = threading.Event()
_starting = threading.Lock()


def _relay_forever() -> None:
    pubsub = redis.Redis.from_url(os.environ["REDIS_URL"]).pubsub()
    pubsub.psubscribe(PATTERN)
    pubsub.get_message(timeout=5)  # the confirmation: from now on nothing published is missed
    _subscribed.set()
    for message in pubsub.listen():
        if message["type"] == "pmessage":
            for inbox in list(_inboxes.get(message["channel"], ())):
                inbox.put(message["data"])


def _start_once() -> None:
    with _starting:
        if not _subscribed.is_set():
            threading.Thread(target=_relay_forever, daemon=True).start()
            _subscribed.wait(10)


@app.get("/floor/<name>")
def relay(name: str) -> Response:
    _start_once()
    channel = f"floor:{name}".encode()
    inbox: queue.SimpleQueue[bytes] = queue.SimpleQueue()
    _inboxes.setdefault(channel, set()).add(inbox)

    def frames():
        try:
            yield b": connected\n\n"
            while True:
                frame = inbox.get()
                yield frame
                if frame.startswith(b"event: end"):
                    return
        finally:
            _inboxes[channel].discard(inbox)

    return Response(frames(), mimetype="text/event-stream")
