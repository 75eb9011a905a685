"""Where the Laplacian protocol's L1 step spends its bytes *and* each party's CPU, step by step.

    python -m bench.laplacian_profile --sizes 16384 --features 351 --out docs/double-blind/v24/laplacian

Both parties of :func:`protocols.krr.laplacian.l1_shares` run in two processes over TCP loopback
with silent OT (:func:`protocols.ot.ferret.setup_pair`, set up before the clock starts), on the
synthetic model of ``bench.krr_cost`` encoded on its 2^-8 grid. Each process wraps the protocol's
building blocks (column tables, column OT, random OT, the products' COTs) and records, per call,
its own CPU seconds (``time.process_time``; waiting for the peer costs none), wall seconds and
the bytes it sent and received. Steps nest: a column OT's CPU includes its key OT, the random OT's
the silent-OT iterations it triggers. The shares are checked against the exact L1 distances.
``l1_user`` and ``l1_system`` split ``l1_total``'s CPU (getrusage; page faults count as system time).
Writes ``laplacian_profile.json`` and ``.csv`` (one row per step and party) and
``laplacian_timeline.json`` (every call, with start and end on the common monotonic clock).
"""
from __future__ import annotations

import argparse
import csv
import json
import multiprocessing as mp
import resource
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from bench.synthetic import LAPLACIAN_GRID_BITS, synthetic_model, synthetic_queries


#: every wrapped call of the last :func:`measure` calls (party, step, start and end on a common clock,
#: CPU seconds): which party waits for which
TIMELINE: list[dict[str, Any]] = []


def _instrument(party: Any, log: dict[str, list[float]]) -> None:
    """Wrap laplacian's steps (module functions) and the party's COT calls with counters."""
    from protocols.krr import laplacian

    depth = [0]

    def wrap(name: str, fn: Any) -> Any:
        def call(*a: Any, **kw: Any) -> Any:
            ch = party.ch
            c0, w0, s0, r0 = time.process_time(), time.perf_counter(), ch.bytes_sent, ch.bytes_received
            depth[0] += 1
            try:
                return fn(*a, **kw)
            finally:
                depth[0] -= 1
                if depth[0] == 0:  # outermost step only: nested calls are inside its figures
                    log.setdefault("_timeline", []).append((name, w0, time.perf_counter(), time.process_time() - c0))
                    row = log[name]
                    row[0] += time.process_time() - c0
                    row[1] += time.perf_counter() - w0
                    row[2] += ch.bytes_sent - s0
                    row[3] += ch.bytes_received - r0
                    row[4] += 1
        return call

    for name in ("_digit_tables", "column_ot", "_rot_bits"):
        setattr(laplacian, name, wrap(name, getattr(laplacian, name)))

    def mark(name: str, fn: Any) -> Any:  # timeline only (nested in the steps above)
        def call(*a: Any, **kw: Any) -> Any:
            c0, w0 = time.process_time(), time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                log.setdefault("_timeline", []).append((name, w0, time.perf_counter(), time.process_time() - c0))
        return call

    for eng, name in ((party.ot_sender, "silent_iterations_as_sender"),
                      (party.ot_receiver, "silent_iterations_as_receiver")):
        if hasattr(eng, "_ensure"):
            eng._ensure = mark(name, eng._ensure)
    # step 4's two COTs (the only cot_send / cot_recv calls of the L1 step; product (i) runs on COTs
    # reserved at the top digit: their silent-OT iterations count here too)
    for eng, meth in ((party.ot_sender, "cot_send"), (party.ot_receiver, "cot_recv"),
                      (party.ot_sender, "cot_send_reserved"), (party.ot_receiver, "cot_recv_reserved"),
                      (party.ot_sender, "reserve_cots"), (party.ot_receiver, "reserve_cots")):
        setattr(eng, meth, wrap("products_cot", getattr(eng, meth)))


def _party(role: int, srv: Any, N: int, d: int, seed: int, out: Any, profile_dir: str | None = None,
           digits: str | None = None) -> None:
    from protocols.krr import laplacian
    from protocols.krr.params import PublicParams
    from protocols.mpc.pages import prefer_small_pages
    from protocols.mpc.party import Party
    from protocols.net.transport import TCPChannel, connect
    from protocols.ot.ferret import setup_pair

    prefer_small_pages()  # as laplacian.online and prepare_server do (no huge-page hint)

    model, rng = synthetic_model(N, d, 1000.0, seed, "laplacian")
    Q = synthetic_queries(model, rng, 1)
    pp = PublicParams(kind="krr-laplacian", n_train=N, n_features=d, frac_bits=LAPLACIAN_GRID_BITS,
                      feature_lo=0.0, feature_hi=128.0, sigma=1000.0, weight_bits=30)
    # the parent's listening socket (inherited by fork): no fixed port, no race
    if role == 0:
        ch = TCPChannel.accept(srv, timeout=600)
    else:
        ch = connect("127.0.0.1", srv.getsockname()[1], channel_timeout=600)
    p = Party(ch, role, seed=seed + role)
    snd, rcv = setup_pair(ch, role, seeds=(seed + 10 + role, seed + 20 + role))
    p.install_ot(sender=snd, receiver=rcv)
    log: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0, 0, 0])
    if digits:  # a fixed digit plan instead of digit_levels' choice (both processes alike)
        sizes = [int(m) for m in digits.split("+")]
        plan = tuple((sum(sizes[:i]), sum(sizes[: i + 1])) for i in range(len(sizes)))
        laplacian.digit_levels = lambda *a, **kw: plan
    _instrument(p, log)
    # step 1 (encoding) is outside the L1 step, as in laplacian.online
    XT = np.ascontiguousarray(pp.encode_features(model.X_train).T) if role == 0 else None
    qe = pp.encode_features(Q)[0] if role == 1 else None
    s0, r0 = ch.bytes_sent, ch.bytes_received
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    c0, w0 = time.process_time(), time.perf_counter()
    prof = None
    if profile_dir:
        import cProfile
        prof = cProfile.Profile()
        prof.enable()
    if role == 0:
        L = laplacian.l1_shares(p, pp, N, XT=XT)
    else:
        L = laplacian.l1_shares(p, pp, N, q=qe)
    if prof is not None:
        prof.disable()
        prof.dump_stats(f"{profile_dir}/party{role}.prof")
    log["l1_total"] = [time.process_time() - c0, time.perf_counter() - w0, ch.bytes_sent - s0,
                       ch.bytes_received - r0, 1]
    # l1_total's CPU split into user and system time (page faults count as system time)
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    log["l1_user"] = [ru1.ru_utime - ru0.ru_utime, 0.0, 0, 0, 1]
    log["l1_system"] = [ru1.ru_stime - ru0.ru_stime, 0.0, 0, 0, 1]
    ch.flush()
    out.put((role, dict(log), L))
    if role == 0:
        ch.recv(16)  # the client's goodbye: do not close before it has read everything
    else:
        ch.send(b"bye")
    ch.close()


def measure(N: int, d: int, seed: int = 0, profile_dir: str | None = None,
            digits: str | None = None) -> list[dict[str, Any]]:
    """Per step and party: CPU s, wall s, MB sent/received, calls; checks the L1 shares."""
    from protocols.krr.params import PublicParams
    from protocols.net.transport import listen

    srv = listen()
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    if profile_dir:
        Path(profile_dir).mkdir(parents=True, exist_ok=True)
    procs = [ctx.Process(target=_party, args=(r, srv, N, d, seed, q, profile_dir, digits)) for r in (0, 1)]
    for pr in procs:
        pr.start()
    got = {}
    deadline = time.monotonic() + 900
    while len(got) < 2:  # poll, so that a party that died (an exception in it) ends the run at once
        try:
            r, log, L = q.get(timeout=1.0)
            got[r] = (log, L)
        except Exception:  # queue.Empty
            dead = [pr.exitcode for pr in procs if pr.exitcode not in (None, 0)]
            if dead or time.monotonic() > deadline:
                for pr in procs:
                    pr.kill()
                raise RuntimeError(f"a party process failed (exit codes {[pr.exitcode for pr in procs]})")
    for pr in procs:
        pr.join(60)
    srv.close()
    model, rng = synthetic_model(N, d, 1000.0, seed, "laplacian")
    Q = synthetic_queries(model, rng, 1)
    pp = PublicParams(kind="krr-laplacian", n_train=N, n_features=d, frac_bits=LAPLACIAN_GRID_BITS,
                      feature_lo=0.0, feature_hi=128.0, sigma=1000.0, weight_bits=30)
    XT = pp.encode_features(model.X_train).astype(np.int64)
    exact = np.abs(XT - pp.encode_features(Q)[0].astype(np.int64)).sum(axis=1).astype(np.uint64)
    if not np.array_equal((got[0][1] + got[1][1]) & np.uint64((1 << pp.ring_bits) - 1), exact):
        raise AssertionError("L1 shares do not sum to the exact distances")
    rows = []
    t_zero = min(ev[1] for r in (0, 1) for ev in got[r][0].get("_timeline", [(None, 1e18)]))
    for role, who in ((0, "server"), (1, "client")):
        for ev in got[role][0].pop("_timeline", []):
            TIMELINE.append({"N": N, "digits": digits or "auto", "party": who, "step": ev[0].strip(),
                             "start_s": round(ev[1] - t_zero, 4), "end_s": round(ev[2] - t_zero, 4),
                             "cpu_s": round(ev[3], 4)})
        for step, (cpu, wall, sent, recv, calls) in got[role][0].items():
            rows.append({"N": N, "d": d, "digits": digits or "auto", "party": who, "step": step, "cpu_s": round(cpu, 3),
                         "wall_s": round(wall, 3), "sent_MB": round(sent / 1e6, 3),
                         "received_MB": round(recv / 1e6, 3),
                         "sent_bytes_per_element": round(sent / (N * d), 3), "calls": int(calls)})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="16384", help="comma-separated training sizes N (default: 16384)")
    ap.add_argument("--features", type=int, default=351, help="representation width d (default: 351)")
    ap.add_argument("--out", default="results/laplacian_profile", help="output folder (default: results/laplacian_profile)")
    ap.add_argument("--digits", default="",
                    help="comma-separated digit plans to compare, e.g. 5+5+5,3+3+3+3+3 (default: the protocol's own)")
    ap.add_argument("--cprofile", default=None, help="folder for each party's cProfile dump (default: none)")
    args = ap.parse_args(argv)
    plans = args.digits.split(",") if args.digits else [None]
    rows = [r for n in args.sizes.split(",") for plan in plans
            for r in measure(int(n), args.features, profile_dir=args.cprofile, digits=plan)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "laplacian_profile.json").write_text(json.dumps(rows, indent=2))
    (out / "laplacian_timeline.json").write_text(json.dumps(sorted(TIMELINE, key=lambda e: e["start_s"]), indent=1))
    with open(out / "laplacian_profile.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    for r in rows:
        print(f"N={r['N']} {r['digits']} {r['party']:6s} {r['step']:14s} cpu {r['cpu_s']:6.2f} s  wall {r['wall_s']:6.2f} s  "
              f"sent {r['sent_MB']:7.2f} MB ({r['sent_bytes_per_element']:.2f} B/el)  calls {r['calls']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
