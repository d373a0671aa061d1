"""The answer worker: a plain, forking RQ worker (not gevent-patched).

Run it with `python rq_worker.py`. Jobs run in RQ's forked work horse, inside the app
context pushed here, so they reach settings and the Redis client like a request does.
"""

from __future__ import annotations

from rq import Worker

from chatapp import create_app
from chatapp.connections import get_queue
from chatapp.jobs import on_work_horse_killed


def main() -> None:
    app = create_app()
    with app.app_context():
        queue = get_queue()
        worker = Worker(
            [queue],
            connection=queue.connection,
            work_horse_killed_handler=on_work_horse_killed,
        )
        worker.work(with_scheduler=False)


if __name__ == "__main__":
    main()
