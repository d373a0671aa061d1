"""RQ's dashboard (rq-dashboard) at /admin/rq, for the admin only.

It shows the answer queue, its workers and every job: what it is (its description names
the person, the chat and the model) and how far it got (`job.meta`, see jobs.py).

rq-dashboard is made for a trusted network; here it faces the internet, so this module
wraps it: admin only, no change through GET or from another site, a Content-Security-
Policy that lets its own scripts run and nothing else, and user text in its data escaped
where its pages insert that data as HTML.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import rq_dashboard
from flask import Flask, Response, abort, request
from rq.exceptions import NoSuchJobError
from werkzeug.wrappers import Response as BaseResponse

from chatapp.errors import error_response
from chatapp.owner import current_user
from chatapp.web import csrf

PREFIX = "/admin/rq"
JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,200}")  # what RQ accepts
BLUEPRINT = rq_dashboard.blueprint.name
# Its pages run one inline script (allowed by its hash, so an injected one cannot run) and
# build their rows with underscore's templates, which compile with `new Function`
# ('unsafe-eval'). Bootstrap sets inline styles.
POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-eval' {hashes}; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
# A <script> element that runs: no `src`, not one of its `type="text/template"` rows.
INLINE_SCRIPT = re.compile(
    rb"<script(?![^>]*\b(?:src=|type=\"text/template\"))[^>]*>(.*?)</script>", re.S
)
# The fields of its JSON that its pages insert as HTML without escaping (job.html,
# workers.html); user names, chat titles and model errors reach them.
UNESCAPED_JOB_FIELDS = ("description", "exc_info", "metadata", "result")
# Where a request may come from: this site, or the admin typing the address.
OWN_SITE = ("same-origin", "none")


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
    app.after_request(_make_safe)
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
    if request.headers.get("Sec-Fetch-Site", "none") not in OWN_SITE:
        abort(403, "The job dashboard opens from this site only: use the link on the admin page.")
    if request.method not in ("GET", "HEAD") and not _same_origin():
        abort(403, "The job dashboard takes changes from its own pages only.")
    rule = request.url_rule
    if request.method in ("GET", "HEAD") and rule is not None and "POST" in (rule.methods or ()):
        abort(405, "This changes jobs: use the buttons on the job dashboard's pages.")
    job_id = (request.view_args or {}).get("job_id")
    if job_id is not None and not JOB_ID.fullmatch(job_id):  # RQ raises on these: a 500
        abort(404, "There is no such job: it may have expired or been deleted.")


def _same_origin() -> bool:
    """Browsers name the page a POST comes from (Origin, else Referer): it must be ours."""
    source = request.headers.get("Origin") or request.headers.get("Referer") or ""
    return bool(source) and urlsplit(source).netloc == request.host


def _make_safe(response: Response) -> Response:
    if request.blueprint != BLUEPRINT:
        return response
    response.headers["Content-Security-Policy"] = _policy(response)
    if request.endpoint == f"{BLUEPRINT}.job_info" and response.is_json:
        _escape(response, _escape_job_fields)
    elif request.endpoint == f"{BLUEPRINT}.list_workers" and response.is_json:
        _escape(response, _escape_worker_fields)
    return response


def _policy(response: Response) -> str:
    scripts = []
    if response.mimetype == "text/html" and not response.is_streamed:
        scripts = INLINE_SCRIPT.findall(response.get_data())
    hashes = " ".join(f"'sha256-{_digest(script)}'" for script in scripts)
    return POLICY.format(hashes=hashes)


def _digest(script: bytes) -> str:
    return base64.b64encode(hashlib.sha256(script).digest()).decode()


def _escape(response: Response, escape_fields: Callable[[Any], None]) -> None:
    data = response.get_json()
    escape_fields(data)
    response.set_data(json.dumps(data))


def _escape_job_fields(job: dict[str, Any]) -> None:
    for field in UNESCAPED_JOB_FIELDS:
        if isinstance(job.get(field), str):
            job[field] = html.escape(job[field], quote=False)  # element text


def _escape_worker_fields(data: dict[str, Any]) -> None:
    # A running job's call string shows its arguments, a chat title among them.
    for worker in data.get("workers", []):
        job = worker.get("current_job")
        if isinstance(job, dict) and isinstance(job.get("call_string"), str):
            job["call_string"] = html.escape(job["call_string"], quote=False)
