"""What the answer job asks of a model (providers.py makes them: an OpenAI-compatible
server's, openai_model.py, or the offline one): a stream of text pieces, its reasoning in
`Thinking` pieces."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol


class Thinking(str):
    """A piece of the model's reasoning (`reasoning_content` or `reasoning` in a stream):
    shown apart from the answer, under "Thinking", and never sent back to the model."""


class Model(Protocol):
    name: str
    ending: str  # once the stream is over: "stop" when complete (see openai_model.py)
    tool_calls: bool  # the model asked for a tool instead of answering
    # Each piece is all the model's output that had arrived, so the producer may sleep
    # a whole flush window after it (else more may be waiting behind it: producer.py).
    whole_reads: bool
    usage: tuple[int, int] | None  # once the stream is over: prompt and answer tokens, if told

    def stream(self, messages: list[dict[str, str]]) -> Iterator[str]:
        """Yield the answer's text in pieces, as the model produces them (its reasoning
        in `Thinking` pieces)."""
        ...

    def close(self) -> None:
        """Stop the stream from another thread (the answer was stopped)."""
        ...
