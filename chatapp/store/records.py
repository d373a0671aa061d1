"""A chat and its messages as records, and reading them."""

from __future__ import annotations

from dataclasses import dataclass

import redis

from chatapp import contract
from chatapp.store.keys import chat_key, events_key, message_key, messages_key, user_chats_key


@dataclass(frozen=True)
class Chat:
    id: str
    owner: str
    title: str
    created: float
    updated: float
    running: str  # the id of the answer being written, or ""
    model: str = ""  # the model its owner picked ("": the configured default)
    system_prompt: str | None = None  # its own instructions (None: the configured ones)


@dataclass(frozen=True)
class Message:
    id: str
    role: str  # "user" | "assistant"
    status: str  # user: "done"; assistant: queued | streaming | done | error | stopped
    text: str = ""
    html: str = ""
    gen: str = ""
    model: str = ""
    error: str = ""
    created: float = 0.0
    length: int = 0  # log length at the terminal entry
    behind_own: bool = False  # queued behind the asker's other answers (their cap)
    prompt_tokens: int = 0  # as the model server counted them (0: not told)
    answer_tokens: int = 0
    thinking_html: str = ""  # the model's reasoning, escaped (shown apart, never sent back)
    versions: tuple[str, ...] = ()  # an edited question's or a regenerated answer's, in order

    @property
    def running(self) -> bool:
        return self.status not in contract.TERMINAL


def _chat(chat_id: str, fields: dict[str, str]) -> Chat | None:
    if not fields:
        return None
    return Chat(
        id=chat_id,
        owner=fields.get("owner", ""),
        title=fields.get("title", ""),
        created=float(fields.get("created", 0)),
        updated=float(fields.get("updated", 0)),
        running=fields.get("running", ""),
        model=fields.get("model", ""),
        system_prompt=fields.get("system_prompt"),
    )


def _message(fields: dict[str, str]) -> Message | None:
    if not fields:
        return None
    return Message(
        id=fields["id"],
        role=fields["role"],
        status=fields["status"],
        text=fields.get("text", ""),
        html=fields.get("html", ""),
        gen=fields.get("gen", ""),
        model=fields.get("model", ""),
        error=fields.get("error", ""),
        created=float(fields.get("created", 0)),
        length=int(fields.get("length", 0)),
        behind_own=bool(fields.get("behind_own")),
        prompt_tokens=int(fields.get("prompt_tokens") or 0),
        answer_tokens=int(fields.get("answer_tokens") or 0),
        thinking_html=fields.get("thinking_html", ""),
        versions=tuple(fields["versions"].split(",")) if fields.get("versions") else (),
    )


def get_chat(r: redis.Redis, chat_id: str) -> Chat | None:
    return _chat(chat_id, r.hgetall(chat_key(chat_id)))  # type: ignore[arg-type]


def list_chats(r: redis.Redis, owner: str, limit: int = 200) -> list[Chat]:
    """Return the owner's chats, most recently updated first."""
    ids: list[str] = r.zrevrange(user_chats_key(owner), 0, limit - 1)  # type: ignore[assignment]
    pipe = r.pipeline(transaction=False)
    for chat_id in ids:
        pipe.hgetall(chat_key(chat_id))
    found = (_chat(chat_id, fields) for chat_id, fields in zip(ids, pipe.execute(), strict=True))
    return [chat for chat in found if chat is not None]


def read_chat(r: redis.Redis, chat_id: str) -> tuple[int, list[Message]]:
    """Return how many events the chat has had and its messages, as of the same moment.

    Messages may have moved on by the time their hashes are read (an answer grew or ended);
    the events after the count say so, and applying them again changes nothing.
    """
    pipe = r.pipeline(transaction=True)  # one slot: a MULTI is fine on a Cluster too
    pipe.llen(events_key(chat_id))
    pipe.lrange(messages_key(chat_id), 0, -1)
    count, ids = pipe.execute()
    return int(count), _messages(r, chat_id, ids)


def get_chat_and_messages(r: redis.Redis, chat_id: str) -> tuple[Chat | None, list[Message]]:
    """Return the chat and its messages in order, in two round trips (an answer's start)."""
    pipe = r.pipeline(transaction=False)  # both in the chat's slot
    pipe.hgetall(chat_key(chat_id))
    pipe.lrange(messages_key(chat_id), 0, -1)
    fields, ids = pipe.execute()
    return _chat(chat_id, fields), _messages(r, chat_id, ids)


def get_messages(r: redis.Redis, chat_id: str) -> list[Message]:
    """Return the chat's messages in order."""
    ids: list[str] = r.lrange(messages_key(chat_id), 0, -1)  # type: ignore[assignment]
    return _messages(r, chat_id, ids)


def _messages(r: redis.Redis, chat_id: str, ids: list[str]) -> list[Message]:
    pipe = r.pipeline(transaction=False)
    for message_id in ids:
        pipe.hgetall(message_key(chat_id, message_id))
    found = (_message(fields) for fields in pipe.execute())
    return [message for message in found if message is not None]


def get_message(r: redis.Redis, chat_id: str, message_id: str) -> Message | None:
    return _message(r.hgetall(message_key(chat_id, message_id)))  # type: ignore[arg-type]


def chat_texts(r: redis.Redis, chat_ids: list[str]) -> dict[str, list[str]]:
    """Return each chat's title and its messages' texts (a chat that is gone: none), for
    many chats in two round trips."""
    pipe = r.pipeline(transaction=False)
    for chat_id in chat_ids:
        pipe.hget(chat_key(chat_id), "title")
        pipe.lrange(messages_key(chat_id), 0, -1)
    replies = pipe.execute()
    titles, message_ids = replies[0::2], replies[1::2]
    pipe = r.pipeline(transaction=False)
    for chat_id, ids in zip(chat_ids, message_ids, strict=True):
        for message_id in ids:
            pipe.hget(message_key(chat_id, message_id), "text")
    texts = iter(pipe.execute())
    return {
        chat_id: ([title] if title is not None else []) + [next(texts) or "" for _ in ids]
        for chat_id, title, ids in zip(chat_ids, titles, message_ids, strict=True)
    }


def chat_versions(r: redis.Redis, chat_ids: list[str]) -> list[int]:
    """Return each chat's count of events: it moves whenever the chat changes (a message,
    an answer's start or end, a new title), so it tells whether what was read is current."""
    pipe = r.pipeline(transaction=False)
    for chat_id in chat_ids:
        pipe.llen(events_key(chat_id))
    return [int(count) for count in pipe.execute()]
