from __future__ import annotations

from chatapp.prompt import build_context
from chatapp.store import Message


def msg(id: str, role: str, text: str, status: str = "done") -> Message:
    return Message(id=id, role=role, status=status, text=text)


HISTORY = [
    msg("u1", "user", "first question"),
    msg("a1", "assistant", "first answer"),
    msg("u2", "user", "second"),
    msg("a2", "assistant", "partial", status="stopped"),
    msg("u3", "user", "third"),
    msg("a3", "assistant", "", status="queued"),
]


def test_the_model_gets_the_system_prompt_then_the_history_before_the_answer() -> None:
    context = build_context(HISTORY, "a3", "Be kind.", budget_chars=10_000)
    assert context == [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "second"},
        {"role": "assistant", "content": "partial"},  # a stopped answer, as it ended
        {"role": "user", "content": "third"},
    ]


def test_the_oldest_messages_are_dropped_to_fit_the_budget() -> None:
    context = build_context(HISTORY, "a3", "", budget_chars=len("second" + "partial" + "third"))
    assert [turn["content"] for turn in context] == ["second", "partial", "third"]


def test_the_newest_message_is_kept_even_when_it_alone_is_over_budget() -> None:
    context = build_context(HISTORY, "a3", "", budget_chars=3)
    assert context == [{"role": "user", "content": "ird"}]


def test_an_earlier_answer_gets_only_what_came_before_it() -> None:
    context = build_context(HISTORY, "a1", "", budget_chars=10_000)
    assert context == [{"role": "user", "content": "first question"}]
