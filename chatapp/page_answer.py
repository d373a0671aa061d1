"""The answer a chat page's stream follows: from the page's position in its log to its end.

A chat page's stream (chat_stream.py) follows the chat's events and, while an answer is
being written, that answer's log (at most one at a time: a chat runs one answer). This is
the second part: the log followed from a cursor by the stream engine's `AnswerLog`, each
entry sent as the page's delta, and the end as the answer's final article.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Protocol

import redis

from chatapp import frames, store
from chatapp.contract import AnswerEntries, Entry, Published
from chatapp.follow import AnswerLog
from chatapp.frames import ChatCursor, Cursor
from chatapp.running_answer import AnswerBody
from chatapp.sse import ServerSentEvent
from chatapp.store import Message


class Article(Protocol):
    """Render one message's article: a running answer with its `body` so far; out of band
    with `oob`; an ended answer whose blocks a page that followed its log holds already
    with `kept` (they stay as they are: see answer.html)."""

    def __call__(
        self, message: Message, body: AnswerBody | None, oob: bool, kept: bool = False
    ) -> str: ...


class PageAnswer:
    """The answer a page's stream follows, if any, and the answers it has ended."""

    def __init__(
        self, r: redis.Redis, chat_id: str, render: Article, events_sent: Callable[[], int]
    ) -> None:
        self.r = r
        self.chat_id = chat_id
        self.render = render
        self.events_sent = events_sent  # the last chat event the stream sent
        self.log: AnswerLog | None = None  # the running answer whose entries we relay
        self.ended: set[str] = set()  # generations this connection has ended
        self.resumed_at: Cursor | None = None  # the answer entry the page's cursor names
        # An `answer_ended` event being sent as the rest of its answer's log: the page has
        # the event only once the `end` arrives, so the entries before it carry the cursor
        # of the event before (a page cut off among them hears of the end again).
        self.ending: str | None = None  # its generation

    def follow(self, message_id: str, generation_id: str, sent: int) -> None:
        """Follow an answer's log from after entry `sent`."""
        self.log = AnswerLog(self.r, self.chat_id, message_id, generation_id, sent)

    def follows(self, generation_id: str) -> bool:
        return self.log is not None and self.log.generation_id == generation_id

    def cursor(self) -> ChatCursor:
        """The page's position once it applies what is sent now."""
        position = Cursor(self.log.generation_id, self.log.sent) if self.log else None
        return ChatCursor(self._events_position(), position)

    def live(self, payload: Published) -> Iterator[bytes]:
        if self.log:
            yield from self._send(self.log.entries_in(payload))

    def express(self, payload: AnswerEntries) -> bytes | None:
        """The deltas of a live message's next entries, if they follow what was sent and
        do not end the answer (ending reads Redis); else None (see express.py)."""
        log = self.log
        if log is None or self.ending:
            return None
        entries = log.expressible(payload)
        return None if entries is None else b"".join(self._send(entries))

    def refill(self) -> Iterator[bytes]:
        """The entries published that this stream may have missed, from the log."""
        if self.log:
            yield from self._send(self.log.missed())

    def quiet(self, tick: bool, timing: store.Timing) -> Iterator[bytes]:
        if self.log:
            yield from self._send(self.log.quiet(tick, timing))

    def end(self, message_id: str, generation_id: str) -> Iterator[bytes]:
        """Send an answer's end: the rest of its log if the page was following it (and the
        log is still kept), else the answer as it ended."""
        at = self.resumed_at
        if self.log is None and at is not None and at.generation_id == generation_id:
            self._pick_up(message_id, at)
        if self.follows(generation_id):
            self.ending = generation_id
            try:
                yield from self.refill()  # its terminal entry, in order
            finally:
                self.ending = None
            return
        message = store.get_message(self.r, self.chat_id, message_id)
        if message is not None and not message.running:
            self.ended.add(generation_id)
            article = self.render(message, None, True)
            yield frames.answer_replace_event(self.cursor(), article, frames.EVENTS.end).encode()

    def _pick_up(self, message_id: str, at: Cursor) -> None:
        """Follow a finished answer again from `at`, if its log still holds what follows."""
        if at.seq < store.log_length(self.r, self.chat_id, at.generation_id):
            self.follow(message_id, at.generation_id, at.seq)

    def _send(self, entries: list[Entry]) -> Iterator[bytes]:
        log = self.log
        if log is None:
            return
        for _, entry in log.numbered(entries):
            if entry.terminal:
                self.ending = None  # with its `end`, the page has the answer_ended event
                cursor = self.cursor()  # `end` too says which entry it is: the terminal one
                self.log = None
                self.ended.add(log.generation_id)
                # The answer as it ended, read and rendered once per process (the entry is
                # the hub's, shared by every stream of this chat; see frames.made_once).
                final = functools.partial(self._final_article, log.message_id, entry)
                article = frames.made_once(entry.built, "final article", final)
                if article:
                    yield frames.answer_replace_event(cursor, article, frames.EVENTS.end).encode()
                return
            yield frames.built_once(
                entry,
                f"chat stream {self._events_position()}",  # the part of the id that may differ
                self._delta_event,
                log.message_id,
                entry,
            )

    def _events_position(self) -> int:
        return self.events_sent() - 1 if self.ending else self.events_sent()

    def _delta_event(self, message_id: str, entry: Entry) -> ServerSentEvent:
        """An entry as a delta, made when no stream of the process made it yet (a cursor
        costs more than finding the event made already)."""
        return frames.chat_delta_event(message_id, self.cursor(), entry)

    def _final_article(self, message_id: str, terminal: Entry) -> str:
        """The ended answer's article, for a page that followed its log: without its blocks
        when the page holds them already (they are the final HTML)."""
        final = store.get_message(self.r, self.chat_id, message_id)
        if final is None:
            return ""
        kept = terminal.whole and final.html == terminal.html
        return self.render(final, None, True, kept)
