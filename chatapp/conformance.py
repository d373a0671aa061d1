"""A write side for the Durable Streams conformance suite, and nothing else: only a test run
turns it on (`DURABLE_STREAMS_TEST_WRITES`), production never does.

The suite creates, appends to, closes and deletes its own streams under `/_conformance/`,
then reads them. Those streams are stored as an answer's log is (a list under a chat's hash
tag, appends announced on that chat's channel) and read by the production read code
(durable_streams.py), so the suite judges the read path that chats use. Their metadata (type,
closed, expiry) sits in a hash beside the log. Forks and idempotent producers are not here.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
from flask import Blueprint, Flask, Response, current_app, request
from flask_wtf.csrf import CSRFProtect
from redis.commands.core import Script

from chatapp import durable_streams as protocol
from chatapp import store
from chatapp.connections import get_hub, make_redis
from chatapp.contract import AnswerEntries, ChatEvents, Published
from chatapp.durable_logs import Page, read_page
from chatapp.durable_views import read_settings
from chatapp.store.keys import PREFIX

log = logging.getLogger(__name__)

bp = Blueprint("conformance", __name__, url_prefix="/_conformance")
ENDPOINTS = frozenset(
    f"conformance.{name}" for name in ("create", "append", "delete", "read", "preflight")
)

GENERATION = "0" * 16  # a suite stream is one generation's log
TTL = r"0|[1-9][0-9]*"
EXPIRES_AT = r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})"


def init_app(app: Flask, csrf: CSRFProtect) -> None:
    if not app.config["DURABLE_STREAMS_TEST_WRITES"]:
        return
    port = os.environ.get("PORT")  # where gunicorn.conf.py listens
    bind = os.environ.get("CHATAPP_BIND") or (f"0.0.0.0:{port}" if port else "127.0.0.1:8000")
    if not app.config["TESTING"] and not _is_loopback(bind):
        raise ValueError(
            f"DURABLE_STREAMS_TEST_WRITES lets anyone write streams: it is for the conformance "
            f"suite's test run only, on a loopback address, not on {bind}"
        )
    log.warning("the conformance suite's write side is on (/_conformance/): a test run only")
    app.register_blueprint(bp)
    # The suite writes streams of megabytes (this app's own bodies are messages).
    app.config["MAX_CONTENT_LENGTH"] = 64 << 20
    csrf.exempt(bp)  # the suite sends no CSRF token


def _is_loopback(bind: str) -> bool:
    """Whether a gunicorn bind (`host:port`, `[v6]:port`) listens on loopback only."""
    host = bind.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def short_hash(value: str) -> str:
    """A stable, header-safe name for a stream's path (its ETags, its keys' hash tag)."""
    return hashlib.sha256(value.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class SuiteStream:
    """One of the suite's streams, as the read code sees it (durable_logs.DurableLog)."""

    path: str
    content_type: str
    ttl: str = ""  # seconds; each read restarts it (the protocol's sliding TTL)

    @property
    def chat_id(self) -> str:
        return short_hash(self.path)

    @property
    def name(self) -> str:
        return self.chat_id

    @property
    def channel(self) -> str:
        return store.channel(self.chat_id)

    @property
    def log_key(self) -> str:
        return store.log_key(self.chat_id, GENERATION)

    @property
    def meta_key(self) -> str:
        return meta_key(self.path)

    def read(self, r: redis.Redis, start: int) -> Page:
        checks: list[tuple[str, ...]] = [("HGET", self.meta_key, "closed")]
        if self.ttl:
            checks += [("EXPIRE", self.meta_key, self.ttl), ("EXPIRE", self.log_key, self.ttl)]
        entries, tail, replies = read_page(r, self.log_key, start, *checks)
        closed = replies[0]
        return Page(entries, start, tail, closed in (b"1", "1"), gone=closed is None)

    def concerns(self, payload: Published) -> bool:
        if isinstance(payload, ChatEvents):
            return True  # deleted
        return isinstance(payload, AnswerEntries)

    def end_if_dead(self, r: redis.Redis, timing: store.Timing) -> bool:
        return False


def meta_key(path: str) -> str:
    return f"{PREFIX}:{{{short_hash(path)}}}:conformance"


def _redis() -> redis.Redis:
    """A client that keeps bytes as they are (the suite's streams may be binary)."""
    client = current_app.extensions.get("conformance_redis")
    if client is None:
        client = make_redis(current_app.config["REDIS_URL"], decode_responses=False)
        current_app.extensions["conformance_redis"] = client
    return client


def _meta(r: redis.Redis, path: str) -> dict[str, str] | None:
    found = r.hgetall(meta_key(path))
    return {k.decode(): v.decode() for k, v in found.items()} if found else None  # type: ignore[union-attr]


# Create: KEYS meta, log; ARGV content type, ttl, expires at (ms), closed, entries...
_CREATE = Script(
    None,  # type: ignore[arg-type]
    b"""
if redis.call('EXISTS', KEYS[1]) == 1 then return {0, redis.call('LLEN', KEYS[2])} end
redis.call('HSET', KEYS[1], 'ct', ARGV[1], 'ttl', ARGV[2], 'exp', ARGV[3], 'closed', ARGV[4])
if #ARGV > 4 then redis.call('RPUSH', KEYS[2], unpack(ARGV, 5)) end
local n = redis.call('LLEN', KEYS[2])
if ARGV[2] ~= '' then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  if n > 0 then redis.call('EXPIRE', KEYS[2], ARGV[2]) end
elseif ARGV[3] ~= '' then
  redis.call('PEXPIREAT', KEYS[1], ARGV[3])
  if n > 0 then redis.call('PEXPIREAT', KEYS[2], ARGV[3]) end
end
return {1, n}
""",
)

# Append: KEYS meta, log; ARGV channel, chat id, Stream-Seq, close, entries...
# Announced as an answer's entries are ({"m", "g", "s", "e"}), without the entries: readers
# read the log.
_APPEND = Script(
    None,  # type: ignore[arg-type]
    b"""
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing', 0} end
local n = redis.call('LLEN', KEYS[2])
if redis.call('HGET', KEYS[1], 'closed') == '1' then return {'closed', n} end
if ARGV[3] ~= '' then
  local last = redis.call('HGET', KEYS[1], 'seq')
  if last and ARGV[3] <= last then return {'seq', n} end
  redis.call('HSET', KEYS[1], 'seq', ARGV[3])
end
if #ARGV > 4 then n = redis.call('RPUSH', KEYS[2], unpack(ARGV, 5)) end
if ARGV[4] == '1' then redis.call('HSET', KEYS[1], 'closed', '1') end
local ttl = redis.call('HGET', KEYS[1], 'ttl')
local exp = redis.call('HGET', KEYS[1], 'exp')
if ttl ~= '' then redis.call('EXPIRE', KEYS[1], ttl); redis.call('EXPIRE', KEYS[2], ttl)
elseif exp ~= '' then redis.call('PEXPIREAT', KEYS[2], exp) end
local first = redis.call('LLEN', KEYS[2]) - (#ARGV - 4) + 1
local notice = '{"m":"' .. ARGV[2] .. '","g":"0000000000000000","s":' .. first .. ',"e":[]}'
redis.call('PUBLISH', ARGV[1], notice)
return {'ok', n}
""",
)


def _media(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip().lower()


def _entries(content_type: str, body: bytes, creating: bool) -> list[bytes]:
    """A JSON body is one message, or an array of them (not empty on append); any other
    body is one entry. ValueError if it is not valid."""
    if not body:
        return []
    if not protocol.is_json(content_type):
        return [body]
    value = json.loads(body)
    if isinstance(value, list):
        if not value and not creating:
            raise ValueError("empty JSON array")
        return [json.dumps(item, separators=(",", ":")).encode() for item in value]
    return [json.dumps(value, separators=(",", ":")).encode()]


def _says_closed(value: str | None) -> bool:
    return (value or "").strip().lower() == "true"


def _respond(status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> Response:
    return protocol.respond(status, body, headers or {}, None)


@bp.put("/<path:path>", provide_automatic_options=False)
def create(path: str) -> Response:
    ttl, expires = request.headers.get("Stream-TTL"), request.headers.get("Stream-Expires-At")
    if ttl is not None and expires is not None:
        return _respond(400, body=b"Give Stream-TTL or Stream-Expires-At, not both.")
    if ttl is not None and not _full_match(TTL, ttl):
        return _respond(400, body=b"Stream-TTL is a number of seconds.")
    expires_ms = ""
    if expires is not None:
        if not _full_match(EXPIRES_AT, expires):
            return _respond(400, body=b"Stream-Expires-At is an RFC 3339 time.")
        moment = datetime.fromisoformat(expires.upper().replace("Z", "+00:00"))
        expires_ms = str(int(moment.timestamp() * 1000))
    content_type = request.headers.get("Content-Type") or "application/octet-stream"
    closed = _says_closed(request.headers.get("Stream-Closed"))
    try:
        entries = _entries(content_type, request.get_data(), creating=True)
    except ValueError:
        return _respond(400, body=b"invalid JSON")
    r = _redis()
    keys = [meta_key(path), SuiteStream(path, content_type).log_key]
    args = [content_type, ttl or "", expires_ms, "1" if closed else "", *entries]
    created, length = _CREATE(keys=keys, args=args, client=r)
    meta = _meta(r, path) or {}
    if not created:
        same = (
            _media(meta.get("ct")) == _media(content_type)
            and meta.get("ttl") == (ttl or "")
            and meta.get("exp") == expires_ms
            and (meta.get("closed") == "1") == closed
        )
        if not same:
            return _respond(409, body=b"This stream exists with another configuration.")
    headers = {"Stream-Next-Offset": protocol.offset_text(length)}
    if meta.get("closed") == "1":
        headers["Stream-Closed"] = "true"
    if created:
        headers["Location"] = request.url
    response = _respond(201 if created else 200, headers)
    response.headers["Content-Type"] = meta.get("ct", content_type)
    return response


@bp.post("/<path:path>", provide_automatic_options=False)
def append(path: str) -> Response:
    producer = [request.headers.get(h) for h in ("Producer-Id", "Producer-Epoch", "Producer-Seq")]
    if any(p is not None for p in producer) and not all(producer):
        return _respond(400, body=b"Producer-Id, Producer-Epoch and Producer-Seq go together.")
    # Idempotent producers are not implemented (the suite's group for them is left out):
    # an append that names one is an append.
    r = _redis()
    meta = _meta(r, path)
    if meta is None:
        return _respond(404, body=b"no such stream")
    body, close = request.get_data(), _says_closed(request.headers.get("Stream-Closed"))
    stream = SuiteStream(path, meta["ct"])
    if not body and not close:
        return _respond(400, body=b"empty body")
    if meta.get("closed") == "1":
        headers = {"Stream-Closed": "true", "Stream-Next-Offset": _tail(r, stream)}
        return _respond(204 if close and not body else 409, headers)
    entries: list[bytes] = []
    if body:
        content_type = request.headers.get("Content-Type")
        if not content_type:
            return _respond(400, body=b"Content-Type is required")
        if _media(content_type) != _media(meta["ct"]):
            return _respond(409, body=b"content type mismatch")
        try:
            entries = _entries(meta["ct"], body, creating=False)
        except ValueError:
            return _respond(400, body=b"invalid JSON or an empty array")
    args = [stream.channel, stream.chat_id, request.headers.get("Stream-Seq") or ""]
    status, length = _APPEND(
        keys=[stream.meta_key, stream.log_key],
        args=[*args, "1" if close else "", *entries],
        client=r,
    )
    status = status.decode()
    if status == "missing":
        return _respond(404, body=b"no such stream")
    if status == "closed":
        headers = {"Stream-Closed": "true", "Stream-Next-Offset": protocol.offset_text(length)}
        return _respond(409, headers)
    if status == "seq":
        return _respond(409, body=b"Stream-Seq went backwards")
    headers = {"Stream-Next-Offset": protocol.offset_text(length)}
    if close:
        headers["Stream-Closed"] = "true"
    return _respond(204, headers)


@bp.delete("/<path:path>", provide_automatic_options=False)
def delete(path: str) -> Response:
    r = _redis()
    stream = SuiteStream(path, "")
    if r.delete(stream.meta_key, stream.log_key) == 0:
        return _respond(404, body=b"no such stream")
    r.publish(stream.channel, '{"c":1,"e":[{"t":"chat_deleted"}]}')  # wakes its readers
    return _respond(204)


@bp.route("/<path:path>", methods=["OPTIONS"])
def preflight(path: str) -> Response:
    return protocol.preflight("GET, HEAD, PUT, POST, DELETE, OPTIONS")


@bp.route("/<path:path>", methods=["GET", "HEAD"], provide_automatic_options=False)
def read(path: str) -> Response:
    r = _redis()
    meta = _meta(r, path)
    if meta is None:
        return protocol.not_found()
    if request.method == "HEAD":
        return protocol.head(r, SuiteStream(path, meta["ct"]), _expiry_headers(meta))
    try:
        if_none_match = request.headers.get("If-None-Match")
        asked = protocol.parse_read(request.args.to_dict(flat=False), if_none_match)
        stream = SuiteStream(path, meta["ct"], meta.get("ttl", ""))
        return protocol.read(r, get_hub(), stream, asked, read_settings())
    except protocol.BadRead as exc:
        return protocol.bad_request(str(exc))


def _tail(r: redis.Redis, stream: SuiteStream) -> str:
    return protocol.offset_text(int(r.llen(stream.log_key)))


def _expiry_headers(meta: dict[str, Any]) -> dict[str, str]:
    headers = {}
    if meta.get("ttl"):
        headers["Stream-TTL"] = meta["ttl"]
    if meta.get("exp"):
        moment = datetime.fromtimestamp(int(meta["exp"]) / 1000, UTC)
        headers["Stream-Expires-At"] = moment.strftime("%Y-%m-%dT%H:%M:%S.") + (
            f"{moment.microsecond // 1000:03d}Z"
        )
    return headers


def _full_match(pattern: str, value: str) -> bool:
    return re.fullmatch(pattern, value) is not None
