"""What a follower sends: log entries turned into SSE events, and the cursors in their ids.

An event id is `<generation id>:<seq>`, the last log entry the event covers, so the
browser's `Last-Event-ID` names exactly where to resume. The answer's markup pieces live
here too, so the page template and the SSE events build them from one source.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from markupsafe import escape

from chatapp.sse import ServerSentEvent

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
    swap = ' hx-swap-oob="true"' if oob else ""
    return f'<div class="tail" id="tail-{message_id}" hx-disable{swap}>{tail_html}</div>'


# The open block's last render ends with one of these: the text that arrives after it goes
# inside, where it continues (a paragraph, an open code fence, a list's last item).
_CONTINUED = (
    "</code></pre>\n</div>\n",  # a fenced code block, under its header (render.py)
    "</code></pre>\n",
    "</p>\n",
    "</li>\n</ul>\n",
    "</li>\n</ol>\n",
)


def with_pending(message_id: str, tail_html: str, more: str = "") -> str:
    """Return the open block's last render with the span that holds the (escaped) text that
    came after it, where that text continues; later deltas append to the span."""
    pending = f'<span class="pending" id="pending-{message_id}">{more}</span>'
    for end in _CONTINUED:
        if tail_html.endswith(end):
            return tail_html[: -len(end)] + pending + end
    return tail_html + pending


def open_block(message_id: str, entries: list[dict[str, Any]]) -> str:
    """Return the open block as `entries` leave it: its last render, then what came after."""
    tail = ""  # the open block's last render
    more: list[str] = []  # the text that came after it
    for entry in entries:
        if "tail" in entry:
            tail, more = entry["tail"], []
        if "more" in entry:
            more.append(entry["more"])
    return with_pending(message_id, tail, "".join(more))


def open_block_swaps(message_id: str, entry: dict[str, Any]) -> str:
    """Return the out-of-band swaps that update the open block for one entry: a new render
    replaces it; new text alone is appended to its pending span."""
    if "tail" in entry:
        return tail_element(message_id, with_pending(message_id, entry["tail"]), oob=True)
    if entry.get("more"):
        return f'<div hx-swap-oob="beforeend:#pending-{message_id}">{entry["more"]}</div>'
    return ""


def answer_body(
    message_id: str, blocks_html: str, tail_html: str | None = None, thinking: str = ""
) -> str:
    """Return the inside of a running answer's body: the model's reasoning so far (hidden
    while there is none), its finished blocks, then its tail.

    All are from the producer: sanitized HTML, escaped text; `hx-disable` keeps htmx out.
    """
    reasoning = (
        f'<details class="thinking" open><summary>Thinking</summary><div class="thinking-text" '
        f'id="thinking-{message_id}" hx-disable>{thinking}</div></details>'
    )
    blocks = f'<div class="blocks" id="blocks-{message_id}" hx-disable>{blocks_html}</div>'
    if tail_html is None:  # nothing written yet
        tail_html = with_pending(message_id, "")
    return reasoning + blocks + tail_element(message_id, tail_html)


def thinking_swap(message_id: str, entry: dict[str, Any]) -> str:
    """Return the out-of-band swap that adds an entry's reasoning (escaped text), if any."""
    if not entry.get("think"):
        return ""
    return f'<div hx-swap-oob="beforeend:#thinking-{message_id}">{entry["think"]}</div>'


def built_once(
    entry: dict[str, Any], name: str, event: Callable[..., ServerSentEvent], *args: Any
) -> bytes:
    """Return `event(*args).encode()` for a log entry, made once per process, not per viewer.

    The hub decodes each published message once and hands the same entry dicts to every
    stream of the process, and streams at the same position send the same bytes: the first
    stream builds them and keeps them in the entry (under a key no log entry has), the
    others reuse them. `name` tells apart the different streams' forms of one entry."""
    key = f"_built {name}"
    built = entry.get(key)
    if built is None:
        built = entry[key] = event(*args).encode()
    return built


def delta_event(message_id: str, cursor: Cursor, entry: dict[str, Any]) -> ServerSentEvent:
    """Return the event that appends an entry's new blocks and updates the open block."""
    data = entry.get("blocks", "") + open_block_swaps(message_id, entry)
    data += thinking_swap(message_id, entry)
    return ServerSentEvent(data=data, event="delta", id=str(cursor))


def snapshot_event(
    message_id: str, cursor: Cursor, entries: list[dict[str, Any]]
) -> ServerSentEvent:
    """Return the event that replaces the answer's body with everything up to `cursor`."""
    data = answer_body(message_id, *body_so_far(message_id, entries))
    return ServerSentEvent(data=data, event="snapshot", id=str(cursor))


def body_so_far(message_id: str, entries: list[dict[str, Any]]) -> tuple[str, str, str]:
    """A running answer's body as far as its log goes: its finished blocks, its open block,
    and the model's reasoning (escaped)."""
    blocks = "".join(entry.get("blocks", "") for entry in entries)
    thinking = "".join(entry.get("think", "") for entry in entries)
    return blocks, open_block(message_id, entries), thinking


def end_event(cursor: Cursor | None, fragment: str) -> ServerSentEvent:
    """Return the event that swaps in the answer's final fragment (which closes the source)."""
    return ServerSentEvent(data=fragment, event="end", id=str(cursor) if cursor else None)


def retry_event(retry_ms: int) -> ServerSentEvent:
    """Return a hint to reconnect later; the browser keeps its Last-Event-ID."""
    return ServerSentEvent(comment="try again shortly", retry=retry_ms)


def ping_event() -> ServerSentEvent:
    """Return a keep-alive: a comment for proxies and a named event the page can see."""
    return ServerSentEvent(comment="ping", event="ping", data="")


def is_terminal(entry: dict[str, Any]) -> bool:
    return entry.get("t") in ("done", "error", "stopped")


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
    data = f'<div id="messages" hx-swap-oob="innerHTML">{messages_html}</div>'
    return ServerSentEvent(data=data, event="snapshot", id=str(cursor))


def chat_message_event(cursor: ChatCursor, article_html: str) -> ServerSentEvent:
    """Add a message (a question, or an answer in its current state) at the end."""
    data = f'<div hx-swap-oob="beforeend:#messages">{article_html}</div>'
    return ServerSentEvent(data=data, event="message", id=str(cursor))


def answer_replace_event(cursor: ChatCursor, article_html: str, event: str) -> ServerSentEvent:
    """Replace an answer (`answer`: as it is now; `end`: finished). The article carries
    `hx-swap-oob="true"` and its id."""
    return ServerSentEvent(data=article_html, event=event, id=str(cursor))


def chat_delta_event(message_id: str, cursor: ChatCursor, entry: dict[str, Any]) -> ServerSentEvent:
    """Append an entry's new blocks to the answer and update its open block.

    Most entries only add text to the open block: those go in a short form, the answer's
    id, a line break, then the text (escaped, as the log has it), which app.js appends to
    the open block's pending span as text. It costs a third of the bytes of the
    out-of-band swaps, which carried more markup than text for a token (a blank that
    starts a line goes as a character reference: see sse.py)."""
    blocks = entry.get("blocks", "")
    if not blocks and "tail" not in entry and "think" not in entry:
        text = entry.get("more", "")
        return ServerSentEvent(data=f"{message_id}\n{text}", event="delta", id=str(cursor))
    data = f'<div hx-swap-oob="beforeend:#blocks-{message_id}">{blocks}</div>' if blocks else ""
    data += open_block_swaps(message_id, entry) + thinking_swap(message_id, entry)
    return ServerSentEvent(data=data, event="delta", id=str(cursor))


def chat_gone_event(fragment: str) -> ServerSentEvent:
    """Tell a page its chat is not there (deleted, not yours, logged out); the page's
    `sse-close="gone"` then closes the source, so the browser does not retry forever."""
    return ServerSentEvent(data=fragment, event="gone")


def chats_event(cursor: ChatCursor | None, chat_list_html: str) -> ServerSentEvent:
    """Replace the user's chat list (it carries `hx-swap-oob="true"` and its id)."""
    return ServerSentEvent(data=chat_list_html, event="chats", id=str(cursor) if cursor else None)


def title_element(title: str) -> str:
    """The chat page's heading with a new title, to replace the old one (out of band)."""
    return f'<h1 id="chat-title" hx-swap-oob="true">{escape(title)}</h1>'


def title_event(cursor: ChatCursor, heading_html: str) -> ServerSentEvent:
    return ServerSentEvent(data=heading_html, event="title", id=str(cursor))
