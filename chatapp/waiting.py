"""Answers waiting for a worker: an index beside RQ's queue, in the queue's Redis.

An answer's job can leave the queue without running: the dashboard's Delete, `rq empty`,
an operator's script. Its answer would then say "queued" until the queue wait ran out (ten
minutes). Each answer is listed here from just before its job is queued until the job
starts; the workers look every few seconds for listed answers whose job is gone and end
them with an error a person can read. An answer listed less than `LISTED_GRACE_SECONDS` ago
is left alone: its job may be on its way to the queue (RQ queues a rate-limited job in
steps of its own, outside any transaction of ours). /healthz counts the list.
"""

from __future__ import annotations

import time

import redis
from rq import Queue
from rq.job import Job

from chatapp import contract, store

LISTED_GRACE_SECONDS = 10.0
REMOVED = "The answer was taken off the queue before a worker wrote it. Send the message again."


def _key(queue: Queue) -> str:
    return f"{store.PREFIX}:waiting:{queue.name}"


def add(
    queue: Queue,
    job_id: str,
    chat_id: str,
    message_id: str,
    generation_id: str,
) -> None:
    """List an answer whose job is about to be queued."""
    member = ":".join((job_id, chat_id, message_id, generation_id))
    queue.connection.zadd(_key(queue), {member: time.time()})


def remove(queue: Queue, job_id: str, chat_id: str, message_id: str, generation_id: str) -> None:
    """Take an answer off the list: its job has started."""
    queue.connection.zrem(_key(queue), ":".join((job_id, chat_id, message_id, generation_id)))


def count(queue: Queue) -> int:
    """Return how many answers wait for a worker."""
    return int(queue.connection.zcard(_key(queue)))


def end_removed(queue: Queue, r: redis.Redis, timing: store.Timing) -> int:
    """End the listed answers whose job is no longer in RQ; return how many."""
    listed_before = time.time() - LISTED_GRACE_SECONDS
    raw: list[bytes] = queue.connection.zrangebyscore(_key(queue), "-inf", listed_before)  # type: ignore[assignment]
    members = [member.decode() for member in raw]
    listed = [member.split(":") for member in members]
    with queue.connection.pipeline(transaction=False) as pipe:
        for job_id, *_ in listed:
            pipe.exists(Job.key_for(job_id))
        exists = pipe.execute()
    ended = 0
    for member, (_, chat_id, message_id, generation_id), there in zip(
        members, listed, exists, strict=True
    ):
        if there:
            continue
        terminal = store.Terminal(contract.ERROR, message=REMOVED)
        if store.end(r, chat_id, message_id, generation_id, terminal, timing).ok:
            ended += 1
        queue.connection.zrem(_key(queue), member)
    return ended
