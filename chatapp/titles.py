"""Chat titles made by the model: a chat is titled with its first message at once, then,
with a real model, a background job asks the model for a short title after the first
answer. A title the person chose (a rename) is never replaced."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from flask import current_app
from rq import Queue

from chatapp import providers, store
from chatapp.connections import get_redis
from chatapp.job_context import in_app_context
from chatapp.streaming_model import Thinking

log = logging.getLogger(__name__)

PROMPT = (
    "Write a title of at most six words for a chat that starts with the exchange below. "
    "Reply with the title alone: no quotes, no punctuation at the end."
)
EXCERPT_CHARS = 2_000  # of each message: enough to see what the chat is about
QUOTES_AND_MARKS = "#*_`\"'\u201c\u201d\u2018\u2019"  # markdown marks, straight and curly quotes
LONGEST_REPLY = 200  # characters read from the model before giving up on brevity


def wanted(config: Mapping[str, Any], history: list[store.Message], answer_id: str) -> bool:
    """A title is made after the chat's first answer, by a real model only, unless the
    operator turned titles off (each costs one more model call)."""
    first_answer = len(history) == 2 and history[1].id == answer_id
    return first_answer and config["AUTO_TITLES"] and not providers.uses_offline_model(config)


def enqueue(queue: Queue, chat_id: str, current_title: str) -> None:
    queue.enqueue(
        make_title,
        chat_id,
        current_title,
        job_timeout=int(current_app.config["MODEL_TIMEOUT_SECONDS"]) + 30,
        description=f"title for chat {chat_id}",
        result_ttl=3600,
    )


@in_app_context
def make_title(chat_id: str, current_title: str) -> str:
    """RQ job: ask the model for a title; set it unless the chat was renamed meanwhile."""
    r = get_redis()
    first = store.get_messages(r, chat_id)[:2]
    if len(first) < 2:
        return "skipped"
    exchange = "\n\n".join(f"{m.role}: {m.text[:EXCERPT_CHARS]}" for m in first)
    model = providers.make_model(current_app.config)
    reply = ""
    try:
        for piece in model.stream(
            [
                {"role": "system", "content": PROMPT},
                {"role": "user", "content": exchange},
            ]
        ):
            if isinstance(piece, Thinking):
                continue  # a reasoning model's thoughts are not its title
            reply += piece
            if len(reply) > LONGEST_REPLY:
                break
    finally:
        model.close()
    title = clean(reply)
    if not title:
        return "empty"
    renamed = store.rename_chat(r, chat_id, title, only_if_title=current_title)
    return "titled" if renamed else "kept"


def clean(reply: str) -> str:
    """The reply's first line, without markdown or quotes around it, as a chat title."""
    line = next((line for line in reply.splitlines() if line.strip()), "")
    line = _EMPHASIS.sub("", line)  # "Streams with **math**": the marks, not the words
    line = line.strip().strip(QUOTES_AND_MARKS).strip().rstrip(".")
    return store.title_from(line) if line else ""


# Emphasis and code marks inside a line (a lone * or _ in a word stays).
_EMPHASIS = re.compile(r"\*\*|__|`|(?<!\w)[*_](?=\w)|(?<=\w)[*_](?!\w)")
