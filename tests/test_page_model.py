"""The page model the stream tests read pages with (harness/page.py): htmx's swaps, applied
to events the app's own templates made (frames.py), so that what it says a page shows is
what a browser would."""

from __future__ import annotations

import json

import pytest

from chatapp import contract, frames
from chatapp.contract import Entry
from chatapp.frames import ChatCursor, Cursor
from harness.client import Event, parse_events
from harness.page import Page, normalized, status_in

ANSWER = "a" * 16
GENERATION = "b" * 16


def running_answer(status: str = "streaming") -> str:
    """A running answer's article as the chat page holds it, its body from frames."""
    body = frames.answer_body(ANSWER, "")
    return (
        f'<article class="message answer" id="answer-{ANSWER}" data-status="{status}"'
        f' data-generation="{GENERATION}"><div class="answer-body">{body}</div></article>'
    )


def as_read(event: frames.ServerSentEvent) -> Event:
    """The event as a client reads it off the wire."""
    [read] = parse_events(event.encode().decode())
    return read


def entry(**fields: str) -> Entry:
    [decoded] = contract.entries([json.dumps(contract.delta_entry(**fields))])  # type: ignore[arg-type]
    return decoded


def delta(seq: int, **fields: str) -> Event:
    cursor = ChatCursor(2, Cursor(GENERATION, seq))
    return as_read(frames.chat_delta_event(ANSWER, cursor, entry(**fields)))


def started_page() -> Page:
    added = frames.chat_message_event(ChatCursor(2), running_answer())
    return Page().apply([as_read(added)])


def test_blocks_short_deltas_and_renders_build_the_answer_as_the_page_would() -> None:
    page = started_page().apply(
        [
            delta(1, text="Hel", blocks="", more="Hel"),
            delta(2, text="lo", blocks="", more="lo &amp; more"),
        ]
    )
    [pending] = page.root.xpath(f'//*[@id="pending-{ANSWER}"]')
    assert pending.text_content() == "Hello & more"  # the short form, as chat-stream.js does
    page.apply(
        [
            delta(3, text="\n\n", blocks="<p>Hello &amp; more</p>", tail=""),
            delta(4, text="x", blocks="", tail="<p>x</p>"),
        ]
    )
    assert page.shows(ANSWER, "<p>Hello &amp; more</p>")
    [tail] = page.root.xpath(f'//*[@id="tail-{ANSWER}"]')
    assert tail.text_content() == "x"


def test_a_message_added_twice_is_caught() -> None:
    page = started_page()
    again = frames.chat_message_event(ChatCursor(3), running_answer())
    with pytest.raises(AssertionError, match="twice"):
        page.apply([as_read(again)])


def test_an_end_that_keeps_the_built_blocks_keeps_them() -> None:
    page = started_page().apply([delta(1, text="a", blocks="<p>a</p>")])
    ended = (
        f'<article class="message answer" id="answer-{ANSWER}" data-status="done"'
        f' hx-swap-oob="true"><div class="answer-body"><div class="blocks"'
        f' id="blocks-{ANSWER}" hx-disable hx-preserve="true"></div></div></article>'
    )
    end = as_read(frames.answer_replace_event(ChatCursor(3), ended, frames.EVENTS.end))
    page.apply([end])
    assert page.status(ANSWER) == "done" and status_in(end, ANSWER) == "done"
    assert page.shows(ANSWER, "<p>a</p>")


def test_a_snapshot_replaces_what_the_list_held() -> None:
    page = started_page()
    snapshot = frames.chat_snapshot_event(ChatCursor(4), running_answer("queued"))
    page.apply([as_read(snapshot)])
    assert page.message_ids() == [ANSWER] and page.status(ANSWER) == "queued"


def test_a_lost_block_is_seen() -> None:
    page = started_page().apply([delta(2, text="b", blocks="<p>b</p>")])
    assert not page.shows(ANSWER, "<p>a</p><p>b</p>")
    assert page.body(ANSWER) == normalized("<p>b</p>")
