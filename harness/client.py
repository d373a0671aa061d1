"""A small HTTP client for the running stack: a session, its CSRF token, and an SSE reader."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from harness.accounts import log_in, new_name, sign_up
from harness.page import Page


@dataclass
class Event:
    id: str | None
    event: str
    data: str


def parse_events(raw: str, strip_every_space: bool = False) -> list[Event]:
    """Parse an SSE body (complete events only), per the WHATWG rules we rely on; or,
    with `strip_every_space`, as some clients do, which strip every space that starts a
    field's value, not just the one the format allows."""
    events: list[Event] = []
    for block in raw.split("\n\n")[:-1]:
        fields: dict[str, list[str]] = {}
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value.lstrip(" ") if strip_every_space else value.removeprefix(" ")
            fields.setdefault(name, []).append(value)
        if "data" in fields or "event" in fields:
            ids = fields.get("id")
            data = "\n".join(as_the_page_reads(line) for line in fields.get("data", []))
            events.append(
                Event(ids[-1] if ids else None, fields.get("event", ["message"])[-1], data)
            )
    return events


def as_the_page_reads(line: str) -> str:
    """A data line as the page reads it: the server sends a blank that starts one as a
    character reference (chatapp/sse.py), which the browser's HTML parser (and app.js,
    for the short text deltas) reads as the blank."""
    return LEADING_REFERENCE.sub(lambda ref: chr(int(ref[1])), line)


LEADING_REFERENCE = re.compile(r"^&#(32|9);")


class ChatClient:
    """One device of one user: a new account, or (`same_user_as`) another login to one."""

    def __init__(
        self, base: str, same_user_as: ChatClient | None = None, **options: object
    ) -> None:
        """`options` go to httpx.Client (say, http2=True and verify=False)."""
        self.base = base
        self.sent_pages: dict[str, str] = {}  # answer id -> what its send returned
        self.http = httpx.Client(base_url=base, timeout=30, follow_redirects=False, **options)  # type: ignore[arg-type]
        if same_user_as is None:
            self.name = new_name()
            self.token = sign_up(self.http, self.name)
        else:
            self.name = same_user_as.name
            self.token = log_in(self.http, self.name)

    def another_device(self) -> ChatClient:
        return ChatClient(self.base, same_user_as=self)

    def live(
        self,
        chat_id: str,
        until: Callable[[list[Event]], bool],
        last_event_id: str | None = None,
        after: str | None = None,
        skip: tuple[str, ...] = ("ping", "chats"),
        strip_every_space: bool = False,
    ) -> list[Event]:
        """Read the chat's stream until `until(events)` holds (bounded in time), leaving
        out the event kinds in `skip` (keep-alives and the chat list, by default);
        `strip_every_space` reads it as some SSE clients do (see parse_events)."""
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        params = {"after": after} if after else {}
        raw = ""
        url = f"/chats/{chat_id}/live"
        with self.http.stream("GET", url, headers=headers, params=params, timeout=30) as response:
            assert response.status_code == 200
            for chunk in response.iter_text():
                raw += chunk
                events = [e for e in parse_events(raw, strip_every_space) if e.event not in skip]
                if until(events):
                    return events
        return [e for e in parse_events(raw, strip_every_space) if e.event not in skip]

    def page_shows_ended(self, chat_id: str, answer_id: str) -> Event:
        """Follow the chat page's stream until it shows the answer ended; return the event
        that ended it (its `end`, or a snapshot of it)."""
        page = Page()
        for event in self.follow_page(chat_id, answer_id):
            page.apply_event(event)
            if page.shows_ended(answer_id):
                return event
        raise AssertionError("follow_page returned before the page showed the end")

    def follow_page(
        self,
        chat_id: str,
        answer_id: str,
        seen: list[Event] | None = None,
        seconds: float = 90.0,
    ) -> list[Event]:
        """Follow the chat page's stream as a tab does until it shows the answer ended (its
        `end`, or a snapshot of it): after any close or refusal, wait for the retry hint's
        second and resume from the last id read. Return every event read but keep-alives
        and the chat list, in order, also added to `seen` as they come."""
        seen = [] if seen is None else seen
        page = Page().apply(seen)
        cursor, deadline = None, time.monotonic() + seconds
        while not page.shows_ended(answer_id):
            assert time.monotonic() < deadline, f"the page never showed answer {answer_id} ended"
            headers = {"Last-Event-ID": cursor} if cursor else {}
            with contextlib.suppress(httpx.HTTPError):  # a process restarting: try again
                self._read_page(chat_id, headers, seen, page, answer_id)
            cursor = next((e.id for e in reversed(seen) if e.id), cursor)
            if not page.shows_ended(answer_id):
                time.sleep(1)  # closed before the end: the retry hint says 1 to 3 s
        return seen

    def _read_page(
        self, chat_id: str, headers: dict[str, str], seen: list[Event], page: Page, answer_id: str
    ) -> None:
        """Read one connection of the chat's stream into `seen` and `page`, until the page
        shows the answer ended."""
        raw, taken = "", 0
        url = f"/chats/{chat_id}/live"
        with self.http.stream("GET", url, headers=headers, timeout=30) as response:
            if response.status_code != 200:
                return
            for chunk in response.iter_text():
                raw += chunk
                events = [e for e in parse_events(raw) if e.event not in ("ping", "chats")]
                seen += events[taken:]
                page.apply(events[taken:])
                taken = len(events)
                if page.shows_ended(answer_id):
                    return

    def new_chat(self) -> str:
        response = self.http.post("/chats", data={"csrf_token": self.token})
        assert response.status_code == 303, response.text
        return response.headers["location"].rsplit("/", 1)[-1]

    def send(self, chat_id: str, text: str, client_id: str | None = None) -> httpx.Response:
        return self.http.post(
            f"/chats/{chat_id}/messages",
            data={"text": text, "client_id": client_id or f"c{time.monotonic_ns()}"},
            headers={"X-CSRFToken": self.token, "HX-Request": "true"},
        )

    def send_ok(self, chat_id: str, text: str) -> str:
        """Send a message; return the id of its answer (its page: `sent_pages`)."""
        response = self.send(chat_id, text)
        assert response.status_code == 200, response.text
        answer_id = Page(response.text).message_ids()[-1]
        self.sent_pages[answer_id] = response.text
        return answer_id

    def answer_page(self, answer_id: str) -> Page:
        """A page showing the answer as the send returned it: running, with its own
        stream (`stream`), which a client that is not a chat page follows."""
        return Page(self.sent_pages[answer_id])

    def stop(self, chat_id: str, answer_id: str) -> None:
        """Press Stop on an answer."""
        stop = self.http.post(
            f"/chats/{chat_id}/messages/{answer_id}/stop",
            headers={"X-CSRFToken": self.token, "HX-Request": "true"},
        )
        assert stop.status_code == 204, stop.text

    def stream(
        self,
        chat_id: str,
        answer_id: str,
        last_event_id: str | None = None,
        until_end: bool = True,
        max_events: int | None = None,
    ) -> list[Event]:
        """Read the answer's SSE stream until `end` (or `max_events`), bounded in time."""
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        raw = ""
        url = f"/chats/{chat_id}/messages/{answer_id}/stream"
        with self.http.stream("GET", url, headers=headers, timeout=30) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            for chunk in response.iter_text():
                raw += chunk
                events = parse_events(raw)
                if until_end and events and events[-1].event == "end":
                    return events
                if max_events is not None and len(events) >= max_events:
                    return events
        return parse_events(raw)
