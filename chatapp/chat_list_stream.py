"""The front page's stream: the owner's chat list, sent again whenever it changes.

A chat page's stream (chat_stream.py) carries the list too, on the same nudges; both render
it once per nudge per process (`shared_render`), however many of the owner's tabs listen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from chatapp import frames, store
from chatapp.contract import ChatListChanged, Published
from chatapp.follow import StreamSettings, relay, serve
from chatapp.hub import Hub
from chatapp.subscription import Subscription

RenderChats = Callable[[], str]


def shared_render(nudge: ChatListChanged | None, page: str, render: RenderChats) -> str:
    """Render the chat list, once per nudge and page per process when it answers a nudge.

    The hub hands the same decoded nudge to every stream of the owner in this process; the
    first to handle it reads the list (after the nudge was sent, so it is current) and
    keeps the markup in it for the others (frames.made_once). An owner with many tabs, or
    a benchmark with a thousand, costs one read and one render per change, not one per tab."""
    if nudge is None:
        return render()
    return frames.made_once(nudge.rendered, page, render)


def follow_chat_list(
    hub: Hub,
    owner: str,
    render_chats: RenderChats,
    settings: StreamSettings,
    session_id: str = "",
    signed_out: Callable[[], str] = str,
) -> Iterator[bytes]:
    """Yield the SSE bytes of a page that shows only the owner's chat list (the front page):
    the list now, then again whenever it changes, until the server closes the stream or
    the page's session (`session_id`) ends (then `signed_out()` is its last event)."""

    def run(subscription: Subscription) -> Iterator[bytes]:
        yield frames.chats_event(None, render_chats())
        listener = _ChatListStream(render_chats, session_id, signed_out)
        yield from relay(subscription, listener, settings)

    channels = (store.user_channel(owner),)
    yield from serve(hub, channels, settings.max_streams, "chat list stream", run)


class _ChatListStream:
    """The front page's stream: the owner's chat list, again on every change."""

    def __init__(self, render: RenderChats, session_id: str, signed_out: Callable[[], str]):
        self.render = render
        self.session_id = session_id
        self.signed_out = signed_out
        self.ended = False

    def done(self) -> bool:
        return self.ended

    def stop(self) -> None:
        self.ended = True

    def hears(self, payload: Published) -> bool:
        return True

    def express(self, payload: Published) -> bytes | None:
        return None  # a list is read from Redis: the usual way

    def live(self, payload: Published) -> Iterator[bytes]:
        if not isinstance(payload, ChatListChanged):
            return
        if self.session_id in payload.signed_out:
            self.ended = True
            yield frames.chat_gone_event(self.signed_out()).encode()
        else:  # read the list again
            yield frames.chats_event(None, shared_render(payload, "", self.render))

    def missed(self) -> Iterator[bytes]:
        yield frames.chats_event(None, self.render())

    def quiet(self, tick: bool) -> Iterator[bytes]:
        return iter(())  # nothing to check: the list has no log to fall behind on
