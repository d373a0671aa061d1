"""The answer worker: one process writes many answers at once, each still an RQ job.

An answer job waits on the model's network almost all its life, so RQ's forking worker (one
job per process, a fork and a fresh `openai` import per job) serves one person at a time.
This worker runs each job in a greenlet of its own (`rq_worker.py` patches the process with
gevent first), up to `WORKER_CONCURRENCY` answers at once, and small jobs (titles) in a lane
of their own, so they never queue behind answers. Every job still goes through RQ's own
`perform_job`: its execution record, the started/finished/failed registries, results and
failure callbacks are RQ's, and the dashboard lists each running job.

What differs from RQ's workers, and why:
- a job's timeout is a gevent timer in its own greenlet (job_timeout.py; RQ's default is
  one SIGALRM per process);
- signals only set flags; a warm shutdown takes no new jobs and gives running answers
  `WORKER_DRAIN_SECONDS`, then ends them through the fenced append (each job's heartbeat
  hears of it and returns); a second signal ends them at once;
- one heartbeat greenlet refreshes the worker and every running execution in one pipeline,
  and every few seconds fails started jobs whose worker died (worker_liveness.py);
- RQ's stop-job command ends the answer it names (RQ's own knows one job per worker).
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gevent
import gevent.event
import gevent.lock
import redis
from flask import Flask
from rq import Queue
from rq.command import parse_payload
from rq.exceptions import DequeueTimeout
from rq.executions import Execution
from rq.job import Job
from rq.worker import BaseWorker
from rq.worker.base import WorkerStatus

from chatapp import heap, providers, store, worker_liveness
from chatapp.batching import BatchedScripts
from chatapp.connections import get_redis
from chatapp.job_timeout import GreenletDeathPenalty
from chatapp.jobs import end_with_error, timing_from

log = logging.getLogger(__name__)

SHUT_DOWN = "The worker was shut down before the answer was finished. Send the message again."
STOPPED_BY_ADMIN = "An administrator stopped this answer."
SMALL_JOB_SLOTS = 10  # titles and other short jobs, beside the answers
# Greenlets taking answer jobs off the queue, each one job per round trip: with one, a burst
# of 500 questions started one per turn of a loop busy with every running answer (12 s).
ANSWER_TAKERS = 8
LAST_WORDS_SECONDS = 10.0  # after the drain deadline, answers get this long to end themselves


@dataclass(frozen=True)
class _Lane:
    """What one taker of a lane's jobs shares with the others."""

    queue: Queue
    free: gevent.lock.BoundedSemaphore  # the lane's free slots
    more: gevent.event.Event  # set when a job was taken: the queue may hold more
    waits: bool  # this taker waits on the queue; the others only look


class AnswerWorker(BaseWorker):
    """Runs up to `concurrency` answer jobs at once, and small jobs beside them."""

    death_penalty_class = GreenletDeathPenalty

    def __init__(
        self,
        answers: Queue,
        small_jobs: Queue,
        *,
        app: Flask,
        concurrency: int,
        drain_seconds: float,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("job_monitoring_interval", worker_liveness.BEAT_SECONDS)
        kwargs.setdefault("worker_ttl", worker_liveness.WORKER_TTL)
        super().__init__([answers, small_jobs], connection=answers.connection, **kwargs)
        self.app = app
        self.drain_seconds = drain_seconds
        if not store.is_cluster(get_redis()):  # a cluster's client routes each call itself
            app.extensions["batched_redis"] = BatchedScripts(get_redis())
        app.extensions["answers_running"] = lambda: len(self._running)  # producer.py
        # (queue, slots, greenlets taking its jobs)
        self.lanes = [(answers, concurrency, ANSWER_TAKERS), (small_jobs, SMALL_JOB_SLOTS, 1)]
        self._suspension_checked_at = 0.0
        self._running: dict[str, tuple[gevent.Greenlet, Job]] = {}  # execution id ->
        self._force_stop = False

    # --- the loop -------------------------------------------------------------------------

    def work(
        self, burst: bool = False, logging_level: str | None = "INFO", *_: Any, **__: Any
    ) -> bool:
        """Take jobs from each lane while it has a free slot; on a stop request, drain."""
        self.bootstrap(logging_level)
        providers.prepare(self.app.config)
        # Everything made so far (modules, clients) lives as long as the process: kept out
        # of the collector's full passes, which took 100 ms over them, stalling every answer.
        heap.settle()
        self._install_signal_handlers()
        self.set_state(WorkerStatus.IDLE)
        beats = gevent.spawn(self._in_app(self._beat_forever))
        try:
            gevent.joinall(self._spawn_takers(burst))
            self._drain()
        finally:
            beats.kill()
            self.teardown()  # type: ignore[no-untyped-call]  # RQ's, unannotated
        return True

    def _spawn_takers(self, burst: bool) -> list[gevent.Greenlet]:
        """Each lane's takers: the first waits on the queue (one waiting connection per
        process, so idle processes share new jobs in turn); the others take without
        waiting, woken by a job the first took, while the queue has more."""
        takers = []
        for queue, slots, count in self.lanes:
            free = gevent.lock.BoundedSemaphore(slots)  # shared by the lane's takers
            more = gevent.event.Event()  # a job was just taken: others may be waiting
            for number in range(min(count, slots)):
                lane = _Lane(queue, free, more, waits=number == 0)
                takers.append(gevent.spawn(self._in_app(self._take_jobs), lane, burst))
        return takers

    def _take_jobs(self, lane: _Lane, burst: bool) -> None:
        """Take jobs off the lane's queue while it has a free slot."""
        while not self._stop_requested:
            if not lane.free.acquire(timeout=1):
                continue  # every slot busy: look at the stop flag now and then
            job = self._dequeue(lane.queue, burst, wait=lane.waits)
            if job is not None and self._start(job, lane.queue, lane.free):
                lane.more.set()
                continue
            lane.free.release()
            if burst and job is None:
                return
            if not lane.waits:  # the queue is empty: sleep until the first takes a job
                lane.more.clear()
                lane.more.wait(timeout=1)

    def _dequeue(self, queue: Queue, burst: bool, wait: bool) -> Job | None:
        """Move one job off `queue` (RQ's intermediate list keeps it safe until it starts),
        waiting up to a second for one if `wait`."""
        try:
            self._check_for_suspension(burst)
            result = self.queue_class.dequeue_any(
                [queue],
                1 if wait and not burst else None,
                connection=self.connection,
                job_class=self.job_class,
                serializer=self.serializer,
                death_penalty_class=self.death_penalty_class,
            )
        except DequeueTimeout:
            return None
        except redis.RedisError as exc:  # away, or full: the worker waits, it does not exit
            log.warning("worker %s: Redis refused (%s); trying again", self.name, exc)
            gevent.sleep(1)
            return None
        if result is None:
            return None
        job, _ = result
        job.redis_server_version = self.get_redis_server_version()  # type: ignore[no-untyped-call]  # RQ's, unannotated
        log.info("worker %s: %s (%s)", self.name, job.description, job.id)
        return job

    def _check_for_suspension(self, burst: bool) -> None:
        """RQ's suspension check (`rq suspend`), at most once a second, not once per job."""
        if time.monotonic() - self._suspension_checked_at >= 1.0:
            self.check_for_suspension(burst)
            self._suspension_checked_at = time.monotonic()

    def _start(self, job: Job, queue: Queue, free: gevent.lock.BoundedSemaphore) -> bool:
        """Start `job` in a greenlet of its own; say whether it started."""
        try:
            execution = self.prepare_execution(job)  # its execution record; the worker is busy
        except redis.RedisError as exc:
            # It stays on RQ's intermediate list, which RQ's maintenance puts back in the queue.
            log.warning("job %s: could not start (%s)", job.id, exc)
            gevent.sleep(1)
            return False
        greenlet = gevent.spawn(self._in_app(self._perform), job, queue, execution, free)
        self._running[execution.id] = (greenlet, job)
        return True

    def _perform(
        self, job: Job, queue: Queue, execution: Execution, free: gevent.lock.BoundedSemaphore
    ) -> None:
        try:
            self.perform_job(job, queue, execution)
        except Exception:
            log.exception("job %s: the worker could not record its end", job.id)
        finally:
            self._running.pop(execution.id, None)
            self.executions.pop(execution.id, None)
            free.release()
            if not self._running:
                try:
                    self.set_state(WorkerStatus.IDLE)
                except redis.RedisError:
                    pass  # the next job sets it again

    def prepare_job_execution(self, job: Job, remove_from_intermediate_queue: bool = False) -> None:
        # Each lane dequeues from one queue, through RQ's intermediate list: always clear it
        # (RQ clears it only for a worker on a single queue).
        super().prepare_job_execution(job, remove_from_intermediate_queue=True)

    def _in_app(self, function: Callable[..., None]) -> Callable[..., None]:
        """Run `function` in an app context: a new greenlet does not inherit the caller's."""

        def run(*args: Any) -> None:
            with self.app.app_context():
                function(*args)

        return run

    # --- stopping -------------------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            gevent.signal_handler(signum, self.request_stop, signum, None)

    def request_stop(self, signum: int, frame: object) -> None:
        """First signal: take no new jobs, drain. Second: end the running answers now."""
        if self._stop_requested:
            log.warning("worker %s: second signal; ending the running answers now", self.name)
            self._force_stop = True
            return
        from rq.utils import now

        self._shutdown_requested_date = now()
        self._stop_requested = True
        log.info("worker %s: stopping; %d jobs to finish", self.name, len(self._running))

    def _drain(self) -> None:
        """Wait for the running jobs, at most `drain_seconds`; then end their answers."""
        if self._running:
            self.set_shutdown_requested_date()  # type: ignore[no-untyped-call]  # RQ's, unannotated
            log.info(
                "worker %s: finishing %d jobs (at most %s s)",
                self.name,
                len(self._running),
                self.drain_seconds,
            )
        deadline = time.monotonic() + self.drain_seconds
        while self._running and not self._force_stop and time.monotonic() < deadline:
            gevent.sleep(0.1)
        if not self._running:
            return
        running = len(self._running)
        log.warning("worker %s: ending %d answers at the drain deadline", self.name, running)
        for _, job in list(self._running.values()):
            self._end_answer(job, SHUT_DOWN)
        # Each job's heartbeat hears of its end within a beat and returns through RQ.
        deadline = time.monotonic() + LAST_WORDS_SECONDS
        while self._running and time.monotonic() < deadline:
            gevent.sleep(0.1)
        gevent.killall([greenlet for greenlet, _ in self._running.values()], timeout=5)

    def _end_answer(self, job: Job, message: str) -> None:
        try:
            end_with_error(job, message)
        except redis.RedisError:
            log.exception("job %s: could not end its answer", job.id)

    def handle_payload(self, message: dict[str, Any]) -> None:
        """RQ's commands: stop-job and stop-execution end the answer they name."""
        payload = parse_payload(message)
        if payload.get("command") not in ("stop-job", "stop-execution"):
            super().handle_payload(message)  # type: ignore[no-untyped-call]  # RQ's, unannotated
            return
        for _, job in list(self._running.values()):
            if job.id == payload.get("job_id"):
                with self.app.app_context():
                    self._end_answer(job, STOPPED_BY_ADMIN)

    def unsubscribe(self) -> None:
        # RQ's unsubscribe joins its command thread with no timeout while that thread waits
        # up to 60 s for a message: every shutdown took a minute. Bound it.
        if self.pubsub_thread is not None:
            self.pubsub_thread._running.clear()
            try:
                self.pubsub.unsubscribe()
            except redis.RedisError:
                pass
            self.pubsub_thread.join(timeout=1)

    # --- liveness ---------------------------------------------------------------------------

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        return worker_liveness.EXECUTION_TTL

    def _beat_forever(self) -> None:
        swept_at = 0.0
        while True:
            try:
                worker_liveness.beat(self)
                if self.should_run_maintenance_tasks:  # RQ's own, every ten minutes
                    self.run_maintenance_tasks()  # type: ignore[no-untyped-call]  # RQ's, unannotated
                if time.monotonic() - swept_at >= worker_liveness.SWEEP_SECONDS:
                    swept_at = time.monotonic()
                    worker_liveness.sweep(self, self.lanes[0][0], timing_from(self.app.config))
            except redis.RedisError as exc:
                log.warning("worker %s: heartbeat failed (%s)", self.name, exc)
            gevent.sleep(worker_liveness.BEAT_SECONDS)
