"""RQ's dashboard (rq-dashboard) at /admin/rq, for the admin only.

It shows the answer queue, its workers and every job: what it is (its description names
the chat, the message and the model) and how far it got (`job.meta`, see jobs.py).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import rq_dashboard
from flask import Flask, abort, request
from rq.exceptions import NoSuchJobError
from werkzeug.wrappers import Response as BaseResponse

from chatapp.errors import error_response
from chatapp.owner import current_user
from chatapp.web import csrf

PREFIX = "/admin/rq"
JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,200}")  # what RQ accepts
BLUEPRINT = rq_dashboard.blueprint.name
# Its pages carry inline scripts and styles of their own.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


def init_app(app: Flask) -> None:
    # A list of instances (its first one is shown), set up now: the hook that would do
    # it for us ran before the first request, which Flask 3 no longer has.
    queue_url = app.config["REDIS_QUEUE_URL"] or app.config["REDIS_URL"]
    app.config.setdefault("RQ_DASHBOARD_REDIS_URL", (queue_url,))
    rq_dashboard.web.setup_rq_connection(app)
    app.register_blueprint(rq_dashboard.blueprint, url_prefix=PREFIX)
    # Its buttons post with its own scripts, which send no CSRF token: the admin check and
    # a same-origin check stand in for it (see below).
    csrf.exempt(rq_dashboard.blueprint)
    app.before_request(_admin_only)
    # It fetches jobs by the id in its URLs and lets a missing one become a 500.
    app.register_error_handler(NoSuchJobError, _no_such_job)


def _no_such_job(exc: NoSuchJobError) -> BaseResponse:
    return error_response(404, "There is no such job: it may have expired or been deleted.")


def _admin_only() -> None:
    if request.blueprint != BLUEPRINT:
        return
    user = current_user()
    if user is None or not user.is_admin:
        abort(403, "Only the admin can open the job dashboard.")
    if request.method not in ("GET", "HEAD") and not _same_origin():
        abort(403, "The job dashboard takes changes from its own pages only.")
    job_id = (request.view_args or {}).get("job_id")
    if job_id is not None and not JOB_ID.fullmatch(job_id):  # RQ raises on these: a 500
        abort(404, "There is no such job: it may have expired or been deleted.")


def _same_origin() -> bool:
    """Browsers name the page a POST comes from (Origin, else Referer): it must be ours."""
    source = request.headers.get("Origin") or request.headers.get("Referer") or ""
    return bool(source) and urlsplit(source).netloc == request.host
