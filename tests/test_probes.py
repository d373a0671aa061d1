"""Idle checks shared by a process's streams (chatapp/probes.py), in threads."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from chatapp import probes


@pytest.fixture(autouse=True)
def fresh() -> Iterator[None]:
    probes.forget()
    yield
    probes.forget()


def ask_together(key: tuple[str, ...], ask, callers: int = 20) -> list[object]:
    """`callers` threads want the same answer at the same moment, as ticking streams do."""
    start, answers = threading.Barrier(callers), []

    def caller() -> None:
        start.wait()
        answers.append(probes._shared(key, 5.0, ask))

    threads = [threading.Thread(target=caller) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def test_streams_asking_at_once_ask_redis_once_and_all_get_the_answer() -> None:
    asked = []

    def slow_ask() -> int:
        asked.append(1)
        time.sleep(0.2)  # a round trip in a busy process
        return 7

    assert ask_together(("log", "chat", "gen"), slow_ask) == [7] * 20
    assert len(asked) == 1


def test_an_answer_is_shared_only_while_fresh() -> None:
    values = iter([1, 2])
    assert probes._shared(("k",), 0.05, lambda: next(values)) == 1
    assert probes._shared(("k",), 0.05, lambda: next(values)) == 1
    time.sleep(0.1)
    assert probes._shared(("k",), 0.05, lambda: next(values)) == 2


def test_when_the_question_fails_every_stream_waiting_hears_it_at_once() -> None:
    """Redis away: the streams waiting on one question all fail with it (and tell their
    browsers to come back), instead of asking again one after another."""
    calls = []

    def fails() -> str:
        calls.append(1)
        time.sleep(0.2)
        raise ConnectionError("Redis went away")

    start, results = threading.Barrier(5), []

    def caller() -> None:
        start.wait()
        try:
            results.append(probes._shared(("x",), 5.0, fails))
        except ConnectionError:
            results.append("failed")

    threads = [threading.Thread(target=caller) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == ["failed"] * 5
    assert len(calls) == 1
    assert probes._shared(("x",), 5.0, lambda: "back") == "back"  # the next tick asks again
