"""What the model reads: the system prompt, then the chat's history trimmed to a budget."""

from __future__ import annotations

from chatapp.store import Message


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
