"""A job's timeout for a worker that runs many jobs at once, each in a greenlet.

RQ's default is one SIGALRM per process: one job at a time. This is a gevent timer in the
job's own greenlet; it is a BaseException while it unwinds, so no `except Exception` in a
library (the `openai` client retries on those) can swallow it.
"""

from __future__ import annotations

from types import TracebackType

import gevent
from rq.timeouts import BaseDeathPenalty


class GreenletDeathPenalty(BaseDeathPenalty):
    """A job's timeout as a gevent timer that interrupts only that job's greenlet, even
    while it is blocked reading from the network."""

    def setup_death_penalty(self) -> None:
        self._timer = gevent.Timeout(self._timeout if self._timeout and self._timeout > 0 else None)
        self._timer.start()

    def cancel_death_penalty(self) -> None:
        self._timer.close()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cancel_death_penalty()
        if exc is self._timer:
            message = f"Task exceeded maximum timeout value ({self._timeout} seconds)"
            raise self._exception(message) from None
