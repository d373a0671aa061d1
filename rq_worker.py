"""The answer worker: a plain, forking RQ worker (not gevent-patched).

Run it with `python rq_worker.py`. Jobs run in RQ's forked work horse, inside the app
context pushed here, so they reach settings and the Redis client like a request does.
"""

from __future__ import annotations

from chatapp import create_app
from chatapp.connections import get_queue
from chatapp.worker import AnswerWorker


def main() -> None:
    app = create_app()
    with app.app_context():
        queue = get_queue()
        AnswerWorker([queue], connection=queue.connection, app=app).work(with_scheduler=False)


if __name__ == "__main__":
    main()
