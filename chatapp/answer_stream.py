"""One answer's own stream, for other clients: snapshot or resume, then live, until `end`.

Browsers hold the chat page's stream (chat_stream.py); this one follows a single answer,
for scripts and SSE libraries. It is the engine (follow.py) with the per-answer events:
`snapshot`, `delta` and `end`, each `id` a `Cursor` (generation:sequence number).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import redis

from chatapp import frames, store
from chatapp.contract import AnswerEntries, Entry, Published
from chatapp.follow import AnswerLog, StreamSettings, relay, serve
from chatapp.frames import Cursor
from chatapp.hub import Hub
from chatapp.sse import ServerSentEvent
from chatapp.store import Message
from chatapp.subscription import Subscription

RenderFinal = Callable[[Message | None], str]


@dataclass(frozen=True)
class Follow:
    """What a stream needs, as plain data (no request context inside the generator)."""

    chat_id: str
    message_id: str
    cursor: Cursor | None
    settings: StreamSettings = field(default_factory=StreamSettings)


def follow(r: redis.Redis, hub: Hub, request: Follow, render_final: RenderFinal) -> Iterator[bytes]:
    """Yield the SSE bytes of one viewer of one answer until its terminal entry."""
    yield from serve(
        hub,
        (store.channel(request.chat_id),),
        request.settings.max_streams,
        f"stream {request.message_id}",
        lambda subscription: _AnswerStream(r, request, subscription, render_final).run(),
    )


class _AnswerStream:
    """One connection's stream of one answer; a `Listener` of the engine once started."""

    def __init__(
        self, r: redis.Redis, request: Follow, subscription: Subscription, render_final: RenderFinal
    ) -> None:
        self.r = r
        self.request = request
        self.subscription = subscription
        self.render_final = render_final
        self.answer: AnswerLog  # made in run(), once the answer's generation is known
        self.finished = False

    def run(self) -> Iterator[bytes]:
        message = store.get_message(self.r, self.request.chat_id, self.request.message_id)
        if message is None or message.role != "assistant":
            yield self._final(None)
            return
        self.answer = AnswerLog(self.r, self.request.chat_id, message.id, message.gen, sent=0)
        if not message.running:
            if self._log_serves(self.request.cursor, message):
                yield from self._start(self.request.cursor)  # the rest, then `end`
            else:
                yield self._final(message)
            return
        yield from self._start(self.request.cursor)
        yield from relay(self.subscription, self, self.request.settings)

    def _log_serves(self, cursor: Cursor | None, message: Message) -> bool:
        """Return whether a finished answer's log still holds what comes after `cursor`."""
        return (
            cursor is not None
            and cursor.generation_id == message.gen
            and cursor.seq < message.length
            and store.log_length(self.r, self.request.chat_id, message.gen) == message.length
        )

    def _start(self, cursor: Cursor | None) -> Iterator[bytes]:
        answer = self.answer
        entries = answer.missed()  # all of it: nothing is sent yet
        ended = bool(entries) and entries[-1].terminal
        generation_id = answer.generation_id
        resumable = (
            cursor is not None
            and cursor.generation_id == generation_id
            and cursor.seq <= len(entries)
        )
        if resumable and cursor is not None:
            # At or past the terminal entry, the viewer gets `end` again, every time.
            start = min(cursor.seq, len(entries) - 1) if ended else cursor.seq
        else:
            # No usable cursor: one snapshot of everything so far, then the tail.
            start = len(entries) - 1 if ended else len(entries)
            at = Cursor(generation_id, start)
            yield frames.snapshot_event(self.request.message_id, at, entries[:start]).encode()
        answer.sent = start
        yield from self._send(entries[start:])

    # -- the engine's Listener ------------------------------------------------------------

    def done(self) -> bool:
        return self.finished

    def stop(self) -> None:
        self.finished = True

    def hears(self, payload: Published) -> bool:
        return True

    def live(self, payload: Published) -> Iterator[bytes]:
        yield from self._send(self.answer.entries_in(payload))

    def express(self, payload: Published) -> bytes | None:
        if self.finished or not isinstance(payload, AnswerEntries):
            return None
        entries = self.answer.expressible(payload)
        return None if entries is None else b"".join(self._send(entries))

    def missed(self) -> Iterator[bytes]:
        yield from self._send(self.answer.missed())

    def quiet(self, tick: bool) -> Iterator[bytes]:
        yield from self._send(self.answer.quiet(tick, self.request.settings.timing))

    # -- events ---------------------------------------------------------------------------

    def _send(self, entries: list[Entry]) -> Iterator[bytes]:
        generation_id, message_id = self.answer.generation_id, self.request.message_id
        for seq, entry in self.answer.numbered(entries):
            cursor = Cursor(generation_id, seq)
            if entry.terminal:
                self.finished = True
                yield frames.built_once(entry, "answer stream", self._end_event, cursor, entry)
                return
            yield frames.built_once(
                entry, "answer stream", frames.delta_event, message_id, cursor, entry
            )

    def _end_event(self, cursor: Cursor, entry: Entry) -> ServerSentEvent:
        final = _final_message(self.request.message_id, entry)
        return frames.end_event(cursor, self.render_final(final))

    def _final(self, message: Message | None) -> bytes:
        cursor = Cursor(message.gen, message.length) if message and message.gen else None
        event: ServerSentEvent = frames.end_event(cursor, self.render_final(message))
        return event.encode()


def _final_message(message_id: str, entry: Entry) -> Message:
    return Message(
        id=message_id,
        role="assistant",
        status=entry.kind,
        html=entry.html,
        error=entry.error,
        model=entry.model,
    )
