"""The chat stream in-process on a real Redis: the unlucky moments a whole stack rarely hits."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import redis

from chatapp import store
from chatapp.chat_list_stream import shared_render
from chatapp.chat_stream import FollowChat, Pages, follow_chat
from chatapp.contract import ChatListChanged
from chatapp.follow import StreamSettings
from chatapp.frames import ChatCursor, Cursor, parse_chat_cursor, parse_cursor
from chatapp.hub import Hub
from chatapp.subscription import DRAIN, Subscription
from harness.client import parse_events
from harness.servers import wait_until

PAGES = Pages(
    article=lambda message, body, oob, kept=False: f"<article id={message.id}>",
    chat_list=lambda: "<ul id=chat-list>",
    deleted=lambda: "deleted",
    signed_out=lambda: "signed out",
)


def a_chat_with_a_message(r: redis.Redis) -> store.Chat:
    chat = store.create_chat(r, store.new_id(), now=1)
    store.send_message(r, chat.id, "client-0001", "hi", "<p>hi</p>", "m", 2)
    return store.get_chat(r, chat.id)  # type: ignore[return-value]


def follow(r: redis.Redis, hub: Hub, chat: store.Chat, cursor: ChatCursor | None) -> bytes:
    request = FollowChat(
        chat.id, chat.owner, cursor, StreamSettings(check_seconds=60, max_seconds=5)
    )
    return b"".join(follow_chat(r, hub, request, PAGES))


def test_a_chat_deleted_behind_a_gap_still_says_gone(r: redis.Redis, hub: Hub) -> None:
    chat = a_chat_with_a_message(r)
    count = store.chat_event_count(r, chat.id)
    out: list[bytes] = []
    follower = threading.Thread(target=lambda: out.append(follow(r, hub, chat, ChatCursor(count))))
    follower.start()
    wait_until(lambda: r.pubsub_numsub(store.channel(chat.id))[0][1] > 0, what="the stream")
    # The chat goes, and the one message saying so arrives after a gap (a missed publish).
    r.delete(store.chat_key(chat.id), store.events_key(chat.id))
    gap = {"c": count + 5, "e": [{"t": "chat_deleted"}]}
    r.publish(store.channel(chat.id), json.dumps(gap))
    follower.join(timeout=10)
    events = parse_events(out[0].decode())
    assert [e.event for e in events][-1] == "gone" and events[-1].data == "deleted"


def test_a_chat_deleted_as_its_stream_starts_says_gone(r: redis.Redis, hub: Hub) -> None:
    chat = a_chat_with_a_message(r)
    store.delete_chat(r, chat)
    events = parse_events(follow(r, hub, chat, ChatCursor(1)).decode())
    assert [e.event for e in events] == ["gone"]


def test_a_stopping_process_is_heard_even_by_a_stream_that_fell_behind() -> None:
    subscription = Subscription(("a channel",), size=1)
    subscription.deliver({"c": 1, "e": []})
    subscription.deliver(DRAIN)  # the inbox is full: it overflows
    assert subscription.get(timeout=0) == DRAIN
    assert subscription.get(timeout=0) == DRAIN


def test_a_cursor_is_exactly_one_the_server_sent() -> None:
    """Both streams' cursors: ASCII digits, nothing around them; anything else is unknown
    (and the stream starts over with a snapshot), never read as a nearby position."""
    generation = "0123456789abcdef"
    assert parse_chat_cursor(f"c2.{generation}:5") == ChatCursor(2, Cursor(generation, 5))
    assert parse_cursor(f"{generation}:5") == Cursor(generation, 5)
    for look_alike in ("\u0662", "\uff12", "2 ", " 2", "+2", "2\n", "\t2", "2\x00"):
        assert parse_chat_cursor(f"c{look_alike}") is None, repr(look_alike)
        assert parse_chat_cursor(f"c1.{generation}:{look_alike}") is None, repr(look_alike)
        assert parse_cursor(f"{generation}:{look_alike}") is None, repr(look_alike)


def test_a_nudge_reads_and_renders_the_chat_list_once_per_page_however_many_tabs_ask() -> None:
    """The tabs that handle a nudge while the first still reads the list wait for its
    markup instead of each reading and rendering the list too."""
    nudge = ChatListChanged()
    renders: list[str] = []

    def render(page: str) -> str:
        renders.append(page)
        time.sleep(0.05)  # reading Redis: other tabs get their turn meanwhile
        return f"<ul>{page}</ul>"

    with ThreadPoolExecutor(50) as tabs:
        pages = [f"chat{n % 2}" for n in range(100)]
        shown = list(tabs.map(lambda page: shared_render(nudge, page, lambda: render(page)), pages))

    assert shown == [f"<ul>{page}</ul>" for page in pages]
    assert sorted(renders) == ["chat0", "chat1"]
