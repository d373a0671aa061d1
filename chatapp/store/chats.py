"""Changing chats: creating, sending, regenerating, renaming and deleting them, each one
Lua script that also logs and publishes the chat event it makes (chatapp/contract.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import redis
from redis.commands.core import Script

from chatapp import contract
from chatapp.config import DEFAULTS
from chatapp.store import nudges
from chatapp.store.keys import (
    channel,
    chat_key,
    claim_key,
    events_key,
    every_message_key,
    heartbeat_key,
    message_key,
    messages_key,
    new_chat_claim_key,
    new_id,
    path_key,
    publish_command,
    user_chats_key,
)
from chatapp.store.logs import Terminal, Timing, end
from chatapp.store.records import Chat, get_message

CLAIM_TTL_SECONDS = 86_400


_SEND = Script(None, (Path(__file__).parent / "send.lua").read_bytes())  # type: ignore[arg-type]


_CHAT_EVENT = Script(None, (Path(__file__).parent / "chat_event.lua").read_bytes())  # type: ignore[arg-type]


_DELETE_CHAT = Script(None, (Path(__file__).parent / "delete_chat.lua").read_bytes())  # type: ignore[arg-type]


_SET_IF_EXISTS = Script(
    None,  # type: ignore[arg-type]
    b"if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end "
    b"redis.call('HSET', KEYS[1], unpack(ARGV)) return 1",
)


_SHOW_VERSION = Script(None, (Path(__file__).parent / "show_version.lua").read_bytes())  # type: ignore[arg-type]
_REGENERATE = Script(None, (Path(__file__).parent / "regenerate.lua").read_bytes())  # type: ignore[arg-type]


def create_chat(
    r: redis.Redis, owner: str, now: float, title: str = "New chat", chat_id: str = ""
) -> Chat:
    """Create an empty chat owned by `owner` (with the id `chat_id` claimed for it, if any)."""
    chat_id = chat_id or new_id()
    fields = {"owner": owner, "title": title, "created": now, "updated": now}
    r.hset(chat_key(chat_id), mapping=fields)  # type: ignore[arg-type]
    r.zadd(user_chats_key(owner), {chat_id: now})
    nudges.nudge(r, owner)
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
    replaces: str = "",
) -> SendResult:
    """Store a user message and its queued answer, unless this client id was already sent.

    The answer counts as alive for `queue_wait_ms` while it waits for a worker. A chat's
    first message also gives it its title (`title`, or the text itself). A chat holding
    `max_messages` (questions and answers) takes no more: the result is `full`. An answer
    `behind_own` waits for its asker's other answers (their cap), and says so from the start.
    `replaces`: the id of a question on the chat's path that this one is a new version of
    (an edit): the old version and what followed it stay, as its path (`show_version`);
    `missing` if it is not on the path.
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
        every_message_key(chat_id),
        path_key(chat_id, replaces or user_id),
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
        replaces,
        message_key(chat_id, ""),
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
    event = contract.title_changed(title)
    keys = [chat_key(chat_id), events_key(chat_id)]
    args = [channel(chat_id), event, only_if_title, publish_command(r)]
    args += ["title", title, "titled", "1"]
    if not _CHAT_EVENT(keys=keys, args=args, client=r):
        return False
    nudges.nudge(r, _owner(r, chat_id))
    return True


def delete_chat(r: redis.Redis, chat: Chat, timing: Timing | None = None) -> None:
    """Delete the chat: stop its running answer, tell its pages, remove its records."""
    if chat.running:
        running = get_message(r, chat.id, chat.running)
        if running is not None and running.running:
            end(r, chat.id, running.id, running.gen, Terminal(contract.STOPPED), timing)
    keys = [chat_key(chat.id), messages_key(chat.id), events_key(chat.id)]
    keys.append(every_message_key(chat.id))
    args = [channel(chat.id), message_key(chat.id, ""), publish_command(r), path_key(chat.id, "")]
    _DELETE_CHAT(keys=keys, args=args, client=r)
    r.zrem(user_chats_key(chat.owner), chat.id)
    nudges.nudge(r, chat.owner)


def show_version(r: redis.Redis, chat_id: str, chosen: str) -> str:
    """Show another version of a question or an answer, with the path it had; return ok,
    missing (no such version, or none of its versions shown) or busy (an answer is being
    written)."""
    message = get_message(r, chat_id, chosen)
    versions = message.versions if message else ()
    path: list[str] = r.lrange(messages_key(chat_id), 0, -1)  # type: ignore[assignment]
    shown = next((version for version in versions if version in path), "")
    if not shown:
        return "missing"
    keys = [chat_key(chat_id), messages_key(chat_id), events_key(chat_id)]
    keys += [path_key(chat_id, shown), path_key(chat_id, chosen)]
    args = [shown, chosen, message_key(chat_id, ""), channel(chat_id), publish_command(r)]
    reply = _SHOW_VERSION(keys=keys, args=args, client=r)
    return str(reply[0])


def regenerate(
    r: redis.Redis,
    chat_id: str,
    answer_id: str,
    model: str,
    now: float,
    queue_wait_ms: int,
    behind_own: bool = False,
) -> SendResult:
    """Write the chat's last answer again, as a new version of it (the old one stays, one
    click away: `show_version`); `status` is ok (`answer_id`: the new answer's), missing,
    busy (another answer runs) or not_last. `behind_own`: as for `send_message`."""
    generation_id, again_id = new_id(), new_id()
    keys = [
        chat_key(chat_id),
        messages_key(chat_id),
        message_key(chat_id, answer_id),
        events_key(chat_id),
        heartbeat_key(chat_id, generation_id),
        message_key(chat_id, again_id),
        every_message_key(chat_id),
        path_key(chat_id, answer_id),
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
        again_id,
        message_key(chat_id, ""),
    ]
    reply = _REGENERATE(keys=keys, args=args, client=r)
    if reply[0] == "ok":
        _answer_started(r, chat_id, now)
        return SendResult("ok", answer_id=again_id, generation_id=generation_id)
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
    nudges.nudge(r, owner)


def _owner(r: redis.Redis, chat_id: str) -> str:
    return r.hget(chat_key(chat_id), "owner") or ""  # type: ignore[return-value]


def set_model(r: redis.Redis, chat_id: str, message_id: str, model: str) -> None:
    """Record which model writes the answer (shown on the answer)."""
    r.hset(message_key(chat_id, message_id), "model", model)
