"""What a follower sends: log entries turned into SSE events, and the cursors in their ids.

An event id is `<generation id>:<seq>`, the last log entry the event covers, so the
browser's `Last-Event-ID` names exactly where to resume. The markup the events carry comes
from templates: pieces of a running answer from the macros in
templates/partials/stream_parts.html (which the page templates use too), whole messages
and lists rendered by the web layer.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import jinja2

from chatapp.config import PROJECT_DIR
from chatapp.contract import Entry
from chatapp.render import OPEN_BLOCK_ENDINGS
from chatapp.sse import ServerSentEvent

T = TypeVar("T")
# Made without an app: streams and tests build events outside a request. Their output is
# Markup; `str()` it before adding plain strings, which Markup would escape.
_templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(PROJECT_DIR / "templates"), autoescape=True
)


@functools.cache
def parts() -> Any:
    """The macros of templates/partials/stream_parts.html, loaded on first use."""
    return _templates.get_template("partials/stream_parts.html").module


@dataclass(frozen=True)
class EventNames:
    """The SSE event names the streams send, for this module and (as `events`) the
    templates that listen for them (static/chat-stream.js names `delta` and `message` too)."""

    snapshot: str = "snapshot"  # everything so far, for a page without a usable cursor
    delta: str = "delta"  # an answer's new entries
    end: str = "end"  # an answer as it ended
    message: str = "message"  # a message added to a chat
    answer: str = "answer"  # an answer replaced (regenerated, or resumed whole)
    title: str = "title"
    chats: str = "chats"  # the user's chat list
    gone: str = "gone"  # the chat (or the session) is gone: the page closes its source
    ping: str = "ping"

    @property
    def chat_page(self) -> str:
        """What a chat page's stream sends (templates/chat.html listens for each)."""
        names = (self.snapshot, self.message, self.answer, self.delta, self.end, self.title)
        return ",".join((*names, self.chats, self.gone, self.ping))

    @property
    def chat_list(self) -> str:
        """What the front page's stream sends."""
        return ",".join((self.chats, self.gone, self.ping))


EVENTS = EventNames()

# ASCII digits only (`\d` takes any script's, and int() reads them) and nothing around them:
# an id that is not exactly one the server sent is an unknown cursor.
_CURSOR = re.compile(r"([0-9a-f]{16}):([0-9]{1,9})")


@dataclass(frozen=True)
class Cursor:
    generation_id: str
    seq: int

    def __str__(self) -> str:
        return f"{self.generation_id}:{self.seq}"


def parse_cursor(value: str | None) -> Cursor | None:
    """Return the cursor in a `Last-Event-ID`, or None if there is none or it is malformed."""
    match = _CURSOR.fullmatch(value or "")
    if match is None:
        return None
    return Cursor(match.group(1), int(match.group(2)))


def tail_element(message_id: str, tail_html: str, oob: bool = False) -> str:
    """Return the answer's open last block; `oob` makes it replace the one on the page."""
    return str(parts().tail(message_id, tail_html, oob))


def with_pending(message_id: str, tail_html: str, more: str = "") -> str:
    """Return the open block's last render with the span that holds the (escaped) text that
    came after it, where that text continues; later deltas append to the span."""
    pending = str(parts().pending(message_id, more))
    for end in OPEN_BLOCK_ENDINGS:
        if tail_html.endswith(end):
            return tail_html[: -len(end)] + pending + end
    return tail_html + pending


def open_block(message_id: str, entries: list[Entry]) -> str:
    """Return the open block as `entries` leave it: its last render, then what came after."""
    tail = ""  # the open block's last render
    more: list[str] = []  # the text that came after it
    for entry in entries:
        if entry.tail is not None:
            tail, more = entry.tail, []
        more.append(entry.more)
    return with_pending(message_id, tail, "".join(more))


def open_block_swaps(message_id: str, entry: Entry) -> str:
    """Return the out-of-band swaps that update the open block for one entry: a new render
    replaces it; new text alone is appended to its pending span."""
    if entry.tail is not None:
        return tail_element(message_id, with_pending(message_id, entry.tail), oob=True)
    if entry.more:
        return str(parts().append_to(f"pending-{message_id}", entry.more))
    return ""


def answer_body(
    message_id: str, blocks_html: str, tail_html: str | None = None, thinking: str = ""
) -> str:
    """Return the inside of a running answer's body: the model's reasoning so far (hidden
    while there is none), its finished blocks, then its tail.

    All are from the producer: sanitized HTML, escaped text; `hx-disable` keeps htmx out.
    """
    if tail_html is None:  # nothing written yet
        tail_html = with_pending(message_id, "")
    reasoning = str(parts().thinking(message_id, thinking))
    return (
        reasoning
        + str(parts().blocks(message_id, blocks_html))
        + tail_element(message_id, tail_html)
    )


def thinking_swap(message_id: str, entry: Entry) -> str:
    """Return the out-of-band swap that adds an entry's reasoning (escaped text), if any."""
    if not entry.think:
        return ""
    return str(parts().append_to(f"thinking-{message_id}", entry.think))


def built_once(entry: Entry, name: str, event: Callable[..., ServerSentEvent], *args: Any) -> bytes:
    """Return `event(*args).encode()` for a log entry, made once per process, not per viewer.

    The hub decodes each published message once and hands the same entries to every
    stream of the process, and streams at the same position send the same bytes: the first
    stream builds them and keeps them in the entry (`Entry.built`), the others reuse them.
    `name` tells apart the different streams' forms of one entry."""
    built: bytes | None = entry.built.get(name)
    if built is None:
        built = entry.built[name] = event(*args).encode()
    return built


def made_once(kept: dict[str, Any], name: str, make: Callable[[], T]) -> T:
    """Return `kept[name]`, made by `make()` once per process for every stream that asks.

    Like `built_once`, for what takes a read of Redis to make (an ended answer's article,
    the chat list after a change): gevent runs the other streams while the first one
    waits for Redis, and each of them made it too (a third of the web process's CPU with
    1,000 tabs of one account). They wait for the first one's instead."""
    with kept.setdefault(f"{name} (being made)", threading.Lock()):
        if name not in kept:
            kept[name] = make()
    made: T = kept[name]
    return made


def delta_event(message_id: str, cursor: Cursor, entry: Entry) -> ServerSentEvent:
    """Return the event that appends an entry's new blocks and updates the open block."""
    data = entry.blocks + open_block_swaps(message_id, entry)
    data += thinking_swap(message_id, entry)
    return ServerSentEvent(data=data, event=EVENTS.delta, id=str(cursor))


def snapshot_event(message_id: str, cursor: Cursor, entries: list[Entry]) -> ServerSentEvent:
    """Return the event that replaces the answer's body with everything up to `cursor`."""
    data = answer_body(message_id, *body_so_far(message_id, entries))
    return ServerSentEvent(data=data, event=EVENTS.snapshot, id=str(cursor))


def body_so_far(message_id: str, entries: list[Entry]) -> tuple[str, str, str]:
    """A running answer's body as far as its log goes: its finished blocks, its open block,
    and the model's reasoning (escaped)."""
    blocks = "".join(entry.blocks for entry in entries)
    thinking = "".join(entry.think for entry in entries)
    return blocks, open_block(message_id, entries), thinking


def end_event(cursor: Cursor | None, fragment: str) -> ServerSentEvent:
    """Return the event that swaps in the answer's final fragment (which closes the source)."""
    return ServerSentEvent(data=fragment, event=EVENTS.end, id=str(cursor) if cursor else None)


def retry_event(retry_ms: int) -> ServerSentEvent:
    """Return a hint to reconnect later; the browser keeps its Last-Event-ID."""
    return ServerSentEvent(comment="try again shortly", retry=retry_ms)


def following_comment() -> bytes:
    """The first bytes of every stream: a comment, which starts the response."""
    return b": following\n\n"


def ping_event() -> ServerSentEvent:
    """Return a keep-alive: a comment for proxies and a named event the page can see."""
    return ServerSentEvent(comment="ping", event=EVENTS.ping, data="")


# -- the chat page's stream ---------------------------------------------------------------
# One EventSource per tab carries a whole chat: its events (messages added, answers started
# and ended) and the running answer's entries. Its ids carry both cursors:
# `c<chat event seq>` and, while an answer is followed, `.<generation id>:<seq>`. Every event
# is made of out-of-band fragments, so one hidden listener applies them all.

_CHAT_CURSOR = re.compile(r"c([0-9]{1,9})(?:\.([0-9a-f]{16}):([0-9]{1,9}))?")  # as _CURSOR


@dataclass(frozen=True)
class ChatCursor:
    events: int  # the last chat event the page has
    answer: Cursor | None = None  # the last entry of the followed answer it has

    def __str__(self) -> str:
        return f"c{self.events}" + (f".{self.answer}" if self.answer else "")


def parse_chat_cursor(value: str | None) -> ChatCursor | None:
    """Return the cursor in a chat stream's event id, or None if there is none or it is bad."""
    match = _CHAT_CURSOR.fullmatch(value or "")
    if match is None:
        return None
    events, generation_id, seq = match.groups()
    answer = Cursor(generation_id, int(seq)) if generation_id else None
    return ChatCursor(int(events), answer)


def chat_snapshot_event(cursor: ChatCursor, messages_html: str) -> ServerSentEvent:
    """Replace every message on the page (a page whose cursor the server cannot use). Only
    the list's content: the list itself keeps its attributes (its aria-live region)."""
    data = str(parts().messages(messages_html))
    return ServerSentEvent(data=data, event=EVENTS.snapshot, id=str(cursor))


def chat_message_event(cursor: ChatCursor, article_html: str) -> ServerSentEvent:
    """Add a message (a question, or an answer in its current state) at the end."""
    data = str(parts().append_to("messages", article_html))
    return ServerSentEvent(data=data, event=EVENTS.message, id=str(cursor))


def answer_replace_event(cursor: ChatCursor, article_html: str, event: str) -> ServerSentEvent:
    """Replace an answer (`answer`: as it is now; `end`: finished). The article carries
    `hx-swap-oob="true"` and its id."""
    return ServerSentEvent(data=article_html, event=event, id=str(cursor))


def chat_delta_event(message_id: str, cursor: ChatCursor, entry: Entry) -> ServerSentEvent:
    """Append an entry's new blocks to the answer and update its open block.

    Most entries only add text to the open block: those go in a short form, the text alone
    (escaped, as the log has it), which chat-stream.js appends to the open block's pending span
    in the answer whose generation the event's id names (the running answer's article
    carries it). It costs half the bytes of an out-of-band swap (id and framing included),
    which carries more markup than text for a token (a blank that starts a line goes as a
    character reference: see sse.py)."""
    blocks = entry.blocks
    if not blocks and entry.tail is None and not entry.think and entry.more:
        return ServerSentEvent(data=entry.more, event=EVENTS.delta, id=str(cursor))
    data = str(parts().append_to(f"blocks-{message_id}", blocks)) if blocks else ""
    data += open_block_swaps(message_id, entry) + thinking_swap(message_id, entry)
    if not data:  # nothing to show (a line break, say), yet the page's cursor must pass
        # it, and a browser drops an event whose data is empty: a swap that adds nothing
        data = str(parts().append_to(f"pending-{message_id}", ""))
    return ServerSentEvent(data=data, event=EVENTS.delta, id=str(cursor))


def chat_gone_event(fragment: str) -> ServerSentEvent:
    """Tell a page its chat is not there (deleted, not yours, logged out); the page's
    `sse-close="gone"` then closes the source, so the browser does not retry forever."""
    return ServerSentEvent(data=fragment, event=EVENTS.gone)


def chats_event(cursor: ChatCursor | None, chat_list_html: str) -> bytes:
    """Replace the user's chat list (it carries `hx-swap-oob="true"` and its id).

    Every tab of the owner gets the same list after a change, each with its own id: the
    list's lines are encoded once (their blanks escaped line by line, a tenth of the web
    process's CPU when 1,000 tabs each encoded their own)."""
    id_line = ServerSentEvent(id=str(cursor)).encode()[:-1] if cursor else b""  # "id: …\n"
    return id_line + _event_with_data(EVENTS.chats, chat_list_html)


@functools.lru_cache(maxsize=64)
def _event_with_data(event: str, data: str) -> bytes:
    return ServerSentEvent(data=data, event=event).encode()


def title_element(title: str) -> str:
    """The chat page's heading with a new title, to replace the old one (out of band)."""
    return str(parts().title(title))


def title_event(cursor: ChatCursor, heading_html: str) -> ServerSentEvent:
    return ServerSentEvent(data=heading_html, event=EVENTS.title, id=str(cursor))
