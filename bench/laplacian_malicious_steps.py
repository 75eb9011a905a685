"""Where a client-malicious Laplacian session spends its bytes and each party's CPU, step by step.

    nice python -m bench.laplacian_malicious_steps --sizes 16384 --engines softspoken,silent --out docs/malicious/silent/p27/steps

One in-process session per (N, engine) (in-process, one thread per party, the registry's OT
set-up: :func:`protocols.krr.registry._setup_exact_ot` -- silent OT checked where the client
chooses, or the checked SoftSpoken extension), synthetic CM-like model of ``bench.synthetic`` on
its 2^-8 grid (15-bit entries), d = ``--features``. The steps of
:func:`protocols.krr.laplacian_malicious.online` are wrapped on each party's thread: 0 the OT
set-up, 1 the query's bits, 2 the chain (mod 2^M), 4 the MACs mod q on v = u + 2^M kappa's M + 1
bits and on the product b_1 (1 - a_1) (protocol 33; before it, the 64-bit commitment of u and step
2b's lift), 5 the MAC-word tables (the bound table OTs outside the tail), 7-11 the tail; "3, 6" is
the rest (c, chi's 32-byte seed, the check word).
Bytes (what the client sent + received during the step) are exact; CPU is ``time.thread_time``
of each party's thread (waiting costs none; silent-OT iterations count where they are triggered).
Writes ``laplacian_malicious_steps.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from bench.synthetic import LAPLACIAN_GRID_BITS, synthetic_model, synthetic_queries

_STATE = threading.local()


def _wrap(mod: Any, name: str, label: str, log: dict, *, skip_in_tail: bool = False) -> Any:
    orig = getattr(mod, name)

    def f(*a: Any, **kw: Any) -> Any:
        if skip_in_tail and getattr(_STATE, "tail", False):
            return orig(*a, **kw)
        party = a[0]
        role = "server" if party.role == 0 else "client"
        b0 = party.ch.bytes_sent + party.ch.bytes_received
        t0 = time.thread_time()
        if label == "7-11 tail":
            _STATE.tail = True
        try:
            return orig(*a, **kw)
        finally:
            _STATE.tail = False if label == "7-11 tail" else getattr(_STATE, "tail", False)
            e = log.setdefault(label, {"bytes": 0, "cpu_server_s": 0.0, "cpu_client_s": 0.0})
            e[f"cpu_{role}_s"] += time.thread_time() - t0
            if role == "client":
                e["bytes"] += party.ch.bytes_sent + party.ch.bytes_received - b0
    setattr(mod, name, f)
    return orig


def _two_threads(fn0: Callable[[Any], Any], fn1: Callable[[Any], Any], setup: Callable[[Any], None]) -> list[Any]:
    """Both parties in this process, one thread each (named party0 / party1, as the per-thread CPU
    timers expect), over an in-process channel pair; fresh OS randomness (not the tests' seeded
    runner: protocols.testing is for tests only)."""
    from protocols.mpc.party import Party
    from protocols.net.transport import local_channel_pair

    c0, c1 = local_channel_pair(timeout=1800)
    parties = (Party(c0, 0), Party(c1, 1))
    out: list[Any] = [None, None]
    errors: list[BaseException] = []

    def body(i: int, fn: Callable[[Any], Any]) -> None:
        try:
            setup(parties[i])
            out[i] = fn(parties[i])
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)
            parties[i].ch.close()

    threads = [threading.Thread(target=body, args=(i, fn), name=f"party{i}") for i, fn in enumerate((fn0, fn1))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return out


def measure(N: int, d: int, engine: str, sigma: float = 1000.0) -> dict[str, Any]:
    """One session: {step: {bytes, cpu_server_s, cpu_client_s}}, the session's bytes, and the check
    that the client's output is F(q') (bit-exact against :func:`laplacian_malicious.reference`)."""
    from protocols.krr import ServedModel, gaussian_malicious, laplacian
    from protocols.krr import laplacian_malicious as lm
    from protocols.krr.registry import _setup_exact_ot
    from protocols.mpc import authenticated as au
    from protocols.mpc import commit_fp48

    model, rng = synthetic_model(N, d, sigma, seed=0, kernel="laplacian")
    Q = synthetic_queries(model, rng, 1)
    pp = ServedModel(model, security="client-malicious", frac_bits=LAPLACIAN_GRID_BITS).public
    pp.ot_engine = engine
    pp.laplacian_chain = "unbound"  # this bench measures the one-bit protocol (both OT directions)
    pp.validate()
    XT = lm.prepare_server(model, pp)
    q = pp.encode_features(Q)[0]
    log: dict[str, dict[str, Any]] = {}
    wrapped = [(laplacian, "l1_shares", "2 chain", False),
               (au, "random_choices", "1 query bits", False),
               (commit_fp48, "bit_macs", "4 MACs on v and b_1 (1 - a_1)", False), (gaussian_malicious, "kernel_output", "7-11 tail", False),
               (au, "bound_lut", "5 MAC-word tables", True)]
    origs = [(mod, name, _wrap(mod, name, label, log, skip_in_tail=skip)) for mod, name, label, skip in wrapped]
    total: dict[str, Any] = {}

    def setup(p: Any) -> None:
        t0 = time.thread_time()
        b0 = p.ch.bytes_sent + p.ch.bytes_received
        _setup_exact_ot(p, pp, "laplacian")
        p.ot_sender.checked = p.role == 0  # as ExactKernelProtocol.server_setup / client_setup
        p.ot_receiver.checked = p.role == 1
        e = log.setdefault("0 OT set-up", {"bytes": 0, "cpu_server_s": 0.0, "cpu_client_s": 0.0})
        e["cpu_server_s" if p.role == 0 else "cpu_client_s"] += time.thread_time() - t0
        if p.role == 1:
            e["bytes"] += p.ch.bytes_sent + p.ch.bytes_received - b0

    def party(p: Any, **kw: Any) -> Any:
        t0 = time.thread_time()
        out = lm.online(p, pp, **kw)
        total["cpu_server_s" if p.role == 0 else "cpu_client_s"] = time.thread_time() - t0
        if p.role == 1:
            total["bytes"] = p.ch.bytes_sent + p.ch.bytes_received
            total["client_sent_B"], total["client_received_B"] = p.ch.bytes_sent, p.ch.bytes_received
        return out

    t0 = time.perf_counter()
    try:
        rec, y = _two_threads(lambda p: party(p, model=model, XT=XT), lambda p: party(p, q=q), setup)
    finally:
        for mod, name, orig in origs:
            setattr(mod, name, orig)
    wall = time.perf_counter() - t0
    ring = 1 << gaussian_malicious.tail_plan(pp).ring_bits
    exact = y == (lm.reference(pp, model, XT, q, rec["rho"], rec["masks"]) + rec["flood"]) % ring
    steps = sum(v["bytes"] for v in log.values())
    log["3, 6 (c, chi, check word)"] = {"bytes": total["bytes"] - steps, "cpu_server_s": None, "cpu_client_s": None}
    return {"N": N, "d": d, "engine": engine, "digits": [b - a for a, b in laplacian.digit_levels(pp.x_bits, engine)],
            "steps": dict(sorted(log.items())), "session": total, "wall_s": wall, "exact": bool(exact)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="16384")
    ap.add_argument("--features", type=int, default=351)
    ap.add_argument("--engines", default="softspoken,silent")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    rows = []
    for N in [int(v) for v in args.sizes.split(",") if v.strip()]:
        for engine in [e.strip() for e in args.engines.split(",") if e.strip()]:
            r = measure(N, args.features, engine)
            rows.append(r)
            print(f"N={N} {engine} (digits {r['digits']}): session {r['session']['bytes']:,} B, exact={r['exact']}, "
                  f"wall {r['wall_s']:.2f} s, load {os.getloadavg()[0]:.2f}")
            for k, v in r["steps"].items():
                cpu = "" if v["cpu_server_s"] is None else f"  CPU server {v['cpu_server_s']:.2f} s client {v['cpu_client_s']:.2f} s"
                print(f"  {k:28s} {v['bytes']:>13,} B{cpu}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        meta = {"command": "python -m bench.laplacian_malicious_steps " + " ".join(sys.argv[1:] if argv is None else argv),
                "load_avg": os.getloadavg(),
                "time": time.strftime("%Y-%m-%d %H:%M:%S")}
        (args.out / "laplacian_malicious_steps.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
