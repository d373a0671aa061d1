"""The chat page's layout in Chromium. On a phone-sized screen: words stay whole in buttons
and table headers, and the streaming cursor follows the newest text on its line. On a
desktop: the chat list's panel reaches the bottom of the window."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from harness.accounts import sign_up_and_start_a_chat, sign_up_in_browser, start_a_chat
from harness.servers import Stack, running_stack

TIMEOUT_MS = 30_000
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 860}
TABLE = (
    "| Language | Description | Performance | Compatibility |\n"
    "|---|---|---|---|\n"
    "| Python | Readable | Moderate | Everywhere |\n"
)
LINES_OF = "el => { const r = document.createRange(); r.selectNodeContents(el); return r.getClientRects().length; }"  # noqa: E501


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    pace = {"CHATAPP_OFFLINE_TOKENS_PER_SECOND": "15"}
    with running_stack(tmp_path_factory.mktemp("layout"), **pace) as stack:
        yield stack


@pytest.fixture
def phone(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=PHONE, is_mobile=True)  # type: ignore[arg-type]
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    yield page
    context.close()


def test_on_a_phone_words_stay_whole_and_the_cursor_follows_the_text(
    phone: Page, stack: Stack
) -> None:
    sign_up_and_start_a_chat(phone, stack.base)
    phone.locator("#composer-text").fill(TABLE)
    phone.get_by_role("button", name="Send").click()

    pending = phone.locator("article.answer[aria-busy] .pending")
    expect(pending).to_have_count(1, timeout=TIMEOUT_MS)  # being written
    cursor = pending.evaluate("el => getComputedStyle(el, '::after').content")
    assert cursor == '"▍"'
    tail = phone.locator("article.answer .tail")
    assert tail.evaluate("el => getComputedStyle(el, '::after').content") == "none"

    expect(phone.locator("article.answer[data-status=done]")).to_have_count(1, timeout=120_000)
    headers = phone.locator("article.user th")
    expect(headers).to_have_count(4, timeout=TIMEOUT_MS)
    for header in headers.all():
        assert header.evaluate(LINES_OF) == 1, header.inner_text()  # not "Compat|ibility"
    for button in phone.locator("article.answer .answer-actions button").all():
        assert button.evaluate(LINES_OF) == 1, button.inner_text()  # not "Cop|y"

    # Written again: its versions (2/2) join Copy and Regenerate in the answer's header, which
    # wraps instead of pushing the page sideways; the model's name stays on one line.
    phone.get_by_role("button", name="Regenerate").click()
    versions = phone.locator("article.answer[data-status=done] nav.versions")
    expect(versions).to_contain_text("2/2", timeout=120_000)  # shown once it is written
    wide = phone.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert wide <= 0, f"the page scrolls sideways by {wide} px"
    card = phone.locator("article.answer").bounding_box()
    assert card is not None
    for part in phone.locator(
        "article.answer .answer-meta > *, article.answer .answer-actions > *"
    ).all():
        box = part.bounding_box()
        assert box is None or box["x"] + box["width"] <= card["x"] + card["width"] + 0.5
    assert phone.locator("article.answer .answer-meta .model").evaluate(LINES_OF) == 1


def test_on_a_desktop_the_chat_list_panel_fills_the_height(browser: Browser, stack: Stack) -> None:
    context = browser.new_context(viewport=DESKTOP)  # type: ignore[arg-type]
    try:
        page = context.new_page()
        sign_up_and_start_a_chat(page, stack.base)  # an empty chat: a short page
        panel = page.locator("nav.sidebar").bounding_box()
        assert panel is not None
        assert abs(panel["y"] + panel["height"] - DESKTOP["height"]) <= 1, panel
        assert page.evaluate("document.documentElement.scrollHeight") <= DESKTOP["height"]
    finally:
        context.close()


def test_chat_options_save_the_chats_instructions(phone: Page, stack: Stack) -> None:
    """On a phone: Chat options shows the model and the chat's instructions; Save says
    what it saved, and the page shows them again after a reload."""
    sign_up_and_start_a_chat(phone, stack.base)
    phone.get_by_text("Chat options").click()
    expect(phone.get_by_label("Model")).to_have_value("offline model")
    instructions = phone.get_by_label("Instructions (system prompt)")
    expect(instructions).to_have_value("You are a helpful assistant. Answer in markdown.")
    instructions.fill("Answer like a pirate.")
    phone.get_by_role("button", name="Save").click()
    expect(phone.locator("#options-saved")).to_have_text(
        "Saved: the next answers use offline model."
    )
    phone.reload()
    phone.get_by_text("Chat options").click()
    expect(phone.get_by_label("Instructions (system prompt)")).to_have_value(
        "Answer like a pirate."
    )


def test_a_formula_is_drawn_as_mathml(phone: Page, stack: Stack) -> None:
    sign_up_in_browser(phone, stack.base)
    start_a_chat(phone, "The area is $\\pi r^2$, not $5.")
    question = phone.locator("article.message.user")
    formula = question.locator("math")
    expect(formula).to_have_count(1)
    box = formula.bounding_box()
    assert box is not None and box["width"] > 10 and box["height"] > 5  # drawn, not hidden
    assert formula.evaluate("el => el.namespaceURI") == "http://www.w3.org/1998/Math/MathML"
    assert formula.locator("msup").count() == 1  # r squared
    expect(question).to_contain_text("not $5.")


def test_chat_options_export_the_chat_as_files(phone: Page, stack: Stack) -> None:
    sign_up_in_browser(phone, stack.base)
    start_a_chat(phone, "Export *this* chat")
    expect(phone.locator("article.answer")).to_have_attribute(
        "data-status", "done", timeout=TIMEOUT_MS
    )
    phone.get_by_text("Chat options").click()
    with phone.expect_download() as markdown:
        phone.get_by_role("link", name="Markdown").click()
    assert markdown.value.suggested_filename.endswith(".md")
    text = Path(markdown.value.path()).read_text()
    assert "Export *this* chat" in text and "Assistant (offline model)" in text
    with phone.expect_download() as as_json:
        phone.get_by_role("link", name="JSON").click()
    document = json.loads(Path(as_json.value.path()).read_text())
    assert [m["role"] for m in document["messages"]] == ["user", "assistant"]
    assert document["messages"][0]["text"] == "Export *this* chat"
