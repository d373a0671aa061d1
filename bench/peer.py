"""The peer: flask-sse, the Python library for this job, used as its README shows.

Each viewer gets its own Redis connection and subscription; each event is published
with `sse.publish` (a new Redis client per call, as the library does it).

    gunicorn -k gevent -w 1 bench.peer:app   (REDIS_URL in the environment)
"""

from __future__ import annotations

import os

from flask import Flask
from flask_sse import sse

app = Flask(__name__)
app.config["REDIS_URL"] = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
app.register_blueprint(sse, url_prefix="/stream")
