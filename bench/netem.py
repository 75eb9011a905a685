"""Emulated network links for the benchmarks: a TCP relay process with per-direction delay and rate.

    python -m bench.netem --check                       # calibrate: bulk transfer + ping-pong, LAN and WAN
    python -m bench.netem --check --out docs/bench-cost/netem_check.json

This machine's kernel has no netem qdisc (``tc qdisc ... netem``: "Specified qdisc kind is unknown")
and network namespaces need root, so the links are emulated in user space: the relay accepts a
connection, opens one to the real server, and moves bytes in both directions, each direction
through its own queue that models a link of ``rate`` bit/s and one-way ``delay`` seconds:

    departure = max(arrival, previous departure) + size * 8 / rate      (serialisation, FIFO)
    delivery  = departure + delay                                        (propagation)

A chunk is written to the far side at its delivery time. The relay also counts the bytes each way
(used for engines that do not report their own traffic, e.g. SPU's brpc links). The relay's own
cost (a Python process copying bytes) is measured by ``--check`` against the ideal figures.

Presets (:data:`LINKS`): ``lan`` 1 Gbit/s, 0.5 ms round trip; ``wan`` 100 Mbit/s, 40 ms round trip.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# name -> (rate bit/s, round-trip time s)
LINKS: dict[str, tuple[float, float]] = {"lan": (1e9, 0.5e-3), "wan": (100e6, 40e-3)}
_CHUNK = 1 << 16
_QUEUE_LIMIT = 64 << 20  # bytes in flight per direction before the relay stops reading (back-pressure)


@dataclass(frozen=True)
class Link:
    rate_bps: float
    rtt_s: float

    @classmethod
    def preset(cls, name: str) -> "Link":
        try:
            rate, rtt = LINKS[name]
        except KeyError:
            raise ValueError(f"unknown link {name!r}; choose from {sorted(LINKS)}") from None
        return cls(rate, rtt)


class _Direction:
    """One direction of one connection: reader thread enqueues, writer thread delivers on time."""

    def __init__(self, src: socket.socket, dst: socket.socket, link: Link, counter: list[int], idx: int) -> None:
        self.src, self.dst, self.link = src, dst, link
        self.counter, self.idx = counter, idx
        self.q: deque[tuple[float, bytes]] = deque()
        self.cv = threading.Condition()
        self.queued = 0
        self.closed = False
        self.last_departure = 0.0

    def reader(self) -> None:
        delay = self.link.rtt_s / 2
        try:
            while True:
                data = self.src.recv(_CHUNK)
                now = time.perf_counter()
                if not data:
                    break
                dep = max(now, self.last_departure) + len(data) * 8 / self.link.rate_bps
                self.last_departure = dep
                with self.cv:
                    while self.queued > _QUEUE_LIMIT:
                        self.cv.wait()
                    self.q.append((dep + delay, data))
                    self.queued += len(data)
                    self.cv.notify_all()
        except OSError:
            pass
        with self.cv:
            self.closed = True
            self.cv.notify_all()

    def writer(self) -> None:
        try:
            while True:
                with self.cv:
                    while not self.q and not self.closed:
                        self.cv.wait()
                    if not self.q:
                        break
                    due, data = self.q[0]
                wait = due - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                with self.cv:
                    self.q.popleft()
                    self.queued -= len(data)
                    self.cv.notify_all()
                self.dst.sendall(data)
                self.counter[self.idx] += len(data)
        except OSError:
            pass
        try:
            self.dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def _serve_relay(listen_port: int, target: tuple[str, int], link: Link, ready: Any, stats: Any) -> None:
    srv = socket.create_server(("127.0.0.1", listen_port))
    ready.put(srv.getsockname()[1])
    counters: list[list[int]] = []
    threads: list[threading.Thread] = []
    srv.settimeout(0.2)
    while True:
        try:
            a, _ = srv.accept()
        except (socket.timeout, TimeoutError):
            if stats is not None and stats.poll():
                # the parent asks for the byte counts: report what has been delivered so far
                stats.recv()
                stats.send([sum(c[0] for c in counters), sum(c[1] for c in counters)])
            continue
        c = [0, 0]  # bytes client->server, server->client
        counters.append(c)
        t = threading.Thread(target=_bridge, args=(a, target, link, c, threads), daemon=True)
        t.start()
        threads.append(t)


def _bridge(a: socket.socket, target: tuple[str, int], link: Link, c: list[int], threads: list) -> None:
    """Connect to the target (retrying while it is not listening yet: peers that start together,
    e.g. SPU's parties, dial each other before both listen) and start both directions."""
    deadline = time.perf_counter() + 120
    while True:
        try:
            b = socket.create_connection(target)
            break
        except OSError:
            if time.perf_counter() > deadline:
                a.close()
                return
            time.sleep(0.05)
    for s in (a, b):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for d in (_Direction(a, b, link, c, 0), _Direction(b, a, link, c, 1)):
        for fn in (d.reader, d.writer):
            t = threading.Thread(target=fn, daemon=True)
            t.start()
            threads.append(t)


class Relay:
    """A relay process in front of ``target``; use as a context manager. ``port`` is where to connect."""

    def __init__(self, target: tuple[str, int], link: Link | str, listen_port: int = 0) -> None:
        self.link = Link.preset(link) if isinstance(link, str) else link
        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        self._stats, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve_relay, args=(listen_port, target, self.link, q, child), daemon=True)
        self.proc.start()
        self.port = q.get(timeout=60)

    def bytes(self) -> tuple[int, int]:
        """(client -> server, server -> client) bytes delivered so far, over all connections."""
        self._stats.send("stats")
        if not self._stats.poll(5):
            return (0, 0)
        up, down = self._stats.recv()
        return int(up), int(down)

    def close(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(5)

    def __enter__(self) -> "Relay":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ---- calibration: the emulator against its own ideal ------------------------------------------
def _echo_server(port_q: Any, mode: str) -> None:
    srv = socket.create_server(("127.0.0.1", 0))
    port_q.put(srv.getsockname()[1])
    conn, _ = srv.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if mode == "bulk":  # read everything, answer one byte at the end
        total = int.from_bytes(conn.recv(8), "little")
        got = 0
        while got < total:
            got += len(conn.recv(1 << 20))
        conn.sendall(b"k")
    else:  # ping-pong: echo 1-byte messages
        while True:
            b = conn.recv(1)
            if not b:
                break
            conn.sendall(b)
    conn.close()


def check(link_name: str, bulk_mb: float = 20.0, pings: int = 20) -> dict[str, Any]:
    """Bulk transfer and ping-pong through the relay: measured against the link's ideal times."""
    link = Link.preset(link_name)
    ctx = mp.get_context("spawn")
    out: dict[str, Any] = {"link": link_name, "rate_Mbps": link.rate_bps / 1e6, "rtt_ms": link.rtt_s * 1e3}
    # bulk
    q = ctx.Queue()
    p = ctx.Process(target=_echo_server, args=(q, "bulk"), daemon=True)
    p.start()
    port = q.get(timeout=30)
    with Relay(("127.0.0.1", port), link) as r:
        s = socket.create_connection(("127.0.0.1", r.port))
        payload = bytes(int(bulk_mb * 1e6))
        t0 = time.perf_counter()
        s.sendall(len(payload).to_bytes(8, "little"))
        s.sendall(payload)
        s.recv(1)
        t = time.perf_counter() - t0
        s.close()
    p.join(10)
    ideal = len(payload) * 8 / link.rate_bps + link.rtt_s
    out.update(bulk_MB=len(payload) / 1e6, bulk_s=t, bulk_ideal_s=ideal,
               bulk_Mbps=len(payload) * 8 / t / 1e6)
    # ping-pong
    q = ctx.Queue()
    p = ctx.Process(target=_echo_server, args=(q, "ping"), daemon=True)
    p.start()
    port = q.get(timeout=30)
    with Relay(("127.0.0.1", port), link) as r:
        s = socket.create_connection(("127.0.0.1", r.port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(b"x")
        s.recv(1)  # warm-up
        times = []
        for _ in range(pings):
            t0 = time.perf_counter()
            s.sendall(b"x")
            s.recv(1)
            times.append(time.perf_counter() - t0)
        s.close()
    p.join(10)
    times.sort()
    out.update(ping_median_ms=times[len(times) // 2] * 1e3, ping_min_ms=times[0] * 1e3,
               ping_ideal_ms=(link.rtt_s + 2 * 8 / link.rate_bps) * 1e3)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="emulated LAN/WAN links (TCP relay); --check calibrates them")
    ap.add_argument("--check", action="store_true", help="bulk transfer and ping-pong through each link")
    ap.add_argument("--links", default="lan,wan", help="comma-separated presets: " + ", ".join(LINKS))
    ap.add_argument("--bulk-mb", type=float, default=20.0, help="bulk transfer size (MB)")
    ap.add_argument("--out", default=None, help="write the check's JSON here")
    args = ap.parse_args(argv)
    if not args.check:
        ap.print_help()
        return 0
    rows = []
    for name in args.links.split(","):
        r = check(name, args.bulk_mb)
        rows.append(r)
        print(f"{name}: bulk {r['bulk_MB']:.0f} MB in {r['bulk_s']:.3f} s (ideal {r['bulk_ideal_s']:.3f} s, "
              f"{r['bulk_Mbps']:.0f} Mbit/s); ping-pong median {r['ping_median_ms']:.2f} ms "
              f"(ideal {r['ping_ideal_ms']:.2f} ms)")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
