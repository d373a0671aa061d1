"""Accounts: who may sign in, their hashed passwords, and who the admin is.

Each operation touches one key at a time (no multi-key script), so accounts work the same
on a single Redis and on a Cluster. A name is claimed with HSETNX before its record is
written, and the first account ever created claims the admin key with SET NX, so two
sign-ups racing on a fresh install still make exactly one admin.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass

import redis

from chatapp import access_tokens, passwords, search, store
from chatapp.store import user_chats_key

PREFIX = f"{store.PREFIX}:accounts"
NAMES_KEY = f"{PREFIX}:names"  # hash: lower-cased name -> user id
ADMIN_KEY = f"{PREFIX}:admin"  # string: the admin's user id
SETTINGS_KEY = f"{PREFIX}:settings"  # hash: settings the admin changes on the page
SESSIONS_INDEXED_KEY = f"{PREFIX}:sessions-indexed"  # sessions of old versions are in sets

NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,32}")
SESSION_ID = re.compile(r"[A-Za-z0-9_-]{32}")
MIN_PASSWORD = 8
MAX_PASSWORD = 256  # a bound on hashing work per request


class AccountError(ValueError):
    """A sign-up or login that cannot go ahead; the message is for the person."""


class RegistrationClosed(AccountError):
    """A sign-up while registration is closed."""


@dataclass(frozen=True)
class User:
    id: str
    name: str
    is_admin: bool
    created: float
    disabled: bool = False  # by the admin: it cannot log in, and its sessions ended


def user_key(user_id: str) -> str:
    return f"{PREFIX}:user:{user_id}"


def check_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise AccountError("A user name has 1 to 32 letters, digits, dots, dashes or underscores.")
    return name


def check_password(password: str) -> str:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise AccountError(f"A password has {MIN_PASSWORD} to {MAX_PASSWORD} characters.")
    return password


def has_users(r: redis.Redis) -> bool:
    return bool(r.exists(ADMIN_KEY))


def create_user(r: redis.Redis, name: str, password: str, others_allowed: bool) -> User:
    """Create an account. The first one on a fresh install becomes the admin; after that,
    only while `others_allowed` (open registration, or the admin adding someone)."""
    check_name(name)
    password_hash = passwords.hashed(check_password(password))
    user_id, now = store.new_id(), time.time()
    # Claim the install before anything else: of sign-ups racing on a fresh install, one
    # becomes the admin and the others count as ordinary sign-ups (refused if closed).
    is_admin = bool(r.set(ADMIN_KEY, user_id, nx=True))
    if not is_admin and not others_allowed:
        raise RegistrationClosed("Registration is closed. Ask the admin for an account.")
    # The record, then the name: a crash in between leaves an unreachable record, never
    # a name that is taken by nobody.
    r.hset(user_key(user_id), mapping={"name": name, "password": password_hash, "created": now})
    if not r.hsetnx(NAMES_KEY, name.lower(), user_id):
        r.delete(user_key(user_id))
        raise AccountError("That user name is taken: choose another.")
    return User(user_id, name, is_admin, now)


def authenticate(r: redis.Redis, name: str, password: str) -> User | None:
    """Return the user if the name and password match, else None (same time either way)."""
    user_id: str | None = None
    if NAME_PATTERN.fullmatch(name):
        user_id = r.hget(NAMES_KEY, name.lower())  # type: ignore[assignment]
    return _with_password(r, user_id, password)


def password_matches(r: redis.Redis, user_id: str, password: str) -> bool:
    return _with_password(r, user_id, password) is not None


def _with_password(r: redis.Redis, user_id: str | None, password: str) -> User | None:
    stored: str | None = r.hget(user_key(user_id), "password") if user_id else None  # type: ignore[assignment]
    matches = passwords.matches(stored, password[:MAX_PASSWORD])
    if not (matches and user_id and len(password) <= MAX_PASSWORD):
        return None
    return get_user(r, user_id)


def set_password(r: redis.Redis, user_id: str, password: str) -> None:
    password_hash = passwords.hashed(check_password(password))
    r.hset(user_key(user_id), "password", password_hash)


def set_disabled(r: redis.Redis, user_id: str, disabled: bool) -> None:
    """Disable an account (its sessions end; it cannot log in) or enable it again."""
    if disabled:
        r.hset(user_key(user_id), "disabled", "1")
        end_sessions(r, user_id)
    else:
        r.hdel(user_key(user_id), "disabled")


def delete_user(r: redis.Redis, user: User, timing: store.Timing) -> None:
    """Delete an account and its chats (their pages say so). It is disabled first, so it
    cannot log in and start a chat while its chats are being deleted."""
    set_disabled(r, user.id, True)
    while chat_ids := _first_chat_ids(r, user.id):
        for chat_id in chat_ids:
            chat = store.get_chat(r, chat_id)
            if chat is None:
                r.zrem(user_chats_key(user.id), chat_id)  # a stale entry
            else:
                store.delete_chat(r, chat, timing)  # which takes it off the list
    search.forget_user(r, user.id)
    access_tokens.revoke_all(r, user.id)
    r.hdel(NAMES_KEY, user.name.lower())
    r.delete(user_key(user.id), user_chats_key(user.id), sessions_key(user.id))


def get_user(r: redis.Redis, user_id: str) -> User | None:
    if not store.is_id(user_id):
        return None
    pipe = r.pipeline(transaction=False)
    pipe.hgetall(user_key(user_id))
    pipe.get(ADMIN_KEY)
    fields, admin_id = pipe.execute()
    return _user(user_id, fields, admin_id)


def _first_chat_ids(r: redis.Redis, user_id: str) -> list[str]:
    ids: list[str] = r.zrange(user_chats_key(user_id), 0, 199)  # type: ignore[assignment]
    return ids


def _user(user_id: str, fields: dict[str, str], admin_id: str | None) -> User | None:
    if not fields or "name" not in fields:
        return None
    return User(
        user_id,
        fields["name"],
        admin_id == user_id,
        float(fields["created"]),
        disabled=bool(fields.get("disabled")),
    )


def list_users(r: redis.Redis) -> list[User]:
    ids: list[str] = sorted(r.hvals(NAMES_KEY))  # type: ignore[arg-type]
    users = [get_user(r, user_id) for user_id in ids]
    return sorted((u for u in users if u is not None), key=lambda u: u.created)


def registration_open(r: redis.Redis, configured: str) -> bool:
    """Return whether a visitor may sign up now: the first account always may."""
    return not has_users(r) or others_may_join(r, configured)


def others_may_join(r: redis.Redis, configured: str) -> bool:
    """Return whether registration is open beyond the first account: the environment can
    close it for good; the admin closes and reopens it on the admin page."""
    if configured == "closed":
        return False
    return r.hget(SETTINGS_KEY, "registration") != "closed"


def set_registration(r: redis.Redis, is_open: bool) -> None:
    r.hset(SETTINGS_KEY, "registration", "open" if is_open else "closed")


# -- sessions -------------------------------------------------------------------------
# The cookie names a session kept here, so that logging out ends it for good (a copy of
# the cookie is worth nothing after), and sessions expire on the server too. Each user's
# set of session ids lets them (or the admin) end every other one; the set may hold ids
# that expired, which are dropped when it is read.


def session_key(session_id: str) -> str:
    return f"{PREFIX}:session:{session_id}"


def sessions_key(user_id: str) -> str:
    return f"{PREFIX}:user:{user_id}:sessions"


def start_session(r: redis.Redis, user_id: str, lifetime_seconds: int) -> str:
    session_id = secrets.token_urlsafe(24)
    r.set(session_key(session_id), user_id, ex=lifetime_seconds)
    r.sadd(sessions_key(user_id), session_id)
    r.expire(sessions_key(user_id), lifetime_seconds)  # as long as its newest session
    return session_id


def end_session(r: redis.Redis, user_id: str, session_id: str) -> None:
    r.delete(session_key(session_id))
    r.srem(sessions_key(user_id), session_id)


def live_sessions(r: redis.Redis, user_id: str) -> list[str]:
    """The user's sessions that have not ended or expired."""
    _index_old_sessions(r)
    ids: list[str] = sorted(r.smembers(sessions_key(user_id)))  # type: ignore[arg-type]
    live = [i for i in ids if r.exists(session_key(i))]  # one key at a time: cluster-safe
    if len(live) < len(ids):
        r.srem(sessions_key(user_id), *(set(ids) - set(live)))
    return live


def _index_old_sessions(r: redis.Redis) -> None:
    """Add the sessions started before users had session sets (chatapp before 42d443f)
    to their users' sets, once per install: they too must end with the others."""
    if r.exists(SESSIONS_INDEXED_KEY):
        return
    for key in r.scan_iter(match=session_key("*"), count=1000):
        user_id = r.get(key)
        if user_id:
            r.sadd(sessions_key(user_id), key.rsplit(":", 1)[1])  # type: ignore[arg-type]
    r.set(SESSIONS_INDEXED_KEY, "1")


def end_sessions(r: redis.Redis, user_id: str, keep: str = "") -> list[str]:
    """End all the user's sessions but `keep`; their open pages hear of it (they stop
    following, saying the user is logged out). Return the ended ones."""
    ended = [i for i in live_sessions(r, user_id) if i != keep]
    for session_id in ended:
        end_session(r, user_id, session_id)
    if ended:
        store.nudge(r, user_id, signed_out=ended)
    return ended


def session_user(r: redis.Redis, session_id: str, user_id: str) -> User | None:
    """Return the session's user if the session is live and belongs to `user_id`."""
    if not store.is_id(user_id) or not SESSION_ID.fullmatch(session_id):
        return None
    pipe = r.pipeline(transaction=False)
    pipe.get(session_key(session_id))
    pipe.hgetall(user_key(user_id))
    pipe.get(ADMIN_KEY)
    owner, fields, admin_id = pipe.execute()
    user = _user(user_id, fields, admin_id) if owner == user_id else None
    return None if user is None or user.disabled else user
