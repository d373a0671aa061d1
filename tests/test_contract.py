"""The message contract (chatapp/contract.py) against what the Lua scripts really write.

Every script that publishes runs here on a real Redis; what it published and what it
logged decode to the typed values the streams act on, and the published copy of each
entry or event is the one in the log.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from chatapp import contract, store
from chatapp.contract import (
    ANSWER_ENDED,
    ANSWER_STARTED,
    CHAT_DELETED,
    DELTA,
    MESSAGE_ADDED,
    PATH_CHANGED,
    TITLE_CHANGED,
    AnswerEntries,
    ChatEvent,
    ChatEvents,
    ChatListChanged,
    Entry,
    Published,
)
from harness.servers import wait_until
from tests.storing import delta

OWNER = "0" * 16


class Listening:
    """What a channel carries, decoded by the contract."""

    def __init__(self, r: redis.Redis, channel: str) -> None:
        self.pubsub = r.pubsub()
        self.pubsub.subscribe(channel)

        def confirmed() -> bool:
            message = self.pubsub.get_message(timeout=0.1)
            return message is not None and message["type"] == "subscribe"

        wait_until(confirmed, what="the subscription")

    def next(self) -> Published:
        """The next message published, decoded."""
        while True:
            message = self.pubsub.get_message(timeout=5)
            assert message is not None, "nothing was published"
            if message["type"] == "message":
                decoded = contract.decode(message["data"])
                assert decoded is not None, message["data"]
                return decoded

    def next_entries(self) -> list[Entry]:
        """The entries of the next message, which must be an answer's."""
        published = self.next()
        assert isinstance(published, AnswerEntries), published
        return published.entries

    def next_events(self) -> ChatEvents:
        """The next message, which must be a chat's events."""
        published = self.next()
        assert isinstance(published, ChatEvents), published
        return published


@pytest.fixture
def chat(r: redis.Redis) -> Iterator[tuple[str, Listening]]:
    """A new chat, and what its channel carries."""
    chat = store.create_chat(r, OWNER, time.time())
    listening = Listening(r, store.channel(chat.id))
    yield chat.id, listening
    listening.pubsub.close()


def send_hi(r: redis.Redis, chat_id: str, listening: Listening) -> store.SendResult:
    """Send "hi" in the chat; its chat events heard and set aside."""
    sent = store.send_message(r, chat_id, store.new_id(), "hi", "<p>hi</p>", "m", 1)
    listening.next_events()
    return sent


def events_logged(r: redis.Redis, chat_id: str, published: ChatEvents) -> list[ChatEvent]:
    """The events the chat's log holds at the published positions."""
    return store.chat_events(r, chat_id, after=published.first - 1)[: len(published.events)]


def test_send_publishes_the_chat_events_it_logs(
    r: redis.Redis, chat: tuple[str, Listening]
) -> None:
    chat_id, listening = chat
    sent = store.send_message(r, chat_id, "client-1", "Hello there", "<p>Hello there</p>", "m", 1)
    published = listening.next()
    assert published == ChatEvents(
        1,
        [
            ChatEvent(TITLE_CHANGED, title="Hello there"),
            ChatEvent(MESSAGE_ADDED, sent.user_id),
            ChatEvent(ANSWER_STARTED, sent.answer_id, sent.generation_id),
        ],
    )
    assert events_logged(r, chat_id, published) == published.events


def test_append_publishes_its_entries_and_the_end_of_the_answer(
    r: redis.Redis, chat: tuple[str, Listening]
) -> None:
    chat_id, listening = chat
    sent = send_hi(r, chat_id, listening)
    before = time.time() * 1000
    more = contract.delta_entry("b", "", more="b", think="hmm")
    store.append(r, chat_id, sent.answer_id, sent.generation_id, [delta("a"), more], 0)
    published = listening.next()
    assert isinstance(published, AnswerEntries)
    assert (published.message_id, published.generation_id, published.first) == (
        sent.answer_id,
        sent.generation_id,
        1,
    )
    assert before - 5000 <= published.appended_ms <= time.time() * 1000 + 5000  # Redis's clock
    assert [(e.kind, e.blocks, e.tail, e.more, e.think) for e in published.entries] == [
        (DELTA, "<p>a</p>\n", "", "", ""),
        (DELTA, "", None, "b", "hmm"),
    ]
    done = store.Terminal(contract.DONE, text="ab", html="<p>ab</p>")
    store.append(r, chat_id, sent.answer_id, sent.generation_id, [], 2, done)
    [terminal] = listening.next_entries()
    assert terminal.terminal and (terminal.kind, terminal.html, terminal.model) == (
        "done",
        "<p>ab</p>",
        "m",
    )
    ended = listening.next_events()
    assert ended == ChatEvents(
        4, [ChatEvent(ANSWER_ENDED, sent.answer_id, sent.generation_id, status="done")]
    )
    assert events_logged(r, chat_id, ended) == ended.events
    logged = contract.entries(store.read_log(r, chat_id, sent.generation_id))
    published_entries = [*published.entries, terminal]
    assert [vars_of(e) for e in logged] == [vars_of(e) for e in published_entries]


def test_an_error_ends_with_its_message_for_the_reader(
    r: redis.Redis, chat: tuple[str, Listening]
) -> None:
    chat_id, listening = chat
    sent = send_hi(r, chat_id, listening)
    failed = store.Terminal(contract.ERROR, message="The model server is away.")
    store.append(r, chat_id, sent.answer_id, sent.generation_id, [], 0, failed)
    [terminal] = listening.next_entries()
    assert (terminal.kind, terminal.error, terminal.terminal) == (
        "error",
        "The model server is away.",
        True,
    )


def test_a_rename_regenerate_and_delete_publish_their_events(
    r: redis.Redis, chat: tuple[str, Listening]
) -> None:
    chat_id, listening = chat
    sent = send_hi(r, chat_id, listening)
    done = store.Terminal(contract.DONE)
    store.append(r, chat_id, sent.answer_id, sent.generation_id, [], 0, done)
    listening.next_entries(), listening.next_events()  # the terminal entry, answer_ended

    assert store.rename_chat(r, chat_id, "Renamed")  # chat_event.lua
    renamed = listening.next_events()
    assert renamed == ChatEvents(5, [ChatEvent(TITLE_CHANGED, title="Renamed")])
    assert events_logged(r, chat_id, renamed) == renamed.events

    again = store.regenerate(r, chat_id, sent.answer_id, "m", time.time(), 60_000)  # regenerate.lua
    assert again.status == "ok"
    regenerated = listening.next_events()  # a new version of the answer
    expected = [
        ChatEvent(PATH_CHANGED),
        ChatEvent(ANSWER_STARTED, again.answer_id, again.generation_id),
    ]
    assert again.answer_id != sent.answer_id
    assert regenerated == ChatEvents(6, expected)
    assert events_logged(r, chat_id, regenerated) == expected

    chat_now = store.get_chat(r, chat_id)
    assert chat_now is not None
    store.delete_chat(r, chat_now)  # delete_chat.lua, after stopping the running answer
    heard = [listening.next() for _ in range(3)]
    assert isinstance(heard[0], AnswerEntries) and heard[0].entries[0].kind == "stopped"
    assert heard[1] == ChatEvents(
        8, [ChatEvent(ANSWER_ENDED, again.answer_id, again.generation_id, status="stopped")]
    )
    assert heard[2] == ChatEvents(9, [ChatEvent(CHAT_DELETED)])


def test_a_nudge_names_the_sessions_that_ended(r: redis.Redis) -> None:
    listening = Listening(r, store.user_channel(OWNER))
    store.nudge(r, OWNER)
    assert listening.next() == ChatListChanged()
    store.nudge(r, OWNER, signed_out=["session-1", "session-2"])
    assert listening.next() == ChatListChanged(("session-1", "session-2"))


@pytest.mark.parametrize(
    "raw",
    [b"not json", b"[]", b'{"c": "x", "e": []}', b'{"m": "a"}', b'{"c": 1, "e": [{}]}', b"1"],
)
def test_a_message_outside_the_contract_decodes_to_nothing(raw: bytes) -> None:
    assert contract.decode(raw) is None


def vars_of(entry: Entry) -> tuple[object, ...]:
    return (
        entry.kind,
        entry.blocks,
        entry.tail,
        entry.more,
        entry.think,
        entry.html,
        entry.whole,
    )


def test_the_end_says_whether_the_logs_blocks_are_the_answers_html(
    r: redis.Redis, chat: tuple[str, Listening]
) -> None:
    """A page that followed the log holds the blocks already: its `end` need not carry them
    again, when they are the final HTML (the producer says; a stop's html is the log's)."""
    chat_id, _listening = chat

    def ended(entries: list[dict[str, str]], terminal: store.Terminal) -> tuple[bool, str]:
        sent = store.send_message(r, chat_id, store.new_id(), "hi", "<p>hi</p>", "m", 1)
        store.append(r, chat_id, sent.answer_id, sent.generation_id, entries, 0, terminal)
        [logged] = contract.entries(store.read_log(r, chat_id, sent.generation_id))[-1:]
        return logged.whole, logged.html

    blocks = [delta("a"), delta("b")]
    done = store.Terminal("done", text="ab", html="<p>a</p>\n<p>b</p>\n", whole=True)
    assert ended(blocks, done) == (True, "<p>a</p>\n<p>b</p>\n")
    assert ended(blocks, store.Terminal("done", text="ab", html="<ol>ab</ol>")) == (
        False,
        "<ol>ab</ol>",
    )
    assert ended(blocks, store.Terminal("stopped")) == (True, "<p>a</p>\n<p>b</p>\n")
    open_block = contract.delta_entry("c", "", tail="<p>c</p>\n")
    assert ended([*blocks, open_block], store.Terminal("stopped"))[0] is False
