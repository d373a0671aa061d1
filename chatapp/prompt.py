"""What the model reads: the system prompt, then the chat's history trimmed to a budget."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chatapp.store import Chat, Message


def system_prompt_of(chat: Chat | None, config: Mapping[str, Any]) -> str:
    """The instructions the chat's answers get: its own, else the configured ones."""
    own = chat.system_prompt if chat is not None else None
    return str(config["SYSTEM_PROMPT"]) if own is None else own


def build_context(
    history: list[Message], answer_id: str, system_prompt: str, budget_chars: int
) -> list[dict[str, str]]:
    """Return the messages before `answer_id`, oldest dropped first to fit `budget_chars`.

    Stopped and failed answers are included as they ended (their text so far); the newest
    message is always kept, cut to the budget if it alone is larger.
    """
    turns: list[dict[str, str]] = []
    for message in history:
        if message.id == answer_id:
            break
        if message.text:
            turns.append({"role": message.role, "content": message.text})
    kept: list[dict[str, str]] = []
    used = 0
    for turn in reversed(turns):
        size = len(turn["content"])
        if kept and used + size > budget_chars:
            break
        if not kept and size > budget_chars:
            turn = {"role": turn["role"], "content": turn["content"][-budget_chars:]}
            size = budget_chars
        kept.append(turn)
        used += size
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return system + list(reversed(kept))
