"""Real headless Chromium on the real stack (nginx in front of two gunicorn processes, so a
reconnect may land on either): an answer followed live on the chat page's one stream
survives a reload, the server closing its stream, one refused reconnect, and the network
dropping the stream at a chosen point of the answer (a cutting proxy in front of gunicorn),
and ends on the page exactly once.

Each test checks which path ran (the stream requests' `Last-Event-ID`, the events the page
applied) and what the page built just before `end` swapped in the final fragment: the
log's blocks up to the last applied entry, so a doubled or lost delta fails.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect

from chatapp import contract, frames, store
from chatapp.frames import parse_chat_cursor
from harness.accounts import sign_up_in_browser, start_a_chat
from harness.page import text_of
from harness.servers import Stack, running_stack, stack_behind_nginx
from tests.tcp_proxy import CuttingProxy

TIMEOUT_MS = 30_000
# The offline answer is ~350 tokens: at 40 tokens/s it writes for several seconds.
PACE = {"CHATAPP_OFFLINE_TOKENS_PER_SECOND": "40", "CHATAPP_FLUSH_MS": "50"}
# htmx logs every EventSource error event (as "[object Event]"); a reconnect starts with one.
SSE_ERROR = "[object Event]"

# Runs in each document before the page's scripts (outside its CSP). An event the page
# refused (the chat-stream extension decides after every listener) is heard before it is
# applied and never applied: `dropped` stays true until htmx:sseMessage says it was applied.
RECORDER = """
window.sseEvents = [];
window.blocksBeforeEnd = [];
document.addEventListener("DOMContentLoaded", function () {
  var holder = document.querySelector("[sse-connect]");
  window.initialCursor = holder ? holder.dataset.cursor : null;  // where the page was rendered
});
window.addEventListener("htmx:sseMessage", function (event) {
  var last = window.sseEvents[window.sseEvents.length - 1];
  if (last && last.id === event.detail.lastEventId) last.dropped = false;
});
window.addEventListener("htmx:sseBeforeMessage", function (event) {
  var native = event.detail;
  window.sseEvents.push({type: native.type, id: native.lastEventId, dropped: true});
  if (native.type !== "end") return;
  var match = /id="answer-([0-9a-f]{16})"/.exec(native.data);
  var article = document.getElementById("answer-" + match[1]);
  var blocks = article.querySelector(".blocks").cloneNode(true);
  // htmx marks just-swapped elements until they settle: that class is no part of the answer.
  blocks.querySelectorAll(".htmx-added").forEach(function (element) {
    element.classList.remove("htmx-added");
    if (!element.classList.length) element.removeAttribute("class");
  });
  window.blocksBeforeEnd.push({answer: article.id, html: blocks.innerHTML});
});
// What the answer's open block shows once each delta is applied (its text: the last render
// and the text that came after it).
window.tailAfterDelta = [];
window.addEventListener("htmx:sseMessage", function (event) {
  if (event.detail.type !== "delta") return;
  var tail = document.querySelector("article.answer .tail");
  window.tailAfterDelta.push({id: event.detail.lastEventId, text: tail && tail.textContent});
});
"""


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    yield context.new_page()
    context.close()


@pytest.fixture(scope="module")
def steady_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with stack_behind_nginx(tmp_path_factory.mktemp("steady"), **PACE) as stack:
        yield stack


@pytest.fixture(scope="module")
def closing_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack whose streams are closed after 1 s, so one answer takes several reconnects."""
    settings = {**PACE, "CHATAPP_STREAM_MAX_SECONDS": "1"}
    with stack_behind_nginx(tmp_path_factory.mktemp("closing"), **settings) as stack:
        yield stack


@pytest.fixture(scope="module")
def cut_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, CuttingProxy]]:
    """A stack that the browser reaches through a proxy able to cut its stream once."""
    settings = {"CHATAPP_OFFLINE_TOKENS_PER_SECOND": "100", "CHATAPP_FLUSH_MS": "50"}
    with running_stack(tmp_path_factory.mktemp("cut"), **settings) as stack:
        proxy = CuttingProxy(int(stack.base.rsplit(":", 1)[1]))
        base = f"http://127.0.0.1:{proxy.port}"
        yield Stack(base, stack.redis_url, stack.env, stack.worker_pid), proxy
        proxy.close()


class Tab:
    """A browser tab on the stack that records its console errors and its stream requests.

    Stream requests are recorded with the headers Chromium sent (its `ExtraInfo` network
    events): Playwright's `Request.headers`, in `page.route` too, omit `Last-Event-ID`. With
    `refuse_one_resume`, the first reconnect that carries one gets a 503 in place of the
    server's response (intercepted at the response stage, once its headers are known).
    """

    def __init__(self, page: Page, refuse_one_resume: bool = False) -> None:
        self.page = page
        self.streams: list[tuple[str, str | None]] = []  # (request id, Last-Event-ID), in order
        self.refused: int | None = None  # index in `streams` of the refused request
        self.errors: list[tuple[str, str]] = []  # (text, script or resource URL)
        page.set_default_timeout(TIMEOUT_MS)
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append((f"pageerror: {error}", "")))
        page.add_init_script(RECORDER)
        self.cdp = page.context.new_cdp_session(page)
        self.cdp.on("Network.requestWillBeSentExtraInfo", self._request_sent)
        self.cdp.send("Network.enable")
        if refuse_one_resume:
            self.cdp.on("Fetch.requestPaused", self._response_arrived)
            stage = {"urlPattern": "*/live*", "requestStage": "Response"}
            self.cdp.send("Fetch.enable", {"patterns": [stage]})

    @property
    def last_event_ids(self) -> list[str | None]:
        return [last_event_id for _, last_event_id in self.streams]

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append((message.text, message.location.get("url", "")))

    def _request_sent(self, event: dict[str, Any]) -> None:
        headers = {name.lower(): value for name, value in event["headers"].items()}
        if headers.get("accept") == "text/event-stream":
            self.streams.append((event["requestId"], headers.get("last-event-id")))

    def _response_arrived(self, event: dict[str, Any]) -> None:
        ids = [request_id for request_id, _ in self.streams]
        index = ids.index(event["networkId"]) if event["networkId"] in ids else None
        if index is not None and self.streams[index][1] and self.refused is None:
            self.refused = index
            refusal = {"requestId": event["requestId"], "responseCode": 503, "body": ""}
            self.cdp.send("Fetch.fulfillRequest", refusal)
        else:
            self.cdp.send("Fetch.continueRequest", {"requestId": event["requestId"]})

    def ask(self, stack: Stack, question: str) -> tuple[str, str]:
        """Start a chat and send `question`; return the chat's id and its answer's id."""
        page = self.page
        sign_up_in_browser(page, stack.base)
        start_a_chat(page, question)
        answer = page.locator("article.answer")
        expect(answer).to_have_count(1, timeout=TIMEOUT_MS)
        answer_id = (answer.get_attribute("id") or "").removeprefix("answer-")
        chat_id = page.url.rsplit("/", 1)[-1]
        self.assert_follows(chat_id, answer_id)
        return chat_id, answer_id

    def assert_follows(self, chat_id: str, answer_id: str) -> None:
        """The page's one stream, for its chat, carries the running answer."""
        holders = self.page.locator("[sse-connect]")
        expect(holders).to_have_count(1)
        assert holders.get_attribute("sse-connect") == f"/chats/{chat_id}/live"
        expect(self.page.locator(f"#answer-{answer_id}")).to_have_count(1)

    def wait_for_text(self, answer_id: str) -> None:
        """Wait until streamed text is on the page."""
        body = self.page.locator(f"#answer-{answer_id} .answer-body")
        expect(body).to_contain_text("About", timeout=TIMEOUT_MS)

    def wait_until_done(self, answer_id: str) -> None:
        article = self.page.locator(f"#answer-{answer_id}")
        expect(article).to_have_attribute("data-status", "done", timeout=TIMEOUT_MS)

    def initial_cursor(self) -> str | None:
        cursor: str | None = self.page.evaluate("window.initialCursor")
        return cursor

    def events(self) -> list[dict[str, Any]]:
        """The chat's SSE events that reached the current document, in order (the chat
        list's updates and the keep-alives, which come too, are left out)."""
        events: list[dict[str, Any]] = self.page.evaluate("window.sseEvents")
        return [event for event in events if event["type"] not in ("chats", "ping")]

    def as_browser_html(self, html: str) -> str:
        """Return `html` as this browser serializes it, to compare it with `innerHTML`."""
        serialized: str = self.page.evaluate(
            "html => { const t = document.createElement('template'); t.innerHTML = html;"
            " return t.innerHTML; }",
            html,
        )
        return serialized

    def reconnect_errors(self, cut: bool = False) -> int:
        """Count htmx's logs of EventSource errors; fail on any other console error but the
        refused request's 503, the stream a lost network `cut` short, and the 404 of
        /favicon.ico (the app has none)."""
        refused = self.refused is not None
        unexpected = [
            (text, url)
            for text, url in self.errors
            if not (text == SSE_ERROR and "/static/htmx-" in url)
            and not url.endswith("/favicon.ico")
            and not (refused and "/live" in url and "status of 503" in text)
            and not (cut and "/live" in url and "ERR_INCOMPLETE_CHUNKED_ENCODING" in text)
        ]
        assert unexpected == []
        return [text for text, _ in self.errors].count(SSE_ERROR)


def seq(event_id: str | None) -> int:
    cursor = parse_chat_cursor(event_id)
    assert cursor and cursor.answer, f"not a cursor that names an answer entry: {event_id!r}"
    return cursor.answer.seq


def has_entry(event_id: str | None) -> bool:
    """Whether a chat stream id names an answer entry."""
    cursor = parse_chat_cursor(event_id)
    return cursor is not None and cursor.answer is not None


def assert_applied_in_order(events: list[dict[str, Any]], end_seq: int) -> None:
    """Each delta comes right after the previous answer entry the page got; `end` once,
    last, at the terminal entry. The page dropped nothing: the server sent each entry once
    per connection, and resumed every connection where the page was."""
    assert [e for e in events if e["dropped"]] == []
    for previous, event in itertools.pairwise(events):
        if event["type"] == "delta" and has_entry(previous["id"]):
            assert seq(event["id"]) == seq(previous["id"]) + 1, (previous, event)
    assert [e["type"] for e in events].count("end") == 1
    assert events[-1]["type"] == "end" and seq(events[-1]["id"]) == end_seq


def assert_shown_exactly_once(tab: Tab, stack: Stack, chat_id: str, answer_id: str) -> int:
    """Check what the page built from the stream and what it shows at the end; return the
    position up to which it had the answer before `end` came.

    The blocks before `end` must be the log's blocks up to the last entry the page had:
    a doubled or lost delta changes them. All the log's blocks are the stored answer, and
    the final article shows it once.
    """
    r = stack.redis()
    stored = store.get_message(r, chat_id, answer_id)
    assert stored is not None and stored.status == "done"
    events = tab.events()
    assert_applied_in_order(events, end_seq=stored.length)
    log = contract.entries(store.read_log(r, chat_id, stored.gen))
    blocks = [entry.blocks for entry in log[:-1]]
    with_entries = [e["id"] for e in events[:-1] if has_entry(e["id"])]
    built_up_to = seq(with_entries[-1] if with_entries else tab.initial_cursor())
    built = tab.page.evaluate("window.blocksBeforeEnd")
    assert [b["answer"] for b in built] == [f"answer-{answer_id}"]
    assert built[0]["html"] == tab.as_browser_html("".join(blocks[:built_up_to]))

    # After each delta, the open block shows its last render and the text since, as the
    # log has them (new text comes in the stream's short form, appended by app.js).
    shown = tab.page.evaluate("window.tailAfterDelta")
    assert len(shown) == sum(e["type"] == "delta" for e in events) > 0
    for applied in shown:
        expected_tail = frames.open_block(answer_id, log[: seq(applied["id"])])
        assert applied["text"] == text_of(expected_tail), applied["id"]

    expected = tab.as_browser_html(stored.html)
    assert tab.as_browser_html("".join(blocks)) == expected
    expect(tab.page.locator("article.answer")).to_have_count(1)
    expect(tab.page.locator("article.user")).to_have_count(1)
    article = tab.page.locator(f"#answer-{answer_id}")
    assert article.locator(".blocks").inner_html() == expected
    heading = stored.text.splitlines()[0].removeprefix("## ")
    assert article.inner_text().count(heading) == 1
    return built_up_to


def test_reloading_mid_answer_renders_it_so_far_and_resumes_from_there(
    page: Page, steady_stack: Stack
) -> None:
    tab = Tab(page)
    chat_id, answer_id = tab.ask(steady_stack, "What happens when I reload mid-answer?")
    tab.wait_for_text(answer_id)
    stored = store.get_message(steady_stack.redis(), chat_id, answer_id)
    assert stored is not None and stored.status == "streaming"
    before_reload = len(tab.streams)

    page.reload()
    tab.assert_follows(chat_id, answer_id)
    tab.wait_until_done(answer_id)

    # One stream, from the position the page was rendered at (in its URL, not a header).
    assert tab.last_event_ids[before_reload:] == [None]
    assert seq(tab.initial_cursor()) > 0  # the page held what was written before the reload
    events = tab.events()
    assert [e["type"] for e in events].count("snapshot") == 0
    built_up_to = assert_shown_exactly_once(tab, steady_stack, chat_id, answer_id)
    assert built_up_to == seq(events[-1]["id"]) - 1  # the page built the rest itself
    assert tab.reconnect_errors() == 0


def test_a_stream_closed_by_the_server_resumes_natively_from_last_event_id(
    page: Page, closing_stack: Stack
) -> None:
    tab = Tab(page)
    chat_id, answer_id = tab.ask(closing_stack, "What happens when the server closes?")
    tab.wait_until_done(answer_id)

    cursors = tab.last_event_ids
    assert cursors[0] is None
    # Once the page had an event, every reconnect carried its id (none was rebuilt).
    resumed = cursors[next(i for i, c in enumerate(cursors) if c is not None) :]
    assert len(resumed) >= 2 and None not in resumed
    events = tab.events()
    assert [e["type"] for e in events].count("snapshot") == 0  # every reconnect resumed
    built_up_to = assert_shown_exactly_once(tab, closing_stack, chat_id, answer_id)
    first_resume = next(c for c in resumed if has_entry(c))
    assert built_up_to > seq(first_resume)  # deltas were applied after a resume
    assert tab.reconnect_errors() >= len(resumed) - 1


def test_a_refused_reconnect_is_rebuilt_from_the_newest_cursor_the_page_applied(
    page: Page, closing_stack: Stack
) -> None:
    tab = Tab(page, refuse_one_resume=True)
    chat_id, answer_id = tab.ask(closing_stack, "What happens when a reconnect is refused?")
    tab.wait_until_done(answer_id)

    assert tab.refused is not None
    assert tab.last_event_ids[tab.refused] is not None
    assert tab.last_event_ids[tab.refused + 1] is None  # the extension's rebuilt EventSource
    events = tab.events()
    # app.js put the newest applied id in the rebuilt URL: it resumed, no snapshot needed.
    assert [e["type"] for e in events].count("snapshot") == 0
    assert_shown_exactly_once(tab, closing_stack, chat_id, answer_id)
    assert tab.reconnect_errors() >= 1


# Keeps every EventSource the page builds, so a test can play an event on it as if the
# server had sent it.
KEEP_SOURCES = """
window.__sources = [];
const NativeEventSource = window.EventSource;
window.EventSource = function (url, options) {
  const source = new NativeEventSource(url, options);
  window.__sources.push(source);
  return source;
};
Object.assign(window.EventSource, {CONNECTING: 0, OPEN: 1, CLOSED: 2});
window.EventSource.prototype = NativeEventSource.prototype;
"""


def test_a_chat_event_the_page_has_applied_is_refused_if_it_comes_again(
    page: Page, steady_stack: Stack
) -> None:
    """The server sends each event once per connection; the page's chat-stream extension
    still refuses one it has applied (defence in depth)."""
    tab = Tab(page)
    page.add_init_script(KEEP_SOURCES)
    _, answer_id = tab.ask(steady_stack, "What if an event came twice?")
    tab.wait_until_done(answer_id)

    def play(event_id: str, element_id: str) -> None:
        fragment = f'<div id="messages" hx-swap-oob="beforeend"><p id="{element_id}">x</p></div>'
        page.evaluate(
            "([id, data]) => window.__sources.at(-1).dispatchEvent("
            "new MessageEvent('message', {data: data, lastEventId: id}))",
            [event_id, fragment],
        )

    play("c1", "again")  # the chat's first event: the page has it
    play("c999", "later")  # one the page has not seen: applied (the check can fail)
    expect(page.locator("#later")).to_have_count(1)
    expect(page.locator("#again")).to_have_count(0)
    played = [(e["id"], e["dropped"]) for e in tab.events() if e["id"] in ("c1", "c999")]
    assert played[-2:] == [("c1", True), ("c999", False)]


def test_a_page_told_the_network_went_away_starts_its_stream_over_from_its_cursor(
    page: Page, steady_stack: Stack
) -> None:
    """A dead connection can take minutes to notice: when the browser says the network went
    away (or came back), app.js drops the page's stream and the SSE extension opens a new
    one, from the newest event the page applied; the answer shows once."""
    tab = Tab(page)
    chat_id, answer_id = tab.ask(steady_stack, "What happens when the network goes away?")
    tab.wait_for_text(answer_id)
    with page.expect_request(lambda request: "/live" in request.url) as rebuilt:
        page.evaluate("window.dispatchEvent(new Event('offline'))")
    assert "after=c" in rebuilt.value.url  # from the page's cursor, not from scratch
    tab.wait_until_done(answer_id)
    assert [e["type"] for e in tab.events()].count("snapshot") == 0
    assert_shown_exactly_once(tab, steady_stack, chat_id, answer_id)


CUTS = [pytest.param({"after": n}, id=f"after event {n}") for n in (1, 3, 10, 30)]
CUTS.append(pytest.param({"before": "end"}, id="between the last delta and end"))


@pytest.mark.parametrize("cut", CUTS)
def test_a_page_whose_stream_is_cut_anywhere_shows_the_answer_exactly_once(
    page: Page, cut_stack: tuple[Stack, CuttingProxy], cut: dict[str, Any]
) -> None:
    """The connection drops at a chosen point of the answer's events (as a lost network
    would: no retry hint, no end): the page resumes from the last event it had and shows
    every entry once, then the end."""
    stack, proxy = cut_stack
    proxy.arm(**cut)
    tab = Tab(page)
    chat_id, answer_id = tab.ask(stack, "What happens when the network drops?")
    tab.wait_until_done(answer_id)

    assert proxy.cut.is_set()
    assert len(tab.streams) >= 2  # it connected again
    # From the last id it had (or the page's own cursor, before any): nothing to rebuild.
    assert [e["type"] for e in tab.events()].count("snapshot") == 0
    assert_shown_exactly_once(tab, stack, chat_id, answer_id)
    assert tab.reconnect_errors(cut=True) >= 1
