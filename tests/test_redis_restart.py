"""Redis restarting under a running answer: the producer and the viewers carry on."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import pytest

from chatapp import store
from harness.client import ChatClient, Event, parse_events
from harness.page import Page
from harness.servers import RedisServer, running_stack, wait_until


def follow_to_the_end(client: ChatClient, chat_id: str, answer_id: str, seen: list[Event]) -> None:
    """Read the stream like a browser, events into `seen` as they come; on every close,
    reconnect with the last event id."""
    url = f"/chats/{chat_id}/messages/{answer_id}/stream"
    last_id: str | None = None
    for _ in range(500):
        headers = {"Last-Event-ID": last_id} if last_id else {}
        raw, taken = "", 0
        with client.http.stream("GET", url, headers=headers, timeout=30) as response:
            for chunk in response.iter_text():
                raw += chunk
                events = parse_events(raw)
                seen += events[taken:]
                taken = len(events)
        last_id = next((e.id for e in reversed(seen) if e.id), last_id)
        if seen and seen[-1].event == "end":
            return
        threading.Event().wait(0.1)  # the browser waits `retry:` ms; a little is enough here


@pytest.mark.parametrize(
    "how",
    [
        pytest.param(signal.SIGTERM, id="graceful"),  # Redis writes its AOF, then exits
        pytest.param(signal.SIGKILL, id="killed"),  # up to ~1 s of writes are lost
    ],
)
def test_a_redis_restart_mid_answer_loses_nothing(tmp_path: Path, how: signal.Signals) -> None:
    server = RedisServer(tmp_path, "--appendonly", "yes", "--appendfsync", "everysec")
    settings = {"CHATAPP_OFFLINE_TOKENS_PER_SECOND": "40", "CHATAPP_FLUSH_MS": "20"}
    with running_stack(tmp_path, redis_server=server, **settings) as stack:
        client = ChatClient(stack.base)
        chat_id = client.new_chat()
        answer_id = client.send_ok(chat_id, "Keep going while Redis restarts")
        seen: list[Event] = []
        viewer = threading.Thread(target=follow_to_the_end, args=(client, chat_id, answer_id, seen))
        viewer.start()
        on_page: list[Event] = []  # a chat page's one stream, through the same outage
        page = threading.Thread(target=client.follow_page, args=(chat_id, answer_id, on_page))
        page.start()
        # Well into the answer, so that the message itself is on disk before a kill.
        wait_until(lambda: sum(e.event == "delta" for e in seen) >= 80, what="the answer to flow")
        server.process.send_signal(how)
        server.process.wait(timeout=10)
        threading.Event().wait(1.0)  # an outage long enough for many flushes to fail
        server.start()
        viewer.join(timeout=90)
        page.join(timeout=90)
        stored = store.get_message(stack.redis(), chat_id, answer_id)
    assert stored is not None and stored.status == "done"
    assert seen[-1].event == "end"
    seqs = [int(e.id.split(":")[1]) for e in seen if e.id and e.event == "delta"]
    assert seqs == sorted(set(seqs))  # in order, none twice
    built = client.answer_page(answer_id).apply(e for e in seen if e.event != "end")
    assert built.shows(answer_id, stored.html)  # nothing lost
    # The chat page: each entry once, in order, and the stored answer at the end.
    entries = [int(e.id.rsplit(":", 1)[1]) for e in on_page if e.event == "delta" and e.id]
    assert entries == sorted(set(entries))
    assert on_page[-1].event == "end" and Page().apply(on_page).shows(answer_id, stored.html)
