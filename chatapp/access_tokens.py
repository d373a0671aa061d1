"""Personal access tokens: how a script or another app reads its owner's answers as Durable
Streams (durable_views.py), sent as `Authorization: Bearer <token>`.

A token is shown once, when it is made; Redis keeps only its SHA-256 (a token is 256 random
bits, so a fast hash is enough: nobody can guess one to match). A token reads streams and
nothing else; its owner revokes it on the account page, and deleting the account ends all.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass

import redis

from chatapp.store.keys import PREFIX

TOKEN_PREFIX = "chatapp_pat_"  # recognisable in a leaked file or a secret scanner
MAX_PER_USER = 20
MAX_NAME_CHARS = 80


class TokenError(ValueError):
    """A token that cannot be made; the message says why."""


@dataclass(frozen=True)
class AccessToken:
    id: str
    name: str
    created: float

    @property
    def made(self) -> str:
        """The day it was made (UTC), for the account page."""
        return time.strftime("%Y-%m-%d", time.gmtime(self.created))


def _by_hash_key(token_hash: str) -> str:
    return f"{PREFIX}:token:{token_hash}"


def user_tokens_key(user_id: str) -> str:
    return f"{PREFIX}:user:{user_id}:tokens"


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create(r: redis.Redis, user_id: str, name: str) -> str:
    """Make a token for `user_id` and return it (the only time it is seen)."""
    name = " ".join(name.split())
    if not name:
        raise TokenError("Give the token a name, to know later what uses it.")
    if len(name) > MAX_NAME_CHARS:
        raise TokenError(f"A token's name has at most {MAX_NAME_CHARS} characters.")
    too_many = TokenError(f"You have {MAX_PER_USER} tokens, the most there may be. Revoke one.")
    if r.hlen(user_tokens_key(user_id)) >= MAX_PER_USER:
        raise too_many
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token_id, token_hash = secrets.token_hex(8), _hash(token)
    record = {"name": name, "created": time.time(), "hash": token_hash}
    # Listed first, then valid: a token that works is always on its owner's page. (Two
    # keys of different hash tags: no transaction on a Cluster.)
    r.hset(user_tokens_key(user_id), token_id, json.dumps(record))
    if r.hlen(user_tokens_key(user_id)) > MAX_PER_USER:  # two made at once past the limit
        r.hdel(user_tokens_key(user_id), token_id)
        raise too_many
    r.set(_by_hash_key(token_hash), f"{user_id}:{token_id}")
    return token


def list_tokens(r: redis.Redis, user_id: str) -> list[AccessToken]:
    """The user's tokens, newest first (names and dates: the tokens themselves are not kept)."""
    found: dict[str, str] = r.hgetall(user_tokens_key(user_id))  # type: ignore[assignment]
    tokens = [
        AccessToken(token_id, record["name"], record["created"])
        for token_id, record in ((k, json.loads(v)) for k, v in found.items())
    ]
    return sorted(tokens, key=lambda token: token.created, reverse=True)


def revoke(r: redis.Redis, user_id: str, token_id: str) -> bool:
    """Revoke one of the user's tokens; False if they have no such token."""
    raw = r.hget(user_tokens_key(user_id), token_id)
    if raw is None:
        return False
    r.delete(_by_hash_key(json.loads(raw)["hash"]))
    r.hdel(user_tokens_key(user_id), token_id)
    return True


def revoke_all(r: redis.Redis, user_id: str) -> None:
    for token in list_tokens(r, user_id):
        revoke(r, user_id, token.id)


def user_for(r: redis.Redis, token: str) -> str | None:
    """The id of the user a token belongs to, or None (unknown, mistyped or revoked)."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    found: str | None = r.get(_by_hash_key(_hash(token)))  # type: ignore[assignment]
    return found.split(":")[0] if found else None
