"""Each user's share of this process's event streams.

A process holds up to SSE_MAX_PER_PROCESS streams; without a share per user, one account
opening a thousand could take them all and leave everyone else told to retry. A person's
tabs and devices hold one stream each, far below STREAMS_PER_USER.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from flask import Flask, Response, current_app


class StreamShare:
    """How many streams each user holds in this process (gevent: one thread, no lock)."""

    def __init__(self, per_user: int) -> None:
        self.per_user = per_user
        self.held: Counter[str] = Counter()

    def take(self, user_id: str) -> bool:
        """Count one more stream for the user, unless they hold their share already."""
        if self.held[user_id] >= self.per_user:
            return False
        self.held[user_id] += 1
        return True

    def give_back(self, user_id: str) -> None:
        self.held[user_id] -= 1
        if self.held[user_id] <= 0:
            del self.held[user_id]


def init_app(app: Flask) -> None:
    app.extensions["stream_share"] = StreamShare(app.config["STREAMS_PER_USER"])


def get_stream_share() -> StreamShare:
    share: StreamShare = current_app.extensions["stream_share"]
    return share


def held_by(user_id: str, respond: Callable[[], Response]) -> Response | None:
    """The response `respond` makes, counted in the user's share until it closes; None
    (nothing made) when they hold their share already: the caller refuses with 429."""
    share = get_stream_share()
    if not share.take(user_id):
        return None
    try:
        response = respond()  # a long-poll waits in here: it counts while it does
    except BaseException:
        share.give_back(user_id)
        raise
    response.call_on_close(lambda: share.give_back(user_id))
    return response
