"""Through Debian's nginx (deploy/nginx.conf) in front of two gunicorn processes."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator

import httpx
import pytest

from chatapp import store
from tests.client import ChatClient, Event, blocks_of
from tests.servers import PROJECT_DIR, Stack, stack_behind_nginx


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
        first = next(response.iter_text())  # arrives before the answer ends: not buffered
        assert first.startswith("id: ") and "event: snapshot" in first


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
    assert blocks_of(seen) == stored.html


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
    assert stored is not None and blocks_of(events) == stored.html
    # nginx tells the app the request came over HTTPS, so the session cookie is Secure.
    fresh = httpx.Client(base_url=proxied.https_base, http2=True, verify=False)
    cookie = fresh.get("/login").headers["set-cookie"]
    assert "session=" in cookie and "Secure" in cookie


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
