"""A small TCP load balancer for several `secureml serve` machines (layer 4: bytes are relayed,
TLS passes through untouched, so mutual TLS still ends at the servers).

Routing: *sticky* by client IP address (rendezvous hashing: a client keeps its server while the
set of servers is unchanged, and only the clients of a removed server move), so a client's
resumable OT session (:mod:`protocols.ot.session`: the ticket lives in one server's memory) finds
its state again; ``sticky=False`` spreads connections round-robin.  A server that refuses the
connection is skipped and the next one in the client's order is tried (failover).

For production use a hardened balancer (HAProxy ``mode tcp`` + ``balance source``, nginx
``stream`` + ``hash $remote_addr consistent``: docs/serving.md); this one exists so the
deployment can be tested end to end on one machine (``secureml balance``).

Threat model: the balancer sees only ciphertext when the servers use TLS; it adds no
authentication.  Per-connection cost: two relay threads; at most ``max_connections`` at once
(more are closed at accept, like the servers' own front door).
"""
from __future__ import annotations

import hashlib
import itertools
import logging
import socket
import threading
from typing import Sequence

__all__ = ["Balancer", "rendezvous_order"]

log = logging.getLogger("secureml.balance")


def rendezvous_order(key: str, backends: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
    """Backends ordered by highest-random-weight hashing of ``key`` (stable per key)."""
    def weight(b: tuple[str, int]) -> bytes:
        return hashlib.sha256(f"{key}|{b[0]}:{b[1]}".encode()).digest()

    return sorted(backends, key=weight, reverse=True)


class Balancer:
    """Relay connections on ``listen_addr`` to ``backends`` (sticky by client IP by default)."""

    def __init__(self, listen_addr: tuple[str, int], backends: Sequence[tuple[str, int]], *,
                 sticky: bool = True, connect_timeout: float = 3.0, max_connections: int = 1024) -> None:
        if not backends:
            raise ValueError("at least one backend")
        self.backends = list(backends)
        self.sticky = sticky
        self.connect_timeout = connect_timeout
        self.max_connections = max_connections
        self._rr = itertools.count()
        self._active = 0
        self._lock = threading.Lock()
        self.routed: dict[tuple[str, int], int] = {b: 0 for b in self.backends}
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(listen_addr)
        self.sock.listen(1024)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()

    def order(self, client_ip: str) -> list[tuple[str, int]]:
        if self.sticky:
            return rendezvous_order(client_ip, self.backends)
        i = next(self._rr) % len(self.backends)
        return self.backends[i:] + self.backends[:i]

    def serve_forever(self) -> None:
        self.sock.settimeout(0.25)
        while not self._stop.is_set():
            try:
                conn, addr = self.sock.accept()
            except (socket.timeout, TimeoutError):
                continue
            except OSError:
                if self._stop.is_set():
                    break
                continue
            with self._lock:
                full = self._active >= self.max_connections
                if not full:
                    self._active += 1
            if full:
                conn.close()
                continue
            threading.Thread(target=self._route, args=(conn, addr[0]), daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self.sock.close()

    def _route(self, conn: socket.socket, client_ip: str) -> None:
        up = None
        try:
            for backend in self.order(client_ip):
                try:
                    up = socket.create_connection(backend, timeout=self.connect_timeout)
                    up.settimeout(None)
                    with self._lock:
                        self.routed[backend] += 1
                    break
                except OSError:
                    log.info("backend %s:%d unreachable, trying the next", *backend)
            if up is None:
                return
            for s in (conn, up):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            t = threading.Thread(target=_pipe, args=(up, conn), daemon=True)
            t.start()
            _pipe(conn, up)
            t.join()
        finally:
            for s in (conn, up):
                if s is not None:
                    try:
                        s.close()
                    except OSError:
                        pass
            with self._lock:
                self._active -= 1


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    """Copy src -> dst until EOF, then half-close dst (the other direction may still flow)."""
    buf = bytearray(1 << 16)
    view = memoryview(buf)
    try:
        while True:
            n = src.recv_into(buf)
            if not n:
                break
            dst.sendall(view[:n])
    except OSError:
        pass
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass
