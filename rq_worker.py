"""The answer worker: one process writes many answers at once (see chatapp/worker.py).

Run it with `python rq_worker.py`. The process is patched by gevent first, so each job's
network waits (the model, Redis) let the others run.
"""

from gevent import monkey

monkey.patch_all()

from chatapp import create_app  # noqa: E402  (after patching: the clients' sockets are gevent's)
from chatapp.connections import get_queue, get_small_queue  # noqa: E402
from chatapp.worker import AnswerWorker  # noqa: E402


def main() -> None:
    app = create_app()
    with app.app_context():
        worker = AnswerWorker(
            get_queue(),
            get_small_queue(),
            app=app,
            concurrency=app.config["WORKER_CONCURRENCY"],
            drain_seconds=app.config["WORKER_DRAIN_SECONDS"],
        )
        worker.work()


if __name__ == "__main__":
    main()
