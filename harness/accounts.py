"""Signing up test users: through any HTTP client (Flask's or httpx) or a browser page."""

from __future__ import annotations

import itertools
import json
import os
import re
from typing import Any
from urllib.parse import urljoin

from flask import Flask
from playwright.sync_api import Page, expect

PASSWORD = "correct horse battery staple"
_numbers = itertools.count()

# Rate limits and caps high enough that only the tests about them meet them.
GENEROUS_LIMITS: dict[str, Any] = {
    "RATE_LIMIT_LOGIN": "10000 per minute",
    "RATE_LIMIT_SIGNUP": "10000 per minute",
    "RATE_LIMIT_SEND": "10000 per minute",
    "RATE_LIMIT_NEW_CHAT": "10000 per minute",
    "RATE_LIMIT_ACTIONS": "10000 per minute",
    "MAX_RUNNING_PER_USER": 1000,
    # Tests and the benchmark open many streams of one account in a row, and a stream
    # whose client left is counted until the server's next write to it (a ping) fails.
    "STREAMS_PER_USER": 100_000,
}


def csrf_token(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token on the page"
    return match.group(1)


def new_name() -> str:
    return f"user{os.getpid()}-{next(_numbers)}"


def sign_up(http: Any, name: str | None = None, password: str = PASSWORD) -> str:
    """Create an account with a Flask test client or an httpx client, which keeps the
    session; return the CSRF token of the logged-in session."""
    page = http.get("/signup")
    assert page.status_code == 200, page.text
    form = {"csrf_token": csrf_token(page.text), "name": name or new_name(), "password": password}
    response = http.post("/signup", data=form)
    assert response.status_code == 303, response.text
    return csrf_token(http.get("/").text)


def log_in(http: Any, name: str, password: str = PASSWORD) -> str:
    """Log in with a Flask test client or an httpx client; return the new CSRF token."""
    page = http.get("/login")
    form = {"csrf_token": csrf_token(page.text), "name": name, "password": password}
    response = http.post("/login", data=form)
    assert response.status_code == 303, response.text
    return csrf_token(http.get("/").text)


BROWSER_TIMEOUT_MS = 30_000


def sign_up_in_browser(page: Page, base: str, name: str | None = None) -> str:
    """Create an account in the browser page and land on the chat list."""
    name = name or new_name()
    page.goto(base + "/signup")
    page.locator("#name").fill(name)
    page.locator("#password").fill(PASSWORD)
    page.locator("form button[type=submit].primary").click()
    page.wait_for_url(re.compile(re.escape(base) + "/$"))
    return name


def log_in_in_browser(page: Page, base: str, name: str) -> None:
    """Log in as `name` in the browser page and land on the chat list."""
    page.goto(base + "/login")
    page.locator("#name").fill(name)
    page.locator("#password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(re.escape(base) + "/$"))


def sign_up_and_start_a_chat(page: Page, base: str) -> tuple[str, str]:
    """A new person's first chat, empty, open and following on `page`: return their name
    and the chat's URL."""
    name = sign_up_in_browser(page, base)
    page.set_default_timeout(BROWSER_TIMEOUT_MS)
    return name, open_an_empty_chat(page, base)


def open_an_empty_chat(page: Page, base: str) -> str:
    """Create an empty chat as a script can (POST /chats without a message: the page's
    "New chat" stores nothing before the first one) and open it; return its URL."""
    token = json.loads(page.locator("body").get_attribute("hx-headers") or "{}")["X-CSRFToken"]
    response = page.request.post(base + "/chats", form={"csrf_token": token}, max_redirects=0)
    assert response.status == 303, response.text()
    page.goto(urljoin(base, response.headers["location"]))
    expect(page.locator("section.chat")).to_have_attribute(
        "data-connection", "open", timeout=BROWSER_TIMEOUT_MS
    )
    return page.url


def start_a_chat(page: Page, question: str) -> str:
    """Start a chat as a person does: "Start a new chat" on the front page, then the first
    message; return the chat's URL."""
    page.get_by_role("link", name="Start a new chat").click()
    page.wait_for_url(re.compile(r"/chats/new$"))
    page.locator("#composer-text").fill(question)
    page.get_by_role("button", name="Send").click()
    page.wait_for_url(re.compile(r"/chats/[0-9a-f]+$"))
    return page.url


class Person:
    """A signed-up user on a Flask test client: its session and CSRF token, sending like htmx."""

    def __init__(self, app: Flask, name: str | None = None) -> None:
        self.client = app.test_client()
        self.token = sign_up(self.client, name)

    def post(self, url: str, csrf: bool = True, **data: str):
        headers = {"HX-Request": "true"} | ({"X-CSRFToken": self.token} if csrf else {})
        return self.client.post(url, data=data, headers=headers)

    def new_chat(self) -> str:
        response = self.client.post("/chats", data={"csrf_token": self.token})
        assert response.status_code == 303
        return response.headers["Location"].rsplit("/", 1)[-1]

    def send(self, chat_id: str, text: str = "hello", client_id: str = "client-0001", **kw):
        return self.post(f"/chats/{chat_id}/messages", text=text, client_id=client_id, **kw)
