"""A page as the browser holds it: HTML with each stream event applied as htmx applies it.

Tests and the benchmark read what a page shows from here, not by matching the stream's
markup: an event's data is parsed as HTML (lxml) and swapped by htmx's rules, which the
page's own markup selects. Its listeners (`sse-swap`, `hx-target`, `hx-swap`), out-of-band
swaps (`hx-swap-oob`) and `hx-preserve` come from the page and the events, as in the
browser; the one thing that is ours, static/chat-stream.js's short deltas, is done as that
file does it. A page that would hold two elements with one id (a message or block added
twice) raises AssertionError.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import lxml.html
from lxml.html import HtmlElement

from chatapp.frames import EVENTS, parse_chat_cursor

if TYPE_CHECKING:
    from harness.client import Event

# What a chat page's stream fills (templates/chat.html), for a test that has no page of
# its own: the events of that stream are all out-of-band swaps into these.
CHAT_PAGE = '<h1 id="chat-title"></h1><ul id="chat-list"></ul><div id="messages"></div>'
ENDED = ("done", "error", "stopped")


class Page:
    def __init__(self, page_html: str = CHAT_PAGE) -> None:
        """`page_html`: a whole page as the server sent it, or a fragment of one."""
        if page_html.lstrip()[:9].lower() == "<!doctype":
            self.root: HtmlElement = lxml.html.document_fromstring(page_html)
        else:
            self.root = lxml.html.fragment_fromstring(page_html, create_parent="body")

    def apply(self, events: Iterable[Event]) -> Page:
        """Apply `events` in order; return the page."""
        for event in events:
            self.apply_event(event)
        return self

    def apply_event(self, event: Event) -> None:
        if event.event == EVENTS.delta and not event.data.startswith("<"):
            self._append_short_delta(event)
            return
        content = parse_fragment(event.data)
        for element in [e for e in content if e.get("hx-swap-oob")]:  # htmx swaps them first
            content.remove(element)
            self._swap_out_of_band(element)
        listener = self._listener(event.event)
        if listener is not None:
            target = self._target(listener)
            self._swap(target, listener.get("hx-swap", "innerHTML"), content)
        self._assert_no_id_twice(event)

    # -- what the page shows ---------------------------------------------------------------

    def message_ids(self) -> list[str]:
        """The ids of the messages on the page, in order."""
        articles = self.root.xpath(
            '//article[starts-with(@id, "message-") or starts-with(@id, "answer-")]'
        )
        return [article.get("id").split("-", 1)[1] for article in articles]

    def article(self, message_id: str) -> HtmlElement:
        found = self.root.xpath(
            f'//article[@id="message-{message_id}" or @id="answer-{message_id}"]'
        )
        assert found, f"the page shows no message {message_id}"
        return found[0]

    def status(self, answer_id: str) -> str | None:
        """The answer's data-status, or None while the page does not show it."""
        found = self.root.xpath(f'//article[@id="answer-{answer_id}"]')
        return found[0].get("data-status") if found else None

    def shows_ended(self, answer_id: str) -> bool:
        return self.status(answer_id) in ENDED

    def body(self, message_id: str) -> str:
        """The message's text as marked up: an answer's blocks, a question's body."""
        found = self.article(message_id).xpath(
            './/div[contains(concat(" ", @class, " "), " blocks ")'
            ' or contains(concat(" ", @class, " "), " message-body ")]'
        )
        assert found, f"message {message_id} has no body on the page"
        return inner_html(found[0])

    def shows(self, message_id: str, stored_html: str) -> bool:
        """Whether the message's body is exactly `stored_html` (both read by one parser)."""
        return self.body(message_id) == normalized(stored_html)

    # -- htmx's swaps ----------------------------------------------------------------------

    def _by_id(self, element_id: str) -> HtmlElement | None:
        found = self.root.xpath(f'//*[@id="{element_id}"]')
        return found[0] if found else None

    def _listener(self, event_name: str) -> HtmlElement | None:
        """The element whose `sse-swap` names the event (htmx's SSE extension)."""
        for element in self.root.xpath("//*[@sse-swap]"):
            if event_name in (name.strip() for name in element.get("sse-swap").split(",")):
                return element
        return None

    def _target(self, listener: HtmlElement) -> HtmlElement:
        selector = listener.get("hx-target", "this")
        if selector == "this":
            return listener
        target = self._by_id(selector.removeprefix("#"))
        assert target is not None, f"the page has no {selector}"
        return target

    def _swap_out_of_band(self, element: HtmlElement) -> None:
        """hx-swap-oob="true" (or a style), optionally with ":#target"."""
        style, _, selector = element.attrib.pop("hx-swap-oob").partition(":")
        style = "outerHTML" if style == "true" else style
        target_id = selector.removeprefix("#") or element.get("id")
        target = self._by_id(target_id)
        assert target is not None, f"the page has no #{target_id} for an out-of-band swap"
        if style == "outerHTML":
            self._swap(target, style, _wrapped([element]))
        else:
            self._swap(target, style, element)

    def _swap(self, target: HtmlElement, style: str, content: HtmlElement) -> None:
        """Swap the children (and text) of `content` into `target` in `style`."""
        self._keep_preserved(content)
        if style == "none":
            return
        if style == "innerHTML":
            target.text = None
            for child in list(target):
                target.remove(child)
            _append(target, content)
        elif style == "beforeend":
            _append(target, content)
        elif style == "outerHTML":
            parent, tail = target.getparent(), target.tail
            at = parent.index(target)
            parent.remove(target)
            new = list(content)
            for offset, element in enumerate(new):
                parent.insert(at + offset, element)
            if new:
                new[-1].tail = (new[-1].tail or "") + (tail or "")
        else:
            raise AssertionError(f"a swap style this page model does not know: {style}")

    def _keep_preserved(self, content: HtmlElement) -> None:
        """htmx's hx-preserve: an element so marked keeps the page's element of its id."""
        for new in content.xpath(".//*[@hx-preserve]"):
            old = self._by_id(new.get("id"))
            if old is not None:
                tail = new.tail
                new.getparent().replace(new, old)  # moves it (with its own tail)
                old.tail = tail

    def _append_short_delta(self, event: Event) -> None:
        """static/chat-stream.js: new text for the open block of the answer whose
        generation the event's id names."""
        cursor = parse_chat_cursor(event.id)
        assert cursor is not None and cursor.answer is not None, event
        generation = cursor.answer.generation_id
        pending = self.root.xpath(
            f'//article[@data-generation="{generation}"]//span[@class="pending"]'
        )
        if pending:
            span = pending[0]
            text = html.unescape(event.data)
            if len(span):
                span[-1].tail = (span[-1].tail or "") + text
            else:
                span.text = (span.text or "") + text

    def _assert_no_id_twice(self, event: Event) -> None:
        twice = [i for i, n in Counter(self.root.xpath("//@id")).items() if n > 1]
        assert not twice, f"after {event.event} {event.id}: on the page twice: {twice}"


def status_in(event: Event, answer_id: str | None = None) -> str | None:
    """The status of the answer's article (or the first answer's) in the event's data, if
    the event carries it (its `end`, or a snapshot or message with it): what the page shows
    once the event is applied."""
    found = parse_fragment(event.data).xpath(
        _ANSWER.format(f'[@id="answer-{answer_id}"]' if answer_id else "")
    )
    return found[0].get("data-status") if found else None


def showing(answer_id: str, status: str = "done") -> Callable[[list[Event]], bool]:
    """A condition for reading a stream until an event so far carries the answer in
    `status`; asked again with more events, it parses only the new ones."""
    checked, found = 0, False

    def until(events: list[Event]) -> bool:
        nonlocal checked, found
        found = found or any(status_in(e, answer_id) == status for e in events[checked:])
        checked = len(events)
        return found

    return until


def answer_in(response_html: str) -> str:
    """The id of the first answer a response shows (a send's: its new answer)."""
    found = parse_fragment(response_html).xpath(_ANSWER.format(""))
    assert found, "the response shows no answer"
    return str(found[0].get("id")).removeprefix("answer-")


def text_of(fragment_html: str) -> str:
    """The text a browser shows for `fragment_html` (its textContent)."""
    return str(parse_fragment(fragment_html).text_content())


_ANSWER = '//article[contains(concat(" ", @class, " "), " answer ")]{}'


def in_band_text(event: Event) -> str:
    """The text of what the event swaps into its listener's target (its out-of-band swaps
    left out): for an answer's own stream, the text of the blocks a delta adds."""
    content = parse_fragment(event.data)
    for element in [e for e in content if e.get("hx-swap-oob")]:
        content.remove(element)
    return str(content.text_content())


def parse_fragment(fragment_html: str) -> HtmlElement:
    """The fragment's elements (and text) as the children of one element (a div)."""
    return lxml.html.fragment_fromstring(fragment_html or "", create_parent="div")


def _wrapped(elements: list[HtmlElement]) -> HtmlElement:
    wrapper = lxml.html.fragment_fromstring("", create_parent="div")
    for element in elements:
        element.tail = None
        wrapper.append(element)
    return wrapper


def _append(target: HtmlElement, content: HtmlElement) -> None:
    """Append the text and children of `content` to the end of `target`."""
    if content.text:
        if len(target):
            target[-1].tail = (target[-1].tail or "") + content.text
        else:
            target.text = (target.text or "") + content.text
    for child in list(content):
        target.append(child)


def inner_html(element: HtmlElement) -> str:
    text = html.escape(element.text or "", quote=False)
    return text + "".join(lxml.html.tostring(child, encoding="unicode") for child in element)


def normalized(fragment_html: str) -> str:
    """`fragment_html` as this page model reads and writes it back, to compare with a body."""
    return inner_html(parse_fragment(fragment_html))
