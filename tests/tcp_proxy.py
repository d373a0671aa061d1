"""A loopback TCP proxy that can blackhole its connections: silent, but never closed."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable


class BlackholeProxy:
    """Forwards 127.0.0.1:<port> to a target; `blackhole()` freezes the current connections."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._frozen: set[socket.socket] = set()
        self._live: list[socket.socket] = []
        self._lock = threading.Lock()
        accepting = (self._listener, target_port, self._connected)
        threading.Thread(target=_accept, args=accepting, daemon=True).start()

    def blackhole(self) -> None:
        """Stop forwarding on every open connection, without closing any (a half-dead peer)."""
        with self._lock:
            self._frozen.update(self._live)

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            for sock in self._live:
                sock.close()

    def _connected(self, client: socket.socket, upstream: socket.socket) -> None:
        with self._lock:
            self._live += [client, upstream]
        for source, sink in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                return
            if not data:
                return
            with self._lock:
                if source in self._frozen:
                    continue  # swallowed: neither side hears anything again
            try:
                sink.sendall(data)
            except OSError:
                return


class CuttingProxy:
    """Forwards 127.0.0.1:<port> to a target, and cuts the next event stream that passes
    once, as a lost network would (both sockets closed mid-stream), at a chosen place: just
    after its `after`-th event, or just before its first event named `before`."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._after: int | None = None
        self._before: bytes | None = None
        self.cut = threading.Event()  # set once the armed cut happened
        accepting = (self._listener, target_port, self._connected)
        threading.Thread(target=_accept, args=accepting, daemon=True).start()

    def arm(self, after: int | None = None, before: str | None = None) -> None:
        """Cut the next event stream after its `after`-th event, or before its first
        `before` event."""
        with self._lock:
            self._after = after
            self._before = f"event: {before}\n".encode() if before else None
            self.cut.clear()

    def close(self) -> None:
        self._listener.close()

    def _connected(self, client: socket.socket, upstream: socket.socket) -> None:
        threading.Thread(target=_pipe, args=(client, upstream), daemon=True).start()
        threading.Thread(target=self._relay, args=(upstream, client), daemon=True).start()

    def _relay(self, upstream: socket.socket, client: socket.socket) -> None:
        """Server to browser: pass everything on, event by event once it is an event
        stream, until the armed cut comes."""
        pending, events, streaming, cutting = b"", 0, False, False
        while not cutting:
            try:
                data = upstream.recv(65536)
            except OSError:
                break
            if not data:
                break
            pending += data
            streaming = streaming or b"text/event-stream" in pending
            if not streaming or self.cut.is_set():
                ready, pending = pending, b""
            else:
                ready, pending, events, cutting = self._until_cut(pending, events)
            try:
                client.sendall(ready)
            except OSError:
                break
        _close(client, upstream)

    def _until_cut(self, pending: bytes, events: int) -> tuple[bytes, bytes, int, bool]:
        """Split what came into whole events that go on and what is held back, up to the
        armed cut if it comes here (then nothing more goes on). Return them, the events
        passed on so far, and whether to cut now."""
        ready = b""
        while (end := pending.find(b"\n\n")) >= 0:
            if self.cut.is_set():  # another stream was cut: this one goes on as it is
                return ready + pending, b"", events, False
            block = pending[: end + 2]
            is_event = b"event: " in block or b"id: " in block
            with self._lock:
                if is_event and self._before is not None and self._before in block:
                    self.cut.set()
                    return ready, pending, events, True
                ready, pending, events = ready + block, pending[end + 2 :], events + is_event
                if is_event and self._after is not None and events == self._after:
                    self.cut.set()
                    return ready, pending, events, True
        return ready, pending, events, False


def _accept(
    listener: socket.socket,
    target_port: int,
    connected: Callable[[socket.socket, socket.socket], None],
) -> None:
    """Take each connection, open one to the target for it, and hand both on."""
    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        connected(client, socket.create_connection(("127.0.0.1", target_port)))


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    while True:
        try:
            data = source.recv(65536)
        except OSError:
            break
        if not data:
            break
        try:
            sink.sendall(data)
        except OSError:
            break
    _close(source, sink)


def _close(*sockets: socket.socket) -> None:
    """Shut down, then close: a thread blocked reading one of them wakes at once (a bare
    close would leave it reading a number the next connection may be given)."""
    for sock in sockets:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already shut, or never connected
        sock.close()
