"""Editing a sent question: the new version and a new answer take the place of the old one
and what followed it, which stay reachable (`< 1/2 >`), on every device, live."""

from __future__ import annotations

import redis
from flask import Flask
from playwright.sync_api import Browser, expect

from chatapp import jobs, store
from harness.accounts import Person, log_in_in_browser, sign_up_in_browser, start_a_chat
from harness.client import ChatClient
from harness.page import Page as PageModel
from harness.page import answer_in, parse_fragment
from harness.servers import Stack

LONG_MS = 60_000  # a bound for a busy machine, never a measure


def answered(app: Flask, r: redis.Redis, chat_id: str, answer_id: str) -> store.Message:
    """Write the answer here, as the worker would (the offline model names the question)."""
    generation = store.get_message(r, chat_id, answer_id).gen  # type: ignore[union-attr]
    with app.app_context():
        assert jobs.generate_answer(chat_id, answer_id, generation) == "done"
    return store.get_message(r, chat_id, answer_id)  # type: ignore[return-value]


def shown(r: redis.Redis, chat_id: str) -> list[str]:
    return [message.id for message in store.get_messages(r, chat_id)]


def two_turns(app: Flask, person: Person, r: redis.Redis) -> tuple[str, list[str]]:
    """A chat of two questions, both answered; its id and its messages' ids."""
    chat_id = person.new_chat()
    first = answer_in(person.send(chat_id, "What is two plus two?").text)
    answered(app, r, chat_id, first)
    second = answer_in(person.send(chat_id, "And three?", client_id="client-0002").text)
    answered(app, r, chat_id, second)
    return chat_id, shown(r, chat_id)


def edit(person: Person, chat_id: str, message_id: str, text: str, client_id: str):
    return person.post(
        f"/chats/{chat_id}/messages/{message_id}/edit", text=text, client_id=client_id
    )


def test_an_edit_answers_anew_and_the_old_version_stays_one_click_away(
    app: Flask, alice: Person, r: redis.Redis
) -> None:
    chat_id, (q1, a1, q2, a2) = two_turns(app, alice, r)
    assert edit(alice, chat_id, q1, "What is two times two?", "client-0003").status_code == 204
    new_q, new_a = store.get_messages(r, chat_id)
    assert new_q.text == "What is two times two?" and new_q.versions == (q1, new_q.id)
    assert new_a.status == "queued"
    assert "two times two" in answered(app, r, chat_id, new_a.id).text  # asked anew

    page = alice.client.get(f"/chats/{chat_id}").text
    assert parse_fragment(page).xpath('//nav[@class="versions"]/span/text()') == ["2/2"]
    assert alice.post(f"/chats/{chat_id}/messages/{q1}/show").status_code == 204
    assert shown(r, chat_id) == [q1, a1, q2, a2]  # the old version, and all that followed
    page = alice.client.get(f"/chats/{chat_id}").text
    assert parse_fragment(page).xpath('//nav[@class="versions"]/span/text()') == ["1/2"]
    assert alice.post(f"/chats/{chat_id}/messages/{new_q.id}/show").status_code == 204
    assert shown(r, chat_id) == [new_q.id, new_a.id]

    # A later question edited: versions of their own, on this path only.
    assert edit(alice, chat_id, new_q.id, "Two times two, again?", "client-0004").status_code == 204
    third_q, third_a = store.get_messages(r, chat_id)
    assert third_q.versions == (q1, new_q.id, third_q.id)
    answered(app, r, chat_id, third_a.id)
    assert alice.post(f"/chats/{chat_id}/messages/{q1}/show").status_code == 204
    assert shown(r, chat_id) == [q1, a1, q2, a2]


def test_a_regenerated_answer_keeps_the_earlier_one_one_click_away(
    app: Flask, alice: Person, r: redis.Redis
) -> None:
    chat_id, (q1, a1, q2, a2) = two_turns(app, alice, r)
    assert alice.post(f"/chats/{chat_id}/messages/{a2}/regenerate").status_code == 204
    *_, again = store.get_messages(r, chat_id)
    assert again.id != a2 and again.versions == (a2, again.id) and again.status == "queued"
    answered(app, r, chat_id, again.id)
    assert alice.post(f"/chats/{chat_id}/messages/{a2}/show").status_code == 204
    assert shown(r, chat_id) == [q1, a1, q2, a2]
    page = parse_fragment(alice.client.get(f"/chats/{chat_id}").text)
    assert page.xpath(f'//*[@id="answer-{a2}"]//nav[@class="versions"]/span/text()') == ["1/2"]
    assert alice.post(f"/chats/{chat_id}/messages/{a1}/regenerate").status_code == 409


def test_edits_and_versions_are_refused_with_a_reason(
    app: Flask, alice: Person, bob: Person, r: redis.Redis
) -> None:
    chat_id, (q1, a1, q2, _) = two_turns(app, alice, r)
    assert edit(alice, chat_id, a1, "An answer is no question", "client-0003").status_code == 404
    assert edit(alice, chat_id, "0" * 16, "Nobody", "client-0004").status_code == 404
    assert edit(alice, chat_id, "../x", "Not an id", "client-0005").status_code == 404
    assert edit(bob, chat_id, q1, "Not mine", "client-0006").status_code == 404
    assert edit(alice, chat_id, q1, "   ", "client-0007").status_code == 400
    assert edit(alice, chat_id, q1, "x" * 16_001, "client-0008").status_code == 413
    assert alice.post(f"/chats/{chat_id}/messages/{q2}/show").status_code == 404  # one version
    assert bob.post(f"/chats/{chat_id}/messages/{q1}/show").status_code == 404
    assert shown(r, chat_id)[:2] == [q1, a1]  # nothing changed

    assert edit(alice, chat_id, q2, "And four?", "client-0009").status_code == 204
    busy = edit(alice, chat_id, q1, "While it writes", "client-0010")
    assert busy.status_code == 409 and "still being written" in busy.text
    assert alice.post(f"/chats/{chat_id}/messages/{q2}/show").status_code == 409
    new_q = store.get_messages(r, chat_id)[2]
    again = edit(alice, chat_id, q2, "And four?", "client-0009")  # sent twice: stored once
    assert again.status_code == 204 and store.get_messages(r, chat_id)[2].id == new_q.id


def test_deleting_a_chat_deletes_every_version(app: Flask, alice: Person, r: redis.Redis) -> None:
    chat_id, (q1, *_) = two_turns(app, alice, r)
    assert edit(alice, chat_id, q1, "Another way to ask", "client-0003").status_code == 204
    answered(app, r, chat_id, shown(r, chat_id)[1])
    assert alice.post(f"/chats/{chat_id}/delete").status_code == 204
    left = [key for key in r.scan_iter(f"*{{{chat_id}}}*") if ":gen:" not in key]
    assert [key for key in left if ":claim:" not in key] == []  # logs and claims expire


def test_every_page_of_the_chat_follows_an_edit_and_a_change_of_version(stack: Stack) -> None:
    """On the chat page's stream, what a tab holds: another device's page shows the new
    version and its answer, then the old version again, from its events alone."""
    laptop = ChatClient(stack.base)
    phone = laptop.another_device()
    chat_id = laptop.new_chat()
    first = laptop.send_ok(chat_id, "Name a colour")
    seen = phone.follow_page(chat_id, first)
    question = PageModel().apply(seen).message_ids()[0]
    headers = {"X-CSRFToken": laptop.token, "HX-Request": "true"}
    url = f"/chats/{chat_id}/messages/{question}/edit"
    data = {"text": "Name a fruit", "client_id": "client-0002"}
    assert laptop.http.post(url, data=data, headers=headers).status_code == 204
    new_question, new_answer = store.get_messages(stack.redis(), chat_id)
    seen = phone.follow_page(chat_id, new_answer.id, seen=seen)
    page = PageModel().apply(seen)
    assert page.message_ids() == [new_question.id, new_answer.id]
    assert "Name a fruit" in page.body(new_question.id)

    url = f"/chats/{chat_id}/messages/{question}/show"
    assert laptop.http.post(url, headers=headers).status_code == 204
    more = phone.live(
        chat_id,
        until=lambda events: PageModel().apply(seen + events).message_ids()[0] == question,
        last_event_id=seen[-1].id,
    )
    page = PageModel().apply(seen + more)
    assert page.message_ids() == [question, first] and page.status(first) == "done"


def test_editing_and_switching_versions_in_the_browser(browser: Browser, stack: Stack) -> None:
    """One person on two devices: the laptop edits its question and goes back to the first
    version; the phone shows each step by itself."""
    laptop = browser.new_context().new_page()
    laptop.set_default_timeout(30_000)
    name = sign_up_in_browser(laptop, stack.base)
    chat_url = start_a_chat(laptop, "Tell me about otters")
    expect(laptop.locator("article.answer[data-status=done]")).to_have_count(1, timeout=LONG_MS)
    phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True).new_page()
    phone.set_default_timeout(30_000)
    log_in_in_browser(phone, stack.base, name)
    phone.goto(chat_url)

    question = laptop.locator("article.user")
    question.get_by_text("Edit").click()
    question.get_by_role("textbox", name="The question, edited").fill("Tell me about beavers")
    question.get_by_role("button", name="Send").click()
    for page in (laptop, phone):
        expect(page.locator("article.user .message-body")).to_have_text(
            "Tell me about beavers", timeout=LONG_MS
        )
        expect(page.locator("article.answer[data-status=done]")).to_contain_text(
            "beavers", timeout=LONG_MS
        )
        expect(page.locator("nav.versions span")).to_have_text("2/2", timeout=LONG_MS)

    laptop.get_by_role("button", name="Previous version").click()
    for page in (laptop, phone):
        expect(page.locator("article.user .message-body")).to_have_text(
            "Tell me about otters", timeout=LONG_MS
        )
        expect(page.locator("article.answer")).to_contain_text("otters", timeout=LONG_MS)
        expect(page.locator("nav.versions span")).to_have_text("1/2", timeout=LONG_MS)
    expect(phone.get_by_role("button", name="Previous version")).to_be_disabled(timeout=LONG_MS)

    # Regenerated: the answer has versions of its own, and the earlier one comes back.
    first_answer = laptop.locator("article.answer").get_attribute("id")
    with laptop.expect_response(lambda response: "regenerate" in response.url) as regenerated:
        laptop.get_by_role("button", name="Regenerate").click()
    assert regenerated.value.status == 204, regenerated.value.text()
    answer_versions = "article.answer nav.versions span"
    for page in (laptop, phone):
        expect(page.locator(answer_versions)).to_have_text("2/2", timeout=LONG_MS)
        expect(page.locator("article.answer[data-status=done]")).to_have_count(1, timeout=LONG_MS)
    phone.locator("article.answer").get_by_role("button", name="Previous version").click()
    for page in (laptop, phone):
        expect(page.locator(answer_versions)).to_have_text("1/2", timeout=LONG_MS)
        expect(page.locator("article.answer")).to_have_id(first_answer or "", timeout=LONG_MS)
