"""Every route, fed wrong ids, types, sizes, cursors and headers: never a 5xx, and a
rejected request changes nothing in Redis."""

from __future__ import annotations

import contextlib
import socket
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatapp import store, users
from harness.accounts import PASSWORD, Person, csrf_token, sign_up
from harness.servers import RedisServer, stack_env, web_server
from tests.conftest import make_test_app
from tests.storing import keys_and_values

ROUTES = [
    ("GET", "/"),
    ("POST", "/chats"),
    ("GET", "/chats/new"),
    ("GET", "/chats/{chat}"),
    ("GET", "/chats/{chat}/export.md"),
    ("GET", "/chats/{chat}/export.{message}"),
    ("POST", "/chats/{chat}/messages"),
    ("POST", "/chats/{chat}/messages/{message}/stop"),
    ("GET", "/chats/{chat}/messages/{message}/stream"),
    ("GET", "/chats/{chat}/live"),
    ("POST", "/chats/{chat}/title"),
    ("POST", "/chats/{chat}/delete"),
    ("POST", "/chats/{chat}/messages/{message}/regenerate"),
    ("POST", "/chats/{chat}/messages/{message}/edit"),
    ("POST", "/chats/{chat}/messages/{message}/show"),
    ("GET", "/search?q={message}"),
    ("GET", "/search?q={chat}&warm={message}"),
    ("GET", "/chats/{chat}/live?after={message}"),
    ("PUT", "/chats/{chat}/messages"),
    ("DELETE", "/chats/{chat}"),
    ("GET", "/login"),
    ("POST", "/login"),
    ("GET", "/signup"),
    ("POST", "/signup"),
    ("POST", "/logout"),
    ("GET", "/admin"),
    ("POST", "/admin/registration"),
    ("POST", "/admin/users"),
    ("GET", "/login?next={chat}"),
    ("GET", "/metrics"),
    ("POST", "/metrics"),
    ("GET", "/admin/rq/"),
    ("GET", "/admin/rq/0/data/job/{message}.json"),
    ("POST", "/admin/rq/job/{message}/delete"),
    ("POST", "/admin/rq/job/{message}/requeue"),
    ("GET", "/admin/rq/0/view/job/{message}"),
    ("GET", "/account"),
    ("POST", "/account/password"),
    ("POST", "/account/sessions"),
    ("POST", "/admin/users/{chat}/disable"),
    ("POST", "/admin/users/{message}/{chat}"),
    ("POST", "/account/tokens"),
    ("POST", "/account/tokens/{message}/revoke"),
    ("GET", "/chats/{chat}/events"),
    ("GET", "/chats/{chat}/events?offset={message}&live=sse"),
    ("GET", "/chats/{chat}/events?offset=now&live={message}"),
    ("HEAD", "/chats/{chat}/events"),
    ("POST", "/chats/{chat}/events"),
    ("GET", "/chats/{chat}/messages/{message}/generations/{message}?offset={message}"),
    ("GET", "/chats/{chat}/messages/{message}/generations/{chat}?offset=-1&live=long-poll"),
    ("DELETE", "/chats/{chat}/messages/{message}/generations/{message}"),
    ("OPTIONS", "/chats/{chat}/events"),
]
FORM_FIELDS = [
    "text",
    "client_id",
    "csrf_token",
    "name",
    "password",
    "registration",
    "next",
    "title",
    "current",
]
HEADER_TEXT = st.text(alphabet=string.printable.replace("\n", "").replace("\r", ""), max_size=80)
ODD_TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        ["", " ", "0" * 16, "../../etc/passwd", "%00", "a" * 300, "{chat}", "🙂", "//[", "http://["]
    ),
)


@pytest.fixture
def world(redis_server: RedisServer, r: redis.Redis, tmp_path: Path) -> dict[str, object]:
    app = make_test_app(
        redis_server.url,
        tmp_path,
        STREAM_MAX_SECONDS=0.3,
        PING_SECONDS=0.1,
        CHECK_SECONDS=0.1,
        DURABLE_LONG_POLL_SECONDS=0.3,
    )
    alice, bob = Person(app), Person(app)  # alice signed up first: the admin
    chat = alice.new_chat()
    alice.send(chat, "a running answer", client_id="client-0001")
    messages = store.get_messages(r, chat)
    bobs_chat = bob.new_chat()
    nobody = Person(app)
    nobody.client.post("/logout", data={"csrf_token": nobody.token})
    nobody.token = csrf_token(nobody.client.get("/login").text)
    # An install indexes the sessions of older versions once, on the first use of the
    # session sets (users.py); done here, it is not taken for a change a rejection made.
    assert alice.client.get("/account").status_code == 200
    assert r.exists(users.SESSIONS_INDEXED_KEY)
    return {
        "people": [alice, bob, nobody],
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
    person: Person = data.draw(st.sampled_from(world["people"]))  # type: ignore[arg-type]
    r: redis.Redis = world["r"]  # type: ignore[assignment]
    method, template = data.draw(st.sampled_from(ROUTES))
    chat = data.draw(st.one_of(st.sampled_from(world["chats"]), ODD_TEXT))  # type: ignore[arg-type]
    message = data.draw(st.one_of(st.sampled_from(world["messages"]), ODD_TEXT))  # type: ignore[arg-type]
    path = template.format(chat=quote(chat, safe=""), message=quote(message, safe=""))
    form = data.draw(
        st.dictionaries(
            st.sampled_from(FORM_FIELDS),
            st.one_of(
                ODD_TEXT,
                st.sampled_from(["x" * 20_000, "client-" + "9" * 10, "closed", "open", "//evil"]),
                st.just(PASSWORD),
            ),
            max_size=5,
        )
    )
    headers = {"HX-Request": data.draw(st.sampled_from(["true", "false", ""]))}
    if data.draw(st.booleans()):
        headers["X-CSRFToken"] = data.draw(st.one_of(st.just(person.token), HEADER_TEXT))
    if data.draw(st.booleans()):
        headers["Last-Event-ID"] = data.draw(HEADER_TEXT)
    if data.draw(st.booleans()):
        headers["Authorization"] = "Bearer " + data.draw(HEADER_TEXT)
    if data.draw(st.booleans()):
        headers["HX-Current-URL"] = data.draw(st.one_of(HEADER_TEXT, st.just("http://[")))
    before = keys_and_values(r)
    with person.client.session_transaction() as session:
        saved = dict(session)
    response = person.client.open(path, method=method, data=form, headers=headers)
    body = response.get_data()  # runs a stream to its end (it closes after 0.3 s)
    assert response.status_code < 500, body[:500]
    if response.status_code >= 400:
        assert keys_and_values(r) == before
        assert body or method == "HEAD"  # a message a person can read (HEAD: no body)
    if response.status_code in (301, 302, 303, 307, 308):
        assert urlsplit(response.headers["Location"]).netloc in (
            "",
            "localhost",
        )  # no open redirect
    with person.client.session_transaction() as session:  # undo a logout or a new login
        session.clear()
        session.update(saved)


# Bodies a client can send that only a real server sees: the test client makes its own.
def _chunked(body: bytes) -> bytes:
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)


BROKEN_BODIES = {
    "a chunk size that is no number": ("chunked", b"zz\r\ntext=hi\r\n0\r\n\r\n"),
    "a chunk without its terminator": ("chunked", b"7\r\ntext=hiXXXX0\r\n\r\n"),
    "a chunk extension with a newline": ("chunked", b"7;a\nb\r\ntext=hi\r\n0\r\n\r\n"),
    "chunks ending early": ("chunked", b"ffff\r\ntext=hi"),
    "a body shorter than its Content-Length": ("length", b"text=hi"),
    "chunks over the size limit": ("chunked", _chunked(b"text=" + b"x" * 2_000_000)),
}
ODD_BODY = _chunked(b"text=%ff%fe&name=\xff\xfe&title=\x00")  # well framed; no UTF-8
ODD_CURSORS = ["c\uff15", "c\u0665", "c5 ", " c5", "c5\t", "c-1", "c" + "9" * 40, "\u00e9"]


def _raw_request(port: int, head: str, body: bytes) -> bytes:
    """Send a request as bytes, half-close, and return the status line of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        try:
            sock.sendall(head.encode("latin-1") + body)
            sock.shutdown(socket.SHUT_WR)
        except OSError:  # the server answered and closed before taking all of it
            pass
        answer = b""
        with contextlib.suppress(OSError):
            while b"\r\n" not in answer and (data := sock.recv(4096)):
                answer += data
    return answer.split(b"\r\n", 1)[0]


@pytest.mark.stack  # it starts gunicorn itself
def test_through_gunicorn_broken_bodies_and_odd_cursors_get_a_4xx_and_no_traceback(
    redis_server: RedisServer, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    env = stack_env(redis_server.url, tmp_path, CHATAPP_MAX_MESSAGE_CHARS="20000")
    with web_server(env) as (base, _), httpx.Client(base_url=base) as http:
        token = sign_up(http)
        chat = http.post("/chats", data={"csrf_token": token}).headers["Location"]
        cookie = "; ".join(f"{name}={value}" for name, value in http.cookies.items())
        port = int(base.rsplit(":", 1)[1])
        posts = [path.format(chat="0" * 16, message="0" * 16) for m, path in ROUTES if m == "POST"]
        for path in [*posts, f"{chat}/messages"]:
            for what, (framing, body) in [*BROKEN_BODIES.items(), ("odd", ("chunked", ODD_BODY))]:
                length = (
                    "Transfer-Encoding: chunked"
                    if framing == "chunked"
                    else f"Content-Length: {len(body) + 100}"
                )
                head = (
                    f"POST {path} HTTP/1.1\r\nHost: {base[7:]}\r\nCookie: {cookie}\r\n"
                    f"X-CSRFToken: {token}\r\nHX-Request: true\r\n"
                    "Content-Type: application/x-www-form-urlencoded\r\n"
                    f"{length}\r\nConnection: close\r\n\r\n"
                )
                status = _raw_request(port, head, body)
                wanted = (
                    (b"HTTP/1.1 2", b"HTTP/1.1 3", b"HTTP/1.1 4")
                    if what == "odd"
                    else b"HTTP/1.1 4"
                )
                assert status.startswith(wanted), (path, what, status)
        for cursor in ODD_CURSORS:
            head = (
                f"GET {chat}/live HTTP/1.1\r\nHost: {base[7:]}\r\nCookie: {cookie}\r\n"
                f"Accept: text/event-stream\r\nConnection: close\r\n\r\n"
            )
            head = head.replace("\r\n\r\n", f"\r\nLast-Event-ID: {cursor}\r\n\r\n")
            status = _raw_request(port, head.encode("utf-8").decode("latin-1"), b"")
            assert status.startswith(b"HTTP/1.1 200"), (cursor, status)  # an unknown cursor
        assert "Traceback" not in capfd.readouterr().err  # read before gunicorn stops


@pytest.fixture(scope="module")
def gunicorn_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """gunicorn on a real Redis, with a logged-in user and one of their chats."""
    directory = tmp_path_factory.mktemp("fuzz-gunicorn")
    server = RedisServer(directory)
    env = stack_env(
        server.url,
        directory,
        CHATAPP_STREAM_MAX_SECONDS="0.3",
        CHATAPP_DURABLE_LONG_POLL_SECONDS="0.3",
    )
    log = directory / "gunicorn.log"
    try:
        with web_server(env, log=log) as (base, _), httpx.Client(base_url=base) as http:
            token = sign_up(http)
            chat = http.post("/chats", data={"csrf_token": token}).headers["Location"]
            cookie = "; ".join(f"{name}={value}" for name, value in http.cookies.items())
            yield {
                "port": int(base.rsplit(":", 1)[1]),
                "token": token,
                "chat": chat,
                "cookie": cookie,
                "log": log,
            }
    finally:
        server.stop()


# The routes, but those that end the session this test holds.
KEEP_THE_SESSION = [
    (method, path)
    for method, path in ROUTES
    if path not in ("/logout", "/account/sessions", "/account/password")
]
# Bodies that look like chunks: a size (or not), some bytes, an ending (or not).
CHUNK_LIKE = st.builds(
    lambda size, data, end: size + b"\r\n" + data + end,
    st.sampled_from([b"zz", b"5", b"ffff", b"5;x\nb", b"-1", b"0"]),
    st.binary(max_size=20),
    st.sampled_from([b"\r\n0\r\n\r\n", b"", b"XX0\r\n\r\n"]),
)
RAW_TEXT = st.text(
    alphabet=st.characters(blacklist_characters="\r\n", max_codepoint=0x2FFF), max_size=60
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_through_gunicorn_no_request_gets_a_5xx_or_a_traceback(
    gunicorn_world: dict[str, Any], data: st.DataObject
) -> None:
    """Random requests as bytes on the wire (what the test client cannot send): any route,
    headers with any text (UTF-8 on the wire), bodies of any bytes, framed by length, in
    chunks or cut short."""
    world = gunicorn_world
    method, template = data.draw(st.sampled_from(KEEP_THE_SESSION))
    chat_id = world["chat"].rsplit("/", 1)[-1]
    odd = data.draw(st.one_of(st.just(chat_id), ODD_TEXT))
    path = template.format(chat=quote(odd, safe=""), message=quote(odd, safe=""))
    headers = {
        "Host": f"127.0.0.1:{world['port']}",
        "Cookie": world["cookie"],
        "X-CSRFToken": data.draw(st.sampled_from([world["token"], "forged"])),
        "HX-Request": data.draw(st.sampled_from(["true", "false"])),
        "Connection": "close",
    }
    if data.draw(st.booleans()):
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    names = ["Last-Event-ID", "Content-Type", "Accept", "Referer", "Origin", "Sec-Fetch-Site"]
    for name in data.draw(st.lists(st.sampled_from(names), max_size=2, unique=True)):
        headers[name] = data.draw(st.one_of(HEADER_TEXT, RAW_TEXT))
    body = data.draw(st.one_of(st.binary(max_size=300), CHUNK_LIKE))
    framing = data.draw(st.sampled_from(["length", "chunked", "chunked", "cut", "none"]))
    if framing == "length":
        headers["Content-Length"] = str(len(body))
    elif framing == "cut":
        headers["Content-Length"] = str(len(body) + 10)
    elif framing == "chunked":
        headers["Transfer-Encoding"] = "chunked"
        body = _chunked(body) if data.draw(st.booleans()) else body  # or no chunks at all
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    status = _raw_request(world["port"], (head + "\r\n").encode().decode("latin-1"), body)
    assert status.startswith(b"HTTP/1.1 ") and not status.startswith(b"HTTP/1.1 5"), (
        method,
        path,
        headers,
        body,
        status,
    )
    assert "Traceback" not in world["log"].read_text()
