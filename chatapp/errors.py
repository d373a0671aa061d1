"""Errors a person can read: a page for a browser, a fragment in the flash area for htmx."""

from __future__ import annotations

import logging

from flask import Flask, Response, current_app, render_template
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from chatapp.connections import UNAVAILABLE
from chatapp.web import is_htmx

log = logging.getLogger(__name__)

REDIS_DOWN = "The chat's storage (Redis) is not reachable right now. Try again in a moment."


def init_app(app: Flask) -> None:
    app.register_error_handler(CSRFError, _csrf_error)
    app.register_error_handler(RequestEntityTooLarge, _too_large)
    app.register_error_handler(HTTPException, _http_error)
    for unavailable in UNAVAILABLE:
        app.register_error_handler(unavailable, _redis_down)


def error_response(status: int, message: str) -> Response:
    """Return `message` with `status`: into #flash for htmx, as a page otherwise."""
    if is_htmx():
        html = render_template("partials/flash.html", message=message)
        response = Response(html, status)
        response.headers["HX-Retarget"] = "#flash"
        response.headers["HX-Reswap"] = "innerHTML"
    else:
        response = Response(render_template("error.html", message=message, status=status), status)
    response.vary.add("HX-Request")
    return response


def _csrf_error(exc: CSRFError) -> Response:
    # Over HTTPS, Flask-WTF also wants the Referer to name this site.
    reason = exc.description or ""
    if "referrer does not match" in reason:
        return error_response(
            400,
            "This form was sent from another site, so it was refused. Send it from this site.",
        )
    if "referrer header is missing" in reason:
        return error_response(
            400,
            "Your browser sent no Referer, which this site needs over HTTPS to know that a form "
            "comes from its own pages. Allow it for this site, then send again.",
        )
    return error_response(400, "This page is out of date (its security token expired). Reload it.")


def _too_large(exc: RequestEntityTooLarge) -> Response:
    limit = (current_app.config["MAX_CONTENT_LENGTH"] or 0) // 1024
    return error_response(413, f"This request is too large: the limit is {limit:,} KB.")


def _http_error(exc: HTTPException) -> Response:
    message = exc.description or exc.name
    response = error_response(exc.code or 500, message)
    for key, value in exc.get_headers():
        if key in ("Allow", "Retry-After"):
            response.headers[key] = value
    return response


def _redis_down(exc: Exception) -> Response:
    log.warning("request failed: Redis unavailable (%s)", exc)
    response = error_response(503, REDIS_DOWN)
    response.headers["Retry-After"] = "5"
    return response
