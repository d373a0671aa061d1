"""The producer against a real redis-server: flushes, and a log that lost its newest entries."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest
import redis

from chatapp import contract, store
from chatapp import producer as producer_module
from chatapp.producer import Fenced, Producer
from chatapp.render import render_markdown
from tests.storing import NewAnswer, new_answer


def producer_for(r: redis.Redis, sent: NewAnswer) -> Producer:
    chat_id = sent.chat_id
    return Producer(r, chat_id, sent.answer_id, sent.generation_id, 0.0, store.Timing())


def log_of(r: redis.Redis, sent: NewAnswer) -> list[dict[str, str]]:
    raw = store.read_log(r, sent.chat_id, sent.generation_id)
    return [json.loads(entry) for entry in raw]


def test_entries_lost_by_redis_are_written_again_in_their_places(r: redis.Redis) -> None:
    sent = new_answer(r)
    producer = producer_for(r, sent)
    pieces = ["# One\n\n", "two ", "three\n\n", "- four\n", "- five\n\n", "six"]
    for piece in pieces[:4]:
        producer.feed(piece)
        producer.flush()
    before_crash = log_of(r, sent)
    log_key = store.log_key(sent.chat_id, sent.generation_id)
    r.ltrim(log_key, 0, 1)  # Redis restarted without its last second: entries 3 and 4 are gone
    for piece in pieces[4:]:
        producer.feed(piece)
        producer.flush()
    producer.finish()
    log = log_of(r, sent)
    assert [entry["text"] for entry in log[: len(pieces)]] == pieces
    assert log[:4] == before_crash  # the lost ones, written again exactly as they were
    assert "".join(e.get("text", "") for e in log) == "".join(pieces)
    assert "".join(e.get("blocks", "") for e in log) == render_markdown("".join(pieces))
    assert [e["t"] for e in log] == ["delta"] * (len(log) - 1) + ["done"]
    message = store.get_message(r, sent.chat_id, sent.answer_id)
    assert message is not None and message.text == "".join(pieces)


def test_an_append_refused_for_a_longer_log_is_not_retried(r: redis.Redis) -> None:
    sent = new_answer(r)
    producer = producer_for(r, sent)
    producer.feed("one ")
    producer.flush()
    chat_id = sent.chat_id
    delta = contract.delta_entry("x", "", tail="")
    store.append(r, chat_id, sent.answer_id, sent.generation_id, [delta], 1)  # another writer
    with pytest.raises(Fenced) as refused:  # never written over another writer's entry
        producer.feed("two")
        producer.flush()
    assert refused.value.status == "seq"
    assert store.log_length(r, chat_id, sent.generation_id) == 2


@pytest.mark.parametrize(("running", "flushes"), [(1, 3), (5_000, 1)])
def test_a_busy_worker_writes_fewer_larger_flushes(
    r: redis.Redis, running: int, flushes: int
) -> None:
    sent = new_answer(r)
    chat_id = sent.chat_id
    # A 20 ms window; with 5,000 answers running it widens to 2 s.
    producer = Producer(
        r, chat_id, sent.answer_id, sent.generation_id, 0.02, store.Timing(), lambda: running
    )
    for word in ["one ", "two ", "three "]:
        time.sleep(0.05)  # longer than the plain window, far shorter than the wide one
        producer.feed(word)
    assert len(log_of(r, sent)) == flushes
    producer.finish()
    assert "".join(entry.get("text", "") for entry in log_of(r, sent)) == "one two three "


class _Clock:
    """The producer's clock: time passes only when it sleeps or when told."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 3))
        self.now += seconds


def test_output_already_received_is_read_on_without_waiting_for_the_window(
    r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server streaming in HTTP chunks hands over one token per piece: the producer
    sleeps out its window only once it has read all that came, never between pieces that
    were already there (which read slower than the model writes)."""
    clock = _Clock()
    monkeypatch.setattr("chatapp.producer.time", clock)
    sent = new_answer(r)
    chat_id = sent.chat_id
    producer = Producer(r, chat_id, sent.answer_id, sent.generation_id, 0.2, store.Timing())
    producer.feed("one ")  # the first token, waited for: written at once
    producer.wait_for_window()  # then nothing more has come: sleep out the window
    assert clock.slept == [0.2]
    for word in ["two ", "three ", "four "]:  # came during the sleep: read at once
        producer.feed(word)
        producer.wait_for_window()
    assert clock.slept == [0.2]
    clock.now += 0.05  # the next token is waited for: then the window is slept out
    producer.feed("five ")
    producer.wait_for_window()
    assert clock.slept == [0.2, 0.15]
    producer.finish()
    texts = [entry.get("text", "") for entry in log_of(r, sent)]
    # One flush per window: "two " was due at once; the rest waited for the next window.
    assert texts == ["one ", "two ", "three four five ", ""]


def test_after_a_piece_that_was_all_that_had_arrived_the_window_is_slept_out(
    r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model whose pieces are whole network reads: nothing waits behind a piece, so the
    producer sleeps out its window after each, even one that came at once (one read of
    the network per window, not two)."""
    clock = _Clock()
    monkeypatch.setattr("chatapp.producer.time", clock)
    sent = new_answer(r)
    chat_id = sent.chat_id
    producer = Producer(r, chat_id, sent.answer_id, sent.generation_id, 0.2, store.Timing())
    producer.feed("one ")
    producer.wait_for_window(whole_reads=True)
    producer.feed("two three ")  # arrived during the sleep: read at once, and flushed
    producer.wait_for_window(whole_reads=True)
    assert clock.slept == [0.2, 0.2]
    producer.finish()
    texts = [entry.get("text", "") for entry in log_of(r, sent)]
    assert texts == ["one ", "two three ", "", ""]  # then the last delta (its block), done


@pytest.mark.parametrize("reply", ["never sent", "sent, then lost"])
def test_a_flush_redis_never_took_is_written_before_the_next_so_text_and_html_agree(
    r: redis.Redis, monkeypatch: pytest.MonkeyPatch, reply: str
) -> None:
    """Redis away longer than the producer waits: the flush it was writing raises, and is
    written first by the next append. Otherwise the log's text would miss it while the next
    entry's blocks, rendered from it, hold it; an answer ended from its log (its producer
    gone) would keep text for the model's history that ends one flush before its HTML.
    If that append did reach Redis (only its reply was lost), it is not written twice."""
    monkeypatch.setattr(producer_module, "REDIS_OUTAGE_SECONDS", 0.2)
    sent = new_answer(r)
    producer = producer_for(r, sent)
    producer.feed("# One\n\nfirst words ")
    unavailable = {"now": True}
    append = store.append

    def append_unless_down(*args: Any, **kwargs: Any) -> store.AppendResult:
        if unavailable["now"]:
            if reply == "sent, then lost":
                append(*args, **kwargs)
            raise redis.ConnectionError("Redis is restarting")
        return append(*args, **kwargs)

    monkeypatch.setattr(store, "append", append_unless_down)
    with pytest.raises(redis.ConnectionError):
        producer.feed("lost words\n\n")  # flushes (the window is 0): Redis is away
    unavailable["now"] = False
    producer.feed("last words")  # the flush before, then this one; then the producer dies
    chat_id = sent.chat_id
    store.end(r, chat_id, sent.answer_id, sent.generation_id, store.Terminal("error"))
    text = "# One\n\nfirst words lost words\n\nlast words"
    assert "".join(entry.get("text", "") for entry in log_of(r, sent)) == text
    message = store.get_message(r, chat_id, sent.answer_id)
    assert message is not None and message.text == text
    assert "lost words" in message.html and "last words" in message.html


@pytest.mark.parametrize(
    ("text", "whole"),
    [
        ("# One\n\ntwo three\n\n- four\n- five\n\n```\nsix\n```\n\nseven", True),
        ("See [the docs][d] first.\n\nThen more.\n\n[d]: https://example.com/docs\n", False),
    ],
)
def test_the_end_says_whether_the_blocks_written_are_the_answers_html(
    r: redis.Redis, text: str, whole: bool
) -> None:
    """A reference defined after its use changes a block already written: the final HTML
    is then not the blocks joined, and a page needs it whole."""
    sent = new_answer(r)
    producer = producer_for(r, sent)
    for piece in re.findall(r"\S+\s*|\s+", text):
        producer.feed(piece)
        producer.flush()
    producer.finish()
    log = log_of(r, sent)
    end = log[-1]
    assert end["html"] == render_markdown(text)
    assert end.get("whole", False) is whole
    assert ("".join(e.get("blocks", "") for e in log) == end["html"]) is whole


@pytest.mark.parametrize("ending", ["stop", "failure", "dead producer"])
def test_an_answer_ended_midway_is_rendered_whole_as_a_finished_one(
    r: redis.Redis, ending: str
) -> None:
    # The log holds the open paragraph's last render and the text after it, escaped; an
    # answer ended there once showed them as two paragraphs, the heading being written
    # empty and the markdown after the last render as it was typed (issue 18's review).
    sent = new_answer(r)
    producer = producer_for(r, sent)
    pieces = [
        "# Title\n\n",
        "A sentence that goes ",
        "on and on, with **bold",
        "** words ",
        "and `code`",
    ]
    for piece in pieces:
        producer.feed(piece)
        producer.flush()
    written = "".join(pieces)
    chat_id, answer_id, gen = sent.chat_id, sent.answer_id, sent.generation_id
    if ending == "stop":
        store.end(r, chat_id, answer_id, gen, store.Terminal(contract.STOPPED))
    elif ending == "failure":
        store.end(r, chat_id, answer_id, gen, store.Terminal(contract.ERROR, message="lost"))
    else:
        r.delete(store.heartbeat_key(chat_id, gen))
        message = store.get_message(r, chat_id, answer_id)
        assert message is not None and store.end_if_dead(r, chat_id, message)
    ended = store.get_message(r, chat_id, answer_id)
    assert ended is not None and ended.text == written
    assert ended.html == render_markdown(written)
    assert ended.html.count("<p>") == 1 and "<strong>bold</strong>" in ended.html
    terminal = log_of(r, sent)[-1]
    assert terminal["html"] == ended.html  # what every page's `end` shows
