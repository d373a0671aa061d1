"""Reasoning models: the `reasoning_content` / `reasoning` deltas of a stream show live in
a "Thinking" section apart from the answer, stay with the answer however it ends, and are
never sent back to the model. Real redis-server, an OpenAI-compatible server on loopback,
and (for the page) the whole stack in Chromium."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from flask import Flask
from playwright.sync_api import Browser, Page, expect

from chatapp import contract, jobs, store
from harness.accounts import Person, sign_up_in_browser, start_a_chat
from harness.fake_openai import FakeModel, fake_openai_server
from harness.page import answer_in, inner_html, parse_fragment
from harness.servers import RedisServer, Stack, running_stack
from tests.conftest import make_test_app
from tests.storing import new_answer

THOUGHTS = ["The user says hi. ", "I should greet them <politely>\n", "& briefly."]
ESCAPED = "The user says hi. I should greet them &lt;politely&gt;\n&amp; briefly."
TIMEOUT_MS = 30_000


def app_on(redis_server: RedisServer, tmp_path: Path, base_url: str) -> Flask:
    return make_test_app(
        redis_server.url, tmp_path, OPENAI_API_KEY="sk-test", OPENAI_BASE_URL=base_url
    )


def run_answer(app: Flask, r: redis.Redis, chat_id: str, answer_id: str) -> str:
    generation = store.get_message(r, chat_id, answer_id).gen  # type: ignore[union-attr]
    with app.app_context():
        return jobs.generate_answer(chat_id, answer_id, generation)


def answer_id_of(response) -> str:
    return answer_in(response.text)


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_the_models_reasoning_is_kept_apart_from_the_answer_and_never_sent_back(
    redis_server: RedisServer, r: redis.Redis, tmp_path: Path, field: str
) -> None:
    model = FakeModel(["Hello", " there."], thinking=THOUGHTS, reasoning_field=field)
    with fake_openai_server(model) as base_url:
        app = app_on(redis_server, tmp_path, base_url)
        alice = Person(app)
        chat_id = alice.new_chat()
        answer_id = answer_id_of(alice.send(chat_id, "Hi"))
        assert run_answer(app, r, chat_id, answer_id) == "done"
        answer = store.get_message(r, chat_id, answer_id)
        assert answer is not None
        assert (answer.text, answer.thinking_html) == ("Hello there.", ESCAPED)
        log = [json.loads(e) for e in store.read_log(r, chat_id, answer.gen)]
        assert "".join(entry.get("think", "") for entry in log) == ESCAPED  # live, in order
        page = alice.client.get(f"/chats/{chat_id}").text
        [shown] = parse_fragment(page).xpath('//details[@class="thinking"]/div')
        assert shown.getparent().get("open") is None  # folded once the answer is done
        assert inner_html(shown) == ESCAPED

        second = answer_id_of(alice.send(chat_id, "And?", client_id="client-0002"))
        assert run_answer(app, r, chat_id, second) == "done"
    history = model.requests[-1]["messages"]
    assert {"role": "assistant", "content": "Hello there."} in history
    assert not any("greet" in message["content"] for message in history)


def test_an_answer_stopped_while_the_model_reasons_keeps_its_reasoning(
    r: redis.Redis,
) -> None:
    sent = new_answer(r)
    chat_id = sent.chat_id
    entries = [contract.delta_entry("", "", think="Hmm, &lt;let me")]
    entries += [contract.delta_entry("", "", think=" see.")]
    result = store.append(
        r, chat_id, sent.answer_id, sent.generation_id, entries, expected_length=0
    )
    assert result.ok
    store.end(r, chat_id, sent.answer_id, sent.generation_id, store.Terminal("stopped"))
    stopped = store.get_message(r, chat_id, sent.answer_id)
    assert stopped is not None and stopped.status == "stopped"
    assert (stopped.thinking_html, stopped.text) == ("Hmm, &lt;let me see.", "")


REASONER = FakeModel(
    ["The answer ", "is ", "42."],
    thinking=[f"Step {n}: weighing it. " for n in range(1, 41)],
    pace=0.1,
    chunked=True,
    models=["fake-reasoner", "fake-larger"],
    usage={"prompt_tokens": 1234, "completion_tokens": 56, "total_tokens": 1290},
)


@pytest.fixture(scope="module")
def reasoning_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with fake_openai_server(REASONER) as base_url:
        settings = {
            "OPENAI_API_KEY": "k",
            "OPENAI_BASE_URL": base_url,
            "CHATAPP_MODEL": "fake-reasoner",
            "CHATAPP_AUTO_TITLES": "off",
        }
        with running_stack(tmp_path_factory.mktemp("reasoning"), **settings) as stack:
            yield stack


@pytest.fixture
def signed_in(browser: Browser, reasoning_stack: Stack) -> Iterator[Page]:
    """A page of a new account on the reasoning stack, in a browser context of its own."""
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    sign_up_in_browser(page, reasoning_stack.base)
    yield page
    context.close()


def test_the_page_shows_the_reasoning_live_then_folded_with_the_answer(signed_in: Page) -> None:
    page = signed_in
    page.get_by_role("link", name="Start a new chat").click()
    page.locator("#composer-text").fill("What is the answer?")
    page.get_by_role("button", name="Send").click()
    answer = page.locator("article.answer")
    thinking = answer.locator("details.thinking")
    expect(thinking).to_be_visible()  # it appears as the model reasons, open
    expect(thinking.locator(".thinking-text")).to_contain_text("Step 3: weighing it.")
    assert thinking.get_attribute("open") is not None
    assert answer.locator(".blocks").inner_text() == ""  # not in the answer's text
    page.reload()  # a page opened meanwhile has the reasoning so far
    expect(answer.locator("details.thinking .thinking-text")).to_contain_text("Step 1:")
    expect(answer).to_have_attribute("data-status", "done", timeout=TIMEOUT_MS)
    expect(answer.locator(".blocks")).to_have_text("The answer is 42.")
    folded = answer.locator("details.thinking")
    assert folded.get_attribute("open") is None  # folded once the answer is written
    expect(folded.locator(".thinking-text")).to_contain_text("Step 40: weighing it.")
    folded.locator("summary").click()
    expect(folded.locator(".thinking-text")).to_be_visible()
    # The worker process kept the server's token counts with the ended answer.
    expect(answer.locator(".usage")).to_have_text("1,234 + 56 tokens")
    expect(answer.locator(".model")).to_have_text("fake-reasoner")


def test_the_worker_writes_with_the_model_a_chat_picked(signed_in: Page) -> None:
    """Picked in Chat options, used by `rq_worker.py` for the next answer, shown on it."""
    page = signed_in
    start_a_chat(page, "First question")
    first = page.locator("article.answer").first
    expect(first).to_have_attribute("data-status", "done", timeout=TIMEOUT_MS)
    page.get_by_text("Chat options").click()
    page.get_by_label("Model").select_option("fake-larger")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#options-saved")).to_contain_text("fake-larger")
    page.locator("#composer-text").fill("Second question")
    page.get_by_role("button", name="Send").click()
    second = page.locator("article.answer").nth(1)
    expect(second).to_have_attribute("data-status", "done", timeout=TIMEOUT_MS)
    expect(second.locator(".model")).to_have_text("fake-larger")
    expect(first.locator(".model")).to_have_text("fake-reasoner")
    asked = [body["model"] for body in REASONER.requests if "Second" in json.dumps(body)]
    assert asked == ["fake-larger"]
