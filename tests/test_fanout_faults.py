"""Many viewers through nginx, each cutting its stream at random and resuming it.

100 viewers follow 5 answers written at the same time (one chat each, five RQ workers),
through nginx over two gunicorn processes. Every viewer is its own browser: it closes its
connection after a few events or a short while, then reconnects with the `Last-Event-ID` of
the last event it got, or now and then without one (a snapshot then replaces its answer).
In the end each viewer must have the stored answer, with no entry lost and none twice.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis
from rq import Worker

from chatapp import store
from chatapp.frames import parse_chat_cursor
from harness.client import ChatClient, Event, parse_events
from harness.page import Page, normalized, showing, status_in
from harness.servers import Stack, rq_worker, stack_behind_nginx, wait_until

VIEWERS = 100
ANSWERS = 5  # one chat each: a chat writes one answer at a time
SEED = 20_251_125
SETTINGS = {"CHATAPP_OFFLINE_TOKENS_PER_SECOND": "100", "CHATAPP_FLUSH_MS": "20"}
FRESH_SHARE = 0.15  # reconnections without Last-Event-ID (the snapshot path)
VIEWER_SECONDS = 40.0  # a bound on each viewer, never a measured figure


@dataclass(frozen=True)
class Answer:
    owner: ChatClient  # its cookies make a viewer the chat's owner
    chat_id: str
    answer_id: str

    @property
    def url(self) -> str:
        return f"/chats/{self.chat_id}/messages/{self.answer_id}/stream"


@dataclass
class Viewer:
    """What one viewer went through, and what its page holds at the end."""

    answer: Answer
    connections: int = 0
    fresh: int = 0  # reconnections without Last-Event-ID
    entries: int = 0  # deltas and `end`s received
    snapshots: int = 0
    losses: int = 0  # entries skipped, within a connection or across a resume
    dups: int = 0  # deltas at or below the last entry applied
    late_ends: int = 0  # `end` without a cursor, of an answer that finished meanwhile
    late_skipped: int = 0  # entries that such an `end` stood in for (not sent as deltas)
    retries: int = 0  # connections closed with a `retry:` hint
    applied: list[Event] = field(default_factory=list)  # snapshots and deltas, in order
    end: Event | None = None
    problems: list[str] = field(default_factory=list)


def seq_of(event: Event) -> int:
    assert event.id is not None
    return int(event.id.rsplit(":", 1)[1])


def read_connection(
    http: httpx.Client,
    url: str,
    last_id: str | None,
    rng: random.Random,
    finished: Callable[[list[Event]], bool],
    skip: tuple[str, ...] = (),
) -> tuple[list[Event], bool]:
    """Read one connection until `finished(events)`, or cut it after a few events or a
    short while; leave out the event kinds in `skip`.

    Return the complete events received (those a browser would have dispatched) and
    whether the server closed it with a `retry:` hint.
    """
    mode = rng.random()
    max_events = rng.randint(1, 8) if mode < 0.45 else math.inf
    cut_at = time.monotonic() + rng.uniform(0.02, 0.6) if 0.45 <= mode < 0.9 else math.inf
    headers = {"Last-Event-ID": last_id} if last_id else {}
    events: list[Event] = []
    retried = False
    pending = ""
    with http.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200, response.status_code
        for chunk in response.iter_text():
            complete, separator, pending = (pending + chunk).rpartition("\n\n")
            if separator:
                retried = retried or "\nretry: " in f"\n{complete}"
                got = parse_events(complete + separator)
                events += [e for e in got if e.event not in skip]
            if len(events) >= max_events:
                return events[: int(max_events)], retried
            if finished(events):
                return events, retried
            if time.monotonic() >= cut_at:
                return events, retried  # closing the response drops the connection
    return events, retried


def ended(events: list[Event]) -> bool:
    """An answer's own stream is over at its `end`."""
    return bool(events) and events[-1].event == "end"


def watch(base: str, answer: Answer, seed: int) -> Viewer:
    """Follow an answer to its `end` through random cuts; check every entry's sequence."""
    rng = random.Random(seed)
    viewer = Viewer(answer)
    last_id: str | None = None
    seq: int | None = None  # the last entry applied
    deadline = time.monotonic() + VIEWER_SECONDS
    time.sleep(rng.choice([0.0, 0.0, rng.uniform(0, 1.5)]))  # some arrive mid-answer
    cookies = answer.owner.http.cookies
    timeout = httpx.Timeout(10.0)
    with httpx.Client(base_url=base, cookies=cookies, timeout=timeout) as http:
        while viewer.end is None:
            if time.monotonic() > deadline:
                viewer.problems.append(f"no end after {VIEWER_SECONDS} s")
                break
            resume = last_id is not None and rng.random() >= FRESH_SHARE
            viewer.fresh += last_id is not None and not resume
            sent_id = last_id if resume else None
            events, retried = read_connection(http, answer.url, sent_id, rng, ended)
            viewer.connections += 1
            viewer.retries += retried
            first = True
            for event in events:
                if event.event == "ping":
                    continue
                if event.id is None:
                    viewer.problems.append(f"{event.event} without an id")
                    continue
                n = seq_of(event)
                if event.event == "snapshot":
                    viewer.snapshots += 1
                    if sent_id is not None or not first:
                        viewer.problems.append(f"snapshot {event.id} after {sent_id}")
                    viewer.applied.append(event)
                    seq = n
                elif event.event in ("delta", "end"):
                    viewer.entries += 1
                    if seq is None and not (first and event.event == "end"):
                        viewer.problems.append(f"{event.event} {event.id} before any snapshot")
                    elif seq is not None and n <= seq:
                        viewer.dups += 1
                        last_id = event.id
                        first = False
                        continue
                    elif n > (seq or 0) + 1:
                        if first and event.event == "end" and sent_id is None:
                            # Came back without a cursor after the answer finished: `end`
                            # carries it whole. (With a cursor, the rest comes as deltas.)
                            viewer.late_ends += 1
                            viewer.late_skipped += n - (seq or 0) - 1
                        else:
                            viewer.losses += n - (seq or 0) - 1
                    if event.event == "delta":
                        viewer.applied.append(event)
                    else:
                        viewer.end = event
                    seq = n
                else:
                    viewer.problems.append(f"unexpected event {event.event}")
                last_id = event.id
                first = False
            if viewer.end is None:
                time.sleep(rng.choice([0.0, rng.uniform(0, 0.05), rng.uniform(0, 0.4)]))
    return viewer


def start_answers(base: str) -> list[Answer]:
    """Create the chats, then send one message to each at once; return their answers."""
    chats = []
    for _ in range(ANSWERS):
        owner = ChatClient(base)
        chats.append((owner, owner.new_chat()))

    def send(index: int) -> Answer:
        owner, chat_id = chats[index]
        answer_id = owner.send_ok(chat_id, f"Fan-out answer number {index}, cut and resumed")
        return Answer(owner, chat_id, answer_id)

    with ThreadPoolExecutor(ANSWERS) as pool:
        return list(pool.map(send, range(ANSWERS)))


def check(viewer: Viewer, stored: store.Message) -> list[str]:
    """Return what is wrong with the viewer's stream and its page's final answer."""
    problems = list(viewer.problems)
    if viewer.losses or viewer.dups:
        problems.append(f"{viewer.losses} entries lost, {viewer.dups} twice")
    if viewer.end is None:
        return [*problems, "no end"]
    owner, answer_id = viewer.answer.owner, viewer.answer.answer_id
    rebuilt = owner.answer_page(answer_id).apply(viewer.applied).body(answer_id)
    if viewer.late_ends:
        if not normalized(stored.html).startswith(rebuilt):
            problems.append("the blocks before the late end are not the answer's beginning")
    elif rebuilt != normalized(stored.html):
        problems.append("the rebuilt answer differs from the stored one")
    if not owner.answer_page(answer_id).apply([viewer.end]).shows(answer_id, stored.html):
        problems.append("`end` does not carry the stored answer")
    if viewer.end.id != f"{stored.gen}:{stored.length}":
        problems.append(f"`end` is {viewer.end.id}, the log ends at {stored.gen}:{stored.length}")
    return problems


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with stack_behind_nginx(tmp_path, **SETTINGS) as stack, ExitStack() as workers:
        for _ in range(ANSWERS - 1):  # one RQ worker per answer, so they run together
            workers.enter_context(rq_worker(stack.env))
        queues = redis.Redis.from_url(stack.queue_url)
        wait_until(lambda: Worker.count(connection=queues) >= ANSWERS, what="RQ workers")
        yield stack


def test_a_hundred_viewers_cutting_and_resuming_lose_nothing(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    answers = start_answers(stack.base)
    rng = random.Random(SEED)
    with ThreadPoolExecutor(VIEWERS) as pool:
        futures = [
            pool.submit(watch, stack.base, answers[i % ANSWERS], rng.randrange(2**32))
            for i in range(VIEWERS)
        ]
        viewers = [future.result(timeout=VIEWER_SECONDS + 20) for future in futures]

    r = stack.redis()
    stored = {a.answer_id: store.get_message(r, a.chat_id, a.answer_id) for a in answers}
    for answer_id, message in stored.items():
        assert message is not None and message.status == "done", (answer_id, message)
    failures = [
        f"viewer {i} ({v.answer.answer_id}): {problem}"
        for i, v in enumerate(viewers)
        for problem in check(v, stored[v.answer.answer_id])  # type: ignore[arg-type]
    ]

    connections = sum(v.connections for v in viewers)
    figures = {
        "viewers": VIEWERS,
        "answers": ANSWERS,
        "connections": connections,
        "cuts": connections - VIEWERS,
        "fresh reconnects": sum(v.fresh for v in viewers),
        "entries delivered": sum(v.entries for v in viewers),
        "snapshots": sum(v.snapshots for v in viewers),
        "late ends": sum(v.late_ends for v in viewers),
        "entries in late ends": sum(v.late_skipped for v in viewers),
        "retries": sum(v.retries for v in viewers),
        "losses": sum(v.losses for v in viewers),
        "dups": sum(v.dups for v in viewers),
    }
    with capsys.disabled():
        print("\nfan-out with faults: " + ", ".join(f"{k} {n}" for k, n in figures.items()))

    assert not failures, "\n".join(failures[:20])
    assert figures["cuts"] > 0 and figures["fresh reconnects"] > 0  # the faults happened


# -- the same on the chat page's stream, the one browsers hold -------------------------------
def watch_page(base: str, answer: Answer, seed: int) -> Viewer:
    """Follow a chat page's stream until it shows the answer done, through random cuts;
    check the answer entries' sequence within each generation."""
    rng = random.Random(seed)
    viewer = Viewer(answer)
    last_id: str | None = None
    seqs: dict[str, int] = {}  # generation -> the last entry the page has

    def done(event: Event) -> bool:
        return status_in(event, answer.answer_id) == "done"

    deadline = time.monotonic() + VIEWER_SECONDS
    time.sleep(rng.choice([0.0, 0.0, rng.uniform(0, 1.5)]))  # some arrive mid-answer
    url = f"/chats/{answer.chat_id}/live"
    timeout = httpx.Timeout(10.0)
    with httpx.Client(base_url=base, cookies=answer.owner.http.cookies, timeout=timeout) as http:
        while viewer.end is None:
            if time.monotonic() > deadline:
                viewer.problems.append(f"not shown done after {VIEWER_SECONDS} s")
                break
            resume = last_id is not None and rng.random() >= FRESH_SHARE
            viewer.fresh += last_id is not None and not resume
            events, retried = read_connection(
                http,
                url,
                last_id if resume else None,
                rng,
                showing(answer.answer_id, "done"),
                skip=("ping", "chats"),  # a chat page's stream stays open after the answer
            )
            viewer.connections += 1
            viewer.retries += retried
            for event in events:
                cursor = parse_chat_cursor(event.id)
                if cursor is None:
                    viewer.problems.append(f"{event.event} without a cursor: {event.id}")
                    continue
                viewer.applied.append(event)
                last_id = event.id
                generation = cursor.answer.generation_id if cursor.answer else None
                seq = cursor.answer.seq if cursor.answer else 0
                if event.event == "snapshot":
                    viewer.snapshots += 1
                    seqs = {}
                if generation is None:
                    pass
                elif event.event == "delta":
                    viewer.entries += 1
                    before = seqs.get(generation)
                    if before is not None and seq <= before:
                        viewer.dups += 1
                    elif before is not None and seq > before + 1:
                        viewer.losses += seq - before - 1
                    seqs[generation] = max(seq, before or 0)
                else:  # a snapshot, an answer or an end: the answer up to its cursor
                    seqs[generation] = seq
                if done(event):
                    viewer.end = event
            if viewer.end is None:
                time.sleep(rng.choice([0.0, rng.uniform(0, 0.05), rng.uniform(0, 0.4)]))
    return viewer


def test_a_hundred_chat_pages_cutting_and_resuming_lose_nothing(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same faults on `/chats/<id>/live`: every page ends showing the stored chat,
    with no answer entry lost or twice and no message added twice."""
    answers = start_answers(stack.base)
    rng = random.Random(SEED + 1)
    with ThreadPoolExecutor(VIEWERS) as pool:
        futures = [
            pool.submit(watch_page, stack.base, answers[i % ANSWERS], rng.randrange(2**32))
            for i in range(VIEWERS)
        ]
        viewers = [future.result(timeout=VIEWER_SECONDS + 20) for future in futures]

    r = stack.redis()
    failures = []
    for i, viewer in enumerate(viewers):
        stored = store.get_messages(r, viewer.answer.chat_id)
        problems = list(viewer.problems)
        if viewer.losses or viewer.dups:
            problems.append(f"{viewer.losses} entries lost, {viewer.dups} twice")
        try:
            page = Page().apply(viewer.applied)  # asserts no message was added twice
            if page.message_ids() != [message.id for message in stored]:
                problems.append(f"shows {page.message_ids()}, stored {[m.id for m in stored]}")
            else:
                problems += [f"{m.id} differs" for m in stored if not page.shows(m.id, m.html)]
        except AssertionError as exc:
            problems.append(str(exc))
        failures += [f"viewer {i} ({viewer.answer.chat_id}): {p}" for p in problems]

    connections = sum(v.connections for v in viewers)
    figures = {
        "viewers": VIEWERS,
        "connections": connections,
        "cuts": connections - VIEWERS,
        "fresh reconnects": sum(v.fresh for v in viewers),
        "deltas delivered": sum(v.entries for v in viewers),
        "snapshots": sum(v.snapshots for v in viewers),
        "retries": sum(v.retries for v in viewers),
    }
    with capsys.disabled():
        print("\nchat pages with faults: " + ", ".join(f"{k} {n}" for k, n in figures.items()))
    assert not failures, "\n".join(failures[:20])
    assert figures["cuts"] > 0 and figures["fresh reconnects"] > 0  # the faults happened
