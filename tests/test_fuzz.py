"""Every route, fed wrong ids, types, sizes, cursors and headers: never a 5xx, and a
rejected request changes nothing in Redis."""

from __future__ import annotations

import string
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatapp import store
from tests.conftest import make_test_app
from tests.servers import RedisServer
from tests.test_views import Browser, keys_and_values

ROUTES = [
    ("GET", "/"),
    ("POST", "/chats"),
    ("GET", "/chats/{chat}"),
    ("POST", "/chats/{chat}/messages"),
    ("POST", "/chats/{chat}/messages/{message}/stop"),
    ("GET", "/chats/{chat}/messages/{message}/stream"),
    ("PUT", "/chats/{chat}/messages"),
    ("DELETE", "/chats/{chat}"),
]
HEADER_TEXT = st.text(alphabet=string.printable.replace("\n", "").replace("\r", ""), max_size=80)
ODD_TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", " ", "0" * 16, "../../etc/passwd", "%00", "a" * 300, "{chat}", "🙂"]),
)


@pytest.fixture
def world(redis_server: RedisServer, r: redis.Redis, tmp_path: Path) -> dict[str, object]:
    app = make_test_app(
        redis_server.url, tmp_path, STREAM_MAX_SECONDS=0.3, PING_SECONDS=0.1, CHECK_SECONDS=0.1
    )
    alice, bob = Browser(app), Browser(app)
    chat = alice.new_chat()
    alice.send(chat, "a running answer", client_id="client-0001")
    messages = store.get_messages(r, chat)
    bobs_chat = bob.new_chat()
    return {
        "alice": alice,
        "chats": [chat, bobs_chat],
        "messages": [m.id for m in messages],
        "r": r,
    }


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_no_route_answers_5xx_and_rejections_change_nothing(
    world: dict[str, object], data: st.DataObject
) -> None:
    alice: Browser = world["alice"]  # type: ignore[assignment]
    r: redis.Redis = world["r"]  # type: ignore[assignment]
    method, template = data.draw(st.sampled_from(ROUTES))
    chat = data.draw(st.one_of(st.sampled_from(world["chats"]), ODD_TEXT))  # type: ignore[arg-type]
    message = data.draw(st.one_of(st.sampled_from(world["messages"]), ODD_TEXT))  # type: ignore[arg-type]
    path = template.format(chat=quote(chat, safe=""), message=quote(message, safe=""))
    form = data.draw(
        st.dictionaries(
            st.sampled_from(["text", "client_id", "csrf_token", "other"]),
            st.one_of(ODD_TEXT, st.just("x" * 20_000), st.just("client-" + "9" * 10)),
            max_size=4,
        )
    )
    headers = {"HX-Request": data.draw(st.sampled_from(["true", "false", ""]))}
    if data.draw(st.booleans()):
        headers["X-CSRFToken"] = data.draw(st.one_of(st.just(alice.token), HEADER_TEXT))
    if data.draw(st.booleans()):
        headers["Last-Event-ID"] = data.draw(HEADER_TEXT)
    before = keys_and_values(r)
    response = alice.client.open(path, method=method, data=form, headers=headers)
    body = response.get_data()  # runs a stream to its end (it closes after 0.3 s)
    assert response.status_code < 500, body[:500]
    if response.status_code >= 400:
        assert keys_and_values(r) == before
        assert body  # a message a person can read
