"""Models that stream an answer: any OpenAI-compatible server, or the built-in offline model."""

from __future__ import annotations

import itertools
import math
import re
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from flask import current_app

from chatapp.streaming_model import Model

OFFLINE_LABEL = "offline model"


def uses_offline_model(config: Mapping[str, Any]) -> bool:
    return not config.get("OPENAI_API_KEY")


def model_label(config: Mapping[str, Any]) -> str:
    """Return the name shown on answers for the configured model."""
    return OFFLINE_LABEL if uses_offline_model(config) else str(config["MODEL"])


def make_model(config: Mapping[str, Any], name: str = "") -> Model:
    """Return the model `name` (else the configured one) for one answer; the client under
    it is the process's. Without a key, the offline model writes every answer."""
    if uses_offline_model(config):
        return OfflineModel(tokens_per_second=float(config["OFFLINE_TOKENS_PER_SECOND"]))
    from chatapp.openai_model import OpenAIModel

    chosen = name if name and name != OFFLINE_LABEL else str(config["MODEL"])
    return OpenAIModel(openai_client(), model=chosen)


def prepare(config: Mapping[str, Any]) -> None:
    """Make what every answer of a worker process shares before the first one (its first
    asker would wait for the imports and clients)."""
    if not uses_offline_model(config):
        openai_client()


ANSWERS_PER_CLIENT = 50  # answers that share one client's connection pool


def openai_client() -> Any:
    """Return one of this process's `openai` clients, built on first use, in turn: their
    HTTP connection pools to the model server are shared by every answer the process
    writes. One client per `ANSWERS_PER_CLIENT` answers the process may write at once:
    httpx's pool looks at each of its connections on every request and every end of one,
    so a single pool of 500 connections cost a worker writing 500 answers about 1 ms per
    answer."""
    clients = current_app.extensions.get("openai")
    if clients is None:
        from chatapp.openai_model import make_client  # the web processes never import openai

        config = current_app.config
        count = max(1, math.ceil(int(config["WORKER_CONCURRENCY"]) / ANSWERS_PER_CLIENT))
        made = [
            make_client(
                config["OPENAI_API_KEY"],
                config.get("OPENAI_BASE_URL"),
                float(config["MODEL_TIMEOUT_SECONDS"]),
            )
            for _ in range(count)
        ]
        clients = current_app.extensions["openai"] = itertools.cycle(made)
    return next(clients)


class OfflineModel:
    """A built-in model that answers without any server, at a realistic pace."""

    name = OFFLINE_LABEL
    tool_calls = False
    whole_reads = False  # it writes at its own pace, which may be no pace at all
    usage: tuple[int, int] | None = None  # it counts no tokens

    def __init__(self, tokens_per_second: float = 30.0) -> None:
        self.ending = ""
        self._delay = 1.0 / tokens_per_second if tokens_per_second > 0 else 0.0
        self._closed = threading.Event()

    def stream(self, messages: list[dict[str, str]]) -> Iterator[str]:
        question = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        for token in tokenize(offline_answer(question)):
            if self._closed.wait(self._delay):
                self.ending = "stopped"
                return
            yield token
        self.ending = "stop"

    def close(self) -> None:
        self._closed.set()


def tokenize(text: str) -> list[str]:
    """Split text into word-sized pieces, the way a model streams it."""
    return re.findall(r"\s*\S+|\s+", text)


def offline_answer(question: str) -> str:
    """Return a markdown answer that responds to `question`."""
    words = re.findall(r"[\w'-]+", question)
    topic = " ".join(question.split())[:60] or "your message"
    longest = max(words, key=len) if words else "(none)"
    keywords = sorted({w.lower() for w in words if len(w) > 3}, key=lambda w: (-len(w), w))[:3]
    kind = "a question" if question.rstrip().endswith("?") else "a message"
    listed = ", ".join(f"*{w}*" for w in keywords) or "*nothing long enough to pick out*"
    return f"""## About "{topic}"

You sent {kind} of {len(words)} words. This answer comes from chatapp's **built-in offline
model**: it runs without any model server, so you can try the app anywhere. It streams at a
steady pace, which makes it a good way to see what chatapp promises: refresh the page, close
the tab or open this chat on another device while it writes, and the answer continues from
exactly where it was, with nothing lost and nothing doubled.

### What I noticed

- Your longest word is *{longest}*.
- The words that stand out: {listed}.
- The message has {len(question)} characters and {question.count(chr(10)) + 1} line(s).

### A small program about it

```python
message = {question!r}
words = message.split()
if words:
    print(f"{{len(words)}} words, longest: {{max(words, key=len)}}")
```

### Next steps

1. Set `OPENAI_API_KEY` (and `OPENAI_BASE_URL` for another OpenAI-compatible server) to
   talk to a real model.
2. Press **Stop** to end an answer early: what was written so far is kept.
3. Open this page in a second window: both show the same answer, live.

That is all the offline model knows about *{topic}*. Ask again with a real model for a
real answer.
"""
