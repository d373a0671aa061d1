"""The answer worker's appends, sent to Redis together.

A worker process writes many answers at once, each flushing every few tokens. One EVALSHA
per flush in its own round trip cost the worker about 190 µs of CPU per token (socket
calls and greenlet switches); the same calls sent in one pipeline with whatever else is
waiting cost about 35 µs each. Each call keeps its own result (every fenced append checks
its own generation and length), so nothing about the log changes: only round trips are
shared. One greenlet sends them: woken by the first call, it lets the others gather for
`GATHER_SECONDS` (a tenth of the producer's 20 ms flush window), then sends them all.

Only scripts go through here (`evalsha`); every other command goes straight to the client.
Used on one Redis only: a cluster's client routes each call to its shard itself.
"""

from __future__ import annotations

import logging
from typing import Any

import gevent
import gevent.event
import hiredis
import redis

log = logging.getLogger(__name__)
GATHER_SECONDS = 0.002


class _Call:
    def __init__(self, args: tuple[Any, ...]) -> None:
        self.args = args
        self.result = gevent.event.AsyncResult()


class BatchedScripts:
    """A Redis client whose script calls are pipelined with other greenlets' calls."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._waiting: list[_Call] = []
        self._wake = gevent.event.Event()
        self._connection = client.connection_pool.make_connection()  # connects on first use
        self._sender = gevent.spawn(self._send_forever)

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any:
        """Run a script in the next batch; return its reply (or raise its error)."""
        call = _Call((sha, numkeys, *keys_and_args))
        self._waiting.append(call)
        self._wake.set()
        return call.result.get()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)  # every other command, as it is

    def _send_forever(self) -> None:
        while True:
            self._wake.wait()
            gevent.sleep(GATHER_SECONDS)
            self._wake.clear()
            batch, self._waiting = self._waiting, []
            if batch:
                self._send(batch)

    def _send(self, batch: list[_Call]) -> None:
        """Send the batch on the sender's own connection and hand each call its reply.

        Not a pipeline: one from the pool costs a readiness check of its connection (a
        socket call) and its own bookkeeping on every batch, a tenth of the worker's CPU
        with 500 answers running. This connection is only ever used here, one batch at a
        time, so it needs no check."""
        connection = self._connection
        try:
            # hiredis packs each call in C; redis-py's `pack_commands` around it re-checks every
            # argument in Python, which was 40% of the sending greenlet's CPU
            commands = b"".join(hiredis.pack_command(("EVALSHA", *call.args)) for call in batch)
            connection.send_packed_command([commands])
            replies = [_reply(connection) for _ in batch]
        except Exception as exc:  # the connection: every call in the batch hears of it
            connection.disconnect()  # the next batch connects again
            for call in batch:
                call.result.set_exception(exc)
            return
        for call, reply in zip(batch, replies, strict=True):
            if isinstance(reply, Exception):
                call.result.set_exception(reply)  # NOSCRIPT: the caller loads it, tries again
            else:
                call.result.set(reply)


def _reply(connection: Any) -> Any:
    """Read one reply; a script's error is its call's reply, not the batch's failure."""
    try:
        return connection.read_response()
    except redis.exceptions.ResponseError as exc:
        return exc
