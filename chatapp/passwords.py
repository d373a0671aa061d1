"""Password hashes, made and checked without stopping the process.

Under gunicorn's gevent worker one process serves every stream from one thread: a hash
(about 0.1 s of scrypt) run there would freeze all of them for its length at every login.
scrypt releases the GIL, so in a real thread it runs beside them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from werkzeug.security import check_password_hash, generate_password_hash

T = TypeVar("T")


def hashed(password: str) -> str:
    """Return the hash to keep for `password`."""
    return _off_the_loop(generate_password_hash, password)


def matches(password_hash: str | None, password: str) -> bool:
    """Whether `password` is the one `password_hash` was made from. With no hash (an
    unknown name) a stand-in is checked, so that a wrong name takes as long as a wrong
    password and the login form does not reveal which names exist."""
    matched = _off_the_loop(check_password_hash, password_hash or _stand_in(), password)
    return matched and bool(password_hash)


@functools.cache
def _stand_in() -> str:
    return hashed("not a real password: timing only")


def _off_the_loop(function: Callable[..., T], *args: str) -> T:
    """Run a hash in a real thread when gevent runs the process, else here."""
    from gevent import monkey

    if monkey.is_module_patched("threading"):
        return _hashing_threads().apply(function, args)  # type: ignore[no-any-return]
    return function(*args)


@functools.cache
def _hashing_threads() -> Any:
    """Two real threads per process for password hashes: a burst of logins queues here
    (each hash takes 32 MiB), not in gevent's shared pool, where name lookups wait."""
    from gevent.threadpool import ThreadPool

    return ThreadPool(maxsize=2)
