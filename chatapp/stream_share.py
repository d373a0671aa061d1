"""Each user's share of this process's event streams.

A process holds up to SSE_MAX_PER_PROCESS streams; without a share per user, one account
opening a thousand could take them all and leave everyone else told to retry. A person's
tabs and devices hold one stream each, far below STREAMS_PER_USER.
"""

from __future__ import annotations

from collections import Counter

from flask import Flask, current_app


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
