from __future__ import annotations

import re
from html import escape, unescape

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatapp.contract import DELTA, Entry
from chatapp.frames import ChatCursor, Cursor, chat_delta_event, chats_event
from chatapp.sse import ServerSentEvent


@pytest.mark.parametrize(
    ("event", "wire"),
    [
        (ServerSentEvent(data="hello"), b"data: hello\n\n"),
        (ServerSentEvent(data=""), b"data: \n\n"),
        (ServerSentEvent(data="a\nb"), b"data: a\ndata: b\n\n"),
        (ServerSentEvent(data="a\r\nb\rc"), b"data: a\ndata: b\ndata: c\n\n"),
        (ServerSentEvent(data="x", event="delta", id="g:1"), b"id: g:1\nevent: delta\ndata: x\n\n"),
        (
            ServerSentEvent(data="x", event="de\nlta", id="g\r:1\n"),
            b"id: g:1\nevent: delta\ndata: x\n\n",
        ),
        (ServerSentEvent(id="a\0b", data="x"), b"id: ab\ndata: x\n\n"),
        (ServerSentEvent(comment="ping"), b": ping\n\n"),
        (ServerSentEvent(comment="a\nb"), b": a\n: b\n\n"),
        (
            ServerSentEvent(comment="ping", event="ping", data=""),
            b": ping\nevent: ping\ndata: \n\n",
        ),
        (ServerSentEvent(retry=1500, comment="later"), b": later\nretry: 1500\n\n"),
        (ServerSentEvent(data="é ✓"), "data: é ✓\n\n".encode()),
    ],
)
def test_event_encodes_to_exact_bytes(event: ServerSentEvent, wire: bytes) -> None:
    assert event.encode() == wire


def test_no_data_line_of_an_answers_new_text_starts_with_a_blank() -> None:
    """Some SSE clients strip every space that starts a data line (the format allows one):
    the chat stream's short deltas carry indentation and word breaks as references."""
    more = escape(" indented\n    code & <b>\n\ttab\nend ", quote=False)
    event = chat_delta_event("0123456789abcdef", ChatCursor(1), Entry(DELTA, more=more))
    lines = event.encode().decode().split("\n")
    data = [line.removeprefix("data: ") for line in lines if line.startswith("data:")]
    assert all(not line.startswith((" ", "\t")) for line in data)
    # What app.js does with it: the references back to blanks, then the HTML escapes.
    text = re.sub(r"&#(9|32);", lambda ref: chr(int(ref[1])), "\n".join(data))
    assert unescape(text) == " indented\n    code & <b>\n\ttab\nend "


@given(st.text())
def test_any_html_reads_the_same_through_a_client_that_strips_every_leading_space(
    text: str,
) -> None:
    html = escape(text, quote=False)
    wire = ServerSentEvent(data=html, event="x").encode().decode()
    data = [line[len("data:") :] for line in wire.split("\n") if line.startswith("data:")]
    stripped = "\n".join(line.lstrip(" ") for line in data)
    assert unescape(stripped) == unescape(re.sub(r"\r\n|\r", "\n", html))


def test_a_chat_list_event_is_the_same_bytes_however_often_its_lines_are_reused() -> None:
    html = '<ul id="chat-list" hx-swap-oob="true">\n  <li>one</li>\n\t<li>two</li>\n</ul>'
    for cursor in (ChatCursor(3), ChatCursor(4, Cursor("0123456789abcdef", 7)), None):
        whole = ServerSentEvent(data=html, event="chats", id=str(cursor) if cursor else None)
        assert chats_event(cursor, html) == whole.encode()
