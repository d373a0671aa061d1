"""HTTP endpoints: chat pages, sending a message, stopping and regenerating an answer,
renaming, exporting and deleting a chat. The streams a page holds: live_views.py."""

from __future__ import annotations

import io
import logging
import re
import time

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    redirect,
    render_template,
    request,
    send_file,
    url_for,
)
from markupsafe import escape
from werkzeug.wrappers import Response as BaseResponse

from chatapp import answers, export, models, prompt, search, store
from chatapp.connections import get_redis
from chatapp.errors import error_response
from chatapp.owner import current_user, current_user_id, load_chat
from chatapp.ratelimit import counts_as_sending, done, every_action_counts, limiter, per_user
from chatapp.running_answer import chat_as_it_is
from chatapp.web import is_htmx

bp = Blueprint("chat", __name__)  # live_views.py adds the streams to it
log = logging.getLogger(__name__)

TITLE_LIMIT = 100
CLIENT_MESSAGE_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")


@bp.get("/")
def index() -> str:
    return render_template("index.html")


@bp.get("/search")
@limiter.limit(
    lambda: current_app.config["RATE_LIMIT_SEARCH"],
    key_func=per_user,
    error_message="You are searching too fast. Wait a moment, then try again.",
)
def search_chats() -> str:
    """The user's chats that hold the words of `q`: a fragment for the sidebar as they
    type, or a page (without scripts). With `warm`, only bring the index up to date (the
    box got focus: it is ready by the time they have typed)."""
    query = request.args.get("q", "")
    if len(query) > search.MAX_QUERY_CHARS:
        abort(400, f"Search for at most {search.MAX_QUERY_CHARS} characters.")
    r, user_id = get_redis(), current_user_id()
    found: list[search.Found] = []
    if query.strip():
        found = search.search(r, user_id, query)
    elif request.args.get("warm"):
        search.refresh(r, user_id)
    template = "partials/search_results.html" if is_htmx() else "search.html"
    return render_template(template, query=query.strip(), found=found)


@bp.post("/chats")
@every_action_counts
@limiter.limit(
    lambda: current_app.config["RATE_LIMIT_NEW_CHAT"],
    key_func=per_user,
    deduct_when=done,
    error_message="You are starting chats too fast. Wait a moment, then try again.",
)
def new_chat() -> BaseResponse:
    """Start a chat with its first message (the new-chat page), or an empty one (no text)."""
    r, owner = get_redis(), current_user_id()
    if "text" not in request.form:
        chat = store.create_chat(r, owner, time.time())
        return redirect(url_for("chat.show", chat_id=chat.id), code=303)
    client_id, text = request.form.get("client_id", ""), request.form["text"].strip()
    if problem := _message_problem(client_id, text):
        return problem
    try:
        chat_id = answers.start_chat(owner, client_id, text, _asker())
    except answers.Refused as refused:  # the user's cap
        abort(429, str(refused))
    return redirect(url_for("chat.show", chat_id=chat_id), code=303)


@bp.get("/chats/new")
def new_chat_page() -> str:
    """A new chat: its composer, and nothing stored until the first message is sent."""
    return render_template("new_chat.html", client_id=store.new_id())


@bp.get("/chats/<chat_id>/export.<kind>")
def export_chat(chat_id: str, kind: str) -> Response:
    """The chat as a file to keep: Markdown or JSON."""
    chat = load_chat(chat_id)
    if kind not in export.FORMATS:
        abort(404, "A chat can be exported as .md (Markdown) or .json.")
    text = export.export(chat, store.get_messages(get_redis(), chat.id), kind)
    return send_file(
        io.BytesIO(text.encode()),
        mimetype=f"{export.FORMATS[kind]}; charset=utf-8",
        as_attachment=True,
        download_name=export.filename(chat, kind),
    )


@bp.get("/chats/<chat_id>")
def show(chat_id: str) -> str:
    """The chat as it is now, and the cursor from which its stream carries on."""
    chat = load_chat(chat_id)
    r = get_redis()
    page = chat_as_it_is(r, chat.id, answers.timing())
    return render_template(
        "chat.html",
        chat=chat,
        chat_id=chat.id,
        shown=page.shown,
        cursor=page.cursor,
        chat_stream=True,
        client_id=store.new_id(),
        models=models.available(r, current_app.config),
        chat_model=answers.chat_model(chat),
        system_prompt=prompt.system_prompt_of(chat, current_app.config),
    )


@bp.post("/chats/<chat_id>/messages")
@counts_as_sending
def send(chat_id: str) -> Response | str:
    chat = load_chat(chat_id)
    text = request.form.get("text", "").strip()
    client_id = request.form.get("client_id", "")
    if problem := _message_problem(client_id, text):
        return problem
    try:
        sent, messages = answers.send(chat, client_id, text, _asker())
    except answers.Refused as refused:
        abort(429, str(refused))
    if problem := _refusal(sent.status, "This chat does not exist, or it is not yours."):
        return problem
    return render_template(
        "partials/sent.html",
        chat=chat,
        chat_id=chat.id,
        messages=messages,
        client_id=store.new_id(),
    )


@bp.post("/chats/<chat_id>/messages/<message_id>/edit")
@counts_as_sending
def edit(chat_id: str, message_id: str) -> Response | tuple[str, int]:
    """Send a new version of a question. It and its answer take the place of the old
    version and what followed, which stay one click away (`show_version`). Every page of
    the chat shows it from its stream."""
    chat = load_chat(chat_id)
    text = request.form.get("text", "").strip()
    client_id = request.form.get("client_id", "")
    if not store.is_id(message_id):
        abort(404, "This question is not in the chat.")
    if problem := _message_problem(client_id, text):
        return problem
    try:
        sent, _ = answers.send(chat, client_id, text, _asker(), replaces=message_id)
    except answers.Refused as refused:
        abort(429, str(refused))
    if problem := _refusal(sent.status, "This question is not in the chat as it is shown."):
        return problem
    return "", 204


@bp.post("/chats/<chat_id>/messages/<message_id>/show")
@every_action_counts
def show_version(chat_id: str, message_id: str) -> Response | tuple[str, int]:
    """Show this version of a question or an answer, with what followed it."""
    chat = load_chat(chat_id)
    status = (
        store.show_version(get_redis(), chat.id, message_id)
        if store.is_id(message_id)
        else "missing"
    )
    if problem := _refusal(status, "This version does not exist."):
        return problem
    return "", 204


def _refusal(status: str, missing: str) -> Response | None:
    """The error response for a send, an edit or a change of version the store refused."""
    if status == "busy":
        return error_response(409, "An answer is still being written: wait for it, or stop it.")
    if status == "full":
        limit = current_app.config["MAX_CHAT_MESSAGES"]
        return error_response(
            409, f"This chat has reached its limit of {limit:,} messages. Start a new chat."
        )
    if status == "missing":
        abort(404, missing)
    return None


def _asker() -> str:
    """Who asks, as the job dashboard names them."""
    user = current_user()
    return user.name if user else "?"


def _message_problem(client_id: str, text: str) -> Response | None:
    """The error response for a message that cannot be sent as it is, if any."""
    limit = current_app.config["MAX_MESSAGE_CHARS"]
    if not CLIENT_MESSAGE_ID.fullmatch(client_id):
        return error_response(400, "This form is out of date: reload the page and send again.")
    if not text:
        return error_response(400, "Write a message before sending.")
    if len(text) > limit:
        return error_response(
            413, f"Your message has {len(text):,} characters; the limit is {limit:,}."
        )
    return None


@bp.post("/chats/<chat_id>/messages/<message_id>/stop")
def stop(chat_id: str, message_id: str) -> tuple[str, int]:
    chat = load_chat(chat_id)
    r = get_redis()
    message = store.get_message(r, chat.id, message_id) if store.is_id(message_id) else None
    if message is None or message.role != "assistant":
        abort(404, "This answer does not exist.")
    answers.stop(chat, message)
    return "", 204


@bp.post("/chats/<chat_id>/title")
@every_action_counts
@limiter.limit(
    lambda: current_app.config["RATE_LIMIT_NEW_CHAT"],  # each rename adds a chat event
    key_func=per_user,
    deduct_when=done,
    error_message="You are renaming chats too fast. Wait a moment, then try again.",
)
def rename(chat_id: str) -> BaseResponse | tuple[str, int]:
    """Rename the chat; its pages and the owner's chat lists follow on their streams."""
    chat = load_chat(chat_id)
    title = " ".join(request.form.get("title", "").split())
    if not 1 <= len(title) <= TITLE_LIMIT:
        return error_response(400, f"A title has 1 to {TITLE_LIMIT} characters.")
    if not store.rename_chat(get_redis(), chat.id, title):
        abort(404, "This chat does not exist, or it is not yours.")
    return _done_here(url_for("chat.show", chat_id=chat.id))


@bp.post("/chats/<chat_id>/options")
@every_action_counts
def set_options(chat_id: str) -> BaseResponse | tuple[str, int]:
    """Choose the model and the instructions (system prompt) of the chat's next answers."""
    chat = load_chat(chat_id)
    r, config = get_redis(), current_app.config
    model = request.form.get("model", "")
    system_prompt = request.form.get("system_prompt", "").strip()
    limit = config["MAX_SYSTEM_PROMPT_CHARS"]
    if model not in models.available(r, config):
        shown = model[:100]
        return error_response(400, f"The model {shown!r} is not offered here: pick another.")
    if len(system_prompt) > limit:
        return error_response(
            413, f"The instructions have {len(system_prompt):,} characters; the limit is {limit:,}."
        )
    if not store.set_chat_options(r, chat.id, model, system_prompt):
        abort(404, "This chat does not exist, or it is not yours.")
    if is_htmx():
        return f"Saved: the next answers use {escape(model)}.", 200
    return redirect(url_for("chat.show", chat_id=chat.id), code=303)


@bp.post("/chats/<chat_id>/delete")
def delete(chat_id: str) -> BaseResponse | tuple[str, int]:
    """Delete the chat (stopping its answer); every page showing it says so."""
    chat = load_chat(chat_id)
    store.delete_chat(get_redis(), chat, answers.timing())
    response = redirect(url_for("chat.index"), code=303)
    if is_htmx():
        response = Response("", 204)
        response.headers["HX-Redirect"] = url_for("chat.index")
    return response


@bp.post("/chats/<chat_id>/messages/<message_id>/regenerate")
@counts_as_sending
def regenerate(chat_id: str, message_id: str) -> BaseResponse | tuple[str, int]:
    """Write the chat's last answer again (also: retry a failed one)."""
    chat = load_chat(chat_id)
    if not store.is_id(message_id):
        abort(404, "This answer does not exist.")
    try:
        again = answers.regenerate(chat, message_id, _asker())
    except answers.Refused as refused:
        abort(429, str(refused))
    if again.status == "missing":
        abort(404, "This answer does not exist.")
    if again.status == "busy":
        return error_response(409, "An answer is still being written: wait for it, or stop it.")
    if again.status == "not_last":
        return error_response(409, "Only the last answer can be written again.")
    return _done_here(url_for("chat.show", chat_id=chat.id))


def _done_here(page: str) -> BaseResponse | tuple[str, int]:
    """204 for htmx (the page hears of it on its stream), else back to the page."""
    return ("", 204) if is_htmx() else redirect(page, code=303)
