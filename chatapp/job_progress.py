"""How far a running answer got, for the RQ dashboard and the install's counts."""

from __future__ import annotations

import logging
import time

import redis
from rq.job import Job

from chatapp import metrics

log = logging.getLogger(__name__)
MODEL_NOTE = " · model: "  # how a job's description names the model that wrote it


class Progress:
    """How far a running answer got, in its job's `meta` for the RQ dashboard: a state and
    the log entries written, saved every few seconds and at the end, each time in one round
    trip with the install's counts (metrics.py)."""

    EVERY_SECONDS = 5.0

    def __init__(self, job: Job | None) -> None:
        self.job = job  # None outside an RQ worker (tests, the benchmark's threads)
        self.saved_at = 0.0
        self.counted = 0  # entries added to the install's count (metrics.py)
        self._unsaved: dict[str, str] = {}  # job fields to save with the next note

    def name_model(self, label: str) -> None:
        """Say in the job's description and meta which model writes the answer (saved with
        the next note)."""
        if self.job is None:
            return
        self.job.meta["model"] = label
        asked = (self.job.description or "").split(MODEL_NOTE)[0]  # a requeued job had one
        self.job.description = asked + MODEL_NOTE + label  # RQ saves it again at the end
        self._unsaved["description"] = self.job.description

    def note(self, state: str, entries: int, last: bool = False) -> None:
        now = time.monotonic()
        if self.job is None or (not last and now - self.saved_at < self.EVERY_SECONDS):
            return
        self.saved_at = now
        self._save(state, entries)

    def ended(self, outcome: str, entries: int) -> None:
        """Save the last progress, and count how the answer ended (metrics.py)."""
        if self.job is not None:
            self._save(outcome, entries, outcome=outcome)

    def _save(self, state: str, entries: int, outcome: str = "") -> None:
        assert self.job is not None
        self.job.meta.update(state=state, entries=entries)
        meta = self.job.serializer.dumps(self.job.meta)  # as Job.save_meta writes it
        try:
            with self.job.connection.pipeline(transaction=False) as pipe:
                pipe.hset(self.job.key, "meta", meta)
                for name, value in self._unsaved.items():
                    pipe.hset(self.job.key, name, value)
                metrics.count_appended(pipe, entries - self.counted)
                if outcome:
                    metrics.count_outcome(pipe, outcome)
                pipe.execute()
        except redis.RedisError as exc:  # the answer matters more than its progress report
            log.warning("job %s: could not save its progress (%s)", self.job.id, exc)
            return
        self.counted, self._unsaved = entries, {}
