"""Jobs run inside the app's context, whichever worker runs them.

`rq_worker.py` pushes the context for its jobs. RQ's own `rq worker` (and its forked work
horses) does not: without it a job could not reach its settings or Redis, and an answer it
took would stay "queued" forever. So a job outside any context builds the app itself, once
per process.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from flask import Flask, has_app_context

P = ParamSpec("P")
T = TypeVar("T")


def in_app_context(job: Callable[P, T]) -> Callable[P, T]:
    """Run `job` (or an RQ callback) inside the app's context."""

    @functools.wraps(job)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        if has_app_context():
            return job(*args, **kwargs)
        with _app().app_context():
            return job(*args, **kwargs)

    return run


@functools.cache
def _app() -> Flask:
    from chatapp import create_app

    return create_app()
