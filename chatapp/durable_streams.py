"""The Durable Streams protocol's read side (github.com/durable-streams/durable-streams,
PROTOCOL.md): catch-up reads, long-poll and SSE of a stream (durable_logs.py).

An offset is a position in the log, written with 16 digits so that offsets compare as
strings in the order of the stream (clients treat them as opaque). A read from offset `o`
returns the entries at positions o, o + 1, ... and `Stream-Next-Offset`, where the next
read starts. The log is append-only, so an offset holds the same bytes for every read, for
as long as the log is kept; then the stream is gone (404 or 410), never other bytes.

Live reads wait through the process's pub/sub hub, as the chat page's stream does: SSE runs
on the stream engine (follow.py) and long-poll on a hub subscription. Both read what is
new from the log itself, so a client gets the log's exact bytes, whatever was published.
"""

from __future__ import annotations

import base64
import json
import random
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import redis
from flask import Response

from chatapp.contract import AnswerEntries, Published
from chatapp.durable_logs import DurableLog, Page
from chatapp.follow import StreamSettings, relay, serve
from chatapp.hub import Hub, HubUnavailable
from chatapp.subscription import DRAIN, REFILL, Subscription

OFFSET = re.compile(r"[0-9]{16}")
START, NOW = "-1", "now"
LIVE_MODES = ("long-poll", "sse")

# Every response of a stream: a browser must not guess its type, and only pages of this
# site may embed it (other origins read it with CORS and a token).
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, If-None-Match",
    "Access-Control-Expose-Headers": (
        "Stream-Next-Offset, Stream-Cursor, Stream-Up-To-Date, Stream-Closed, ETag, "
        "Content-Type, Stream-SSE-Data-Encoding"
    ),
}
# Answers are one person's: no cache keeps them (the protocol's advice for user data); a
# client that keeps what it read may still ask again with If-None-Match.
NO_STORE = {"Cache-Control": "no-store"}
TAIL_ONLY = 1 << 62  # a read from here returns no entries, only the stream's state

# Stream-Cursor (the protocol's section 8): time in 20-second intervals since this epoch;
# proxies that collapse long-polls key on it, and it always moves forward for a client.
CURSOR_EPOCH = 1728432000  # 2024-10-09, the protocol's
CURSOR_INTERVAL = 20


class BadRead(ValueError):
    """A read the protocol answers with 400; the message says what was wrong."""


@dataclass(frozen=True)
class Read:
    """A parsed read request."""

    offset: str  # START, NOW or 16 digits
    live: str | None  # None (catch-up), "long-poll" or "sse"
    cursor: str | None  # the client's Stream-Cursor, echoed back
    if_none_match: str | None


def parse_read(args: dict[str, list[str]], if_none_match: str | None) -> Read:
    """The read asked for by a GET's query string, or BadRead."""
    offsets, lives = args.get("offset", []), args.get("live", [])
    if len(offsets) > 1 or len(lives) > 1:
        raise BadRead("Give one offset and one live mode at most.")
    live = lives[0] if lives else None
    if live is not None and live not in LIVE_MODES:
        raise BadRead("live must be long-poll or sse.")
    if not offsets and live is not None:
        raise BadRead("A live read needs an offset (-1 for the start, now for the tail).")
    offset = offsets[0] if offsets else START
    if offset not in (START, NOW) and not OFFSET.fullmatch(offset):
        raise BadRead("The offset is not one this server gave out (or -1, or now).")
    cursors = args.get("cursor", [])
    return Read(offset, live, cursors[0] if cursors else None, if_none_match)


def offset_text(position: int) -> str:
    return f"{position:016d}"


@dataclass(frozen=True)
class ReadSettings:
    """How long reads wait, and an SSE read's pings, checks and limits (the
    configuration's: durable_views.py)."""

    long_poll_seconds: float = 20.0
    stream: StreamSettings = field(default_factory=StreamSettings)


def _always() -> bool:
    return True


# Whether the reader may still read (its token not revoked, its account not disabled):
# asked again while a live read goes on, at most every CHECK_SECONDS.
Allowed = Callable[[], bool]


def head(r: redis.Redis, log: DurableLog, extra: dict[str, str] | None = None) -> Response:
    """The stream's metadata: its type, its tail, whether it is closed."""
    page = log.read(r, TAIL_ONLY)
    if page.gone:
        return not_found()
    headers = {"Stream-Next-Offset": offset_text(page.tail), **NO_STORE, **(extra or {})}
    if page.closed:
        headers["Stream-Closed"] = "true"
    return respond(200, b"", headers, log.content_type)


def read(
    r: redis.Redis,
    hub: Hub,
    log: DurableLog,
    request: Read,
    settings: ReadSettings,
    allowed: Allowed = _always,
) -> Response:
    """Answer a GET of the stream: catch-up, long-poll or SSE."""
    page = _first_page(r, log, request.offset)
    if page.gone:
        return not_found()
    live = _LiveRead(r, hub, log, page.start, request, settings, allowed)
    if request.live == "sse":
        return _sse(live)
    if request.offset == NOW and request.live is None:
        return _tail_now(log, page)
    if request.live == "long-poll" and not page.entries:
        if page.finished:
            return _nothing_new(page.start, closed=True)
        return _long_poll(live)
    return _catch_up(log, page, request)


@dataclass(frozen=True)
class _LiveRead:
    """A read that waits for what comes (long-poll or SSE), from position `start`."""

    r: redis.Redis
    hub: Hub
    log: DurableLog
    start: int
    request: Read
    settings: ReadSettings
    allowed: Allowed


def _first_page(r: redis.Redis, log: DurableLog, offset: str) -> Page:
    """The page at the offset, once it is known to be within the stream (else BadRead)."""
    if offset == NOW:  # the tail, whatever it is when read
        page = log.read(r, TAIL_ONLY)
        return replace(page, start=page.tail)
    page = log.read(r, 0 if offset == START else int(offset))
    if page.start > page.tail and not page.gone:
        raise BadRead("The offset is past the end of the stream.")
    return page


def _tail_now(log: DurableLog, page: Page) -> Response:
    headers = {"Stream-Next-Offset": offset_text(page.tail), "Stream-Up-To-Date": "true"}
    if page.closed:
        headers["Stream-Closed"] = "true"
    return respond(200, _body(log, []), {**headers, **NO_STORE}, log.content_type)


def _catch_up(log: DurableLog, page: Page, request: Read) -> Response:
    """The entries from the offset on (a page at most), with an ETag for this range."""
    ending = ":c" if page.finished else ""
    etag = f'"{log.name}:{offset_text(page.start)}:{offset_text(page.end)}{ending}"'
    headers = {"Stream-Next-Offset": offset_text(page.end), "ETag": etag, **NO_STORE}
    if page.at_tail:
        headers["Stream-Up-To-Date"] = "true"
        if page.finished:
            headers["Stream-Closed"] = "true"
    if request.live == "long-poll":
        headers["Stream-Cursor"] = next_cursor(request.cursor)
    if request.if_none_match == etag:
        return respond(304, b"", headers)
    return respond(200, _body(log, page.entries), headers, log.content_type)


def _nothing_new(position: int, closed: bool, cursor: str | None = None) -> Response:
    """A long-poll's 204: up to date at `position`; closed, or a cursor to come back with."""
    headers = {"Stream-Next-Offset": offset_text(position), "Stream-Up-To-Date": "true"}
    if closed:
        headers["Stream-Closed"] = "true"
    else:
        headers["Stream-Cursor"] = next_cursor(cursor)
    return respond(204, b"", {**headers, **NO_STORE})


def _long_poll(live: _LiveRead) -> Response:
    """Wait for entries after `start` (or the stream's end) up to the long-poll timeout:
    subscribed first, then read, so an append between the two is not missed."""
    if live.hub.stream_count >= live.settings.stream.max_streams:
        return unavailable()  # as an SSE read is told to come back (follow.serve)
    try:
        subscription = live.hub.subscribe(live.log.channel)
    except HubUnavailable:
        return unavailable()
    try:
        page = _wait(live.r, live.log, live.start, subscription, live.settings)
    finally:
        live.hub.release(subscription)
    if page.gone or not live.allowed():
        return not_found()
    if page.entries:
        return _catch_up(live.log, page, live.request)
    return _nothing_new(live.start, page.finished, live.request.cursor)


def _wait(
    r: redis.Redis,
    log: DurableLog,
    start: int,
    subscription: Subscription,
    settings: ReadSettings,
) -> Page:
    """Read again whenever the channel brings news of the stream (or messages may have
    been missed), until there is something to answer or the time is up; then end a running
    answer whose producer is gone, as an idle SSE read does."""
    deadline = time.monotonic() + settings.long_poll_seconds
    page = log.read(r, start)
    while not (page.entries or page.finished or page.gone):
        left = deadline - time.monotonic()
        if left <= 0:
            return log.read(r, start) if log.end_if_dead(r, settings.stream.timing) else page
        item = subscription.get(timeout=left)
        if item == DRAIN:
            return page  # the process is stopping: answer now; the client asks again
        if _may_be_news(log, item):
            page = log.read(r, start)
    return page


def _may_be_news(log: DurableLog, item: Published | str | None) -> bool:
    """A message about the stream, or word that messages may have been missed (not the
    hub's clock ticking, nor another answer's words)."""
    if isinstance(item, str):
        return item == REFILL
    return item is not None and log.concerns(item)


def _sse(live: _LiveRead) -> Response:
    """An SSE read, on the stream engine (follow.serve) like every stream of the app."""

    def run(subscription: Subscription) -> Iterator[bytes]:
        return _SseReader(live).run(subscription)

    log, max_streams = live.log, live.settings.stream.max_streams
    body = serve(live.hub, (log.channel,), max_streams, f"stream {log.name}", run)
    headers = {"Cache-Control": "no-cache, no-store", "X-Accel-Buffering": "no"}
    if not _is_text(log.content_type):
        headers["Stream-SSE-Data-Encoding"] = "base64"
    return respond(200, body, headers, "text/event-stream")


class _SseReader:
    """One SSE read: the entries from the offset, then each append as it comes, as `data`
    events, each followed in the same write by a `control` event with the next offset;
    the response ends at the stream's end. A `Listener` of the stream engine."""

    def __init__(self, live: _LiveRead) -> None:
        self.r = live.r
        self.log = live.log
        self.position = live.start
        self.cursor = next_cursor(live.request.cursor)
        self.settings = live.settings
        self.allowed = live.allowed
        self.allowed_at = time.monotonic()
        self.finished = False

    def run(self, subscription: Subscription) -> Iterator[bytes]:
        first = b"".join(self._read())
        # Always something, so the client learns the offset and that it is up to date.
        yield first or self._control(up_to_date=True, closed=False)
        if self.finished:
            return
        # Pings are comments (a Durable Streams client knows only data and control), and
        # the response closes within a minute, as the protocol advises (for proxies that
        # collapse readers); the client reads on from its last offset.
        stream = self.settings.stream
        settings = replace(stream, ping=b": ping\n\n", max_seconds=min(stream.max_seconds, 60))
        yield from relay(subscription, self, settings)

    def _read(self) -> Iterator[bytes]:
        """Every entry after the position, a page per data event, and the end if any."""
        while not self.finished:
            if not self._still_allowed():
                self.finished = True  # its token was revoked: it reads no more
                return
            page = self.log.read(self.r, self.position)
            if page.gone:
                self.finished = True  # deleted meanwhile: the response ends
                return
            if page.entries:
                self.position = page.end
                data = _event("data", _sse_data(self.log, page.entries))
                yield data + self._control(page.at_tail, page.finished)
                self.finished = page.finished
                continue
            if page.finished:
                yield self._control(up_to_date=True, closed=True)
                self.finished = True
            return

    def _still_allowed(self) -> bool:
        now = time.monotonic()
        if now - self.allowed_at < self.settings.stream.check_seconds:
            return True
        self.allowed_at = now
        return self.allowed()

    def _control(self, up_to_date: bool, closed: bool) -> bytes:
        control: dict[str, object] = {"streamNextOffset": offset_text(self.position)}
        if closed:
            control.update(streamClosed=True, upToDate=True)
        else:
            control["streamCursor"] = self.cursor
            if up_to_date:
                control["upToDate"] = True
        return _event("control", json.dumps(control, separators=(",", ":")))

    def _is_news(self, payload: Published) -> bool:
        """Whether a message may hold entries past the position (a batch read with an
        earlier message's read was sent then)."""
        if isinstance(payload, AnswerEntries) and payload.entries:
            return payload.first + len(payload.entries) - 1 > self.position
        return self.log.concerns(payload)

    # -- the engine's Listener ------------------------------------------------------------

    def done(self) -> bool:
        return self.finished

    def stop(self) -> None:
        self.finished = True

    def hears(self, payload: Published) -> bool:
        return self.log.concerns(payload)

    def live(self, payload: Published) -> Iterator[bytes]:
        if self.log.concerns(payload) and self._is_news(payload):
            yield from self._read()

    def express(self, payload: Published) -> bytes | None:
        return None  # it reads the log: the stream's greenlet does that

    def missed(self) -> Iterator[bytes]:
        yield from self._read()

    def quiet(self, tick: bool) -> Iterator[bytes]:
        found = list(self._read())
        if not found and tick and self.log.end_if_dead(self.r, self.settings.stream.timing):
            found = list(self._read())
        yield from found


def _event(kind: str, data: str) -> bytes:
    # `data:` without the optional space, as the protocol's own servers write it: one of
    # its clients' tests compares the line as is.
    lines = re.split(r"\r\n|\r|\n", data)
    return (f"event: {kind}\n" + "".join(f"data:{line}\n" for line in lines) + "\n").encode()


def is_json(content_type: str) -> bool:
    media = content_type.split(";")[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _is_text(content_type: str) -> bool:
    return is_json(content_type) or content_type.strip().lower().startswith("text/")


def _body(log: DurableLog, entries: list[bytes]) -> bytes:
    """A JSON stream's entries are messages, read as an array; others are bytes."""
    if is_json(log.content_type):
        return b"[" + b",".join(entries) + b"]"
    return b"".join(entries)


def _sse_data(log: DurableLog, entries: list[bytes]) -> str:
    body = _body(log, entries)
    if _is_text(log.content_type):
        return body.decode("utf-8", "replace")
    return base64.b64encode(body).decode()


def next_cursor(client_cursor: str | None) -> str:
    """The Stream-Cursor to give: the current interval, or past the client's (with jitter)
    if it already has that one, so that a cursor never repeats for a client."""
    current = int((time.time() - CURSOR_EPOCH) // CURSOR_INTERVAL)
    if client_cursor and client_cursor.isdigit() and int(client_cursor) >= current:
        return str(int(client_cursor) + random.randint(1, 180))
    return str(current)


def respond(
    status: int, body: object, headers: dict[str, str], content_type: str | None = None
) -> Response:
    response = Response(body, status=status)  # type: ignore[arg-type]
    if content_type is None:
        response.headers.pop("Content-Type", None)
    else:
        response.headers["Content-Type"] = content_type
    response.headers.update({**SECURITY_HEADERS, **headers})
    return response


def preflight(methods: str = "GET, HEAD, OPTIONS") -> Response:
    """A CORS preflight's answer: other origins may read with a token (no cookies)."""
    return respond(
        204, b"", {"Access-Control-Allow-Methods": methods, "Access-Control-Max-Age": "600"}
    )


def not_found() -> Response:
    message = b"This stream does not exist (or it expired), or it is not yours."
    return respond(404, message, NO_STORE, "text/plain; charset=utf-8")


def unavailable() -> Response:
    message = b"The server cannot wait for this stream right now. Try again in a moment."
    return respond(503, message, {**NO_STORE, "Retry-After": "2"}, "text/plain; charset=utf-8")


def bad_request(message: str) -> Response:
    return respond(400, message.encode(), NO_STORE, "text/plain; charset=utf-8")
