"""Accounts: the first visit makes the admin, logins and logouts, closed registration,
cookies, and the limits on logging in and sending."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from playwright.sync_api import Browser as PlaywrightBrowser
from playwright.sync_api import expect

from chatapp import users
from harness.accounts import (
    PASSWORD,
    Person,
    csrf_token,
    sign_up,
    sign_up_and_start_a_chat,
)
from harness.page import answer_in
from harness.servers import RedisServer, Stack
from tests.conftest import make_test_app
from tests.storing import keys_and_values


def log_in(client: FlaskClient, name: str, password: str = PASSWORD, **extra: str):
    token = csrf_token(client.get("/login").text)
    return client.post(
        "/login", data={"csrf_token": token, "name": name, "password": password, **extra}
    )


def log_out(client: FlaskClient) -> None:
    token = csrf_token(client.get("/").text)
    assert client.post("/logout", data={"csrf_token": token}).status_code == 303


def test_the_first_visit_creates_the_admin_in_one_form(client: FlaskClient) -> None:
    first = client.get("/")
    assert first.status_code == 302 and first.headers["Location"] == "/signup"
    page = client.get("/signup").text
    assert "Create the admin account" in page
    assert client.get("/login").headers["Location"] == "/signup"  # no account yet
    token = csrf_token(page)
    response = client.post(
        "/signup", data={"csrf_token": token, "name": "Ada", "password": PASSWORD}
    )
    assert response.status_code == 303 and response.headers["Location"] == "/"
    home = client.get("/")
    assert home.status_code == 200 and "Your chats" in home.text
    assert 'href="/admin"' in home.text and "Ada" in home.text
    assert client.get("/admin").status_code == 200


def test_later_accounts_are_not_admins(alice: Person, bob: Person) -> None:
    assert alice.client.get("/admin").status_code == 200
    page = bob.client.get("/")
    assert 'href="/admin"' not in page.text
    denied = bob.client.get("/admin")
    assert denied.status_code == 403 and "Only the admin" in denied.text
    assert bob.post("/admin/registration", registration="closed").status_code == 403
    assert bob.post("/admin/users", name="mallory", password=PASSWORD).status_code == 403


@pytest.mark.parametrize("registration", ["open", "closed"])
def test_sign_ups_racing_on_a_fresh_install_make_exactly_one_admin(
    redis_server: RedisServer, r: redis.Redis, tmp_path: Path, registration: str
) -> None:
    app = make_test_app(redis_server.url, tmp_path, REGISTRATION=registration)
    forms = []
    for index in range(8):
        client = app.test_client()
        forms.append((client, csrf_token(client.get("/signup").text), f"racer{index}"))
    barrier = threading.Barrier(len(forms))
    statuses: list[int] = []

    def sign_up_one(client: FlaskClient, token: str, name: str) -> None:
        barrier.wait()
        form = {"csrf_token": token, "name": name, "password": PASSWORD}
        statuses.append(client.post("/signup", data=form).status_code)

    threads = [threading.Thread(target=sign_up_one, args=form) for form in forms]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    made = users.list_users(r)
    assert sum(user.is_admin for user in made) == 1
    if registration == "open":
        assert statuses == [303] * 8 and len(made) == 8
    else:  # closed: only the first account, whoever wins the race
        assert sorted(statuses) == [303] + [403] * 7 and len(made) == 1


def test_passwords_are_stored_hashed(alice: Person, r: redis.Redis) -> None:
    (user,) = users.list_users(r)
    stored = r.hget(users.user_key(user.id), "password")
    assert stored and stored.startswith("scrypt:") and PASSWORD not in stored


def test_logging_out_ends_the_session_on_the_server(alice: Person, app: Flask) -> None:
    copy = app.test_client()
    cookie = alice.client.get_cookie("session")
    assert cookie is not None
    copy.set_cookie("session", cookie.value)
    assert copy.get("/").status_code == 200  # the same session, from another place
    log_out(alice.client)
    assert alice.client.get("/").status_code == 302
    assert copy.get("/").status_code == 302  # the copied cookie ended with it
    assert copy.get("/").headers["Location"].startswith("/login")


def test_log_out_then_log_in_again_returns_to_the_page_asked_for(
    app: Flask, r: redis.Redis
) -> None:
    grace = Person(app, "grace")
    client = grace.client
    chat = grace.new_chat()
    log_out(client)
    away = client.get(f"/chats/{chat}")
    assert away.status_code == 302
    assert away.headers["Location"] == f"/login?next=/chats/{chat}"
    response = log_in(client, "GRACE", next=f"/chats/{chat}")  # names ignore case
    assert response.status_code == 303 and response.headers["Location"] == f"/chats/{chat}"
    assert client.get(f"/chats/{chat}").status_code == 200


@pytest.mark.parametrize(
    "next_url",
    [
        "//evil.example/",
        "https://evil.example/",
        "/\\evil.example",
        "/\t/evil.example",
        "//[",
        "http://[",
        "javascript:alert(1)",
    ],
)
def test_login_never_redirects_off_the_site(alice: Person, app: Flask, next_url: str) -> None:
    client = app.test_client()
    name = users.list_users(alice.client.application.extensions["redis"])[0].name
    response = log_in(client, name, next=next_url)
    assert response.status_code == 303 and response.headers["Location"] == "/"


def test_wrong_passwords_and_unknown_names_get_the_same_answer(
    alice: Person, app: Flask, r: redis.Redis
) -> None:
    name = users.list_users(r)[0].name
    before = keys_and_values(r)
    answers = [
        log_in(app.test_client(), name, "wrong password"),
        log_in(app.test_client(), "nobody-here", "wrong password"),
        log_in(app.test_client(), "bad name!", "wrong password"),
        log_in(app.test_client(), name, "x" * 10_000),
    ]
    for response in answers:
        assert response.status_code == 401
        assert "Wrong user name or password." in response.text
    assert keys_and_values(r) == before


@pytest.mark.parametrize(
    ("name", "password", "message"),
    [
        ("", PASSWORD, "1 to 32 letters"),
        ("has space", PASSWORD, "1 to 32 letters"),
        ("<script>", PASSWORD, "1 to 32 letters"),
        ("x" * 33, PASSWORD, "1 to 32 letters"),
        ("fine", "short", "8 to 256 characters"),
        ("fine", "y" * 257, "8 to 256 characters"),
        ("ALICE", PASSWORD, "taken"),
    ],
)
def test_bad_sign_ups_get_a_clear_400_and_change_nothing(
    app: Flask, r: redis.Redis, name: str, password: str, message: str
) -> None:
    sign_up(app.test_client(), "alice")
    client = app.test_client()
    before = keys_and_values(r)
    token = csrf_token(client.get("/signup").text)
    response = client.post(
        "/signup", data={"csrf_token": token, "name": name, "password": password}
    )
    assert response.status_code == 400 and message in response.text
    assert keys_and_values(r) == before


def test_the_admin_closes_registration_and_adds_people(
    alice: Person, app: Flask, r: redis.Redis
) -> None:
    assert alice.post("/admin/registration", registration="closed").status_code == 303
    assert "Registration is <strong>closed" in alice.client.get("/admin").text
    stranger = app.test_client()
    refused = stranger.get("/signup")
    assert refused.status_code == 403 and "Registration is closed" in refused.text
    assert "Create an account" not in stranger.get("/login").text
    before = keys_and_values(r)
    posted = stranger.post("/signup", data={"name": "eve", "password": PASSWORD})
    assert posted.status_code in (400, 403)  # no form to take a token from, and closed
    assert keys_and_values(r) == before

    assert alice.post("/admin/users", name="carol", password=PASSWORD).status_code == 303
    assert log_in(stranger, "carol").status_code == 303
    assert "carol" in alice.client.get("/admin").text
    assert alice.post("/admin/users", name="carol", password=PASSWORD).status_code == 400
    assert alice.post("/admin/registration", registration="maybe").status_code == 400

    assert alice.post("/admin/registration", registration="open").status_code == 303
    assert app.test_client().get("/signup").status_code == 200


def test_the_environment_can_close_registration_for_good(
    redis_server: RedisServer, r: redis.Redis, tmp_path: Path
) -> None:
    app = make_test_app(redis_server.url, tmp_path, REGISTRATION="closed")
    admin = Person(app)  # the very first account is always allowed
    assert app.test_client().get("/signup").status_code == 403
    admin.post("/admin/registration", registration="open")
    assert app.test_client().get("/signup").status_code == 403
    assert "CHATAPP_REGISTRATION=closed" in admin.client.get("/admin").text
    with pytest.raises(ValueError, match="REGISTRATION"):
        make_test_app(redis_server.url, tmp_path, REGISTRATION="sometimes")


def test_the_same_account_on_two_devices_sees_the_same_chats(app: Flask) -> None:
    laptop, phone = Person(app, "dana"), app.test_client()
    assert log_in(phone, "dana").status_code == 303
    chat_id = laptop.new_chat()
    assert f'href="/chats/{chat_id}"' in phone.get("/").text
    assert phone.get(f"/chats/{chat_id}").status_code == 200


def session_cookie(response) -> str:
    cookies = [c for c in response.headers.getlist("Set-Cookie") if c.startswith("session=")]
    assert cookies, "no session cookie was set"
    return cookies[-1]


def test_the_session_cookie_is_httponly_samesite_and_secure_over_https(
    redis_server: RedisServer, r: redis.Redis, tmp_path: Path
) -> None:
    app = make_test_app(redis_server.url, tmp_path)
    plain = app.test_client()
    sign_up(plain, "erin")
    cookie = session_cookie(log_in(plain, "erin"))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie

    https = app.test_client()
    token = csrf_token(https.get("/login", base_url="https://localhost").text)
    response = https.post(
        "/login",
        base_url="https://localhost",
        headers={"Referer": "https://localhost/login"},  # Flask-WTF checks it over HTTPS
        data={"csrf_token": token, "name": "erin", "password": PASSWORD},
    )
    assert response.status_code == 303
    assert "Secure" in session_cookie(response)

    # A forwarded scheme counts only from a proxy the configuration trusts.
    forged = app.test_client()
    forwarded = {"X-Forwarded-Proto": "https"}
    assert "Secure" not in session_cookie(forged.get("/login", headers=forwarded))
    proxied = make_test_app(redis_server.url, tmp_path, TRUSTED_PROXIES=1).test_client()
    assert "Secure" in session_cookie(proxied.get("/login", headers=forwarded))


def test_the_secret_key_is_random_and_kept_in_the_data_folder(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    first = make_test_app(redis_server.url, tmp_path / "a", SECRET_KEY=None)
    again = make_test_app(redis_server.url, tmp_path / "a", SECRET_KEY=None)
    other = make_test_app(redis_server.url, tmp_path / "b", SECRET_KEY=None)
    assert first.secret_key == again.secret_key != other.secret_key
    assert len(str(first.secret_key)) >= 32
    assert (tmp_path / "a" / "secret_key").stat().st_mode & 0o077 == 0


def test_state_changing_requests_without_the_csrf_token_are_refused(
    alice: Person, app: Flask, r: redis.Redis
) -> None:
    chat_id = alice.new_chat()
    answer_id = answer_in(alice.send(chat_id).text)
    before = keys_and_values(r)
    name = users.list_users(r)[0].name
    for url, form in [
        ("/chats", {}),
        (f"/chats/{chat_id}/messages", {"text": "hi", "client_id": "client-0002"}),
        (f"/chats/{chat_id}/messages/{answer_id}/stop", {}),
        ("/logout", {}),
        ("/admin/registration", {"registration": "closed"}),
        ("/admin/users", {"name": "mallory", "password": PASSWORD}),
    ]:
        for token in (None, "forged-token"):
            data = form | ({"csrf_token": token} if token else {})
            response = alice.client.post(url, data=data)
            assert response.status_code == 400, url
            assert "security token" in response.text
    stranger = app.test_client()
    assert stranger.post("/login", data={"name": name, "password": PASSWORD}).status_code == 400
    assert stranger.post("/signup", data={"name": "x1", "password": PASSWORD}).status_code == 400
    assert keys_and_values(r) == before
    assert alice.client.get("/").status_code == 200  # still logged in


def test_over_https_a_form_from_another_site_is_refused_saying_so(
    alice: Person, app: Flask
) -> None:
    """Over HTTPS the CSRF check also wants the Referer to name this site: a foreign or
    missing one is refused with its own reason, not "token expired"."""
    client = app.test_client()
    https = {"base_url": "https://chat.example"}
    token = csrf_token(client.get("/login", **https).text)  # type: ignore[arg-type]
    form = {"csrf_token": token, "name": "nobody", "password": PASSWORD}
    foreign = client.post(
        "/login", data=form, headers={"Referer": "https://evil.example/"}, **https
    )  # type: ignore[arg-type]
    assert foreign.status_code == 400 and "sent from another site" in foreign.text
    missing = client.post("/login", data=form, **https)  # type: ignore[arg-type]
    assert missing.status_code == 400 and "sent no Referer" in missing.text
    own = client.post(
        "/login", data=form, headers={"Referer": "https://chat.example/login"}, **https
    )  # type: ignore[arg-type]
    assert own.status_code == 401  # past the check: the name is unknown


def test_a_logged_out_visitor_reaches_nothing(alice: Person, app: Flask, r: redis.Redis) -> None:
    chat_id = alice.new_chat()
    answer_id = answer_in(alice.send(chat_id).text)
    stranger = app.test_client()
    before = keys_and_values(r)
    assert stranger.get(f"/chats/{chat_id}").headers["Location"].startswith("/login?next=")
    urls = ["/chats", f"/chats/{chat_id}/messages", f"/chats/{chat_id}/messages/{answer_id}/stop"]
    for url in urls:
        response = stranger.post(url, data={"text": "hi", "client_id": "client-0003"})
        assert response.status_code == 401 and "Log in again" in response.text
        hx = stranger.post(url, headers={"HX-Request": "true"})
        assert hx.status_code == 401 and hx.headers["HX-Redirect"].startswith("/login")
    stream = stranger.get(f"/chats/{chat_id}/messages/{answer_id}/stream")
    missing = stranger.get(f"/chats/{chat_id}/messages/0123456789abcdef/stream")
    assert stream.status_code == 200 and stream.text.startswith("event: end\n")
    assert stream.text == missing.text.replace("0123456789abcdef", answer_id)  # no oracle
    assert keys_and_values(r) == before


def test_a_tab_that_was_logged_out_elsewhere_goes_to_the_login_page(
    browser: PlaywrightBrowser, stack: Stack
) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        name, chat_url = sign_up_and_start_a_chat(page, stack.base)
        other = context.new_page()  # another tab of the same browser logs out
        other.goto(stack.base + "/")
        other.get_by_role("button", name="Log out").click()
        other.wait_for_url(re.compile(r"/login$"))

        page.locator("#composer-text").fill("Are you still there?")
        page.get_by_role("button", name="Send").click()
        page.wait_for_url(re.compile(r"/login\?next="))  # htmx follows HX-Redirect
        page.locator("#name").fill(name)
        page.locator("#password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(chat_url)
        expect(page.locator("#composer-text")).to_be_visible()
    finally:
        context.close()


def test_event_streams_leave_the_session_cookie_alone_and_pages_refresh_it(app: Flask) -> None:
    """A browser opens a stream on every page and reconnect: re-signing the cookie for each
    is wasted work. Pages keep the session's 30 days sliding."""
    person = Person(app, "fay")
    chat_id = person.new_chat()
    page = person.client.get(f"/chats/{chat_id}")
    assert session_cookie(page)
    stream = person.client.get(f"/chats/{chat_id}/messages/{'0' * 16}/stream")
    front = person.client.get("/live", buffered=False)
    for response in (stream, front):
        assert response.mimetype == "text/event-stream"
        assert not [c for c in response.headers.getlist("Set-Cookie") if "session=" in c]
    front.close()


GEVENT_LOGIN = """
from gevent import monkey; monkey.patch_all()
import gevent
from chatapp import passwords

ticks = 0
def stream():  # a stream's greenlet, writing every millisecond
    global ticks
    while True:
        ticks += 1
        gevent.sleep(0.001)

gevent.spawn(stream)
gevent.sleep(0.01)
before = ticks
passwords.hashed("a password")
print(ticks - before)
"""


@pytest.mark.stack  # it starts gunicorn itself
def test_a_login_under_the_gevent_worker_does_not_stop_the_process_streams() -> None:
    """scrypt runs in a real thread: the process's other greenlets go on meanwhile."""
    out = subprocess.run(
        [sys.executable, "-c", GEVENT_LOGIN], capture_output=True, text=True, check=True
    )
    assert int(out.stdout) > 0  # hashed on the loop's own thread, it would be 0


def form_post(client: FlaskClient, url: str, **data: str):
    token = csrf_token(client.get("/account").text)
    return client.post(url, data={"csrf_token": token, **data})


def test_changing_ones_password_needs_the_current_one_and_logs_out_other_sessions(
    app: Flask,
) -> None:
    Person(app, "admin-pw")  # the first account is the admin
    laptop = Person(app, "carol").client
    phone = app.test_client()
    assert log_in(phone, "carol").status_code == 303
    assert "1 other browser or device" in laptop.get("/account").text
    wrong = form_post(laptop, "/account/password", current="not it", password="a new password")
    assert wrong.status_code == 403 and "current password is not right" in wrong.text
    short = form_post(laptop, "/account/password", current=PASSWORD, password="short")
    assert short.status_code == 400 and "8 to 256 characters" in short.text
    changed = form_post(laptop, "/account/password", current=PASSWORD, password="a new password")
    assert changed.status_code == 303
    assert "Your password is changed" in laptop.get(changed.headers["Location"]).text
    assert phone.get("/").status_code == 302  # logged out
    assert laptop.get("/").status_code == 200  # still in
    assert log_in(app.test_client(), "carol").status_code == 401  # the old password
    assert log_in(app.test_client(), "carol", "a new password").status_code == 303


def test_logging_out_everywhere_else_keeps_this_session(app: Flask, r: redis.Redis) -> None:
    Person(app, "admin-everywhere")
    here = Person(app, "dave").client
    elsewhere = [app.test_client() for _ in range(2)]
    for client in elsewhere:
        assert log_in(client, "dave").status_code == 303
    (dave,) = [u for u in users.list_users(r) if u.name == "dave"]
    older = users.session_key("o" * 32)  # started by a version without session sets
    r.set(older, dave.id, ex=3600)
    assert form_post(here, "/account/sessions").status_code == 303
    assert [client.get("/").status_code for client in elsewhere] == [302, 302]
    assert not r.exists(older)
    assert here.get("/").status_code == 200
    assert "on 0 other browsers or devices" in here.get("/account").text


def test_the_admin_disables_enables_and_deletes_accounts(app: Flask, r: redis.Redis) -> None:
    admin = Person(app, "admin-people")
    erin = Person(app, "erin")
    chat_id = erin.new_chat()
    assert erin.send(chat_id).status_code == 200
    (erin_user,) = [u for u in users.list_users(r) if u.name == "erin"]
    url = f"/admin/users/{erin_user.id}"
    assert form_post(erin.client, f"{url}/disable").status_code == 403  # the admin only

    assert form_post(admin.client, f"{url}/disable").status_code == 303
    assert erin.client.get("/").status_code == 302  # her session ended
    refused = log_in(app.test_client(), "erin")
    assert refused.status_code == 403 and "disabled" in refused.text
    assert "disabled" in admin.client.get("/admin").text
    assert form_post(admin.client, f"{url}/enable").status_code == 303
    assert log_in(erin.client, "erin").status_code == 303

    (admin_user,) = [u for u in users.list_users(r) if u.is_admin]
    own = form_post(admin.client, f"/admin/users/{admin_user.id}/delete")
    assert own.status_code == 409
    assert form_post(admin.client, f"{url}/delete").status_code == 303
    assert erin.client.get("/").status_code == 302
    assert "erin" not in [u.name for u in users.list_users(r)]
    left = [key for key in r.scan_iter("*") if chat_id in key or erin_user.id in key]
    assert all(r.ttl(key) > 0 for key in left), left  # only what expires by itself
    assert form_post(admin.client, f"{url}/delete").status_code == 404
    Person(app, "erin")  # the name is free again
