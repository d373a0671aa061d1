"""Who is asking, and the one place that loads a chat for them.

The signed session cookie carries the logged-in user's id. Every chat route loads chats
through `load_chat`, so someone else's chat is a 404 exactly like a missing one.
"""

from __future__ import annotations

from flask import abort, current_app, g, session

from chatapp import store, users
from chatapp.connections import get_redis
from chatapp.store import Chat
from chatapp.users import User


def current_user() -> User | None:
    """Return the logged-in user, or None (no session, it ended or expired, or the account
    is gone)."""
    if "user" not in g:
        user_id, session_id = session.get("uid"), session.get("sid")
        found = None
        if isinstance(user_id, str) and isinstance(session_id, str):
            found = users.session_user(get_redis(), session_id, user_id)
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
    """Start a fresh session for `user` (a new cookie, a new CSRF token)."""
    lifetime = current_app.permanent_session_lifetime
    session_id = users.start_session(get_redis(), user.id, int(lifetime.total_seconds()))
    session.clear()
    session.update(uid=user.id, sid=session_id)
    session.permanent = True
    g.user = user


def log_out() -> None:
    """End this session on the server, so even a copy of its cookie no longer works."""
    user_id, session_id = session.get("uid"), session.get("sid")
    if isinstance(user_id, str) and isinstance(session_id, str):
        users.end_session(get_redis(), user_id, session_id)
    session.clear()
    g.user = None


def current_session_id() -> str:
    """The id of the logged-in session ("" when logged out)."""
    session_id = session.get("sid")
    return session_id if isinstance(session_id, str) else ""


def find_chat(chat_id: str) -> Chat | None:
    """Return the chat if it exists and belongs to the current user, else None."""
    user = current_user()
    return owned_chat(user.id, chat_id) if user else None


def owned_chat(user_id: str, chat_id: str) -> Chat | None:
    """Return the chat if it exists and belongs to `user_id` (the session's user, or an
    access token's: durable_views.py), else None."""
    if not store.is_id(chat_id):
        return None
    chat = store.get_chat(get_redis(), chat_id)
    if chat is None or chat.owner != user_id:
        return None
    return chat


def load_chat(chat_id: str) -> Chat:
    """Return the current user's chat, or answer 404 (missing and not-yours look the same)."""
    chat = find_chat(chat_id)
    if chat is None:
        abort(404, "This chat does not exist, or it is not yours.")
    return chat
