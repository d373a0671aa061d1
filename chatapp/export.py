"""A chat exported as a file its owner keeps: Markdown to read, JSON for scripts.

What is exported is what the chat stores: an answer still being written is marked so,
with no text yet (its text is stored when it ends)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

from chatapp.store import Chat, Message

FORMATS = {"md": "text/markdown", "json": "application/json"}
STATUS_NOTES = {
    "queued": "(not written yet when exported)",
    "streaming": "(still being written when exported)",
    "stopped": "(stopped)",
}


def export(chat: Chat, messages: list[Message], kind: str) -> str:
    """Return the chat as a `kind` ("md" or "json") file's text."""
    return as_markdown(chat, messages) if kind == "md" else as_json(chat, messages)


def filename(chat: Chat, kind: str) -> str:
    """A file name from the chat's title, safe on every system."""
    stem = re.sub(r"[^\w .-]+", "", chat.title).strip(" .")[:60] or "chat"
    return f"{stem}.{kind}"


def as_markdown(chat: Chat, messages: list[Message]) -> str:
    parts = [f"# {chat.title}\n"]
    for message in messages:
        who = "You" if message.role == "user" else f"Assistant ({message.model or 'model'})"
        parts.append(f"**{who}** · {_when(message.created)}\n")
        if message.text:
            parts.append(message.text.rstrip() + "\n")
        if message.status in STATUS_NOTES:
            parts.append(f"_{STATUS_NOTES[message.status]}_\n")
        if message.status == "error":
            parts.append(f"> Error: {message.error}\n")
    return "\n".join(parts)


def as_json(chat: Chat, messages: list[Message]) -> str:
    document = {
        "id": chat.id,
        "title": chat.title,
        "created": _when(chat.created),
        "messages": [
            {
                "id": message.id,
                "role": message.role,
                "status": message.status,
                "text": message.text,
                "created": _when(message.created),
                # An answer's model, and the generation shown (its Durable Stream:
                # /chats/<chat>/messages/<answer>/generations/<generation>)
                **(
                    {"model": message.model, "generation": message.gen}
                    if message.role == "assistant"
                    else {}
                ),
                **({"error": message.error} if message.status == "error" else {}),
                **(_usage(message) if message.answer_tokens else {}),
            }
            for message in messages
        ],
    }
    return json.dumps(document, ensure_ascii=False, indent=2) + "\n"


def _usage(message: Message) -> dict[str, object]:
    """The tokens the model server counted, as OpenAI's API names them."""
    counts = {"prompt_tokens": message.prompt_tokens, "completion_tokens": message.answer_tokens}
    return {"usage": counts}


def _when(epoch_seconds: float) -> str:
    return datetime.fromtimestamp(epoch_seconds, UTC).isoformat(timespec="seconds")
