"""Searching one's chats (chatapp/search.py) through `/search`, on a real Redis: titles and
message text, as typed, one's own chats only, and always as the chats are now."""

from __future__ import annotations

import re

import pytest
import redis
from flask import Flask
from playwright.sync_api import Browser, expect

from chatapp import jobs, search, store, users
from harness.accounts import Person, sign_up_in_browser, start_a_chat
from harness.client import ChatClient
from harness.page import answer_in, parse_fragment, text_of
from harness.servers import Stack


def found(person: Person, query: str) -> list[str]:
    """The ids of the chats the sidebar lists for `query`, in order."""
    response = person.client.get("/search", query_string={"q": query}, headers=HTMX)
    assert response.status_code == 200, response.text
    links = parse_fragment(response.text).xpath("//ul/li/a/@href")
    return [str(link).rsplit("/", 1)[-1] for link in links]


HTMX = {"HX-Request": "true"}


def chat_with(person: Person, text: str, client_id: str = "client-0001") -> str:
    chat_id = person.new_chat()
    assert person.send(chat_id, text, client_id=client_id).status_code == 200
    return chat_id


def answered(app: Flask, r: redis.Redis, chat_id: str, answer_id: str) -> store.Message:
    """Write the answer here, as the worker would; return it."""
    generation = store.get_message(r, chat_id, answer_id).gen  # type: ignore[union-attr]
    with app.app_context():
        assert jobs.generate_answer(chat_id, answer_id, generation) == "done"
    return store.get_message(r, chat_id, answer_id)  # type: ignore[return-value]


def test_titles_and_messages_match_as_one_types_newest_first(alice: Person) -> None:
    bread = chat_with(alice, "How do I bake sourdough bread?")
    rust = chat_with(alice, "Explain Rust lifetimes to me")
    both = chat_with(alice, "Is sourdough better than Rust? A silly question")
    assert found(alice, "sourdough") == [both, bread]
    assert found(alice, "sour") == [both, bread]  # the word being typed
    assert found(alice, "SOURDOUGH bread") == [bread]  # every word, any case
    assert found(alice, "lifetimes") == [rust]
    assert found(alice, "rust sil") == [both]
    assert found(alice, "sourdough cake") == []
    assert found(alice, "ough") == []  # the beginnings of words, not their middles


def test_a_result_shows_where_the_words_are_escaped_and_marked(alice: Person) -> None:
    chat_with(alice, "Why does <script>alert(1)</script> appear in my tomato soup recipe?")
    response = alice.client.get("/search", query_string={"q": "tomato"}, headers=HTMX)
    [hit] = parse_fragment(response.text).xpath("//ul/li/a")
    assert [mark.text for mark in hit.iter("mark")] == ["tomato", "tomato"]  # title, snippet
    assert "<script>" in text_of(response.text)  # shown as text, never run
    assert not parse_fragment(response.text).xpath("//script")


def test_a_person_finds_only_their_own_chats(alice: Person, bob: Person) -> None:
    mine = chat_with(alice, "My secret plan about pelicans")
    chat_with(bob, "Bob's own plan about pelicans")
    assert found(alice, "pelicans") == [mine]
    assert len(found(bob, "pelicans")) == 1 and found(bob, "pelicans") != [mine]


def test_results_follow_answers_renames_and_deletions(
    app: Flask, alice: Person, r: redis.Redis
) -> None:
    chat_id = alice.new_chat()
    answer_id = answer_in(alice.send(chat_id, "Tell me something").text)
    assert found(alice, "tell") == [chat_id]
    answer = answered(app, r, chat_id, answer_id)
    word = max(search.words(answer.text), key=len)  # a word only the answer holds
    assert word not in search.words("Tell me something")
    assert found(alice, word) == [chat_id]

    renamed = alice.post(f"/chats/{chat_id}/title", title="Quokkas everywhere")
    assert renamed.status_code == 204
    assert found(alice, "quokkas") == [chat_id]

    deleted = alice.post(f"/chats/{chat_id}/delete")
    assert deleted.status_code == 204
    assert found(alice, "quokkas") == [] and found(alice, word) == []


def test_bad_queries_get_a_clear_answer(alice: Person) -> None:
    chat_with(alice, "Plain words")
    too_long = alice.client.get("/search", query_string={"q": "x" * 201}, headers=HTMX)
    assert too_long.status_code == 400 and "at most 200 characters" in too_long.text
    for nothing in ("", "   ", "?!…", "<>&"):
        response = alice.client.get("/search", query_string={"q": nothing}, headers=HTMX)
        assert response.status_code == 200
        assert response.text == "" if not nothing.strip() else "No chat holds" in response.text
    odd = alice.client.get("/search", query_string={"q": "\x00*[\\"}, headers=HTMX)
    assert odd.status_code == 200 and "No chat holds" in odd.text


def test_focusing_the_box_indexes_what_changed_before_one_types(
    alice: Person, r: redis.Redis
) -> None:
    chat_id = chat_with(alice, "Indexed ahead of time")
    owner = store.get_chat(r, chat_id).owner  # type: ignore[union-attr]
    indexed = search.indexed_key(owner)
    assert r.hkeys(indexed) == []
    response = alice.client.get("/search", query_string={"q": ""}, headers=HTMX)
    assert response.status_code == 200 and response.text == ""
    assert r.hkeys(indexed) == []  # an empty query does nothing
    page = alice.client.get("/")
    [warm] = parse_fragment(page.text).xpath(
        '//form[@role="search"]//*[contains(@hx-trigger, "focus")]/@hx-get'
    )
    response = alice.client.get(str(warm), headers=HTMX)  # what focusing the box asks
    assert response.status_code == 200 and response.text == ""
    assert r.hkeys(indexed) == [chat_id]


def test_without_scripts_a_search_is_a_page(alice: Person) -> None:
    chat_id = chat_with(alice, "Pages for people without scripts")
    page = alice.client.get("/search", query_string={"q": "scripts"})
    assert page.status_code == 200 and "<!doctype html>" in page.text
    assert f'href="/chats/{chat_id}"' in page.text
    assert alice.client.get("/search?q=x", headers={"Cookie": ""}).status_code in (200, 302)


def test_a_deleted_account_leaves_no_index(r: redis.Redis, app: Flask) -> None:
    carol = Person(app, name="carol")
    chat_with(carol, "Words to be forgotten")
    assert found(carol, "forgotten")
    user = users.get_user(r, r.hget(users.NAMES_KEY, "carol"))  # type: ignore[arg-type]
    assert user is not None
    with app.app_context():
        users.delete_user(r, user, store.Timing())
    assert list(r.scan_iter(search.keys_pattern())) == []


def test_the_running_app_finds_chats_on_each_redis(stack_on_each_redis: Stack) -> None:
    """Through gunicorn, on one Redis and on a Cluster (where a user's index is on one
    slot and their chats on many)."""
    person = ChatClient(stack_on_each_redis.base)
    chats = [person.new_chat() for _ in range(3)]
    for number, chat_id in enumerate(chats):
        answer_id = person.send_ok(chat_id, f"Walrus number {number} of {len(chats)}")
        person.page_shows_ended(chat_id, answer_id)
    person.page_shows_ended(chats[1], person.send_ok(chats[1], "and now about otters"))
    response = person.http.get("/search", params={"q": "walrus"}, headers=HTMX)
    links = parse_fragment(response.text).xpath("//ul/li/a/@href")
    assert [str(link).rsplit("/", 1)[-1] for link in links] == [chats[1], chats[2], chats[0]]
    response = person.http.get("/search", params={"q": "walrus 1 ott"}, headers=HTMX)
    assert parse_fragment(response.text).xpath("//ul/li/a/@href") == [f"/chats/{chats[1]}"]


LOOKS = {  # name: new_context options
    "desktop": {"viewport": {"width": 1280, "height": 860}},
    "phone": {"viewport": {"width": 390, "height": 844}, "is_mobile": True},
    "dark": {"viewport": {"width": 1280, "height": 860}, "color_scheme": "dark"},
}
COLOURS = """el => { const s = getComputedStyle(el);
  return [s.color, s.backgroundColor, getComputedStyle(el.closest('nav')).backgroundColor]; }"""


@pytest.mark.parametrize("look", LOOKS)
def test_searching_in_the_sidebar_as_one_types(browser: Browser, stack: Stack, look: str) -> None:
    context = browser.new_context(**LOOKS[look])  # type: ignore[arg-type]
    page = context.new_page()
    page.set_default_timeout(30_000)
    sign_up_in_browser(page, stack.base)
    chat_url = start_a_chat(page, "Tell me about narwhals")
    page.get_by_role("link", name="New chat").click()
    page.wait_for_url(re.compile(r"/chats/new$"))  # loaded: its scripts are running
    box = page.get_by_role("searchbox", name="Search your chats")
    with page.expect_request(lambda request: "warm=1" in request.url):  # indexes ahead
        page.keyboard.press("Control+k")  # as in ChatGPT
    expect(box).to_be_focused()
    box.press_sequentially("narw", delay=50)
    results = page.get_by_role("list", name="Chats that match")
    expect(results.get_by_role("link")).to_have_count(1)
    expect(results.locator("mark").first).to_have_text("narwhals")
    expect(results.get_by_role("link")).to_be_in_viewport()
    expect(page.locator("#chat-list")).to_be_hidden()  # the results stand in for it
    text, mark, panel = results.locator("mark").first.evaluate(COLOURS)
    assert contrast(text, mark) >= 4.5 and contrast(text, panel) >= 4.5, (text, mark, panel)
    box.fill("")
    expect(results).to_have_count(0)
    expect(page.locator("#chat-list")).to_be_visible()
    box.fill("narwhals")
    results.get_by_role("link").click()
    page.wait_for_url(re.compile(re.escape(chat_url) + "$"))
    context.close()


def contrast(one: str, other: str) -> float:
    """WCAG's contrast ratio of two CSS colours as Chromium computes them (rgb(...))."""
    lighter, darker = sorted((luminance(one), luminance(other)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


def luminance(colour: str) -> float:
    channels = [int(c) / 255 for c in re.findall(r"\d+", colour)[:3]]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
