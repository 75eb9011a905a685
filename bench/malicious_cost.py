"""What client-malicious security costs next to the semi-honest protocols, measured in one run.

    python -m bench.malicious_cost --out docs/malicious                      # compact RFF model + OT check
    python -m bench.malicious_cost --sessions 20 --ot-sizes 100000,1000000,3000000 --out docs/malicious

Three parts, all on this machine in one run (the two modes interleaved session by session, so
load drifts hit both alike):

* **compact** (random-Fourier-feature model, sorted CM, 4,096 features, embedded data): two
  server processes on TCP loopback, one per ``--security`` mode; the query owner alternates
  sessions between them (fresh base OTs and resumed OT sessions). Per mode: client wall time
  (median), bytes each way and rounds (exact: they do not vary), the prediction's agreement.
* **ot-extension**: the consistency check alone, at the scale an exact-kernel protocol would need
  it: n SoftSpoken (k = 4) COTs checked vs unchecked over an in-process channel pair.
* **exact** (``--exact-sizes``): the Gaussian kernel, whole sessions per N (synthetic CM-like
  model, d = 351, sigma 74): semi-honest with the lattice cross term (the default) and with the
  OT cross term, beside client-malicious (:mod:`protocols.krr.gaussian_malicious`) with the checked
  lattice cross term (:mod:`protocols.mpc.he_matvec_checked`, the default) and with the OT one;
  in-process channel pair whose server end is pipelined, as `secureml serve`'s is over plain TCP
  (``--unpipelined-server``: the schedule of a TLS connection, whose writes are not pipelined: more
  rounds, the same bytes), per-model server set-up before the session (as `serve` does).
* **laplacian** (``--laplacian-sizes``): the Laplacian kernel the same way (entries on the 2^-8 grid,
  sigma 1000): semi-honest on SoftSpoken and on silent OT beside client-malicious
  (:mod:`protocols.krr.laplacian_malicious`) on the checked SoftSpoken extension and on silent OT
  (protocol 27), interleaved.

Writes ``malicious_cost.json`` and ``malicious_cost.csv`` to ``--out``.
"""
from __future__ import annotations

import argparse
import csv
import functools
import json
import multiprocessing as mp
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

MODES = ("semi-honest", "client-malicious")


def _server(path: str, security: str, n_sessions: int, q: Any) -> None:
    from protocols.krr import ServedModel, serve

    served = ServedModel.from_file(path, security=security)
    serve(served, "127.0.0.1", 0, max_sessions=n_sessions, on_ready=q.put, concurrency=1)


def _fit_rff(cache: Path) -> tuple[Path, Any]:
    from secureml.data import embedded_split, load_embedded
    from secureml.models import build_model

    data = load_embedded()
    tr, te = embedded_split(0)
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / "rff_gaussian_4096.npz"  # 14 MB: kept out of the results folder
    if not path.exists():
        mm = build_model("rff-gaussian")
        mm.property_name = "U0_atomization"
        mm.fit(data.subset(tr[:2048]))
        mm.save(path)
    return path, data.subset(te[:64])


def compact(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Alternate sessions between a semi-honest and a client-malicious server of one model."""
    from protocols.krr import predict
    from protocols.krr.featurize import molecules_featurizer
    from secureml.models.pipeline import MolecularModel

    path, mols = _fit_rff(args.model_dir)
    mm = MolecularModel.load(path)
    ctx = mp.get_context("spawn")
    ports, procs = {}, []
    n = 2 * args.sessions + 1
    for mode in MODES:
        q = ctx.Queue()
        p = ctx.Process(target=_server, args=(str(path), mode, n, q), daemon=True)
        p.start()
        procs.append(p)
        ports[mode] = q.get(timeout=180)
    rows: list[dict[str, Any]] = []
    try:
        # one warm-up session per server: the public feature map (14 MB, once per client and model,
        # cached) and the OT-session ticket the resumed sessions present
        for mode in MODES:
            predict(f"127.0.0.1:{ports[mode]}", featurize=molecules_featurizer(mols.subset([0])))
        for resume in (False, True):
            for s in range(args.sessions):
                mol = mols.subset([s % len(mols)])
                want = float(mm.predict(mol)[0])
                for mode in (MODES if s % 2 == 0 else MODES[::-1]):
                    t0 = time.perf_counter()
                    y, cost = predict(f"127.0.0.1:{ports[mode]}", featurize=molecules_featurizer(mol),
                                      resume_ot=resume)
                    wall = time.perf_counter() - t0
                    rows.append({"part": "compact", "model": "rff-gaussian-4096", "mode": mode,
                                 "resumed": bool(cost.extra.get("resumed")), "session": s, "wall_s": wall,
                                 "client_sent_B": cost.bytes_sent, "client_received_B": cost.bytes_received,
                                 "rounds": cost.rounds, "abs_error": abs(float(y[0]) - want)})
    finally:
        for p in procs:
            p.join(60)
            if p.is_alive():
                p.kill()
    return rows


def ot_check(args: argparse.Namespace) -> list[dict[str, Any]]:
    """n SoftSpoken COTs with and without the consistency check (in-process channel pair)."""
    from protocols.net.transport import local_channel_pair
    from protocols.ot.softspoken import SoftSpokenReceiver, SoftSpokenSender

    rows = []
    for n in [int(v) for v in args.ot_sizes.split(",") if v.strip()]:
        for rep in range(args.ot_reps):
            for checked in ((False, True) if rep % 2 == 0 else (True, False)):
                c0, c1 = local_channel_pair(timeout=600)
                s, r = SoftSpokenSender(c0, k=4), SoftSpokenReceiver(c1, k=4)
                th = threading.Thread(target=s.setup)
                th.start()
                r.setup()
                th.join()
                s.checked = r.checked = checked
                s0, r0, rounds0 = c1.bytes_sent, c1.bytes_received, c1.stats()["rounds"]
                rng = np.random.default_rng(n)
                delta = rng.integers(0, 2**63, n).astype(np.uint64)
                choice = rng.integers(0, 2, n).astype(np.uint8)
                out: dict[str, Any] = {}
                t0 = time.perf_counter()
                th = threading.Thread(target=lambda: out.__setitem__("x0", s.cot_send(delta, bits=64)))
                th.start()
                got = r.cot_recv(choice, bits=64)
                th.join()
                wall = time.perf_counter() - t0
                assert np.array_equal(got, out["x0"] + choice.astype(np.uint64) * delta)
                rows.append({"part": "ot-extension", "model": f"softspoken-k4-cot-{n}",
                             "mode": "client-malicious" if checked else "semi-honest", "resumed": False,
                             "session": rep, "wall_s": wall,
                             "client_sent_B": c1.bytes_sent - s0, "client_received_B": c1.bytes_received - r0,
                             "rounds": c1.stats()["rounds"] - rounds0, "abs_error": 0.0})
                c0.close()
                c1.close()
    return rows


#: the server's end of the in-process pair: pipelined (sends queued ahead of reads: the default, as
#: `secureml serve` runs a plain-TCP connection since protocol 26's front door) or not (as `serve`
#: runs a TLS connection, whose socket must not be written from a second thread). The schedule
#: changes rounds, never bytes: an OT receiver on a channel that is not pipelined hands out each
#: piece before sending the next one's message (protocols.ot.iknp ``_rows``), one round trip per
#: piece (Laplacian N = 16,384 on silent OT: 120 rounds against 34).
SERVER_PIPELINED = True


@functools.lru_cache(maxsize=None)
def _waiting_local_channel() -> type:
    """An in-process endpoint that reports itself not pipelined (its sends still never block)."""
    from protocols.net.transport import LocalChannel

    class WaitingLocalChannel(LocalChannel):
        @property
        def pipelined(self) -> bool:
            return False

    return WaitingLocalChannel


def _pair(fn0, fn1, timeout: float = 900.0, server_pipelined: bool | None = None):
    """Run both sides over an in-process channel pair; (r0, r1, client channel). ``fn0`` is the
    server: its end is pipelined only if ``server_pipelined`` (default :data:`SERVER_PIPELINED`)."""
    from protocols.net.transport import local_channel_pair

    c0, c1 = local_channel_pair(timeout=timeout)
    if not (SERVER_PIPELINED if server_pipelined is None else server_pipelined):
        c0.__class__ = _waiting_local_channel()
    box: dict[str, Any] = {}

    def side0() -> None:
        try:
            box["r0"] = fn0(c0)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            box["e0"] = exc
            c0.close()

    th = threading.Thread(target=side0, daemon=True)
    th.start()
    try:
        r1 = fn1(c1)
    finally:
        th.join(timeout)
    if "e0" in box:
        raise box["e0"]
    return box.get("r0"), r1, c1


def exact_gaussian(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Whole Gaussian sessions per N: semi-honest with the lattice and with the OT cross term, and
    client-malicious (protocols.krr.gaussian_malicious), in-process channel pair, the server's
    per-model set-up (encoding, lattice plaintexts) done before the session as `serve` does."""
    from bench.synthetic import synthetic_model, synthetic_queries
    from protocols.krr import ServedModel, gaussian, gaussian_malicious

    rows: list[dict[str, Any]] = []
    d = args.exact_features
    for N in [int(v) for v in args.exact_sizes.split(",") if v.strip()]:
        model, rng = synthetic_model(N, d, 74.0, seed=0)
        Q = synthetic_queries(model, rng, 1)
        want = model.predict(Q)[0]
        combos = [("semi-honest", "he"), ("semi-honest", "ot")] + [("client-malicious", c) for c in args.malicious_cross]
        for mode, cross in combos:
            served = ServedModel(model, security=mode)
            served.public.cross_term = cross
            served.public.validate()
            if mode == "semi-honest":
                gaussian.prepare_server(model, served.public)
            else:
                gaussian_malicious.prepare_server(model, served.public)
            row = _one_session(served, Q, want, part="exact", mode=mode, what=cross,
                               label=f"N={N} {mode} ({cross} cross term)")
            # pair every client-malicious session (by its cross term) with each semi-honest one
            if mode == "client-malicious":
                for vs in ("he", "ot"):
                    rows.append({**row, "model": f"gaussian-N{N}-malicious-{cross}-vs-{vs}"})
            else:
                for mc in args.malicious_cross:
                    rows.append({**row, "model": f"gaussian-N{N}-malicious-{mc}-vs-{cross}"})
    return rows


def _one_session(served: Any, Q: Any, want: float, *, part: str, mode: str, what: str, label: str,
                 server_pipelined: bool | None = None) -> dict[str, Any]:
    """One whole in-process session of an exact-kernel model: its row (bytes, rounds, error), printed.

    Counts from the client's hello to its output, fresh OT sessions on both sides (no resumed
    ticket: a new client party each time), the OT engine's own set-up (base OTs; silent OT's
    seeds) included; the server's per-model preparation is done by the caller, outside the count."""
    from protocols.krr import predict_features, serve_one

    piped = SERVER_PIPELINED if server_pipelined is None else server_pipelined
    t0 = time.perf_counter()
    _, (pred, _, _), ch = _pair(lambda c: serve_one(served, c), lambda c: predict_features(c, Q),
                                server_pipelined=piped)
    wall = time.perf_counter() - t0
    row = {"part": part, "mode": mode, "resumed": False, "session": 0, "wall_s": wall,
           "client_sent_B": ch.bytes_sent, "client_received_B": ch.bytes_received,
           "rounds": ch.stats()["rounds"], "abs_error": float(abs(pred[0] - want)), "what": what,
           "server_pipelined": piped}
    print(f"  {label}: {wall:.2f} s, client sent {ch.bytes_sent / 1e6:.1f} MB, "
          f"received {ch.bytes_received / 1e6:.1f} MB, {row['rounds']} rounds "
          f"(server end {'pipelined, as serve over TCP' if piped else 'not pipelined, as serve over TLS'}), "
          f"error {row['abs_error']:.1e}", flush=True)
    return row


def exact_laplacian(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Whole Laplacian sessions per N (one query each): semi-honest on SoftSpoken and on silent OT
    (protocols.krr.laplacian) beside client-malicious (``--laplacian-chain``: the bound chain,
    protocols.krr.laplacian_strict, the default since protocol 42, or the unbound one-bit
    protocols.krr.laplacian_malicious) on the checked SoftSpoken extension and on silent OT
    (protocol 27: checked where the client chooses),
    interleaved, ``--laplacian-repeats`` times; in-process channel pair; synthetic CM-like model on
    the 2^-8 grid (15-bit entries), sigma ``--laplacian-sigma``; the server's encoding done before
    the session as `serve` does. Rows pair every client-malicious engine with every semi-honest one
    (model ``laplacian-N<N>-malicious-<engine>-vs-<engine>``)."""
    from bench.synthetic import LAPLACIAN_GRID_BITS, synthetic_model, synthetic_queries
    from protocols.krr import ServedModel
    from protocols.krr.registry import protocol_for

    rows: list[dict[str, Any]] = []
    d = args.exact_features
    sh_engines = ("softspoken", "silent")
    cm_engines = [e.strip() for e in args.laplacian_malicious_engines.split(",") if e.strip()]
    for N in [int(v) for v in args.laplacian_sizes.split(",") if v.strip()]:
        model, rng = synthetic_model(N, d, args.laplacian_sigma, seed=0, kernel="laplacian")
        Q = synthetic_queries(model, rng, 1)
        want = model.predict(Q)[0]
        runs = [("semi-honest", e) for e in sh_engines] + [("client-malicious", e) for e in cm_engines]
        for _ in range(args.laplacian_repeats):
            for mode, engine in runs:
                served = ServedModel(model, security=mode, frac_bits=LAPLACIAN_GRID_BITS)
                served.public.ot_engine = engine
                served.public.laplacian_chain = args.laplacian_chain
                served.public.validate()
                if mode == "client-malicious":  # the chain's own preparation, as `serve` makes it
                    protocol_for("krr-laplacian").malicious_for(served.public).prepare_server(model, served.public)
                row = _one_session(served, Q, want, part="laplacian", mode=mode, what=engine,
                                   label=f"N={N} Laplacian {mode} ({engine})")
                row["chain"] = args.laplacian_chain if mode == "client-malicious" else "-"
                if mode == "client-malicious":
                    for vs in sh_engines:
                        rows.append({**row, "model": f"laplacian-N{N}-malicious-{engine}-vs-{vs}"})
                else:
                    for cm in cm_engines:
                        rows.append({**row, "model": f"laplacian-N{N}-malicious-{cm}-vs-{engine}"})
    return rows


def lattice_ip(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The checked lattice product alone: w . phi (``--ip-rows 1``, d = F features: what the primitive
    would cost a compact model) or X q (``--ip-rows N``: the Gaussian's cross term by itself): the query's bits fixed by F x_bits random OTs with the
    proof's MACs on them, the public key + one ciphertext per block + the well-formedness proof, the
    reply (:mod:`protocols.mpc.he_matvec_checked`). In-process channel pair, checked OT extension."""
    from protocols.mpc import authenticated as au, bfv_proof, he_matvec_checked as hc
    from protocols.mpc.party import Party

    def party(ch: Any, role: int) -> Party:
        p = Party(ch, role)
        if role == 0:
            p.ot_sender.checked = True
        else:
            p.ot_receiver.checked = True
        return p

    rows = []
    xb, M, R = args.ip_x_bits, args.ip_ring_bits, args.ip_rows
    for F in [int(v) for v in args.ip_sizes.split(",") if v.strip()]:
        rng = np.random.default_rng(F)
        w = rng.integers(0, 2 ** xb, (R, F), dtype=np.uint64)
        phi = rng.integers(0, 2 ** xb, F, dtype=np.uint64)
        pm = hc.prepare(w, xb, M)
        bits = ((phi[:, None] >> np.arange(xb, dtype=np.uint64)) & np.uint64(1)).astype(np.uint8).ravel()

        def server(ch: Any) -> Any:
            p = party(ch, 0)
            pads = au.random_choices(p, 1, n=F * xb)
            return hc.matvec_sender(p, 1, pm, q_pads=pads, domain=3)

        def client(ch: Any) -> Any:
            p = party(ch, 1)
            pads = au.random_choices(p, 1, n=F * xb, choices=bits)
            return hc.matvec_receiver(p, 1, phi, xb, R, M, q_pads=pads, q_bits=bits, domain=3)

        t0 = time.perf_counter()
        s0, s1, ch = _pair(server, client, timeout=600)
        wall = time.perf_counter() - t0
        want = (w.astype(object) @ phi.astype(object)) % (1 << M)
        ok = bool(((s0.astype(object) + s1.astype(object)) % (1 << M) == want).all())
        plan = pm.plan
        proof_bits = bfv_proof.witness_count(pm.ring, plan.blocks)
        rows.append({"part": "lattice-ip", "model": f"matvec-{R}x{F}", "mode": "client-malicious",
                     "resumed": False, "session": 0, "wall_s": wall, "client_sent_B": ch.bytes_sent,
                     "client_received_B": ch.bytes_received, "rounds": ch.stats()["rounds"],
                     "abs_error": 0.0 if ok else 1.0, "what": f"blocks={plan.blocks} proof_bits={proof_bits}"})
        print(f"  checked lattice product {R} x {F} (plan n_i={plan.n_i}, {plan.blocks} ciphertexts up, "
              f"{plan.outputs} down, flooding {plan.flood_bits} bits): {wall:.2f} s, client sent {ch.bytes_sent / 1e6:.2f} MB, received "
              f"{ch.bytes_received / 1e6:.2f} MB, {ch.stats()['rounds']} rounds, {proof_bits:,} committed witness "
              f"bits + {F * xb:,} query bits, exact={ok}", flush=True)
    return rows


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (part, model, resumed): medians per mode and the client-malicious / semi-honest ratios."""
    out = []
    keys = sorted({(r["part"], r["model"], r["resumed"]) for r in rows})
    for part, model, resumed in keys:
        sel = {m: [r for r in rows if (r["part"], r["model"], r["resumed"], r["mode"]) == (part, model, resumed, m)]
               for m in MODES}
        if not all(sel.values()):
            continue
        agg = {}
        for m, rs in sel.items():
            total = [r["client_sent_B"] + r["client_received_B"] for r in rs]
            agg[m] = {"wall_s_median": statistics.median(r["wall_s"] for r in rs),
                      "bytes_total": int(statistics.median(total)), "bytes_min": int(min(total)),
                      "bytes_max": int(max(total)),
                      "rounds": int(statistics.median(r["rounds"] for r in rs)),
                      "max_abs_error": max(r["abs_error"] for r in rs), "n": len(rs)}
        sh, cm = agg["semi-honest"], agg["client-malicious"]
        out.append({"part": part, "model": model, "resumed": resumed, "semi_honest": sh, "client_malicious": cm,
                    "ratio_time": cm["wall_s_median"] / sh["wall_s_median"],
                    "ratio_bytes": cm["bytes_total"] / sh["bytes_total"],
                    "extra_bytes": cm["bytes_total"] - sh["bytes_total"],
                    "extra_rounds": cm["rounds"] - sh["rounds"]})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=12, help="sessions per mode and resumption setting")
    ap.add_argument("--ot-sizes", default="100000,1000000", help="COT counts for the OT-check part (comma list)")
    ap.add_argument("--ot-reps", type=int, default=3, help="repetitions per COT count and mode")
    ap.add_argument("--skip-compact", action="store_true", help="skip the compact-model part")
    ap.add_argument("--skip-ot", action="store_true", help="skip the OT-extension part")
    ap.add_argument("--exact-sizes", default="", help="N values for the exact Gaussian part (comma list; "
                    "empty: skip), e.g. 1024,4096,16384")
    ap.add_argument("--laplacian-sizes", default="", help="N values for the exact Laplacian part (comma list; "
                    "empty: skip), e.g. 1024,4096,16384")
    ap.add_argument("--laplacian-sigma", type=float, default=1000.0, help="sigma of the synthetic Laplacian model")
    ap.add_argument("--laplacian-chain", choices=("bound", "unbound"), default="bound",
                    help="the client-malicious Laplacian protocol: 'bound' (the default of serve since protocol 42) "
                    "or 'unbound' (the one-bit protocol 17)")
    ap.add_argument("--laplacian-malicious-engines", default="softspoken,silent",
                    help="OT engines of the client-malicious Laplacian sessions (comma list)")
    ap.add_argument("--laplacian-repeats", type=int, default=1,
                    help="rounds of the interleaved Laplacian sessions (medians over them)")
    ap.add_argument("--exact-features", type=int, default=351, help="d of the exact-kernel synthetic model")
    ap.add_argument("--malicious-cross", default="he,ot", help="cross terms of the client-malicious Gaussian "
                    "sessions (comma list of he = the checked lattice one, protocol 12's default, and ot)")
    ap.add_argument("--ip-sizes", default="", help="feature counts F for the checked lattice inner product alone "
                    "(what the primitive would cost a compact model; comma list, empty: skip), e.g. 4096,16384")
    ap.add_argument("--ip-x-bits", type=int, default=20, help="bits per feature and weight in the inner-product part")
    ap.add_argument("--ip-rows", type=int, default=1, help="rows of the server's matrix in the inner-product part "
                    "(1: an inner product; N: the Gaussian's cross term alone)")
    ap.add_argument("--ip-ring-bits", type=int, default=56, help="share ring bits M in the inner-product part")
    ap.add_argument("--out", type=Path, default=Path("docs/malicious"), help="output folder (JSON, CSV)")
    ap.add_argument("--model-dir", type=Path, default=Path(tempfile.gettempdir()) / "secureml-bench",
                    help="where the fitted compact model is kept between runs")
    ap.add_argument("--unpipelined-server", action="store_true",
                    help="exact-kernel sessions: the server's end of the in-process pair does not pipeline its "
                         "writes, as `secureml serve` over TLS (more rounds, same bytes; default: pipelined, as "
                         "`serve` over plain TCP)")
    args = ap.parse_args(argv)
    global SERVER_PIPELINED
    SERVER_PIPELINED = not args.unpipelined_server
    args.malicious_cross = [c.strip() for c in args.malicious_cross.split(",") if c.strip()]
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    if not args.skip_compact:
        rows += compact(args)
    if not args.skip_ot:
        rows += ot_check(args)
    if args.exact_sizes:
        rows += exact_gaussian(args)
    if args.laplacian_sizes:
        rows += exact_laplacian(args)
    if args.ip_sizes:
        rows += lattice_ip(args)
    summary = summarize(rows)
    for s in summary:
        print(f"{s['part']:12s} {s['model']:24s} resumed={str(s['resumed']):5s} "
              f"time {s['semi_honest']['wall_s_median'] * 1e3:8.1f} -> {s['client_malicious']['wall_s_median'] * 1e3:8.1f} ms "
              f"(x{s['ratio_time']:.2f})  bytes {s['semi_honest']['bytes_total']:,} -> {s['client_malicious']['bytes_total']:,} "
              f"(x{s['ratio_bytes']:.3f}, +{s['extra_bytes']:,} B)  rounds {s['semi_honest']['rounds']} -> "
              f"{s['client_malicious']['rounds']}")
    import os

    meta = {"command": "python -m bench.malicious_cost " + " ".join(sys.argv[1:] if argv is None else argv),
            "host": platform.node(), "cpus": os.cpu_count(),
            "load_avg": os.getloadavg(), "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    (args.out / "malicious_cost.json").write_text(json.dumps({"meta": meta, "summary": summary, "rows": rows},
                                                             indent=2))
    with open(args.out / "malicious_cost.csv", "w", newline="") as f:
        cols = ["part", "model", "mode", "resumed", "session", "wall_s", "client_sent_B", "client_received_B",
                "rounds", "abs_error", "what", "server_pipelined"]
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
