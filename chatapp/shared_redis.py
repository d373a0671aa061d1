"""The web process's Redis client: every greenlet's commands share one connection.

A gunicorn gevent process serves up to a thousand streams. On a connection pool each
command in flight holds a connection of its own, so a crowd of viewers starting at once
took the pool's every connection (50) and the rest waited for one. Here every command goes
out on one connection as soon as it is asked, without waiting for the replies of those
sent before it (pipelining, as Redis's auto-pipelining clients do: ioredis, Lettuce), and
one reader greenlet hands each caller its replies in the order Redis sends them. A process
keeps one connection for its chat data however many viewers it serves, and a command
waits for nothing but Redis.

Each caller gets its own replies, parsed as redis-py parses them (callbacks, decoding), and
its own errors. A pipeline goes out in one write; a transaction (MULTI ... EXEC) too, so
nothing of another caller comes between. If the connection fails, every call waiting on it
hears the error, and the next command opens a new connection. There is no place here for
blocking commands, WATCH or pub/sub; the web process sends none through this client.

Only for gevent processes; `connections.share_one_connection` decides. On a Cluster, one of
these for each master (chatapp/shared_cluster.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gevent
import gevent.event
import gevent.lock
import gevent.queue
import redis
from redis.client import Pipeline
from redis.exceptions import ResponseError


class _Call:
    """One caller's commands (one, a pipeline or a transaction), sent on `connection`."""

    def __init__(self, commands: list[tuple[Any, Any]], transaction: bool) -> None:
        self.commands = commands
        self.transaction = transaction
        self.connection: Any = None  # the connection it went out on
        self.replies = gevent.event.AsyncResult()


class SharedConnectionRedis(redis.Redis):
    """A Redis client whose commands, from any greenlet, are pipelined on one connection."""

    def __init__(self, url: str, **options: Any) -> None:
        # The pool only makes connections (and carries their settings); no PING between
        # pipelined commands, whose replies the reader must get in order.
        pool = redis.ConnectionPool.from_url(url, **{**options, "health_check_interval": 0})
        super().__init__(connection_pool=pool)
        self._connection = pool.make_connection()
        self._sending = gevent.lock.RLock()  # one write at a time, in the order of `_sent`
        self._sent: gevent.queue.Queue[_Call] = gevent.queue.Queue()
        self._reader: gevent.Greenlet | None = None

    def execute_command(self, *args: Any, **options: Any) -> Any:
        (reply,) = self._run([(args, options)], transaction=False)
        if isinstance(reply, Exception):
            raise reply
        return reply

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Pipeline:
        return SharedPipeline(self._run, transaction, self.connection_pool, self.response_callbacks)

    def close(self) -> None:
        self._connection.disconnect()  # made here, not held by the pool
        super().close()

    def _run(
        self, commands: list[tuple[Any, Any]], transaction: bool, retry: bool = True
    ) -> list[Any]:
        """Send the commands and wait for their replies; with `retry`, once more on a new
        connection if the connection failed (as redis-py's own retry does)."""
        try:
            return self._send(_Call(commands, transaction))
        except (redis.ConnectionError, redis.TimeoutError):
            if not retry:
                raise
            return self._send(_Call(commands, transaction))

    def _send(self, call: _Call) -> list[Any]:
        packed = [args for args, _ in call.commands]
        if call.transaction:
            packed = [("MULTI",), *packed, ("EXEC",)]
        with self._sending:
            connection = call.connection = self._connection
            try:
                connection.send_packed_command(connection.pack_commands(packed), False)
            except BaseException as exc:  # perhaps half written: nothing more can follow it
                # (a caller's own Timeout or kill is not the others' news: they hear of a reset)
                reset = redis.ConnectionError("Redis connection reset while sending")
                self._fail(connection, exc if isinstance(exc, Exception) else reset)
                raise
            self._sent.put(call)
        if self._reader is None or self._reader.dead:
            self._reader = gevent.spawn(self._read_forever)
        replies: list[Any] = call.replies.get()
        return replies

    def _read_forever(self) -> None:
        while True:
            call = self._sent.get()
            if call.replies.ready():
                continue  # failed with its connection already
            try:
                call.replies.set(self._read(call))
            except ResponseError as exc:  # a transaction refused whole: the connection is fine
                call.replies.set_exception(exc)
            except Exception as exc:  # the connection, or our bug: nobody may wait forever
                call.replies.set_exception(exc)
                with self._sending:
                    self._fail(call.connection, exc)

    def _read(self, call: _Call) -> list[Any]:
        connection = call.connection
        if not call.transaction:
            return [self._reply(connection, args[0], options) for args, options in call.commands]
        redis.Redis.parse_response(self, connection, "_")  # MULTI's OK
        queued = [self._reply(connection, "_", {}) for _ in call.commands]  # QUEUED, or errors
        # EXEC's replies; after a queueing error it raises EXECABORT, every reply read
        replies = redis.Redis.parse_response(self, connection, "_")
        for place, error in enumerate(queued):
            if isinstance(error, Exception):
                replies.insert(place, error)
        return [
            self._callback(reply, args[0], options)
            for reply, (args, options) in zip(replies, call.commands, strict=True)
        ]

    def _reply(self, connection: Any, command: str, options: dict[str, Any]) -> Any:
        """One command's parsed reply; its error is its reply, not the connection's end."""
        try:
            return redis.Redis.parse_response(self, connection, command, **options)
        except ResponseError as exc:
            return exc

    def _callback(self, reply: Any, command: str, options: dict[str, Any]) -> Any:
        if isinstance(reply, Exception):
            return reply
        callback = self.response_callbacks.get(command)
        options = {name: value for name, value in options.items() if name != "keys"}
        return callback(reply, **options) if callback else reply

    def _fail(self, connection: Any, error: BaseException) -> None:
        """End `connection` (held by the sender's lock): every call sent on it hears the
        error; the next command opens a new one."""
        if connection is not self._connection:
            return  # ended already
        connection.disconnect()
        self._connection = self.connection_pool.make_connection()
        for call in list(self._sent.queue):
            if call.connection is connection and not call.replies.ready():
                call.replies.set_exception(error)


class SharedPipeline(Pipeline):
    """A pipeline that, when executed, goes out in one call of `run` (its commands, and
    whether they are a transaction), on a client's shared connection(s)."""

    def __init__(
        self,
        run: Callable[[list[tuple[Any, Any]], bool], list[Any]],
        transaction: bool,
        pool: Any = None,  # only its settings are read, never a connection
        callbacks: Any = None,
    ) -> None:
        super().__init__(pool, callbacks or {}, transaction, None)
        self._run_commands = run
        self._multi = transaction  # (mypy reads `self.transaction` as the method of that name)

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        commands, self.command_stack = self.command_stack, []
        if not commands:
            return []
        replies = self._run_commands(commands, self._multi)
        if raise_on_error:
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
        return replies
