"""The answer worker: RQ's forking worker with a deadline on its warm shutdown.

On SIGTERM RQ stops taking jobs and waits for the running one, however long the model
writes. After `WORKER_DRAIN_SECONDS` this worker ends the running answer with an `error`
through the fenced script; the job's heartbeat learns of it within a beat, closes the
model's stream and returns, and the worker exits. A second SIGTERM still stops at once.
"""

from __future__ import annotations

import logging
import threading
from types import FrameType
from typing import Any

from flask import Flask
from rq import Worker

from chatapp.jobs import end_with_error, on_work_horse_killed

log = logging.getLogger(__name__)

SHUT_DOWN = "The worker was shut down before the answer was finished. Send the message again."


class AnswerWorker(Worker):
    def __init__(self, *args: Any, app: Flask, **kwargs: Any) -> None:
        kwargs.setdefault("work_horse_killed_handler", on_work_horse_killed)
        super().__init__(*args, **kwargs)
        self.app = app

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        super().request_stop(signum, frame)  # raises StopRequested when idle
        deadline = float(self.app.config["WORKER_DRAIN_SECONDS"])
        log.info("worker: finishing the running answer (at most %s s)", deadline)
        timer = threading.Timer(deadline, self._end_running_answer)
        timer.daemon = True
        timer.start()

    def _end_running_answer(self) -> None:
        job = self.get_current_job()
        if job is None:
            return
        with self.app.app_context():
            end_with_error(job, SHUT_DOWN)
        log.warning("worker: job %s ended at the shutdown deadline", job.id)
