"""Telling a user's open pages that their chat list changed."""

from __future__ import annotations

import redis

from chatapp import contract
from chatapp.store.keys import is_cluster, user_channel


def nudge(r: redis.Redis, owner: str, signed_out: list[str] | None = None) -> None:
    """Tell the owner's open pages that their chat list changed (they read it again), and
    which sessions ended (`signed_out`: the pages of those stop following).

    A nudge may be lost: a page reads the list on every (re)connect, and a stream of a
    session that ended is refused when it reconnects.
    """
    payload = contract.chat_list_nudge(signed_out)
    if is_cluster(r):
        r.spublish(user_channel(owner), payload)
    else:
        r.publish(user_channel(owner), payload)
