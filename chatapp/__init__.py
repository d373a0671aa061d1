"""chatapp: a self-hosted AI chat whose answers survive refreshes, network loss and devices."""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from chatapp import config as settings
from chatapp.config import PROJECT_DIR


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the Flask app: defaults, then the environment, then test overrides."""
    app = Flask(
        __name__,
        static_folder=str(PROJECT_DIR / "static"),
        template_folder=str(PROJECT_DIR / "templates"),
    )
    app.config.update(settings.DEFAULTS)
    app.config.update(settings.from_environ(os.environ))
    if test_config:
        app.config.update(test_config)
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = settings.load_secret_key(app.config["DATA_DIR"])
    app.config.update(
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=timedelta(days=30),  # sessions also end on the server
        WTF_CSRF_TIME_LIMIT=None,  # valid for the session: a chat left open for hours still sends
        MAX_CONTENT_LENGTH=app.config["MAX_MESSAGE_CHARS"] * 4 + 16_384,
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    if app.config["REGISTRATION"] not in ("open", "closed"):
        raise ValueError(f"setting REGISTRATION: {app.config['REGISTRATION']!r} is not open/closed")
    proxies = app.config["TRUSTED_PROXIES"]
    if proxies:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies)  # type: ignore[method-assign]

    from chatapp import (
        auth,
        bodies,
        conformance,
        connections,
        dashboard,
        durable_views,
        errors,
        live_views,  # noqa: F401 (adds the streams to views.bp)
        ops,
        ratelimit,
        stream_share,
        views,
        web,
    )

    connections.init_app(app)
    stream_share.init_app(app)
    errors.init_app(app)
    bodies.init_app(app)  # before anything reads a form
    auth.init_app(app)  # first: a logged-out request hears "log in", not "bad token"
    web.init_app(app)
    ratelimit.init_app(app)
    app.register_blueprint(views.bp)  # with live_views' streams on it
    app.register_blueprint(ops.bp)
    durable_views.init_app(app, web.csrf)
    conformance.init_app(app, web.csrf)
    dashboard.init_app(app)
    return app
