"""Who is asking, and the one place that loads a chat for them.

Until accounts exist, a user is an anonymous id kept in the signed session cookie. Every
route loads chats through `load_chat`, so someone else's chat is a 404 exactly like a
missing one; accounts will replace `current_user_id` and nothing else.
"""

from __future__ import annotations

from flask import abort, session

from chatapp import store
from chatapp.connections import get_redis
from chatapp.store import Chat


def current_user_id() -> str:
    """Return the id of the user making the request, creating one on a first visit."""
    user_id = session.get("uid")
    if not isinstance(user_id, str) or not store.is_id(user_id):
        user_id = store.new_id()
        session["uid"] = user_id
        session.permanent = True
    return user_id


def find_chat(chat_id: str) -> Chat | None:
    """Return the chat if it exists and belongs to the current user, else None."""
    if not store.is_id(chat_id):
        return None
    chat = store.get_chat(get_redis(), chat_id)
    if chat is None or chat.owner != current_user_id():
        return None
    return chat


def load_chat(chat_id: str) -> Chat:
    """Return the current user's chat, or answer 404 (missing and not-yours look the same)."""
    chat = find_chat(chat_id)
    if chat is None:
        abort(404, "This chat does not exist, or it is not yours.")
    return chat
