"""A chat's logs as Durable Streams, for any client of that protocol (durable_streams.py):

- `/chats/<chat>/messages/<answer>/generations/<generation>`: one generation of an answer,
  its log entries as JSON messages, closed at its terminal entry;
- `/chats/<chat>/events`: the chat's event log (a message added, an answer started with its
  generation, an answer ended, a new title...), never closed.

Only the chat's owner reads them: with the session cookie (same-origin pages), or with one
of their personal access tokens (access_tokens.py) as `Authorization: Bearer`. Anyone else
gets 404, as for every chat; a token that is not valid gets 401. The streams are read-only:
writes get 405 (answers are written by their jobs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import redis
from flask import Blueprint, Flask, Response, current_app, request
from flask_wtf.csrf import CSRFProtect

from chatapp import access_tokens, answers, store, users
from chatapp import durable_streams as protocol
from chatapp.connections import UNAVAILABLE, get_hub, get_redis
from chatapp.durable_logs import ChatEventLog, DurableLog, answer_generation
from chatapp.follow import StreamSettings
from chatapp.owner import current_session_id, current_user, owned_chat
from chatapp.stream_share import get_stream_share, held_by

bp = Blueprint("durable", __name__)

READS = ["GET", "HEAD"]
WRITES = ["PUT", "POST", "DELETE", "PATCH"]
ENDPOINTS = frozenset(
    {"durable.answer", "durable.events", "durable.read_only", "durable.preflight"}
)


def init_app(app: Flask, csrf: CSRFProtect) -> None:
    csrf.exempt(bp)  # it changes nothing: writes are refused
    app.register_blueprint(bp)


@bp.route(
    "/chats/<chat_id>/messages/<message_id>/generations/<generation_id>",
    methods=READS,
    provide_automatic_options=False,
)
def answer(chat_id: str, message_id: str, generation_id: str) -> Response:
    """One generation of an answer, as a Durable Stream."""

    def find(r: redis.Redis) -> DurableLog | None:
        if not (store.is_id(message_id) and store.is_id(generation_id)):
            return None
        message = store.get_message(r, chat_id, message_id)
        return answer_generation(r, chat_id, message, generation_id) if message else None

    return _serve(chat_id, find)


@bp.route("/chats/<chat_id>/events", methods=READS, provide_automatic_options=False)
def events(chat_id: str) -> Response:
    """The chat's event log, as a Durable Stream."""
    return _serve(chat_id, lambda r: ChatEventLog(chat_id))


@bp.route("/chats/<chat_id>/messages/<message_id>/generations/<generation_id>", methods=["OPTIONS"])
@bp.route("/chats/<chat_id>/events", methods=["OPTIONS"])
def preflight(**ids: str) -> Response:
    return protocol.preflight()


@bp.route(
    "/chats/<chat_id>/messages/<message_id>/generations/<generation_id>",
    methods=WRITES,
    provide_automatic_options=False,
)
@bp.route("/chats/<chat_id>/events", methods=WRITES, provide_automatic_options=False)
def read_only(**ids: str) -> Response:
    message = b"This stream is read-only: answers are written by the chat itself."
    headers = {"Allow": ", ".join([*READS, "OPTIONS"])}
    return protocol.respond(405, message, headers, "text/plain; charset=utf-8")


def _serve(chat_id: str, find: Callable[[redis.Redis], DurableLog | None]) -> Response:
    """Answer a read of one of the chat's streams, if the reader owns the chat."""
    try:
        reader = _reader()
        if isinstance(reader, Response):
            return reader
        if reader is None or owned_chat(reader.user_id, chat_id) is None:
            return protocol.not_found()
        r = get_redis()
        log = find(r)
        if log is None:
            return protocol.not_found()
        if request.method == "HEAD":
            return protocol.head(r, log)
        asked = protocol.parse_read(request.args.to_dict(flat=False), _if_none_match())

        def read() -> Response:
            return protocol.read(r, get_hub(), log, asked, read_settings(), reader.allowed)

        return read() if asked.live is None else _held(reader.user_id, read)
    except protocol.BadRead as exc:
        return protocol.bad_request(str(exc))
    except UNAVAILABLE:
        return protocol.unavailable()


@dataclass(frozen=True)
class _Reader:
    user_id: str
    # Asked again while a live read goes on: a revoked token or an ended session stops it.
    allowed: Callable[[], bool]


def _reader() -> _Reader | Response | None:
    """Who reads: a Bearer token's owner, else the session's user, else nobody (None);
    401 for a Bearer token that is not valid."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    r = get_redis()
    if scheme.lower() != "bearer":  # none, or a proxy's own (Basic): the session decides
        user, session_id = current_user(), current_session_id()
        if user is None:
            return None
        user_id = user.id
        return _Reader(user_id, lambda: users.session_user(r, session_id, user_id) is not None)
    token = token.strip()
    user = _token_user(r, token)
    if user is None:
        message = b"This access token is not valid: mistyped, revoked, or its account is closed."
        headers = {"WWW-Authenticate": 'Bearer realm="chatapp"', **protocol.NO_STORE}
        return protocol.respond(401, message, headers, "text/plain; charset=utf-8")
    user_id = user.id
    return _Reader(user_id, lambda: getattr(_token_user(r, token), "id", None) == user_id)


def _token_user(r: redis.Redis, token: str) -> users.User | None:
    """The account a token reads for, if the token and the account are both valid."""
    user_id = access_tokens.user_for(r, token)
    user = users.get_user(r, user_id) if user_id else None
    return None if user is None or user.disabled else user


def _held(user_id: str, read: Callable[[], Response]) -> Response:
    """A live read holds a connection: it counts in the user's share (stream_share.py)."""
    response = held_by(user_id, read)
    if response is not None:
        return response
    message = (
        f"This account holds {get_stream_share().per_user} live streams on this server, the "
        "most it may. Close some and try again."
    ).encode()
    headers = {"Retry-After": "30", **protocol.NO_STORE}
    return protocol.respond(429, message, headers, "text/plain; charset=utf-8")


def _if_none_match() -> str | None:
    return request.headers.get("If-None-Match")


def read_settings() -> protocol.ReadSettings:
    """The configured long-poll wait, and the pings, checks and limits of an SSE read."""
    config = current_app.config
    stream = StreamSettings(
        ping_seconds=config["PING_SECONDS"],
        check_seconds=config["CHECK_SECONDS"],
        max_streams=config["SSE_MAX_PER_PROCESS"],
        max_seconds=config["STREAM_MAX_SECONDS"],
        timing=answers.timing(),  # for ending an answer whose producer is gone
    )
    return protocol.ReadSettings(config["DURABLE_LONG_POLL_SECONDS"], stream)
