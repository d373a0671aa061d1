"""Who is asking, and the one place that loads a chat for them.

The signed session cookie carries the logged-in user's id. Every chat route loads chats
through `load_chat`, so someone else's chat is a 404 exactly like a missing one.
"""

from __future__ import annotations

from flask import abort, g, session

from chatapp import store, users
from chatapp.connections import get_redis
from chatapp.store import Chat
from chatapp.users import User


def current_user() -> User | None:
    """Return the logged-in user, or None (no session, or the account is gone)."""
    if "user" not in g:
        user_id = session.get("uid")
        found = users.get_user(get_redis(), user_id) if isinstance(user_id, str) else None
        g.user = found
    user: User | None = g.user
    return user


def current_user_id() -> str:
    """Return the logged-in user's id; routes that call this require a login."""
    user = current_user()
    if user is None:
        abort(401, "Log in to continue.")
    return user.id


def log_in(user: User) -> None:
    """Start a fresh session for `user` (a new cookie: no fixation of an older one)."""
    session.clear()
    session["uid"] = user.id
    session.permanent = True
    g.user = user


def log_out() -> None:
    session.clear()
    g.user = None


def find_chat(chat_id: str) -> Chat | None:
    """Return the chat if it exists and belongs to the current user, else None."""
    user = current_user()
    if user is None or not store.is_id(chat_id):
        return None
    chat = store.get_chat(get_redis(), chat_id)
    if chat is None or chat.owner != user.id:
        return None
    return chat


def load_chat(chat_id: str) -> Chat:
    """Return the current user's chat, or answer 404 (missing and not-yours look the same)."""
    chat = find_chat(chat_id)
    if chat is None:
        abort(404, "This chat does not exist, or it is not yours.")
    return chat
