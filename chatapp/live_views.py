"""The streams a page holds (on the `chat` blueprint of views.py): the chat page's one
stream, the front page's chat list, and one answer's own stream for other clients.

Each checks what it can before the response starts (the chat, its owner), then hands a
generator to the stream engine (follow.py); the user's share of this process's streams
(stream_share.py) bounds how many one person holds."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from flask import Response, current_app, render_template, request, stream_with_context

from chatapp import answers, express, frames, store
from chatapp.answer_stream import Follow, follow
from chatapp.chat_list_stream import follow_chat_list
from chatapp.chat_stream import FollowChat, Pages, follow_chat
from chatapp.connections import UNAVAILABLE, get_hub, get_redis
from chatapp.follow import StreamSettings, retry_later
from chatapp.owner import current_session_id, current_user, current_user_id, find_chat
from chatapp.running_answer import AnswerBody
from chatapp.store import Message
from chatapp.stream_share import get_stream_share, held_by
from chatapp.views import bp

log = logging.getLogger(__name__)

SSE_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}


@bp.get("/live")
def live_chat_list() -> Response:
    """The front page's stream: the user's chat list, again whenever it changes."""
    user = current_user()
    if user is None:  # logged out elsewhere: say so, and the page stops reconnecting
        gone = frames.chat_gone_event(render_template("partials/front_gone.html")).encode()
        return Response([gone], mimetype="text/event-stream", headers=SSE_HEADERS)
    events = follow_chat_list(
        get_hub(),
        user.id,
        _render_chat_list,
        _stream_settings(),
        session_id=current_session_id(),
        signed_out=lambda: render_template("partials/front_gone.html"),
    )
    return _event_stream(user.id, events)


def _render_chat_list(current: str = "") -> str:
    """The user's chat list, to replace the one on the page (out of band)."""
    chats = store.list_chats(get_redis(), current_user_id())
    return render_template("partials/chat_list.html", chats=chats, current=current, oob=True)


@bp.get("/chats/<chat_id>/messages/<message_id>/stream")
def stream(chat_id: str, message_id: str) -> Response:
    """Follow an answer: snapshot or resume, then live, until `end`.

    Stream-level conditions (unknown, not yours, finished) end with `end`; temporary ones
    (Redis down, too many streams in the process) say `retry:` and close, keeping the
    cursor. The one error status: 429 past the user's share of streams (stream_share.py).
    """
    try:
        chat = find_chat(chat_id)
    except UNAVAILABLE as exc:
        return _come_back_later(exc)

    def render_final(message: Message | None) -> str:
        if message is None:
            return render_template("partials/answer_gone.html", message_id=message_id)
        return render_template("partials/answer.html", message=message, chat_id=chat_id)

    if chat is None or not store.is_id(message_id):
        body = [frames.end_event(None, render_final(None)).encode()]
        return Response(body, mimetype="text/event-stream", headers=SSE_HEADERS)
    follow_request = Follow(
        chat_id=chat.id,
        message_id=message_id,
        cursor=frames.parse_cursor(request.headers.get("Last-Event-ID")),
        settings=_stream_settings(),
    )
    events = follow(get_redis(), get_hub(), follow_request, render_final)
    return _event_stream(chat.owner, events)


@bp.get("/chats/<chat_id>/live")
def live(chat_id: str) -> Response:
    """The chat page's one stream: messages from every device and the running answer.

    Its cursor is the `Last-Event-ID` of a native reconnect, else `after` (which the page's
    chat-stream extension sets to the newest id it applied when the SSE extension rebuilds
    its source).
    """
    try:
        chat = find_chat(chat_id)
    except UNAVAILABLE as exc:
        return _come_back_later(exc)
    if chat is None:
        gone = render_template("partials/chat_gone.html")
        body = [frames.chat_gone_event(gone).encode()]
        return Response(body, mimetype="text/event-stream", headers=SSE_HEADERS)
    raw_cursor = request.headers.get("Last-Event-ID") or request.args.get("after")

    def render(message: Message, body: AnswerBody | None, oob: bool, kept: bool = False) -> str:
        return render_template(
            "partials/message.html",
            message=message,
            chat_id=chat_id,
            body=body,
            oob=oob,
            chat_stream=True,
            kept=kept,
        )

    pages = Pages(
        article=render,
        chat_list=lambda: _render_chat_list(chat.id),
        # the list without the deleted chat, too: this stream ends here
        deleted=lambda: (
            render_template("partials/chat_gone.html", deleted=True) + _render_chat_list()
        ),
        signed_out=lambda: render_template("partials/chat_gone.html"),
    )

    follow_request = FollowChat(
        chat_id=chat.id,
        owner=chat.owner,
        cursor=frames.parse_chat_cursor(raw_cursor),
        session_id=current_session_id(),
        settings=_stream_settings(),
    )
    events = follow_chat(get_redis(), get_hub(), follow_request, pages)
    return _event_stream(chat.owner, events)


def _event_stream(user_id: str, events: Iterator[bytes]) -> Response:
    """Send `events` as the user's stream, within their share of this process's streams
    (stream_share.py); the excess is refused with 429, which a tab retries later."""
    response = held_by(
        user_id,
        lambda: Response(
            stream_with_context(events), mimetype="text/event-stream", headers=SSE_HEADERS
        ),
    )
    if response is not None:
        return response
    per_user = get_stream_share().per_user
    log.warning("stream %s: user %s holds %d streams here", request.path, user_id, per_user)
    message = (
        f"This account has {per_user} live pages open on this server, the most it may "
        "have. Close some tabs; this one reconnects by itself."
    )
    headers = {**SSE_HEADERS, "Retry-After": "30"}
    return Response(message, 429, mimetype="text/plain", headers=headers)


def _come_back_later(exc: Exception) -> Response:
    """A stream that cannot start now (Redis down or busy): the browser retries soon."""
    log.warning("stream %s: Redis unavailable (%s); told to come back", request.path, exc)
    return Response(retry_later(), mimetype="text/event-stream", headers=SSE_HEADERS)


def _stream_settings() -> StreamSettings:
    """The configured pings, checks and limits of a stream, the timing of terminals it
    writes (an answer whose producer is gone), and its socket for the express lane."""
    config = current_app.config
    writer = express.writer_for(request.environ) if config["EXPRESS_WRITES"] else None
    return StreamSettings(
        ping_seconds=config["PING_SECONDS"],
        check_seconds=config["CHECK_SECONDS"],
        max_streams=config["SSE_MAX_PER_PROCESS"],
        max_seconds=config["STREAM_MAX_SECONDS"],
        timing=answers.timing(),
        writer=writer,
    )
