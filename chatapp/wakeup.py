"""A pipe that wakes a thread sleeping in poll(), from any thread or greenlet."""

from __future__ import annotations

import os
import select


class Wakeup:
    """One thread sleeps in `sleep` until one of its sockets has something to read, someone
    calls `wake`, or a timeout."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)  # a full pipe must never block the process

    def wake(self) -> None:
        try:
            os.write(self._write, b"x")
        except BlockingIOError:
            pass  # the pipe is full: the sleeper is awake already

    def sleep(self, sockets: list[int], timeout: float) -> None:
        """Sleep until `sockets` (file numbers) have something to read, `wake`, or `timeout`.

        poll(), not select(): a process holding a thousand viewers has sockets numbered
        past select()'s limit of 1024."""
        watched = select.poll()
        watched.register(self._read, select.POLLIN)
        for fileno in sockets:
            watched.register(fileno, select.POLLIN)
        readable = [fd for fd, _ in watched.poll(timeout * 1000)]
        if self._read in readable:
            try:
                while os.read(self._read, 4096):
                    pass
            except BlockingIOError:
                pass
