"""A loopback TCP proxy that can blackhole its connections: silent, but never closed."""

from __future__ import annotations

import socket
import threading


class BlackholeProxy:
    """Forwards 127.0.0.1:<port> to a target; `blackhole()` freezes the current connections."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._frozen: set[socket.socket] = set()
        self._live: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def blackhole(self) -> None:
        """Stop forwarding on every open connection, without closing any (a half-dead peer)."""
        with self._lock:
            self._frozen.update(self._live)

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            for sock in self._live:
                sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
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
