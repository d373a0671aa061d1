"""Through Debian's nginx (deploy/nginx.conf) in front of two gunicorn processes."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from chatapp import access_tokens, store
from harness.client import ChatClient, Event, parse_events
from harness.page import Page, showing, status_in
from harness.servers import (
    PROJECT_DIR,
    RedisServer,
    Stack,
    free_port,
    nginx,
    rq_worker,
    stack_behind_nginx,
    stack_env,
    wait_until,
    web_server,
)


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    settings = {"CHATAPP_OFFLINE_TOKENS_PER_SECOND": "150", "CHATAPP_FLUSH_MS": "20"}
    with stack_behind_nginx(tmp_path_factory.mktemp("nginx"), **settings) as stack:
        yield stack


def test_the_stream_passes_nginx_unbuffered_with_its_headers(proxied: Stack) -> None:
    client = ChatClient(proxied.base)
    chat_id = client.new_chat()
    answer_id = client.send_ok(chat_id, "Through the proxy")
    url = f"/chats/{chat_id}/messages/{answer_id}/stream"
    with client.http.stream("GET", url) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-store"
        assert "content-encoding" not in response.headers
        raw = ""
        for chunk in response.iter_text():  # arrives before the answer ends: not buffered
            raw += chunk
            if "event: snapshot" in raw:
                break
        assert raw.startswith(": following\n\nid: ")  # a comment first: the response starts
    with client.http.stream("GET", f"/chats/{chat_id}/live") as page:  # what a tab holds
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/event-stream")
        assert "content-encoding" not in page.headers
        # The stream stays open: a buffering proxy would hold it back (a read timeout).
        raw = ""
        for chunk in page.iter_text():
            raw += chunk
            if f'id="answer-{answer_id}"' in raw:
                break
        assert raw.startswith(": following\n\n") and "event: snapshot" in raw


def test_a_viewer_that_reconnects_through_nginx_resumes_exactly(proxied: Stack) -> None:
    client = ChatClient(proxied.base)
    chat_id = client.new_chat()
    answer_id = client.send_ok(chat_id, "Resume me through nginx")
    seen: list[Event] = []
    last_id: str | None = None
    for _ in range(200):  # a few events per connection, then a fresh connection (either process)
        events = client.stream(chat_id, answer_id, last_event_id=last_id, max_events=3)
        seen += events
        last_id = next((e.id for e in reversed(events) if e.id), last_id)
        if events and events[-1].event == "end":
            break
    assert seen[-1].event == "end"
    assert [e.event for e in seen].count("snapshot") == 1  # every reconnect resumed
    ids = [int(e.id.split(":")[1]) for e in seen if e.id and e.event == "delta"]
    assert ids == sorted(set(ids))  # in order, none twice
    stored = store.get_message(proxied.redis(), chat_id, answer_id)
    assert stored is not None and stored.status == "done"
    built = client.answer_page(answer_id).apply(e for e in seen if e.event != "end")
    assert built.shows(answer_id, stored.html)


def test_a_page_that_reconnects_through_nginx_resumes_exactly(proxied: Stack) -> None:
    """The chat page's stream, what a tab holds, cut every few events: each reconnect
    resumes where it was (one snapshot, the first), each entry once, the stored answer."""
    client = ChatClient(proxied.base)
    chat_id = client.new_chat()
    answer_id = client.send_ok(chat_id, "Resume my page through nginx")
    seen: list[Event] = []
    cursor: str | None = None
    for _ in range(300):  # a few events per connection, then a fresh one (either process)
        ended = showing(answer_id, "done")
        events = client.live(
            chat_id,
            until=lambda read, ended=ended: ended(read) or len(read) >= 3,
            last_event_id=cursor,
        )
        seen += events
        cursor = next((e.id for e in reversed(events) if e.id), cursor)
        if ended(events):
            break
    assert Page().apply(seen).status(answer_id) == "done"
    assert [e.event for e in seen].count("snapshot") == 1  # every reconnect resumed
    entries = [int(e.id.rsplit(":", 1)[1]) for e in seen if e.event == "delta" and e.id]
    assert entries == sorted(set(entries))  # in order, none twice
    stored = store.get_message(proxied.redis(), chat_id, answer_id)
    assert stored is not None and Page().apply(seen).shows(answer_id, stored.html)


def test_pages_and_errors_come_through_nginx(proxied: Stack) -> None:
    client = ChatClient(proxied.base)
    visitor = httpx.get(proxied.base + "/")  # not logged in
    assert visitor.status_code == 302 and visitor.headers["location"] == "/login?next=/"
    assert client.http.get("/").status_code == 200
    missing = client.http.get("/chats/0123456789abcdef")
    assert missing.status_code == 404 and "does not exist" in missing.text


def test_https_with_http2_carries_pages_and_a_live_answer(proxied: Stack) -> None:
    # Over HTTPS, Flask-WTF also wants a same-site Referer on posts, as browsers send it.
    same_site = {"Referer": proxied.https_base + "/"}
    client = ChatClient(proxied.https_base, http2=True, verify=False, headers=same_site)
    page = client.http.get("/")
    assert page.status_code == 200 and page.http_version == "HTTP/2"
    chat_id = client.new_chat()
    answer_id = client.send_ok(chat_id, "Over HTTP/2, please")
    events = client.stream(chat_id, answer_id)
    assert events[0].event == "snapshot" and events[-1].event == "end"
    stored = store.get_message(proxied.redis(), chat_id, answer_id)
    built = client.answer_page(answer_id).apply(e for e in events if e.event != "end")
    assert stored is not None and built.shows(answer_id, stored.html)
    # nginx tells the app the request came over HTTPS, so the session cookie is Secure.
    fresh = httpx.Client(base_url=proxied.https_base, http2=True, verify=False)
    cookie = fresh.get("/login").headers["set-cookie"]
    assert "session=" in cookie and "Secure" in cookie


def test_durable_stream_reads_of_a_running_answer_pass_nginx_over_http2(proxied: Stack) -> None:
    """An outside client with a token: SSE and long-poll, each to the answer's end."""
    same_site = {"Referer": proxied.https_base + "/"}
    client = ChatClient(proxied.https_base, http2=True, verify=False, headers=same_site)
    chat_id = client.new_chat()
    answer_id = client.send_ok(chat_id, "Durable, through nginx")
    answer = store.get_message(proxied.redis(), chat_id, answer_id)
    chat = store.get_chat(proxied.redis(), chat_id)
    assert answer is not None and chat is not None
    token = access_tokens.create(proxied.redis(), chat.owner, "a script")
    url = f"/chats/{chat_id}/messages/{answer_id}/generations/{answer.gen}"
    auth = {"Authorization": f"Bearer {token}"}
    http = httpx.Client(base_url=proxied.https_base, http2=True, verify=False, headers=auth)
    with http.stream("GET", url, params={"offset": "-1", "live": "sse"}, timeout=60) as sse:
        assert sse.status_code == 200 and sse.http_version == "HTTP/2"
        assert "content-encoding" not in sse.headers
        events = parse_events(sse.read().decode())  # the response ends with the answer
    sent = "".join(e.data[1:-1] + "," for e in events if e.event == "data")
    offset, polled = "-1", ""
    while True:  # long-polls, each from the offset the last one gave
        got = http.get(url, params={"offset": offset, "live": "long-poll"}, timeout=60)
        assert got.status_code in (200, 204)
        polled += got.text[1:-1] + "," if got.status_code == 200 else ""
        offset = got.headers["Stream-Next-Offset"]
        if got.headers.get("Stream-Closed") == "true":
            break
    log = store.read_log(proxied.redis(), chat_id, answer.gen)
    assert sent == polled == "".join(entry + "," for entry in log)
    assert json.loads(log[-1])["t"] == "done"


def test_static_files_come_from_nginx_kept_for_a_year_under_content_hashed_urls(
    proxied: Stack,
) -> None:
    page = ChatClient(proxied.base).http.get("/")
    found = re.search(r'src="(/static/app\.js\?v=([0-9a-f]{12}))"', page.text)
    assert found, "the page's script URL carries its content hash"
    url, version = found.groups()
    script = httpx.get(proxied.base + url)
    assert script.status_code == 200
    assert script.content == (PROJECT_DIR / "static" / "app.js").read_bytes()
    assert hashlib.sha256(script.content).hexdigest()[:12] == version
    cache = script.headers["cache-control"]
    assert "max-age=31536000" in cache and "immutable" in cache
    assert script.headers["x-content-type-options"] == "nosniff"
    assert script.headers["content-type"] in ("application/javascript", "text/javascript")


class Viewer(threading.Thread):
    """A tab on a chat page through nginx: it follows the chat's stream, reconnecting with
    its cursor whenever the stream closes, and records the status of every (re)connect."""

    def __init__(self, chat_id: str, device: ChatClient) -> None:
        super().__init__(daemon=True)
        self.client = device.another_device()
        self.chat_id = chat_id
        self.statuses: list[int] = []
        self.events: list[Event] = []
        self.stop = threading.Event()

    def run(self) -> None:
        cursor: str | None = None
        while not self.stop.is_set():
            headers = {"Last-Event-ID": cursor} if cursor else {}
            url = f"/chats/{self.chat_id}/live"
            raw = ""
            try:
                with self.client.http.stream("GET", url, headers=headers, timeout=60) as response:
                    self.statuses.append(response.status_code)
                    for chunk in response.iter_text():
                        raw += chunk
                        complete, _, raw = raw.rpartition("\n\n")
                        cursor = self._take(complete + "\n\n", cursor)
                        if self.stop.is_set():
                            break
            except httpx.HTTPError:
                self.statuses.append(0)  # cut mid-stream: resume

    def _take(self, raw: str, cursor: str | None) -> str | None:
        events = [e for e in parse_events(raw) if e.event not in ("ping", "chats")]
        self.events += events
        return next((e.id for e in reversed(events) if e.id), cursor)


def test_restarting_both_gunicorns_in_turn_behind_nginx_is_invisible(tmp_path: Path) -> None:
    """A rolling restart with viewers connected: every reconnect reaches the other process
    (never a 502), and every viewer ends with the stored chat, nothing lost or twice."""
    server = RedisServer(tmp_path)
    settings = {"CHATAPP_TRUSTED_PROXIES": "1", "CHATAPP_OFFLINE_TOKENS_PER_SECOND": "20"}
    env = stack_env(server.url, tmp_path, **settings)
    ports = [free_port(), free_port()]
    try:
        with rq_worker(env), contextlib.ExitStack() as webs:
            processes = [webs.enter_context(web_server(env, port=port))[1] for port in ports]
            base, _ = webs.enter_context(nginx(tmp_path, [f"http://127.0.0.1:{p}" for p in ports]))
            device = ChatClient(base)
            chat_id = device.new_chat()
            viewers = [Viewer(chat_id, device) for _ in range(8)]
            for viewer in viewers:
                viewer.start()
            answer_id = device.send_ok(chat_id, "Keep writing while we restart")
            pages: list[int] = []  # pages loaded while one process is down
            for index, port in enumerate(ports):  # in turn, as an operator would
                processes[index].send_signal(signal.SIGTERM)  # graceful: streams say retry
                processes[index].wait(timeout=60)
                pages += [device.http.get("/").status_code for _ in range(4)]
                processes[index] = webs.enter_context(web_server(env, port=port))[1]
            r = redis.Redis.from_url(server.url, decode_responses=True)
            wait_until(
                lambda: store.get_message(r, chat_id, answer_id).status == "done",  # type: ignore[union-attr]
                timeout=120,
                what="the answer to end",
            )
            for viewer in viewers:
                wait_until(
                    lambda v=viewer: any(status_in(e, answer_id) == "done" for e in v.events),
                    timeout=60,
                    what="every viewer to show the answer done",
                )
                viewer.stop.set()
            stored = store.get_messages(r, chat_id)
    finally:
        server.stop()
    assert pages == [200] * len(pages)
    for viewer in viewers:
        assert 502 not in viewer.statuses and set(viewer.statuses) <= {200, 0}, viewer.statuses
        assert len(viewer.statuses) >= 2  # its process restarted: it reconnected
        page = Page().apply(viewer.events)  # asserts nothing was added twice
        assert page.message_ids() == [message.id for message in stored]
        for message in stored:
            assert page.shows(message.id, message.html)
