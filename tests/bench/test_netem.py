"""The emulated link (bench/netem.py): a relay process that delays, rate-limits and counts bytes."""
from __future__ import annotations

import multiprocessing as mp
import socket
import time

import pytest

from bench.netem import LINKS, Link, Relay, _echo_server


def _echo(mode: str) -> tuple[int, mp.Process]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_echo_server, args=(q, mode), daemon=True)
    p.start()
    return q.get(timeout=60), p


def test_ping_pong_pays_the_round_trip_and_bytes_are_counted() -> None:
    port, proc = _echo("ping")
    link = Link(rate_bps=1e9, rtt_s=0.05)  # 50 ms: far above scheduling noise
    with Relay(("127.0.0.1", port), link) as r:
        s = socket.create_connection(("127.0.0.1", r.port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            s.sendall(b"x")
            assert s.recv(1) == b"x"
            times.append(time.perf_counter() - t0)
        s.close()
        time.sleep(0.2)
        up, down = r.bytes()
    proc.join(10)
    assert min(times) >= 0.05  # never faster than the emulated round trip
    assert (up, down) == (3, 3)


def test_bulk_transfer_is_rate_limited() -> None:
    port, proc = _echo("bulk")
    link = Link(rate_bps=40e6, rtt_s=0.002)  # 2 MB at 40 Mbit/s: >= 0.4 s
    with Relay(("127.0.0.1", port), link) as r:
        s = socket.create_connection(("127.0.0.1", r.port))
        payload = bytes(2_000_000)
        t0 = time.perf_counter()
        s.sendall(len(payload).to_bytes(8, "little"))
        s.sendall(payload)
        assert s.recv(1) == b"k"
        elapsed = time.perf_counter() - t0
        s.close()
    proc.join(10)
    assert elapsed >= len(payload) * 8 / link.rate_bps


def test_presets_and_unknown_names() -> None:
    assert Link.preset("wan") == Link(*LINKS["wan"])
    with pytest.raises(ValueError, match="unknown link"):
        Link.preset("moon")
