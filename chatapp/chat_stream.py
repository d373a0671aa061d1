"""The chat page's one stream: everything that happens in a chat, live, from a cursor.

A tab holds one EventSource (browsers allow six connections per origin; one per answer
would soon hang a user's tabs). It carries the chat's events (messages added, answers
started and ended) and the running answer's entries, which both travel on the chat's one
pub/sub channel. Its event ids carry both cursors, so the browser's `Last-Event-ID`
resumes the two at once.

It runs on the stream engine (follow.py): subscribe first, then read, then relay, dropping
what was sent and filling gaps from the logs; the running answer is followed by
page_answer.py, on the engine's `AnswerLog` as the per-answer stream is. Every device, the
sender's included, adds messages from this stream only, so none shows twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import redis

from chatapp import contract, frames, probes, store
from chatapp.chat_list_stream import shared_render
from chatapp.contract import AnswerEntries, ChatEvent, ChatEvents, ChatListChanged, Published
from chatapp.follow import StreamSettings, relay, serve
from chatapp.frames import ChatCursor, Cursor
from chatapp.hub import Hub
from chatapp.page_answer import Article, PageAnswer
from chatapp.running_answer import AnswerBody, answer_so_far
from chatapp.store import Message
from chatapp.subscription import Subscription

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pages:
    """The markup a chat stream sends, rendered by the web layer's templates."""

    article: Article
    chat_list: Callable[[], str]  # the user's chat list (the sidebar), out of band
    deleted: Callable[[], str]  # what a page shows when its chat is deleted
    signed_out: Callable[[], str]  # what it shows when its session ended elsewhere


@dataclass(frozen=True)
class FollowChat:
    """What a chat stream needs, as plain data (no request context inside the generator)."""

    chat_id: str
    owner: str
    cursor: ChatCursor | None
    settings: StreamSettings = field(default_factory=StreamSettings)
    session_id: str = ""  # the page's login: when it ends, the stream says so and stops


def follow_chat(
    r: redis.Redis,
    hub: Hub,
    request: FollowChat,
    pages: Pages,
) -> Iterator[bytes]:
    """Yield the SSE bytes of one tab following one chat (and its owner's chat list),
    until the server closes it."""
    yield from serve(
        hub,
        (store.channel(request.chat_id), store.user_channel(request.owner)),
        request.settings.max_streams,
        f"chat stream {request.chat_id}",
        lambda subscription: _ChatStream(r, request, subscription, pages).run(),
    )


class _ChatStream:
    def __init__(
        self,
        r: redis.Redis,
        request: FollowChat,
        subscription: Subscription,
        pages: Pages,
    ) -> None:
        self.r = r
        self.request = request
        self.chat_id = request.chat_id
        self.subscription = subscription
        self.render = pages.article
        self.render_chats = pages.chat_list
        self.render_deleted = pages.deleted
        self.render_signed_out = pages.signed_out
        self.deleted = False
        self.closing = False  # the process is stopping
        self.events_sent = 0  # sequence number of the last chat event sent
        self.shown: set[str] = set()  # messages this connection has added
        self.answer = PageAnswer(r, self.chat_id, self.render, lambda: self.events_sent)

    def run(self) -> Iterator[bytes]:
        if store.get_chat(self.r, self.chat_id) is None:  # deleted since the request began
            yield self._gone()
            return
        cursor = self.request.cursor
        if cursor is None or cursor.events > store.chat_event_count(self.r, self.chat_id):
            yield self._snapshot()
        else:
            yield from self._resume(cursor)
        if self.deleted:
            return
        yield self._chats()  # the list may have changed while the page was away
        yield from relay(self.subscription, self, self.request.settings)

    # -- starting -------------------------------------------------------------------------

    def _snapshot(self) -> bytes:
        """Every message as it is now, and the cursor that goes with it."""
        self.events_sent, messages = store.read_chat(self.r, self.chat_id)
        return self._all_of(messages)

    def _all_of(self, messages: list[Message]) -> bytes:
        """Replace what the page shows with `messages` (at the stream's cursor)."""
        self.shown = set()
        articles = []
        for message in messages:
            current, body = self._current(message)
            self.shown.add(current.id)
            articles.append(self.render(current, body, False))
        return frames.chat_snapshot_event(self._cursor(), "".join(articles)).encode()

    def _resume(self, cursor: ChatCursor) -> Iterator[bytes]:
        self.events_sent = cursor.events
        self.answer.resumed_at = cursor.answer
        running = self._running_answer()
        at = cursor.answer
        if running and at and self._covers(at, running):
            self.answer.follow(running.id, running.gen, at.seq)
            yield from self.answer.refill()
        yield from self._refill_events()
        running = self._running_answer()
        if running and not self.answer.follows(running.gen):
            # Running, but the page's cursor does not cover it: send it whole, then follow.
            current, body = self._current(running)
            article = self.render(current, body, True)
            yield frames.answer_replace_event(
                self._cursor(), article, frames.EVENTS.answer
            ).encode()

    def _covers(self, cursor: Cursor, running: Message) -> bool:
        """Return whether the page's answer cursor is a position in the running answer."""
        return cursor.generation_id == running.gen and cursor.seq <= store.log_length(
            self.r, self.chat_id, running.gen
        )

    def _running_answer(self) -> Message | None:
        chat = store.get_chat(self.r, self.chat_id)
        if chat is None or not chat.running:
            return None
        message = store.get_message(self.r, self.chat_id, chat.running)
        return message if message is not None and message.running else None

    def _current(self, message: Message) -> tuple[Message, AnswerBody | None]:
        """Return the message as it is now, and its body so far if it is a running answer
        (which this stream then follows)."""
        current, body, position = answer_so_far(self.r, self.chat_id, message)
        if body is not None:
            self.answer.follow(current.id, current.gen, position)
        elif current.gen:
            self.answer.ended.add(current.gen)  # shown finished: its end is no news
        return current, body

    # -- the engine's Listener ------------------------------------------------------------

    def done(self) -> bool:
        return self.deleted or self.closing

    def stop(self) -> None:
        self.closing = True

    def hears(self, payload: Published) -> bool:
        return not isinstance(payload, ChatListChanged)  # it says nothing about this chat

    def express(self, payload: Published) -> bytes | None:
        if self.done() or not isinstance(payload, AnswerEntries):
            return None
        return self.answer.express(payload)

    def missed(self) -> Iterator[bytes]:
        yield self._chats()  # a nudge may have been missed
        yield from self._refill_events()
        yield from self.answer.refill()

    def quiet(self, tick: bool) -> Iterator[bytes]:
        if probes.chat_event_count(self.r, self.chat_id) != self.events_sent:
            yield from self._refill_events()  # more, or fewer (the chat was deleted)
        if not self.deleted:
            yield from self.answer.quiet(tick, self.request.settings.timing)

    def live(self, payload: Published) -> Iterator[bytes]:
        if isinstance(payload, ChatListChanged):
            if self.request.session_id in payload.signed_out:
                self.deleted = True  # nothing more for this page: it is logged out
                yield frames.chat_gone_event(self.render_signed_out()).encode()
            else:
                yield self._chats(nudge=payload)
        elif isinstance(payload, ChatEvents):
            if payload.first > self.events_sent + 1:
                yield from self._refill_events()  # a gap: something we did not get
            skip = self.events_sent + 1 - payload.first
            if skip < 0 or self.deleted:
                return  # still a gap: the log no longer has it (the chat is gone)
            for event in payload.events[skip:]:
                self.events_sent += 1
                yield from self._apply(event)
        else:
            yield from self.answer.live(payload)

    # -- following the chat's events and its running answer -------------------------------

    def _refill_events(self) -> Iterator[bytes]:
        events = store.chat_events(self.r, self.chat_id, after=self.events_sent)
        for event in events:
            self.events_sent += 1
            yield from self._apply(event)
        # A log shorter than what we sent was deleted, with its chat.
        if not events and not self.deleted and self._log_vanished():
            yield self._gone()

    def _log_vanished(self) -> bool:
        shorter = store.chat_event_count(self.r, self.chat_id) < self.events_sent
        return shorter and store.get_chat(self.r, self.chat_id) is None

    def _apply(self, event: ChatEvent) -> Iterator[bytes]:
        """Send what one chat event changes on the page."""
        kind, message_id = event.kind, event.message_id
        if kind == contract.ANSWER_STARTED and event.again:  # an older log's: replace it
            yield from self._answer_again(message_id)
        elif kind == contract.TITLE_CHANGED:
            title = frames.title_element(event.title)
            yield frames.title_event(self._cursor(), title).encode()
        elif kind == contract.CHAT_DELETED and not self.deleted:
            yield self._gone()
        elif kind == contract.PATH_CHANGED:  # another version: the page shows it all anew
            yield self._all_of(store.get_messages(self.r, self.chat_id))
        elif kind in contract.ADDS_A_MESSAGE and message_id not in self.shown:
            message = store.get_message(self.r, self.chat_id, message_id)
            if message is not None:
                self.shown.add(message_id)
                current, body = self._current(message)
                article = self.render(current, body, False)
                yield frames.chat_message_event(self._cursor(), article).encode()
        elif kind == contract.ANSWER_ENDED and event.generation_id not in self.answer.ended:
            yield from self.answer.end(message_id, event.generation_id)

    def _answer_again(self, message_id: str) -> Iterator[bytes]:
        """The answer is being written again (a new generation): replace it, then follow."""
        message = store.get_message(self.r, self.chat_id, message_id)
        if message is not None:
            current, body = self._current(message)
            article = self.render(current, body, True)
            yield frames.answer_replace_event(
                self._cursor(), article, frames.EVENTS.answer
            ).encode()

    def _gone(self) -> bytes:
        self.deleted = True
        return frames.chat_gone_event(self.render_deleted()).encode()

    def _chats(self, nudge: ChatListChanged | None = None) -> bytes:
        """The owner's chat list; for a nudge, read and rendered once per process for all
        the owner's pages of this chat (see `shared_render`)."""
        html = shared_render(nudge, self.chat_id, self.render_chats)
        return frames.chats_event(self._cursor(), html)

    def _cursor(self) -> ChatCursor:
        return self.answer.cursor()
