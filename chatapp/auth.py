"""Sign up, log in, log out, the admin page, and the gate in front of every other route."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from werkzeug.wrappers import Response as BaseResponse

from chatapp import access_tokens, conformance, durable_views, users
from chatapp.connections import get_redis
from chatapp.errors import error_response
from chatapp.jobs import timing_from
from chatapp.owner import current_session_id, current_user, log_in, log_out
from chatapp.ratelimit import limiter, per_address, per_user
from chatapp.web import is_htmx

bp = Blueprint("auth", __name__)

# Routes anyone may reach. The streams are here because they answer a visitor with no session
# like any other stranger: 200 + `end` (an error status would make the browser retry forever).
PUBLIC_ENDPOINTS = frozenset(
    {"auth.login", "auth.signup", "static", "chat.stream", "chat.live", "chat.live_chat_list"}
    | {"ops.healthz", "ops.metrics"}  # for machines; /metrics checks its own access
    # Durable Streams: their own access (a token or the session; 404 to anyone else)
    | durable_views.ENDPOINTS
    | conformance.ENDPOINTS
)


def init_app(app: Flask) -> None:
    app.before_request(_require_login)
    app.register_blueprint(bp)


def _require_login() -> BaseResponse | None:
    if request.endpoint in PUBLIC_ENDPOINTS or current_user() is not None:
        return None
    if not users.has_users(get_redis()):
        target = url_for("auth.signup")
    else:
        target = url_for("auth.login", next=_page_asked_for())
    if request.method == "GET" and not is_htmx():
        return redirect(target)
    response = error_response(401, "You are logged out. Log in again to continue.")
    if is_htmx():
        response.headers["HX-Redirect"] = target
    return response


@bp.route("/signup", methods=["GET", "POST"])
@limiter.limit(
    lambda: current_app.config["RATE_LIMIT_SIGNUP"],
    key_func=per_address,
    methods=["POST"],
    error_message="Too many sign-ups from your address. Try again later.",
)
def signup() -> BaseResponse | tuple[str, int] | str:
    r = get_redis()
    first = not users.has_users(r)
    if not users.registration_open(r, current_app.config["REGISTRATION"]):
        abort(403, "Registration is closed. Ask the admin of this chatapp for an account.")
    if request.method == "GET":
        return render_template("signup.html", first=first, name="")
    name = request.form.get("name", "").strip()
    others_allowed = users.others_may_join(r, current_app.config["REGISTRATION"])
    try:
        user = users.create_user(r, name, request.form.get("password", ""), others_allowed)
    except users.RegistrationClosed as exc:
        abort(403, str(exc))
    except users.AccountError as exc:
        return render_template("signup.html", first=first, name=name, error=str(exc)), 400
    log_in(user)
    return redirect(url_for("chat.index"), code=303)


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(
    lambda: current_app.config["RATE_LIMIT_LOGIN"],
    key_func=per_address,
    methods=["POST"],
    error_message="Too many login attempts from your address. Wait a minute and try again.",
)
def login() -> BaseResponse | tuple[str, int] | str:
    next_url = _local_path(request.values.get("next", ""))
    r = get_redis()
    if request.method == "GET":
        if not users.has_users(r):
            return redirect(url_for("auth.signup"))
        can_sign_up = users.registration_open(r, current_app.config["REGISTRATION"])
        return render_template("login.html", next=next_url, name="", can_sign_up=can_sign_up)
    name = request.form.get("name", "").strip()
    user = users.authenticate(r, name, request.form.get("password", ""))
    if user is None:
        error = "Wrong user name or password."
        return render_template("login.html", next=next_url, name=name, error=error), 401
    if user.disabled:
        error = "This account is disabled. Ask the admin of this chatapp."
        return render_template("login.html", next=next_url, name=name, error=error), 403
    log_in(user)
    return redirect(next_url or url_for("chat.index"), code=303)


@bp.post("/logout")
def logout() -> BaseResponse:
    log_out()
    return redirect(url_for("auth.login"), code=303)


@bp.get("/admin")
def admin() -> str:
    _require_admin()
    r = get_redis()
    configured = current_app.config["REGISTRATION"]
    return render_template(
        "admin.html",
        users=users.list_users(r),
        registration_open=users.registration_open(r, configured),
        closed_by_environment=configured == "closed",
    )


@bp.post("/admin/registration")
def set_registration() -> BaseResponse:
    _require_admin()
    choice = request.form.get("registration")
    if choice not in ("open", "closed"):
        abort(400, "Choose whether registration is open or closed.")
    users.set_registration(get_redis(), choice == "open")
    return redirect(url_for("auth.admin"), code=303)


@bp.post("/admin/users")
def add_user() -> BaseResponse:
    _require_admin()
    name = request.form.get("name", "").strip()
    try:
        users.create_user(get_redis(), name, request.form.get("password", ""), True)
    except users.AccountError as exc:
        return error_response(400, str(exc))
    return redirect(url_for("auth.admin"), code=303)


@bp.get("/account")
def account() -> str:
    return _account_page(done=request.args.get("done"))


def _account_page(**shown: object) -> str:
    user, r = current_user(), get_redis()
    assert user is not None  # the login gate
    others = len(users.live_sessions(r, user.id)) - 1
    tokens = access_tokens.list_tokens(r, user.id)
    return render_template("account.html", others=max(others, 0), tokens=tokens, **shown)


@bp.post("/account/tokens")
@limiter.limit(lambda: current_app.config["RATE_LIMIT_ACTIONS"], key_func=per_user)
def create_token() -> tuple[str, int] | BaseResponse:
    """Make a personal access token and show it, this once (only its hash is kept)."""
    user = current_user()
    assert user is not None
    try:
        token = access_tokens.create(get_redis(), user.id, request.form.get("name", ""))
    except access_tokens.TokenError as exc:
        return _account_error(str(exc), 400)
    page = make_response(_account_page(new_token=token))
    page.headers["Cache-Control"] = "no-store"  # not shown again from the browser's history
    return page


@bp.post("/account/tokens/<token_id>/revoke")
def revoke_token(token_id: str) -> BaseResponse:
    user = current_user()
    assert user is not None
    if not access_tokens.revoke(get_redis(), user.id, token_id):
        abort(404, "You have no such token (it may be revoked already).")
    return redirect(url_for("auth.account", done="revoked"), code=303)


@bp.post("/account/password")
@limiter.limit(
    lambda: current_app.config["RATE_LIMIT_LOGIN"],
    key_func=per_user,
    error_message="Too many tries. Wait a minute and try again.",
)
def change_password() -> BaseResponse | tuple[str, int]:
    """Change one's password (the current one proves it is you); other sessions end."""
    user, r = current_user(), get_redis()
    assert user is not None
    if not users.password_matches(r, user.id, request.form.get("current", "")):
        return _account_error("Your current password is not right.", 403)
    try:
        users.set_password(r, user.id, request.form.get("password", ""))
    except users.AccountError as exc:
        return _account_error(str(exc), 400)
    users.end_sessions(r, user.id, keep=current_session_id())
    return redirect(url_for("auth.account", done="password"), code=303)


@bp.post("/account/sessions")
def end_other_sessions() -> BaseResponse:
    """Log out everywhere else: every other session ends, and its open pages say so."""
    user = current_user()
    assert user is not None
    users.end_sessions(get_redis(), user.id, keep=current_session_id())
    return redirect(url_for("auth.account", done="sessions"), code=303)


def _account_error(message: str, status: int) -> tuple[str, int]:
    return _account_page(error=message), status


@bp.post("/admin/users/<user_id>/<action>")
def change_user(user_id: str, action: str) -> BaseResponse:
    """The admin disables, enables or deletes an account (never their own)."""
    admin, r = _require_admin(), get_redis()
    user = users.get_user(r, user_id)
    if user is None:
        abort(404, "There is no such account.")
    if user.id == admin.id:
        abort(409, "You cannot disable or delete your own account.")
    if action in ("disable", "enable"):
        users.set_disabled(r, user.id, action == "disable")
    elif action == "delete":
        users.delete_user(r, user, timing_from(current_app.config))
    else:
        abort(404, "There is no such action: disable, enable or delete.")
    response = redirect(url_for("auth.admin"), code=303)
    if is_htmx():  # the delete button, which asks first
        response = BaseResponse("", 204, headers={"HX-Redirect": url_for("auth.admin")})
    return response


def _require_admin() -> users.User:
    user = current_user()
    if user is None or not user.is_admin:
        abort(403, "Only the admin can open this page.")
    return user


def _page_asked_for() -> str:
    """The page to return to after logging in: for htmx, the page the request came from
    (not the fragment's URL, which may take only a POST)."""
    if is_htmx():
        try:
            current = urlsplit(request.headers.get("HX-Current-URL", ""))
        except ValueError:  # not a URL at all
            return "/"
        return current.path + (f"?{current.query}" if current.query else "")
    return request.full_path.rstrip("?")


def _local_path(url: str) -> str:
    """Return `url` if it is a path on this site, else "" (no open redirect after login)."""
    # Browsers drop tabs and newlines and read a backslash as a slash: "/\t/x" means "//x".
    if not url.startswith("/") or any(c in url for c in "\\\t\r\n"):
        return ""
    try:
        parts = urlsplit(url)
    except ValueError:  # "//[" and the like
        return ""
    return url if not parts.scheme and not parts.netloc and not url.startswith("//") else ""
