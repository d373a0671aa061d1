"""The message contract between the Lua scripts and Python, in one place.

What the logs hold and what travels on the channels is JSON with one-letter keys, written
by the Lua scripts (append.lua, send.lua, regenerate.lua, chat_event.lua, delete_chat.lua)
and, for the two things Python writes itself, by `chat_list_nudge` and `title_changed`
here. Everything that reads them decodes here, once, into the typed values below: the hub
decodes each published message once for all its streams, the streams decode what they read
from the logs.

On a chat's channel (`store.channel`):

- `{"m": message id, "g": generation id, "s": sequence number of the first entry,
  "at": Redis's clock in ms as it appended, "e": [entries]}`: `AnswerEntries`
  (append.lua), the same entries its answer log holds;
- `{"c": sequence number of the first event, "e": [events]}`: `ChatEvents`, the same
  events the chat's event log holds.

On a user's channel (`store.user_channel`):

- `{"u": 1, "out": [session ids]}`: `ChatListChanged`, the user's chat list changed (and
  those sessions ended).

An answer log entry: `{"t": "delta", "text", "blocks", "tail"?, "more"?, "think"?}`, then
one terminal `{"t": "done" | "error" | "stopped", "html", "message", "model"}`. A chat
event: `{"t": <one of the event kinds below>, "m"?, "g"?, "again"?, "title"?, "status"?}`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

# The kinds of answer log entries: deltas, then exactly one terminal entry, which is also
# the ended answer's status.
DELTA = "delta"
DONE, ERROR, STOPPED = "done", "error", "stopped"
TERMINAL = (DONE, ERROR, STOPPED)

# The kinds of chat events.
MESSAGE_ADDED = "message_added"  # m: the user's message
ANSWER_STARTED = "answer_started"  # m, g; again: a new generation of an answer on the page
# (logged by regenerations before they made new versions: still in older chats' logs)
ANSWER_ENDED = "answer_ended"  # m, g, status
TITLE_CHANGED = "title_changed"  # title
CHAT_DELETED = "chat_deleted"
PATH_CHANGED = "path_changed"  # the shown version of a question (and what follows) changed
ADDS_A_MESSAGE = (MESSAGE_ADDED, ANSWER_STARTED)


def delta_entry(
    text: str, blocks: str, tail: str | None = None, more: str = "", think: str = ""
) -> dict[str, str]:
    """An answer log entry that adds to the answer (the producer's, for append.lua): the raw
    text, new finished blocks, and the open block re-rendered (`tail`) or its new text
    (`more`); and the model's new reasoning (escaped), if any."""
    entry = {"t": DELTA, "text": text, "blocks": blocks}
    if tail is not None:
        entry["tail"] = tail
    if more:
        entry["more"] = more
    if think:
        entry["think"] = think
    return entry


@dataclass(eq=False)
class Entry:
    """One entry of an answer's log."""

    kind: str  # DELTA, or one of TERMINAL
    text: str = ""  # a delta: the model's text (append.lua joins them into the answer's)
    blocks: str = ""  # finished blocks (sanitized HTML)
    tail: str | None = None  # the open block rendered again (None: not this time)
    more: str = ""  # text after the open block's last render (escaped)
    think: str = ""  # the model's reasoning (escaped)
    html: str = ""  # a terminal entry: the answer's final HTML
    error: str = ""  # a terminal entry: what went wrong, for the reader
    model: str = ""  # a terminal entry: the model that wrote the answer
    whole: bool = False  # a terminal entry: `html` is the log's blocks, so a page that
    # followed the log has it already (its `end` keeps them: see answer.html)
    # Events made of this entry in this process (frames.built_once): the hub hands one
    # decoded entry to every stream of its chat, and most send the same bytes.
    built: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def terminal(self) -> bool:
        return self.kind in TERMINAL


@dataclass(frozen=True)
class ChatEvent:
    """One entry of a chat's event log: something that happened to the chat."""

    kind: str  # one of the event kinds above
    message_id: str = ""
    generation_id: str = ""
    again: bool = False
    title: str = ""
    status: str = ""


@dataclass(frozen=True)
class AnswerEntries:
    """Entries just appended to an answer's log."""

    message_id: str
    generation_id: str
    first: int  # the sequence number of entries[0]
    appended_ms: int  # Redis's clock as it appended them (metrics.py)
    entries: list[Entry]


@dataclass(frozen=True)
class ChatEvents:
    """Events just appended to a chat's event log."""

    first: int  # the sequence number of events[0]
    events: list[ChatEvent]


@dataclass(frozen=True)
class ChatListChanged:
    """A user's chat list changed; `signed_out` names sessions that ended."""

    signed_out: tuple[str, ...] = ()
    # The list's markup per page, rendered once per process (chat_list_stream.shared_render).
    rendered: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


Published = AnswerEntries | ChatEvents | ChatListChanged


def decode(raw: str | bytes) -> Published | None:
    """Return a published message as its typed value, or None (logged) if it is not one."""
    try:
        data = json.loads(raw)
        if "u" in data:
            return ChatListChanged(tuple(data.get("out", ())))
        if "c" in data:
            return ChatEvents(int(data["c"]), [_chat_event(event) for event in data["e"]])
        return AnswerEntries(
            str(data["m"]),
            str(data["g"]),
            int(data["s"]),
            int(data.get("at", 0)),
            [_entry(entry) for entry in data["e"]],
        )
    except (ValueError, TypeError, KeyError, AttributeError):
        log.warning("ignored a message that is not in the contract: %.200r", raw)
        return None


def entries(raw: list[str]) -> list[Entry]:
    """Decode entries read from an answer's log."""
    return [_entry(json.loads(item)) for item in raw]


def chat_events(raw: list[str]) -> list[ChatEvent]:
    """Decode events read from a chat's event log."""
    return [_chat_event(json.loads(item)) for item in raw]


def _entry(data: dict[str, Any]) -> Entry:
    return Entry(
        kind=data["t"],
        text=data.get("text", ""),
        blocks=data.get("blocks", ""),
        tail=data.get("tail"),
        more=data.get("more", ""),
        think=data.get("think", ""),
        html=data.get("html", ""),
        error=data.get("message", ""),
        model=data.get("model", ""),
        whole=bool(data.get("whole", False)),
    )


def _chat_event(data: dict[str, Any]) -> ChatEvent:
    return ChatEvent(
        kind=data["t"],
        message_id=str(data.get("m", "")),
        generation_id=str(data.get("g", "")),
        again=bool(data.get("again", False)),
        title=str(data.get("title", "")),
        status=str(data.get("status", "")),
    )


# -- the two messages Python writes itself -------------------------------------------------


def chat_list_nudge(signed_out: list[str] | None = None) -> str:
    """The message that tells a user's pages their chat list changed (ChatListChanged)."""
    return json.dumps({"u": 1, "out": signed_out}) if signed_out else '{"u":1}'


def title_changed(title: str) -> str:
    """The chat event of a new title, for chat_event.lua to log and publish."""
    return json.dumps({"t": TITLE_CHANGED, "title": title})
