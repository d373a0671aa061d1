"""chatapp: a self-hosted AI chat whose answers survive refreshes, network loss and devices."""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from typing import Any

from flask import Flask

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
        PERMANENT_SESSION_LIFETIME=timedelta(days=365),
        WTF_CSRF_TIME_LIMIT=None,  # valid for the session: a chat left open for hours still sends
        MAX_CONTENT_LENGTH=app.config["MAX_MESSAGE_CHARS"] * 4 + 16_384,
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    from chatapp import connections, errors, views, web

    connections.init_app(app)
    web.init_app(app)
    errors.init_app(app)
    app.register_blueprint(views.bp)
    return app
