"""The answer worker's proof of life, and its care for the jobs of workers that died.

One heartbeat greenlet (worker.py) refreshes the worker and every running execution in one
pipeline, and every few seconds looks for started jobs whose worker died: a SIGKILL, or a
lost host, leaves them "started" until RQ's next maintenance, ten minutes later.
"""

from __future__ import annotations

from rq import Queue
from rq.registry import StartedJobRegistry
from rq.utils import current_timestamp, now
from rq.worker import BaseWorker

from chatapp import store, waiting
from chatapp.connections import get_redis
from chatapp.jobs import end_if_producer_dead

BEAT_SECONDS = 5  # the worker's and its executions' heartbeat
EXECUTION_TTL = 20  # a started job whose worker stopped beating this long is abandoned
WORKER_TTL = 30  # a worker that stopped beating this long is gone (dashboard, /healthz)
SWEEP_SECONDS = 5  # how often the jobs of dead workers are looked for


def beat(worker: BaseWorker) -> None:
    """Refresh the worker and every running execution, in one round trip."""
    with worker.connection.pipeline(transaction=False) as pipe:
        worker.heartbeat(WORKER_TTL, pipeline=pipe)
        for execution in list(worker.executions.values()):
            job = execution._job
            if job is not None:
                execution.heartbeat(job.started_job_registry, EXECUTION_TTL, pipeline=pipe)
                job.heartbeat(now(), EXECUTION_TTL, pipeline=pipe, xx=True)
        pipe.execute()


def sweep(worker: BaseWorker, answers: Queue, timing: store.Timing) -> None:
    """End the answers whose job left the queue unrun (waiting.py). Look after the jobs
    of workers that stopped beating (killed, or their host lost): end their answers as
    soon as their producers' heartbeats expire, whether or not anyone watches, and fail
    them in RQ once their executions expire (RQ's own check runs every ten minutes)."""
    waiting.end_removed(answers, get_redis(), timing)
    missed_a_beat = current_timestamp() + EXECUTION_TTL - 2 * BEAT_SECONDS
    for queue in worker.queues:
        registry = StartedJobRegistry(queue=queue)
        for job_id in registry.get_expired_job_ids(missed_a_beat):
            job = worker.job_class.fetch(job_id, connection=worker.connection)
            end_if_producer_dead(job)
        registry.cleanup()
