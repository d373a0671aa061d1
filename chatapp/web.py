"""Page plumbing shared by every view: CSRF, security headers, htmx detection, template helpers."""

from __future__ import annotations

import functools
import hashlib
from typing import Any

from flask import Flask, Response, request
from flask.sessions import SecureCookieSessionInterface, SessionMixin
from flask_wtf.csrf import CSRFProtect

from chatapp import contract, frames, providers, store
from chatapp.config import PROJECT_DIR
from chatapp.connections import UNAVAILABLE, get_redis
from chatapp.owner import current_user
from chatapp.store import Chat
from chatapp.users import User

csrf = CSRFProtect()

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


# The event-stream endpoints, and the Durable Streams' reads (durable_views.py)
STREAMS = {"chat.stream", "chat.live", "chat.live_chat_list", "durable.answer", "durable.events"}


class SessionInterface(SecureCookieSessionInterface):
    """Signed cookie sessions whose cookie is Secure whenever the request came over HTTPS
    (behind a proxy, set TRUSTED_PROXIES so its X-Forwarded-Proto counts)."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"]) or request.is_secure

    def should_set_cookie(self, app: Flask, session: SessionMixin) -> bool:
        # An event stream's response never changes the session, and a browser opens one on
        # every page and reconnect: re-signing the cookie for each was a tenth of the CPU a
        # stream's start costs. Pages still refresh the cookie's 30 days.
        if request.endpoint in STREAMS:
            return session.modified
        return super().should_set_cookie(app, session)


def init_app(app: Flask) -> None:
    app.session_interface = SessionInterface()
    csrf.init_app(app)
    app.url_defaults(_static_version)
    app.after_request(_security_headers)
    app.jinja_env.globals.update(
        answer_body=frames.answer_body,
        contract=contract,  # an answer's statuses (its terminal kinds)
        events=frames.EVENTS,
        offline_model=providers.uses_offline_model(app.config),
        model_label=providers.model_label(app.config),
        current_user=_page_user,
        my_chats=_my_chats,
        new_id=store.new_id,  # a form's client message id
    )


def _page_user() -> User | None:
    """The logged-in user for templates; None when Redis is down, so that the error page
    saying so can still be shown."""
    try:
        return current_user()
    except UNAVAILABLE:
        return None


def _my_chats() -> list[Chat]:
    """The logged-in user's chats, most recent first, for the sidebar."""
    user = _page_user()
    try:
        return store.list_chats(get_redis(), user.id) if user else []
    except UNAVAILABLE:
        return []


def is_htmx() -> bool:
    """Return whether htmx made this request (it then wants a fragment, not a page)."""
    return request.headers.get("HX-Request") == "true"


def _static_version(endpoint: str, values: dict[str, Any]) -> None:
    """Name each static file with its content's hash (`?v=`), so that nginx may let
    browsers keep it for a year (deploy/nginx.conf) and a new release is fetched anew."""
    if endpoint == "static" and "filename" in values:
        values.setdefault("v", _content_hash(values["filename"]))


@functools.cache
def _content_hash(filename: str) -> str:
    path = PROJECT_DIR / "static" / filename
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    except OSError:
        return "0"


def _security_headers(response: Response) -> Response:
    # The job dashboard sets a policy of its own (dashboard.py).
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("X-Frame-Options", "DENY")
    if request.headers.get("HX-Request") is not None or request.method == "GET":
        response.vary.add("HX-Request")
    return response
