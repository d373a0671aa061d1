"""Request bodies are read whole, up to the app's limit, before anything parses them.

A body sent in chunks (Transfer-Encoding: chunked) has no Content-Length for werkzeug to
check, so a form parser would read a large one cut at the limit and parse the cut part
(a 10 MB message was refused as "78,000 characters"), and a malformed one raised from
deep in the parser (a 500). Reading it here first answers 413 and 400 instead.
"""

from __future__ import annotations

import io
import logging

from flask import Flask, abort, current_app, request
from werkzeug.exceptions import RequestEntityTooLarge

log = logging.getLogger(__name__)

BODY_METHODS = ("POST", "PUT", "PATCH", "DELETE")
BROKEN = "This request's body is malformed or was cut off. Send it again."


def init_app(app: Flask) -> None:
    app.before_request(read_body)


def read_body() -> None:
    if request.method not in BODY_METHODS:
        return
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if request.content_length is not None and request.content_length > limit:
        raise RequestEntityTooLarge()
    size = limit + 1 if request.content_length is None else request.content_length
    try:  # never past a declared length: some servers hand over the raw socket
        body = request.environ["wsgi.input"].read(size)
    except Exception as exc:  # gunicorn's InvalidChunkSize, NoMoreData, a reset: the client's
        log.info("a request body could not be read: %r", exc)
        abort(400, BROKEN)
    if len(body) > limit:
        raise RequestEntityTooLarge()
    if request.content_length is not None and len(body) < request.content_length:
        abort(400, BROKEN)
    request.environ["wsgi.input"] = io.BytesIO(body)
    request.environ["CONTENT_LENGTH"] = str(len(body))
