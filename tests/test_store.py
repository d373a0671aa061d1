"""The store against a real redis-server: the fenced append, history, idempotent sends."""

from __future__ import annotations

import json
import threading

import redis

from chatapp import contract, store
from chatapp.contract import ANSWER_ENDED, ANSWER_STARTED, MESSAGE_ADDED, TITLE_CHANGED, ChatEvent
from chatapp.store import Terminal
from tests.storing import NewAnswer, delta, new_answer


def append(r: redis.Redis, sent: NewAnswer, entries, expected, terminal=None, gen=None):
    chat_id = sent.chat_id
    return store.append(
        r, chat_id, sent.answer_id, gen or sent.generation_id, entries, expected, terminal
    )


def test_append_numbers_entries_from_one_and_marks_the_answer_streaming(r: redis.Redis) -> None:
    sent = new_answer(r)
    assert append(r, sent, [delta("a"), delta("b")], expected=0) == store.AppendResult("ok", 2)
    assert append(r, sent, [delta("c")], expected=2) == store.AppendResult("ok", 3)
    chat_id = sent.chat_id
    log = store.read_log(r, chat_id, sent.generation_id, after=1)
    assert [json.loads(e)["text"] for e in log] == ["b", "c"]
    assert store.get_message(r, chat_id, sent.answer_id).status == "streaming"  # type: ignore[union-attr]
    assert store.is_alive(r, chat_id, sent.generation_id)


def test_append_with_a_wrong_expected_length_is_refused_and_says_what_it_found(
    r: redis.Redis,
) -> None:
    sent = new_answer(r)
    append(r, sent, [delta("a")], expected=0)
    assert append(r, sent, [delta("b")], expected=0) == store.AppendResult("seq", 1)
    assert append(r, sent, [delta("b")], expected=5) == store.AppendResult("seq", 1)
    assert store.log_length(r, sent.chat_id, sent.generation_id) == 1


def test_append_to_a_generation_that_is_not_current_is_refused(r: redis.Redis) -> None:
    sent = new_answer(r)
    stale = store.new_id()
    assert append(r, sent, [delta("a")], expected=0, gen=stale).status == "stale"
    assert store.log_length(r, sent.chat_id, stale) == 0


def test_nothing_is_appended_after_the_terminal_entry(r: redis.Redis) -> None:
    sent = new_answer(r)
    append(r, sent, [delta("a")], expected=0, terminal=Terminal("done", text="a", html="<p>a</p>"))
    assert append(r, sent, [delta("b")], expected=2) == store.AppendResult("ended", 2)
    assert append(r, sent, [], expected=None, terminal=Terminal("stopped")).status == "ended"


def test_the_terminal_entry_writes_history_retention_and_the_chat_event(r: redis.Redis) -> None:
    sent = new_answer(r, model="m")
    chat_id = sent.chat_id
    append(r, sent, [delta("a")], expected=0)
    final = Terminal("done", text="a!", html="<p>a!</p>")
    assert append(r, sent, [delta("!")], expected=1, terminal=final) == store.AppendResult("ok", 3)
    message = store.get_message(r, chat_id, sent.answer_id)
    assert message is not None
    assert (message.status, message.text, message.html, message.length) == (
        "done",
        "a!",
        "<p>a!</p>",
        3,
    )
    assert 0 < r.ttl(store.log_key(chat_id, sent.generation_id)) <= 86_400
    assert not store.is_alive(r, chat_id, sent.generation_id)
    assert store.get_chat(r, chat_id).running == ""  # type: ignore[union-attr]
    assert store.chat_events(r, chat_id) == [
        ChatEvent(TITLE_CHANGED, title="hello"),  # the first message titles the chat
        ChatEvent(MESSAGE_ADDED, sent.user_id),
        ChatEvent(ANSWER_STARTED, sent.answer_id, sent.generation_id),
        ChatEvent(ANSWER_ENDED, sent.answer_id, sent.generation_id, status="done"),
    ]
    assert store.chat_events(r, chat_id, after=2) == store.chat_events(r, chat_id)[2:]
    assert store.chat_event_count(r, chat_id) == 4
    last = json.loads(store.read_log(r, chat_id, sent.generation_id, after=2)[0])
    assert last == {"t": "done", "html": "<p>a!</p>", "message": "", "model": "m"}


def test_stop_keeps_the_text_so_far_as_the_answer(r: redis.Redis) -> None:
    sent = new_answer(r)
    chat_id = sent.chat_id
    append(r, sent, [contract.delta_entry("one ", "<p>one</p>", tail="")], 0)
    append(r, sent, [contract.delta_entry("two", "", tail="<p>two</p>")], 1)
    assert append(r, sent, [], expected=None, terminal=Terminal("stopped")).ok
    message = store.get_message(r, chat_id, sent.answer_id)
    assert message is not None
    assert (message.status, message.text, message.html) == (
        "stopped",
        "one two",
        "<p>one</p><p>two</p>",
    )


def test_a_stop_before_the_first_token_takes_effect_at_once(r: redis.Redis) -> None:
    sent = new_answer(r)
    assert append(r, sent, [], expected=None, terminal=Terminal("stopped")).ok
    assert append(r, sent, [delta("late")], expected=0).status == "ended"
    message = store.get_message(r, sent.chat_id, sent.answer_id)
    assert message is not None and (message.status, message.text) == ("stopped", "")


def test_racing_terminal_writers_leave_exactly_one_terminal_entry(r: redis.Redis) -> None:
    for _ in range(20):
        sent = new_answer(r)
        chat_id = sent.chat_id
        append(r, sent, [delta("x")], expected=0)
        kinds = [
            Terminal("done", text="x", html="<p>x</p>"),
            Terminal("stopped"),
            Terminal("error", message="dead"),
            Terminal("stopped"),
        ]
        barrier = threading.Barrier(len(kinds))
        results: list[store.AppendResult] = []

        def race(
            terminal: Terminal, expected: int | None, barrier=barrier, sent=sent, results=results
        ) -> None:
            client = redis.Redis(connection_pool=r.connection_pool)
            barrier.wait()
            results.append(append(client, sent, [], expected, terminal))

        threads = [
            threading.Thread(target=race, args=(t, 1 if t.kind == "done" else None)) for t in kinds
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        assert sorted(result.status for result in results) == ["ended", "ended", "ended", "ok"]
        log = [json.loads(e) for e in store.read_log(r, chat_id, sent.generation_id)]
        terminals = [e for e in log if e["t"] != "delta"]
        assert len(terminals) == 1 and log[-1] is terminals[0]
        message = store.get_message(r, chat_id, sent.answer_id)
        assert message is not None and message.status == terminals[0]["t"]


def test_each_append_is_published_with_its_sequence_numbers(r: redis.Redis) -> None:
    sent = new_answer(r)
    chat_id = sent.chat_id
    with r.pubsub() as pubsub:
        pubsub.subscribe(store.channel(chat_id))
        assert pubsub.get_message(timeout=5)["type"] == "subscribe"
        append(r, sent, [delta("a"), delta("b")], expected=0)
        message = pubsub.get_message(timeout=5)
    payload = json.loads(message["data"])
    assert payload["m"] == sent.answer_id and payload["g"] == sent.generation_id
    assert payload["s"] == 1 and [e["text"] for e in payload["e"]] == ["a", "b"]


def test_sending_the_same_client_message_id_twice_stores_it_once(r: redis.Redis) -> None:
    chat = store.create_chat(r, "0" * 16, 0)
    first = store.send_message(r, chat.id, "client-1", "hi", "<p>hi</p>", "m", 1)
    again = store.send_message(r, chat.id, "client-1", "hi", "<p>hi</p>", "m", 2)
    assert first.status == "ok"
    assert (again.status, again.user_id, again.answer_id) == (
        "duplicate",
        first.user_id,
        first.answer_id,
    )
    assert [m.id for m in store.get_messages(r, chat.id)] == [first.user_id, first.answer_id]


def test_a_message_sent_while_an_answer_runs_is_refused(r: redis.Redis) -> None:
    chat = store.create_chat(r, "0" * 16, 0)
    first = store.send_message(r, chat.id, "client-1", "hi", "", "m", 1)
    busy = store.send_message(r, chat.id, "client-2", "again", "", "m", 2)
    assert (busy.status, busy.answer_id) == ("busy", first.answer_id)
    assert len(store.get_messages(r, chat.id)) == 2


def test_every_key_of_a_chat_shares_its_hash_tag(r: redis.Redis) -> None:
    sent = new_answer(r)
    chat_id = sent.chat_id
    append(r, sent, [delta("a")], expected=0, terminal=Terminal("done", text="a", html="a"))
    chat_keys = [k for k in r.keys("*") if not k.startswith(f"{store.PREFIX}:user:")]
    assert chat_keys and all(f"{{{chat_id}}}" in key for key in chat_keys)


def test_a_chat_is_titled_by_its_first_message(r: redis.Redis) -> None:
    chat = store.create_chat(r, "0" * 16, 0)
    first = store.send_message(
        r, chat.id, "client-1", "How do  tides\nwork? " + "x" * 80, "", "m", 1
    )
    store.append(r, chat.id, first.answer_id, first.generation_id, [], None, Terminal("stopped"))
    store.send_message(r, chat.id, "client-2", "second message", "", "m", 2)
    title = store.get_chat(r, chat.id).title  # type: ignore[union-attr]
    assert title.startswith("How do tides work? xxx") and title.endswith("…") and len(title) == 60


def test_the_log_is_append_only_and_a_stop_keeps_the_open_block_as_shown(r: redis.Redis) -> None:
    sent = new_answer(r)
    chat_id = sent.chat_id
    entries = [
        contract.delta_entry("# Hi\n\nA para", "<h1>Hi</h1>\n", tail="<p>A para</p>\n"),
        contract.delta_entry("graph goes", "", more="graph goes"),
        contract.delta_entry(" on &", "", more=" on &amp;"),
    ]
    for number, entry in enumerate(entries):
        append(r, sent, [entry], expected=number)
    raw = store.read_log(r, chat_id, sent.generation_id)
    assert [json.loads(e) for e in raw] == entries  # every entry as it was appended
    assert append(r, sent, [], expected=None, terminal=Terminal("stopped")).ok
    assert store.read_log(r, chat_id, sent.generation_id)[:3] == raw  # still the same bytes
    message = store.get_message(r, chat_id, sent.answer_id)
    assert message is not None and message.text == "# Hi\n\nA paragraph goes on &"
    assert message.html == "<h1>Hi</h1>\n<p>A para</p>\n<p>graph goes on &amp;</p>\n"
