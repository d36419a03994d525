"""A small TCP proxy for fault tests and benchmarks: it forwards 127.0.0.1:PORT to a target,
can drop out, can add a round-trip latency, and counts what passes.

``outage()`` closes the listening socket and every open connection, so clients get connection
refused / reset (what an endpoint restart or a network fault looks like); ``restore()`` listens
again on the same port. Merely pausing a server is not enough: requests would just wait.

A request here is what a client sends on a connection that awaits no answer, up to the first
byte of the server's answer: one HTTP request (a PUT that waits for ``100 Continue`` counts
twice). ``latency_s`` delays the start of each request, so every round trip costs that much
more, as on a far object store, while a request's later chunks and the answers flow freely.
"""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, latency_s: float = 0.0) -> None:
        self.target = (target_host, target_port)
        self.latency_s = latency_s
        self.port = _free_port()
        self.connections = 0  # accepted and forwarded
        self.requests = 0
        self.max_in_flight = 0  # most requests awaiting their answer at one time
        self._in_flight = 0
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._server: socket.socket | None = None
        self.restore()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def restore(self) -> None:
        """Listen again (after :meth:`outage`)."""
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        deadline = time.monotonic() + 10
        while True:  # the port may linger for a moment after the outage
            try:
                server.bind(("127.0.0.1", self.port))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        server.listen(256)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def outage(self) -> None:
        """Refuse new connections and reset the open ones."""
        with self._lock:
            server, self._server = self._server, None
            sockets, self._sockets = self._sockets, []
        for conn in [server, *sockets] if server is not None else sockets:
            _close(conn)

    def close(self) -> None:
        self.outage()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return  # closed by outage()
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                _close(client)
                continue
            with self._lock:
                if self._server is not server:  # an outage began meanwhile
                    _close(client), _close(upstream)
                    return
                self._sockets += [client, upstream]
                self.connections += 1
            link = _Link(self)
            threading.Thread(target=link.requests, args=(client, upstream), daemon=True).start()
            threading.Thread(target=link.answers, args=(upstream, client), daemon=True).start()

    def _started(self) -> None:
        with self._lock:
            self.requests += 1
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)

    def _answered(self) -> None:
        with self._lock:
            self._in_flight -= 1


class _Link:
    """One proxied connection: whether a request on it awaits its answer."""

    def __init__(self, proxy: TcpProxy) -> None:
        self.proxy = proxy
        self._waiting = False
        self._lock = threading.Lock()

    def requests(self, client: socket.socket, upstream: socket.socket) -> None:
        """Client to server; the first chunk of each request waits out the latency."""
        def forward(data: bytes) -> None:
            with self._lock:
                starts, self._waiting = not self._waiting, True
            if starts:
                self.proxy._started()
                time.sleep(self.proxy.latency_s)
            upstream.sendall(data)

        _pipe(client, upstream, forward, self._settle)

    def answers(self, upstream: socket.socket, client: socket.socket) -> None:
        def forward(data: bytes) -> None:
            self._settle()
            client.sendall(data)

        _pipe(upstream, client, forward, self._settle)

    def _settle(self) -> None:
        """The awaited answer came (or the connection ended): no request is in flight."""
        with self._lock:
            answered, self._waiting = self._waiting, False
        if answered:
            self.proxy._answered()


def _pipe(source: socket.socket, sink: socket.socket, forward: Callable[[bytes], None],
          done: Callable[[], None]) -> None:
    try:
        while data := source.recv(65536):
            forward(data)
    except OSError:
        pass
    finally:
        done()
        _close(source), _close(sink)


def _close(conn: socket.socket) -> None:
    """Reset ``conn`` now. ``shutdown`` first: ``close`` alone wakes no thread blocked in its
    ``accept`` or ``recv``, and the connection lives on while one is, so a client's request
    would hang until its read timeout instead of failing at once."""
    try:  # linger 0: the peer sees a reset, not a polite close
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    except OSError:
        pass
    for end in (lambda: conn.shutdown(socket.SHUT_RDWR), conn.close):
        try:
            end()
        except OSError:
            pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
