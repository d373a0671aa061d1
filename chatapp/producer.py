"""The producer side of a generation: coalesce the model's output into flushes and append them.

Each flush is one round trip (the fenced append). The producer keeps the log length it
expects; a refused append means someone else ended or replaced the generation (stop,
watchdog, regenerate), and the producer must stop at once.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from html import escape
from typing import Any

import redis

from chatapp import contract, store
from chatapp.connections import UNAVAILABLE
from chatapp.incremental import Flush, IncrementalRenderer
from chatapp.render import render_markdown

log = logging.getLogger(__name__)

REDIS_OUTAGE_SECONDS = 30.0  # a producer waits this long for Redis to come back
# A piece that came sooner than this after it was asked for was already received (no
# network wait): more may be waiting behind it.
BUFFERED_SECONDS = 0.001
FULL_SPEED_ANSWERS = 50  # answers a process writes with the configured window; more widen it


class Fenced(Exception):
    """The log refused an append: the generation is no longer this producer's to write."""

    def __init__(self, status: str, length: int) -> None:
        super().__init__(f"append refused: {status} (log length {length})")
        self.status = status
        self.length = length


class Producer:
    """Writes one generation's answer: deltas every `flush_seconds`, then one terminal entry.

    `running` tells how many answers the process is writing. Past `FULL_SPEED_ANSWERS` the
    window widens in proportion: a worker whose CPU would not keep up with a flush per
    token for each of hundreds of answers writes fewer, larger flushes instead of falling
    behind (each flush costs about the same whatever its size)."""

    def __init__(
        self,
        r: redis.Redis,
        chat_id: str,
        message_id: str,
        generation_id: str,
        flush_seconds: float,
        timing: store.Timing,
        running: Callable[[], int] = lambda: 1,
    ) -> None:
        self.r = r
        self.chat_id = chat_id
        self.message_id = message_id
        self.generation_id = generation_id
        self.flush_seconds = flush_seconds
        self._running = running
        self.timing = timing
        self.length = 0  # the log length this producer expects
        self.flushes = 0
        self.appended_at = 0.0  # monotonic time of the last append Redis took
        self._appended: list[dict[str, str]] = []  # every entry written, in log order
        # Entries of an append that failed (Redis unavailable past REDIS_OUTAGE_SECONDS):
        # written first by the next append, so the log's text never misses a flush that
        # later blocks were rendered from.
        self._unwritten: list[dict[str, str]] = []
        self._renderer = IncrementalRenderer()
        self._text: list[str] = []
        self._thinking: list[str] = []  # the model's reasoning, escaped (see `think`)
        self._thinking_sent = 0  # how many of those pieces went out in deltas
        self._next_flush = 0.0  # the first piece is written at once: the time to first token
        self._asked_at = 0.0  # when the caller went back to the model for more
        self._caught_up = False  # the last piece had to be waited for: none is buffered

    def feed(self, text: str) -> None:
        """Take model output; flush if the coalescing window has passed."""
        now = time.monotonic()
        self._caught_up = now - self._asked_at > BUFFERED_SECONDS
        self._renderer.feed(text)
        self._text.append(text)
        self._flush_if_due(now)

    def think(self, text: str) -> None:
        """Take a piece of the model's reasoning: it goes out with the next flush, apart
        from the answer's text (a delta's `think`, escaped), and is kept with the answer."""
        self._thinking.append(escape(text, quote=False))
        self._flush_if_due(time.monotonic())

    def _flush_if_due(self, now: float) -> None:
        if now >= self._next_flush:
            self.flush()

    def window(self) -> float:
        """The coalescing window now: `flush_seconds`, wider while the process is busy."""
        return self.flush_seconds * max(1.0, self._running() / FULL_SPEED_ANSWERS)

    def wait_for_window(self, whole_reads: bool = False) -> None:
        """Called after each `feed`, before reading the model again. Once the model's output
        is read up to what has arrived, sleep until the coalescing window ends: all that
        arrives meanwhile is then read at once and written in one flush. Each network read
        costs the worker about as much CPU as a flush (tens of µs in gevent's loop and the
        HTTP client), so a busy worker reads once per window, not once per token.

        With `whole_reads` each piece was all that had arrived. Otherwise output already
        received is read on without sleeping: a piece may be one of several that came
        together (a model that writes with no pace, or one HTTP chunk of many), and sleeping
        a window after each would read slower than the model writes. A token that comes
        after the window is read and flushed as soon as it comes."""
        if whole_reads or self._caught_up:
            # gevent's timers count from the time its loop turn began, so a sleep may end
            # early: a piece read then would wait for the next token to be flushed.
            while (delay := self._next_flush - time.monotonic()) > 0:
                time.sleep(delay)
        self._asked_at = time.monotonic()

    def flush(self) -> None:
        """Append what arrived since the last flush (raises Fenced if refused)."""
        if self._renderer.pending or self._thinking_sent < len(self._thinking):
            began = time.monotonic()  # the next window counts from here, not from the reply
            self._append([delta_entry(self._renderer.flush(), self._new_thinking())])
            self._next_flush = began + self.window()

    def _new_thinking(self) -> str:
        new, self._thinking_sent = self._thinking[self._thinking_sent :], len(self._thinking)
        return "".join(new)

    def finish(self, fields: Mapping[str, str] | None = None) -> None:
        """Append the rest and the `done` entry with the canonical render of the whole
        answer, and `fields` to keep with it (the tokens the model server counted)."""
        entries = self._last_entries()
        whole, kept = self._whole(entries), self._kept(fields)
        self._append(entries, store.Terminal(contract.DONE, **whole, fields=kept))

    def fail(self, message: str, fields: Mapping[str, str] | None = None) -> None:
        """End the generation with an `error` a person can read, keeping the text so far."""
        entries = self._last_entries()
        whole, kept = self._whole(entries), self._kept(fields)
        terminal = store.Terminal(contract.ERROR, message=message, **whole, fields=kept)
        try:
            try:
                self._append(entries, terminal)
            except redis.exceptions.OutOfMemoryError:  # end without the last pieces
                self._unwritten = []
                self._append([], dataclasses.replace(terminal, whole=False))
        except Fenced:
            pass  # already ended by someone else: theirs is the one terminal entry

    def _last_entries(self) -> list[dict[str, str]]:
        """The last delta, which closes every block (none if nothing is left)."""
        piece, thinking = self._renderer.finish(), self._new_thinking()
        return [delta_entry(piece, thinking)] if piece.text or piece.blocks or thinking else []

    def _kept(self, fields: Mapping[str, str] | None) -> dict[str, str]:
        """What the ended answer keeps beside its text: `fields`, and the model's reasoning."""
        kept = dict(fields or {})
        if self._thinking:
            kept["thinking_html"] = "".join(self._thinking)
        return kept

    def _whole(self, last: list[dict[str, str]]) -> dict[str, Any]:
        """The whole answer so far, its canonical render (one render: linear in it), and
        whether the blocks in the log, with the `last` entries', are that render."""
        text = "".join(self._text)
        html = self._renderer.whole_html  # a whole render of it already made, or not
        html = render_markdown(text) if html is None else html
        blocks = "".join(e.get("blocks", "") for e in [*self._appended, *self._unwritten, *last])
        return {"text": text, "html": html, "whole": blocks == html}

    def _append(
        self, entries: list[dict[str, str]], terminal: store.Terminal | None = None
    ) -> None:
        unwritten, entries = len(self._unwritten), [*self._unwritten, *entries]
        try:
            result = self._write_at_end(entries, terminal, unwritten)
        except UNAVAILABLE:
            self._unwritten = entries
            raise
        self._unwritten = []
        if not result.ok:
            raise Fenced(result.status, result.length)
        self._appended.extend(entries)
        self.length = result.length
        self.flushes += 1
        self.appended_at = time.monotonic()

    def _write_at_end(
        self, entries: list[dict[str, str]], terminal: store.Terminal | None, unwritten: int
    ) -> store.AppendResult:
        """Write `entries` after the ones this producer wrote; the first `unwritten` of
        them are from an append that raised (Redis away too long)."""
        result = self._write(entries, self.length, terminal)
        if result.status == "seq" and unwritten and result.length == self.length + unwritten:
            # That append reached Redis after all (its reply was lost): write the rest.
            return self._write(entries[unwritten:], result.length, terminal)
        if result.status == "seq" and result.length < self.length:
            # Redis lost our newest entries (a crash inside its ~1 s AOF window). We still
            # have them: write them again at the same positions, then the new ones.
            lost = self._appended[result.length :]
            log.warning(
                "answer %s: the log lost %d entries; writing them again", self.message_id, len(lost)
            )
            return self._write([*lost, *entries], result.length, terminal)
        return result

    def _write(
        self, entries: list[dict[str, str]], expected: int, terminal: store.Terminal | None
    ) -> store.AppendResult:
        """Append, riding out a Redis restart of up to `REDIS_OUTAGE_SECONDS`.

        An append whose reply was lost may have been applied: the retry is then refused
        with exactly the length it would have made, which means it was ours.
        """
        written = expected + len(entries) + (1 if terminal else 0)
        deadline = time.monotonic() + REDIS_OUTAGE_SECONDS
        delay, interrupted = 0.1, False
        while True:
            try:
                result = store.append(
                    self.r,
                    self.chat_id,
                    self.message_id,
                    self.generation_id,
                    entries,
                    expected_length=expected,
                    terminal=terminal,
                    timing=self.timing,
                )
            except UNAVAILABLE:
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("answer %s: Redis unavailable; retrying", self.message_id)
                time.sleep(delay)
                delay, interrupted = min(delay * 2, 2.0), True
                continue
            if interrupted and result.status in ("seq", "ended") and result.length == written:
                return store.AppendResult("ok", written)
            return result


def delta_entry(piece: Flush, thinking: str = "") -> dict[str, str]:
    """The log entry of one flush (contract.delta_entry)."""
    return contract.delta_entry(piece.text, piece.blocks, piece.tail, piece.more, thinking)
