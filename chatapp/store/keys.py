"""Every Redis key and channel name of a chat (accounts: `users.py`), and ids.

Every key of a chat carries the chat's hash tag (`chatapp:v1:{<chat id>}:...`), so one Lua
script can touch all of a chat's keys, on a single Redis or a Cluster slot alike.
"""

from __future__ import annotations

import re
import secrets

import redis
from redis.cluster import RedisCluster

PREFIX = "chatapp:v1"


ID_PATTERN = re.compile(r"[0-9a-f]{16}")


def chat_key(chat_id: str) -> str:
    return f"{PREFIX}:{{{chat_id}}}:chat"


def messages_key(chat_id: str) -> str:
    return f"{PREFIX}:{{{chat_id}}}:messages"


def message_key(chat_id: str, message_id: str) -> str:
    return f"{PREFIX}:{{{chat_id}}}:msg:{message_id}"


def path_key(chat_id: str, message_id: str) -> str:
    """The messages that followed a version of a question (or answer) when it was last
    shown, itself first: where switching back to it leads."""
    return f"{PREFIX}:{{{chat_id}}}:path:{message_id}"


def every_message_key(chat_id: str) -> str:
    """Every message the chat ever held, on any path (so that deleting it misses none)."""
    return f"{PREFIX}:{{{chat_id}}}:every"


def log_key(chat_id: str, generation_id: str) -> str:
    return f"{PREFIX}:{{{chat_id}}}:gen:{generation_id}:log"


def heartbeat_key(chat_id: str, generation_id: str) -> str:
    return f"{PREFIX}:{{{chat_id}}}:gen:{generation_id}:alive"


def events_key(chat_id: str) -> str:
    return f"{PREFIX}:{{{chat_id}}}:events"


def claim_key(chat_id: str, client_message_id: str) -> str:
    return f"{PREFIX}:{{{chat_id}}}:claim:{client_message_id}"


def channel(chat_id: str) -> str:
    """Return the pub/sub channel that carries the chat's live entries."""
    return f"{PREFIX}:{{{chat_id}}}:live"


def user_chats_key(user_id: str) -> str:
    return f"{PREFIX}:user:{user_id}:chats"


def user_channel(user_id: str) -> str:
    """Return the pub/sub channel that says "your chat list changed" to a user's pages."""
    return f"{PREFIX}:user:{user_id}:live"


def models_cache_key() -> str:
    """The model server's list of models, kept a few minutes (models.py)."""
    return f"{PREFIX}:models"


def new_chat_claim_key(user_id: str, client_message_id: str) -> str:
    """Which chat a first message (sent from the new-chat page) started, so a resend of it
    lands in the same chat instead of starting another."""
    return f"{PREFIX}:user:{user_id}:first:{client_message_id}"


def user_lock_key(user_id: str) -> str:
    """A short lock that serialises one user's sends, so a per-user cap holds under races."""
    return f"{PREFIX}:user:{user_id}:sending"


def is_cluster(r: redis.Redis) -> bool:
    # Asked on every append: isinstance() against RedisCluster (a Protocol in redis-py 8)
    # costs tens of microseconds, so the answer is kept per client class.
    kind = type(r)
    cluster = _CLUSTER_CLASSES.get(kind)
    if cluster is None:
        cluster = _CLUSTER_CLASSES[kind] = issubclass(kind, RedisCluster)
    return cluster


_CLUSTER_CLASSES: dict[type, bool] = {}


def publish_command(r: redis.Redis) -> str:
    """SPUBLISH on a Cluster: the message goes to the shard that holds the chat's slot, where
    PUBLISH would copy it to every node. One Redis keeps PUBLISH (SPUBLISH needs Redis 7)."""
    return "SPUBLISH" if is_cluster(r) else "PUBLISH"


def new_id() -> str:
    """Return a fresh random id (chats, messages, generations)."""
    return secrets.token_hex(8)


def is_id(value: str) -> bool:
    return ID_PATTERN.fullmatch(value) is not None
