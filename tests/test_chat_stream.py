"""The chat page's one stream, on the real stack: a message sent on one device appears on
every other with its answer live; a reconnect resumes both cursors; strangers get `gone`."""

from __future__ import annotations

import json
import re
import socket
import threading

import httpx
import pytest

from chatapp import store
from chatapp.frames import parse_chat_cursor
from chatapp.providers import tokenize
from harness.client import ChatClient, Event, parse_events
from harness.page import Page, normalized, showing
from harness.servers import Stack, wait_until

# An `end` that keeps the blocks a page built from the answer's log (htmx's hx-preserve).
KEPT_BLOCKS = '<div class="blocks" id="blocks-{}" hx-disable hx-preserve="true"></div>'


def ended(events: list[Event]) -> bool:
    return any(e.event == "end" for e in events)


def assert_ids_advance(events: list[Event]) -> None:
    """Every event (but `gone`) carries the cursor; chat positions never go back."""
    seen = [parse_chat_cursor(e.id).events for e in events]  # type: ignore[union-attr]
    assert seen == sorted(seen)


@pytest.fixture(scope="module")
def stack(stack_on_each_redis: Stack) -> Stack:
    """These run on one Redis and on a Redis Cluster."""
    return stack_on_each_redis


def test_a_message_sent_on_one_device_streams_live_on_another(stack: Stack) -> None:
    laptop = ChatClient(stack.base)
    phone = laptop.another_device()
    chat_id = laptop.new_chat()
    first = phone.live(chat_id, until=lambda events: len(events) >= 1)
    assert [e.event for e in first] == ["snapshot"] and first[0].id == "c0"

    answer_id = laptop.send_ok(chat_id, "Hello from the laptop")
    events = phone.live(chat_id, until=ended, last_event_id=first[0].id)
    kinds = [e.event for e in events]
    assert kinds[:3] == ["title", "message", "message"] and kinds[-1] == "end"
    assert set(kinds[3:-1]) <= {"delta"} and kinds.count("delta") >= 2
    assert ">Hello from the laptop</h1>" in events[0].data  # its first message titles it
    events = events[1:]
    assert "Hello from the laptop" in events[0].data
    assert f'id="answer-{answer_id}"' in events[1].data
    assert Page().apply(first + events[:2]).status(answer_id) in ("queued", "streaming")
    assert_ids_advance(events)

    stored = store.get_message(stack.redis(), chat_id, answer_id)
    assert stored is not None and stored.status == "done"
    page = Page().apply(first + events)
    assert page.message_ids() == [m.id for m in store.get_messages(stack.redis(), chat_id)]
    assert page.status(answer_id) == "done" and page.shows(answer_id, stored.html)


def test_a_reconnect_resumes_both_cursors_without_doubling(stack: Stack) -> None:
    device = ChatClient(stack.base)
    chat_id = device.new_chat()
    start = device.live(chat_id, until=lambda events: len(events) >= 1)
    answer_id = device.send_ok(chat_id, "Tell me a long story")
    seen = list(start)
    cuts = 0
    while not ended(seen):
        more = device.live(
            chat_id,
            until=lambda events: ended(events) or sum(e.event == "delta" for e in events) >= 3,
            last_event_id=seen[-1].id,
        )
        seen += more
        cuts += 1
    assert cuts >= 2  # it really was cut mid-answer
    assert_ids_advance(seen)
    deltas = [e.id for e in seen if e.event == "delta"]
    assert len(deltas) == len(set(deltas))  # no entry twice
    stored = store.get_message(stack.redis(), chat_id, answer_id)
    assert stored is not None and Page().apply(seen).shows(answer_id, stored.html)
    # What the page built from deltas before `end`: the log's blocks, each once.
    built = Page().apply([e for e in seen if e.event != "end"])
    logged = "".join(
        json.loads(raw).get("blocks", "")
        for raw in store.read_log(stack.redis(), chat_id, stored.gen)
    )
    assert built.shows(answer_id, logged)


def ended_or_quiet(events: list[Event]) -> bool:
    """The page got its `end`, or heard a keep-alive instead (nothing more is coming)."""
    return any(e.event in ("end", "ping") for e in events)


def an_answer_followed_to_its_end(
    stack: Stack,
) -> tuple[ChatClient, str, str, list[Event], store.Message]:
    """A new chat's answer, followed on the chat page's stream from the chat's start to the
    answer's end: the device, the chat, the answer, the events read, the stored answer."""
    device = ChatClient(stack.base)
    chat_id = device.new_chat()
    answer_id = device.send_ok(chat_id, "Tell me a long story")
    live = device.live(chat_id, until=ended, after="c0")
    stored = store.get_message(stack.redis(), chat_id, answer_id)
    assert stored is not None and stored.status == "done"
    return device, chat_id, answer_id, live, stored


def test_a_page_cut_anywhere_in_a_finished_answer_resumes_to_its_end(stack: Stack) -> None:
    """Cut after any event of a resume into an answer that has since finished, and resumed
    with that event's id: the page gets the rest and the `end`, never stays "Writing..."."""
    device, chat_id, answer_id, live, _ = an_answer_followed_to_its_end(stack)
    deltas = [e.id for e in live if e.event == "delta"]  # cursors taken while it ran
    assert len(deltas) >= 6
    for first in deltas[-6:-1]:  # late in the answer: its end comes with the next events
        resumed = device.live(chat_id, until=ended_or_quiet, last_event_id=first, skip=("chats",))
        assert ended(resumed), first
        for cut in [e.id for e in resumed if e.event == "delta"]:
            again = device.live(chat_id, until=ended_or_quiet, last_event_id=cut, skip=("chats",))
            assert ended(again), f"resumed from {first}, cut after {cut}: no end"
            end = next(e for e in again if e.event == "end")
            assert f'id="answer-{answer_id}"' in end.data and 'data-status="done"' in end.data
            assert KEPT_BLOCKS.format(answer_id) in end.data  # the page followed the log


def test_a_page_reads_an_answer_in_linear_bytes_and_its_html_once(stack: Stack) -> None:
    """What a page following an answer reads of it: the answer's final HTML once (its
    `end` keeps the blocks the page built), and at most 100 bytes more per token, whatever
    the answer's shapes (the offline model writes a few short blocks of each kind)."""
    _, _, answer_id, live, stored = an_answer_followed_to_its_end(stack)
    answer_events = [e for e in live if e.event in ("delta", "end")]
    read = sum(len(wire_bytes(e)) for e in answer_events)
    tokens = len(tokenize(stored.text))  # as the offline model streamed them
    assert read <= len(stored.html.encode()) + 100 * tokens, (read, tokens)
    assert KEPT_BLOCKS.format(answer_id) in answer_events[-1].data
    assert Page().apply(live).shows(answer_id, stored.html)


def wire_bytes(event: Event) -> bytes:
    """The event as the server sent it (what a page reads of it)."""
    lines = [f"id: {event.id}", f"event: {event.event}"]
    lines += [f"data: {line}" for line in event.data.split("\n")]
    return ("\n".join(lines) + "\n\n").encode()


def test_a_page_cut_after_any_event_resumes_to_the_same_page(stack: Stack) -> None:
    """For every event of a chat's stream (its messages, each delta, the end), a page cut
    off right after it and resumed with its id ends up showing what the stored chat holds,
    with no message or block twice."""
    device = ChatClient(stack.base)
    chat_id = device.new_chat()
    start = device.live(chat_id, until=lambda events: len(events) >= 1)
    answer_id = device.send_ok(chat_id, "Tell me a story")
    live = start + device.live(chat_id, until=ended, last_event_id=start[0].id)
    stored = store.get_messages(stack.redis(), chat_id)
    assert len(live) >= 6
    for cut in range(len(live) - 1):
        before = live[: cut + 1]
        shows_it_finished = showing(answer_id, "done")
        rest = device.live(chat_id, until=shows_it_finished, last_event_id=live[cut].id)
        page = Page().apply(before + rest)  # asserts nothing was added twice
        assert page.status(answer_id) == "done", f"cut after {live[cut].id}: never finished"
        assert page.message_ids() == [message.id for message in stored], live[cut].id
        for message in stored:
            assert page.shows(message.id, message.html), live[cut].id


def test_a_client_that_strips_every_leading_space_gets_the_same_page(stack: Stack) -> None:
    """Indented code reaches a page whose SSE client strips every space that starts a
    data line (the offline answer's program has an indented line), in its deltas and its
    end: a browser reads the references the server sends in their place as blanks."""
    device = ChatClient(stack.base)
    chat_id = device.new_chat()
    answer_id = device.send_ok(chat_id, "Indent this")
    events = device.live(chat_id, until=ended, after="c0", strip_every_space=True)
    stored = store.get_message(stack.redis(), chat_id, answer_id)
    assert stored is not None and "\n    print(" in stored.text
    code = re.search(r"<pre>.*?</pre>", stored.html, re.S)
    assert code is not None
    built = Page().apply([e for e in events if e.event != "end"]).body(answer_id)
    assert normalized(code[0]) in built  # from its deltas
    assert Page().apply(events).shows(answer_id, stored.html)  # from its end


class OpenStream(threading.Thread):
    """A page's stream held open in the background, read until the server closes it."""

    def __init__(self, client: ChatClient, url: str) -> None:
        super().__init__(daemon=True)
        self.client, self.url = client, url
        self.opened, self.raw = threading.Event(), ""

    def run(self) -> None:
        with self.client.http.stream("GET", self.url, timeout=60) as response:
            for chunk in response.iter_text():
                self.raw += chunk
                self.opened.set()  # its first bytes come once it is subscribed


def test_pages_of_a_session_that_ends_elsewhere_are_told_and_stop(stack: Stack) -> None:
    """ "Log out everywhere else" on one device: the other device's open pages (a chat's,
    the front page's) say it is logged out, and their streams end."""
    laptop = ChatClient(stack.base)
    phone = laptop.another_device()
    chat_id = laptop.new_chat()
    pages = [OpenStream(phone, f"/chats/{chat_id}/live"), OpenStream(phone, "/live")]
    for page in pages:
        page.start()
        assert page.opened.wait(timeout=30)
    ended = laptop.http.post("/account/sessions", data={"csrf_token": laptop.token})
    assert ended.status_code == 303
    for page in pages:
        page.join(timeout=60)
        assert not page.is_alive(), page.url  # the server closed it
        gone = [e for e in parse_events(page.raw) if e.event == "gone"]
        assert len(gone) == 1 and "logged out" in gone[0].data, page.url
    assert phone.http.get("/").status_code == 302  # to the login page


def test_a_page_with_no_usable_cursor_gets_the_whole_chat(stack: Stack) -> None:
    device = ChatClient(stack.base)
    chat_id = device.new_chat()
    answer_id = device.send_ok(chat_id, "First question")
    device.live(chat_id, until=ended, after="c0")  # wait for the answer to finish
    for cursor in (None, "c999", "nonsense", "c1.0123456789ab:5"):
        events = device.live(chat_id, until=lambda e: len(e) >= 1, last_event_id=cursor)
        assert events[0].event == "snapshot", cursor
        page = Page().apply(events[:1])
        assert len(page.message_ids()) == 2 and page.status(answer_id) == "done"
        assert events[0].id == "c4"  # titled, message added, answer started, answer ended
    # Look-alikes of a usable cursor: other scripts' digits, spaces. Unknown, not "c2".
    for cursor in ("c\u0662", "c\uff12", "c2 ", " c2", "c+2", "c2\n"):
        events = device.live(chat_id, until=lambda e: len(e) >= 1, after=cursor)
        assert events[0].event == "snapshot", repr(cursor)
    # A cursor into the chat's events, naming an answer that is not running: the events
    # after it, and the answer as it is now.
    events = device.live(chat_id, until=lambda e: len(e) >= 1, after="c2.0123456789abcdef:5")
    assert [e.event for e in events] == ["message"]
    assert f'id="answer-{answer_id}"' in events[0].data and 'data-status="done"' in events[0].data


def test_a_running_answer_joined_late_arrives_whole_then_live(stack: Stack) -> None:
    device = ChatClient(stack.base)
    chat_id = device.new_chat()
    answer_id = device.send_ok(chat_id, "Join me late")
    device.live(chat_id, until=lambda e: sum(x.event == "delta" for x in e) >= 3, after="c0")
    late = device.another_device().live(chat_id, until=ended)
    assert late[0].event == "snapshot" and parse_chat_cursor(late[0].id).answer  # type: ignore[union-attr]
    assert late[-1].event == "end"
    stored = store.get_message(stack.redis(), chat_id, answer_id)
    assert stored is not None and Page().apply(late).shows(answer_id, stored.html)


def test_someone_elses_chat_or_a_logged_out_page_gets_gone(stack: Stack) -> None:
    owner, stranger = ChatClient(stack.base), ChatClient(stack.base)
    chat_id = owner.new_chat()
    for client in (stranger, owner):
        url = f"/chats/{chat_id if client is stranger else '0123456789abcdef'}/live"
        response = client.http.get(url)
        assert response.status_code == 200
        assert response.text.startswith("event: gone\n") and "not available" in response.text
    logged_out = ChatClient(stack.base)
    logged_out.http.cookies.clear()
    assert logged_out.http.get(f"/chats/{chat_id}/live").text.startswith("event: gone\n")


def test_the_chat_list_follows_on_the_same_stream(stack: Stack) -> None:
    laptop = ChatClient(stack.base)
    phone = laptop.another_device()
    chat_id = laptop.new_chat()

    def lists(events: list[Event]) -> list[str]:
        return [e.data for e in events if e.event == "chats"]

    first = phone.live(chat_id, until=lambda e: len(lists(e)) >= 1, skip=("ping",))
    (now,) = lists(first)
    assert now.startswith('<ul id="chat-list" class="chat-list" hx-swap-oob="true">')
    assert f'<li aria-current="page">\n    <a href="/chats/{chat_id}">New chat</a>' in now

    # While the phone follows, the laptop makes a chat and a message titles it: the
    # phone's list follows each step.
    seen: list[str] = []
    following = threading.Event()
    so_far: list[str] = []  # the lists the phone has got, as they come

    def done(events: list[Event]) -> bool:
        so_far[:] = lists(events)
        if so_far:
            following.set()  # the phone's stream is up: it sends the list first
        return any("A title from the laptop" in x and "running" not in x for x in so_far)

    def follow() -> None:
        events = phone.live(chat_id, until=done, last_event_id=first[-1].id, skip=("ping",))
        seen.extend(lists(events))

    follower = threading.Thread(target=follow)
    follower.start()
    assert following.wait(timeout=30)
    other = laptop.new_chat()
    # Each step shows before the next (a list is read when the nudge comes, so a step the
    # laptop took meanwhile would show in its place).
    wait_until(lambda: any(other in x for x in so_far), what="the phone to list the chat")
    laptop.send_ok(other, "A title from the laptop")
    follower.join(timeout=30)
    assert any(f'href="/chats/{other}">New chat</a>' in x for x in seen)  # created
    assert any("A title from the laptop" in x and 'class="running"' in x for x in seen)  # answering
    final = seen[-1]
    assert final.index(f'/chats/{other}"') < final.index(f'/chats/{chat_id}"')  # most recent first

    # The front page's stream: the same list for the owner, only their own for another user.
    assert chat_id in first_list_event(laptop) and other in first_list_event(laptop)
    stranger = first_list_event(ChatClient(stack.base))
    assert "No chats yet." in stranger and chat_id not in stranger
    logged_out = ChatClient(stack.base)
    logged_out.http.cookies.clear()
    gone = logged_out.http.get("/live")  # answered at once: the page stops reconnecting
    assert gone.status_code == 200 and gone.text.startswith("event: gone\n")
    assert 'hx-swap-oob="innerHTML:#front"' in gone.text and "You are logged out." in gone.text


def first_list_event(client: ChatClient) -> str:
    with client.http.stream("GET", "/live", timeout=30) as response:
        assert response.status_code == 200
        raw = ""
        for chunk in response.iter_text():
            raw += chunk
            lists = [e.data for e in parse_events(raw) if e.event == "chats"]
            if lists:
                return lists[0]
    raise AssertionError("no chat list on the front page's stream")


def test_renaming_regenerating_and_deleting_reach_every_page(stack: Stack) -> None:
    laptop = ChatClient(stack.base)
    phone = laptop.another_device()
    chat_id = laptop.new_chat()
    answer_id = laptop.send_ok(chat_id, "Something to regenerate")
    done = phone.live(chat_id, until=ended, after="c0")
    headers = {"X-CSRFToken": laptop.token, "HX-Request": "true"}

    renamed = laptop.http.post(
        f"/chats/{chat_id}/title", data={"title": " A <b>new</b>  name "}, headers=headers
    )
    assert renamed.status_code == 204
    titled = phone.live(
        chat_id, until=lambda e: any(x.event == "title" for x in e), last_event_id=done[-1].id
    )
    assert (
        titled[-1].data
        == '<h1 id="chat-title" hx-swap-oob="true">A &lt;b&gt;new&lt;/b&gt; name</h1>'
    )
    assert store.get_chat(stack.redis(), chat_id).title == "A <b>new</b> name"  # type: ignore[union-attr]

    first = store.get_message(stack.redis(), chat_id, answer_id)
    again = laptop.http.post(f"/chats/{chat_id}/messages/{answer_id}/regenerate", headers=headers)
    assert again.status_code == 204
    rewritten = phone.live(chat_id, until=ended, last_event_id=titled[-1].id)
    assert rewritten[0].event == "snapshot"  # a new version: the page shows the chat anew
    assert rewritten[-1].event == "end"
    question, second = store.get_messages(stack.redis(), chat_id)
    assert (
        first is not None and second.id != answer_id and second.versions == (answer_id, second.id)
    )
    page = Page().apply(done + rewritten)
    assert page.message_ids() == [question.id, second.id]
    assert second.status == "done" and page.shows(second.id, second.html)

    deleted = laptop.http.post(f"/chats/{chat_id}/delete", headers=headers)
    assert deleted.status_code == 204 and deleted.headers["HX-Redirect"] == "/"
    gone = phone.live(
        chat_id, until=lambda e: any(x.event == "gone" for x in e), last_event_id=rewritten[-1].id
    )
    assert "This chat was deleted." in gone[-1].data or "not available" in gone[-1].data
    assert laptop.http.get(f"/chats/{chat_id}").status_code == 404
    left = list(stack.redis().scan_iter(f"chatapp:v1:{{{chat_id}}}:*"))  # every node
    # Only what expires by itself: answer logs and client message claims.
    assert left and all(k.endswith(":log") or ":claim:" in k for k in left), left
    assert all(stack.redis().ttl(k) > 0 for k in left)


def test_deleting_a_chat_stops_its_answer_and_tells_a_page_following_it(stack: Stack) -> None:
    device = ChatClient(stack.base)
    chat_id = device.new_chat()
    answer_id = device.send_ok(chat_id, "Delete me while I write")
    seen: list[Event] = []

    def follow() -> None:
        seen.extend(
            device.live(chat_id, until=lambda e: any(x.event == "gone" for x in e), after="c0")
        )

    follower = threading.Thread(target=follow)
    follower.start()
    device.live(chat_id, until=lambda e: any(x.event == "delta" for x in e), after="c0")
    headers = {"X-CSRFToken": device.token}
    assert device.http.post(f"/chats/{chat_id}/delete", headers=headers).status_code == 303
    follower.join(timeout=30)
    assert seen[-1].event == "gone" and "This chat was deleted." in seen[-1].data
    assert store.get_message(stack.redis(), chat_id, answer_id) is None


def test_a_page_that_stops_reading_mid_answer_gets_every_word_once_in_order(
    stack: Stack,
) -> None:
    # The hub writes an answer's words to a waiting stream's socket itself (the express
    # lane, chatapp/express.py), here while the tab reads nothing (a frozen tab, a phone's
    # tiny window); then it reads again and gets it all, once. (The kernel holds about
    # 2 MB here: a socket taking only part of a write is tests/test_express.py's.)
    device = ChatClient(stack.base)
    chat_id = device.new_chat()
    answer_id = device.send_ok(chat_id, "Write while I do not read")
    small = httpx.HTTPTransport(socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)])
    tab = httpx.Client(base_url=stack.base, transport=small, cookies=device.http.cookies)
    r = stack.redis()
    raw = b""
    with tab, tab.stream("GET", f"/chats/{chat_id}/live", timeout=60) as response:
        assert response.status_code == 200  # HTTP/1.1: in chunks, as gunicorn frames them
        chunks = response.iter_bytes()
        raw += next(chunks)  # the stream began; now nothing is read while it is written
        wait_until(lambda: store.get_message(r, chat_id, answer_id).running is False)  # type: ignore[union-attr]
        for chunk in chunks:
            raw += chunk
            so_far = parse_events(raw.decode(errors="ignore"))  # a character may be cut
            if Page().apply(so_far).shows_ended(answer_id):
                break
    stored = store.get_message(r, chat_id, answer_id)
    assert stored is not None and stored.status == "done"
    events = [e for e in parse_events(raw.decode()) if e.event not in ("ping", "chats")]
    assert Page().apply(events).shows(answer_id, stored.html)
    assert_ids_advance(events)
