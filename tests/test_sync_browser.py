"""Every screen of one user in sync, in real Chromium through nginx: two browsers logged in
as the same user and a third with four tabs of the same chat. One sends, the others see the
message and the answer live; one stops it, all see it stopped; a reload and going offline
mid-answer each continue from where the page was. Every page ends with the stored answer,
once, and no request hangs (one connection per tab)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext, Locator, Page, expect

from chatapp import store
from harness.accounts import log_in_in_browser, sign_up_and_start_a_chat
from harness.servers import Stack, stack_behind_nginx, wait_until

TIMEOUT_MS = 30_000
PACE = {"CHATAPP_OFFLINE_TOKENS_PER_SECOND": "25", "CHATAPP_FLUSH_MS": "50"}


@pytest.fixture(scope="module")
def sync_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with stack_behind_nginx(tmp_path_factory.mktemp("sync"), **PACE) as stack:
        yield stack


@pytest.fixture
def contexts(browser: Browser) -> Iterator[list[BrowserContext]]:
    made = [browser.new_context() for _ in range(3)]
    yield made
    for context in made:
        context.close()


def open_chat(page: Page, url: str) -> None:
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    expect(page.locator("section.chat")).to_have_attribute(
        "data-connection", "open", timeout=TIMEOUT_MS
    )


def send(page: Page, text: str) -> None:
    page.locator("#composer-text").fill(text)
    page.get_by_role("button", name="Send").click()


def answer_blocks(page: Page, answer_id: str) -> str:
    html: str = page.evaluate(
        "id => document.querySelector('#answer-' + id + ' .blocks').innerHTML", answer_id
    )
    return html


def browser_html(page: Page, html: str) -> str:
    serialized: str = page.evaluate(
        "html => { const t = document.createElement('template'); t.innerHTML = html;"
        " return t.innerHTML; }",
        html,
    )
    return serialized


def assert_shows_once(page: Page, stack: Stack, chat_id: str, status: str) -> None:
    """The page shows every stored message once, in order, each answer as stored."""
    messages = store.get_messages(stack.redis(), chat_id)
    articles = page.locator("#messages > article")
    expect(articles).to_have_count(len(messages), timeout=TIMEOUT_MS)
    ids = articles.evaluate_all("els => els.map(el => el.id)")
    assert ids == [f"{'answer' if m.role == 'assistant' else 'message'}-{m.id}" for m in messages]
    article = page.locator(f"#answer-{messages[-1].id}")
    expect(article).to_have_attribute("data-status", status, timeout=TIMEOUT_MS)
    last = store.get_message(stack.redis(), chat_id, messages[-1].id)  # as it ended
    assert last is not None and last.status == status
    assert answer_blocks(page, last.id) == browser_html(page, last.html)


def test_every_screen_of_one_user_follows_the_same_chat_live(
    contexts: list[BrowserContext], sync_stack: Stack
) -> None:
    base = sync_stack.base
    laptop = contexts[0].new_page()
    name, chat_url = sign_up_and_start_a_chat(laptop, base)
    chat_id = chat_url.rsplit("/", 1)[-1]

    phone = contexts[1].new_page()
    log_in_in_browser(phone, base, name)
    open_chat(phone, chat_url)
    log_in_in_browser(contexts[2].new_page(), base, name)
    tabs = contexts[2].pages[:1] + [contexts[2].new_page() for _ in range(3)]
    for tab in tabs:  # four tabs of one chat in one browser: one connection each
        open_chat(tab, chat_url)

    # The laptop sends; the phone and every tab see the question and the answer, live.
    send(laptop, "Hello from the laptop")
    wait_until(lambda: len(store.get_messages(sync_stack.redis(), chat_id)) == 2, what="the send")
    for page in [laptop, phone, *tabs]:
        expect(page.locator("article.user")).to_have_count(1, timeout=TIMEOUT_MS)
        expect(page.locator("article.user")).to_contain_text(
            "Hello from the laptop", timeout=TIMEOUT_MS
        )
    answer = store.get_messages(sync_stack.redis(), chat_id)[-1]
    on_phone = phone.locator(f"#answer-{answer.id}")
    expect(on_phone.locator(".blocks")).to_contain_text(
        "About", timeout=TIMEOUT_MS
    )  # streaming on the phone
    expect(on_phone).to_have_attribute(
        "data-status", re.compile("queued|streaming"), timeout=TIMEOUT_MS
    )  # still the running article

    # The phone stops it; the laptop and the tabs see it stopped.
    on_phone.get_by_role("button", name="Stop").click()
    for page in [laptop, phone, *tabs]:
        assert_shows_once(page, sync_stack, chat_id, "stopped")

    # A new question; the laptop reloads mid-answer, then goes offline and comes back.
    send(tabs[3], "And again, from the last tab")
    wait_until(lambda: len(store.get_messages(sync_stack.redis(), chat_id)) == 4, what="the send")
    second = store.get_messages(sync_stack.redis(), chat_id)[-1]
    expect(laptop.locator(f"#answer-{second.id} .blocks")).to_contain_text(
        "About", timeout=TIMEOUT_MS
    )
    laptop.reload()
    expect(laptop.locator("section.chat")).to_have_attribute(
        "data-connection", "open", timeout=TIMEOUT_MS
    )
    expect(laptop.locator(f"#answer-{second.id}")).to_have_count(1, timeout=TIMEOUT_MS)
    streams: list[str] = []
    laptop.on(
        "request", lambda request: streams.append(request.url) if "/live" in request.url else None
    )
    contexts[0].set_offline(True)
    expect(laptop.locator("section.chat")).to_have_attribute(
        "data-connection", "reconnecting", timeout=TIMEOUT_MS
    )
    expect(laptop.locator(".connection-state .when-reconnecting")).to_be_visible(timeout=TIMEOUT_MS)
    laptop.wait_for_timeout(1500)  # the answer goes on without it
    contexts[0].set_offline(False)
    for page in [laptop, phone, *tabs]:
        assert_shows_once(page, sync_stack, chat_id, "done")
    # It came back on a new connection that started where the page was.
    assert any(f"/chats/{chat_id}/live?after=c" in url for url in streams), streams
    expect(laptop.locator(".connection-state .when-reconnecting")).to_be_hidden(timeout=TIMEOUT_MS)

    # Nothing hung: every tab still loads a page and sends.
    tabs[0].reload()
    assert_shows_once(tabs[0], sync_stack, chat_id, "done")

    # Copy: the answer's text, and its code alone.
    contexts[0].grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
    finished = laptop.locator(f"#answer-{second.id}")
    finished.get_by_role("button", name="Copy this answer", exact=True).click()
    expect(finished.locator("button.copy").first).to_have_text("Copied", timeout=TIMEOUT_MS)
    copied = laptop.evaluate("navigator.clipboard.readText()")
    assert copied == finished.locator(".blocks").inner_text()
    finished.get_by_role("button", name="Copy this answer's code").click()
    code = laptop.evaluate("navigator.clipboard.readText()")
    assert code == finished.locator(".blocks pre").inner_text().rstrip("\n")
    assert code.startswith("message = 'And again, from the last tab'")
    # A code block's header names its language, and copies that block when clicked.
    head = finished.locator(".code-head")
    expect(head.locator(".code-lang")).to_have_text("python")
    laptop.evaluate("navigator.clipboard.writeText('')")
    head.click()
    expect(head).to_have_attribute("data-copied", "", timeout=TIMEOUT_MS)
    assert laptop.evaluate("navigator.clipboard.readText()") == code
    # From the keyboard too: the header is a button a screen reader names.
    laptop.evaluate("navigator.clipboard.writeText('')")
    keyed = finished.get_by_role("button", name="Copy this python code")
    keyed.focus()
    laptop.keyboard.press("Enter")
    expect(keyed).to_have_attribute("data-copied", "", timeout=TIMEOUT_MS)
    assert laptop.evaluate("navigator.clipboard.readText()") == code

    # A new chat made on the laptop appears in the phone's list, without a reload.
    expect(phone.locator("#chat-list > li")).to_have_count(1, timeout=TIMEOUT_MS)
    laptop.get_by_role("link", name="New chat").click()
    laptop.wait_for_url(re.compile(r"/chats/new$"))
    expect(laptop.locator("#composer-text")).to_be_focused()
    chat = store.get_chat(sync_stack.redis(), chat_id)
    assert chat is not None and len(store.list_chats(sync_stack.redis(), chat.owner)) == 1
    laptop.locator("#composer-text").fill("A chat of its own")
    laptop.get_by_role("button", name="Send").click()
    laptop.wait_for_url(re.compile(r"/chats/[0-9a-f]+$"))
    new_id = laptop.url.rsplit("/", 1)[-1]
    expect(phone.locator(f'#chat-list a[href="/chats/{new_id}"]')).to_have_text(
        "A chat of its own", timeout=TIMEOUT_MS
    )
    expect(phone.locator("#chat-list > li[aria-current=page]")).to_have_count(1)  # still its own


def test_a_chat_deleted_on_one_device_leaves_every_screen_showing_it(
    contexts: list[BrowserContext], sync_stack: Stack
) -> None:
    """The laptop deletes the chat the phone shows: both address bars leave it (a reload
    is the chat list, not a 404), and the phone's list no longer offers it."""
    base = sync_stack.base
    laptop = contexts[0].new_page()
    name, chat_url = sign_up_and_start_a_chat(laptop, base)
    phone = contexts[1].new_page()
    log_in_in_browser(phone, base, name)
    open_chat(phone, chat_url)
    expect(phone.locator(f'a[href="{chat_url.removeprefix(base)}"]')).to_have_count(1)

    laptop.get_by_text("Chat options").click()
    laptop.once("dialog", lambda dialog: dialog.accept())
    laptop.get_by_role("button", name="Delete chat").click()
    laptop.wait_for_url(base + "/")
    expect(phone.locator(".chat-gone")).to_contain_text("This chat was deleted.")
    expect(phone.locator("#composer")).to_be_hidden()  # nothing more to send there
    expect(phone.get_by_text("Chat options")).to_be_hidden()
    expect(phone).to_have_url(base + "/", timeout=TIMEOUT_MS)
    expect(phone.locator(f'a[href="{chat_url.removeprefix(base)}"]')).to_have_count(0)
    phone.reload()
    expect(phone.get_by_role("link", name="Start a new chat")).to_be_visible()


def an_answer_being_written(context: BrowserContext, stack: Stack) -> tuple[Page, Locator]:
    """A new person's chat page, its first answer being written; return both."""
    page = context.new_page()
    sign_up_and_start_a_chat(page, stack.base)
    send(page, "Hello")
    answer = page.locator("article.answer")
    expect(answer.locator(".blocks")).to_contain_text("About")
    return page, answer


def test_send_waits_while_the_answer_is_written_and_esc_stops_it(
    contexts: list[BrowserContext], sync_stack: Stack
) -> None:
    laptop, answer = an_answer_being_written(contexts[0], sync_stack)
    send_button = laptop.get_by_role("button", name="Send")
    expect(send_button).to_be_disabled()
    laptop.locator("#composer-text").fill("A second question")
    laptop.keyboard.press("Escape")
    expect(answer).to_have_attribute("data-status", "stopped")
    expect(send_button).to_be_enabled()
    send_button.click()
    expect(laptop.locator("article.user")).to_have_count(2)


def test_a_lost_connection_shows_beside_the_answer_and_a_send_that_cannot_go_says_so(
    contexts: list[BrowserContext], sync_stack: Stack
) -> None:
    laptop, answer = an_answer_being_written(contexts[0], sync_stack)
    expect(answer.locator(".state-writing")).to_be_visible()

    contexts[0].set_offline(True)
    expect(laptop.locator("section.chat")).to_have_attribute("data-connection", "reconnecting")
    expect(answer.locator(".state-offline")).to_be_visible()  # where the reader looks
    expect(answer.locator(".state-writing")).to_be_hidden()
    expect(laptop.locator(".connection-state .when-reconnecting")).to_be_visible()
    cursor = answer.locator(".pending").evaluate("el => getComputedStyle(el, '::after').content")
    assert cursor == "none"  # no blinking cursor on a stream that is not coming
    contexts[0].set_offline(False)
    expect(laptop.locator("section.chat")).to_have_attribute("data-connection", "open")
    expect(answer.locator(".state-offline")).to_be_hidden()

    laptop.keyboard.press("Escape")
    expect(answer).to_have_attribute("data-status", "stopped")
    contexts[0].set_offline(True)
    send(laptop, "Anyone there?")
    flash = laptop.locator("#flash")
    expect(flash).to_contain_text("Could not reach the server")
    expect(flash).to_be_in_viewport()  # in the window, where the person is, not page-top
    flash_box, composer_box = flash.bounding_box(), laptop.locator("#composer").bounding_box()
    assert flash_box and composer_box
    assert flash_box["y"] + flash_box["height"] <= composer_box["y"]  # not over the composer
    expect(laptop.locator("#composer-text")).to_have_value("Anyone there?")  # kept
    contexts[0].set_offline(False)
    expect(laptop.locator("section.chat")).to_have_attribute("data-connection", "open")
    expect(flash).to_be_empty()  # the connection is back: the message goes
    laptop.get_by_role("button", name="Send").click()
    expect(laptop.locator("article.user")).to_have_count(2)


def test_a_page_given_every_message_again_keeps_its_live_region(
    contexts: list[BrowserContext], sync_stack: Stack
) -> None:
    """A page whose cursor the server cannot use gets a snapshot of the chat: its messages
    are replaced, and screen readers still hear what comes next (aria-live stays)."""
    laptop = contexts[0].new_page()
    sign_up_and_start_a_chat(laptop, sync_stack.base)
    send(laptop, "Hello")
    expect(laptop.locator("article.answer")).to_have_attribute(
        "data-status", "done", timeout=60_000
    )
    laptop.evaluate(
        "window.seen = []; document.addEventListener('htmx:sseMessage',"
        " e => window.seen.push(e.detail.type))"
    )
    laptop.locator("section.chat").evaluate("el => el.dataset.cursor = 'c999999'")  # unusable
    contexts[0].set_offline(True)
    expect(laptop.locator("section.chat")).to_have_attribute("data-connection", "reconnecting")
    contexts[0].set_offline(False)
    wait_until(lambda: "snapshot" in laptop.evaluate("window.seen"), what="a snapshot")
    expect(laptop.locator("#messages")).to_have_attribute("aria-live", "polite")
    expect(laptop.locator("#messages > article")).to_have_count(2)
