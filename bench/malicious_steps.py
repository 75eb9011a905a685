"""Where a client-malicious Gaussian session's bytes and CPU go, step by step (one in-process session).

    nice python -m bench.malicious_steps --sizes 16384 --out docs/malicious/p29/steps

Runs whole sessions like ``bench.malicious_cost --exact-sizes`` (synthetic CM-like model, d = 351,
sigma 74, the checked lattice cross term, the server's per-model set-up outside the count) with
thin wrappers around the protocol's steps (:mod:`protocols.krr.binding` steps 1-9,
:mod:`protocols.krr.gaussian_malicious` steps 10-14). Each wrapper records, per party thread, the
channel's byte counters and ``time.thread_time()`` (that party's CPU) on entry and exit; a step's
figures exclude the steps nested inside it (they are counted under their own name), so the rows
sum to the session. Bytes are both directions of the client's channel (deterministic); CPU is
per party. Writes ``malicious_steps.json`` and ``malicious_steps.csv`` to ``--out``.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import json
import threading
import time
from pathlib import Path
from typing import Any, Callable

_local = threading.local()


class _Recorder:
    """Exclusive per-step (bytes, CPU, wall) for the two party threads."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, int], dict[str, float]] = {}
        self.lock = threading.Lock()

    def wrap(self, fn: Callable, label: str | Callable[..., str]) -> Callable:
        rec = self

        def wrapper(party, *args, **kwargs):
            name = label(party, *args, **kwargs) if callable(label) else label
            stack = getattr(_local, "stack", None)
            if stack is None:
                stack = _local.stack = []
            ch = party.ch
            start = (ch.bytes_sent, ch.bytes_received, time.thread_time(), time.perf_counter())
            stack.append([0.0, 0.0, 0.0, 0.0])  # children's totals
            try:
                return fn(party, *args, **kwargs)
            finally:
                kids = stack.pop()
                tot = [ch.bytes_sent - start[0], ch.bytes_received - start[1],
                       time.thread_time() - start[2], time.perf_counter() - start[3]]
                if stack:
                    for k in range(4):
                        stack[-1][k] += tot[k]
                with rec.lock:
                    row = rec.rows.setdefault((name, party.role), {"sent": 0.0, "received": 0.0, "cpu": 0.0, "wall": 0.0})
                    for k, key in enumerate(("sent", "received", "cpu", "wall")):
                        row[key] += tot[k] - kids[k]
        return wrapper


@contextlib.contextmanager
def instrumented(rec: _Recorder):
    """Patch the step functions (module attributes, looked up at call time) for the duration."""
    from protocols.krr import binding
    from protocols.krr import gaussian_malicious as gm
    from protocols.mpc import authenticated as au
    from protocols.mpc import bfv_proof, he_matvec_checked

    def lut_label(party, chooser, digit, **kw) -> str:
        pp = _PP[0]
        return "10 G tables" if digit[0] >= pp.shift_bits + gm.tail_plan(pp).lo_bits else "11 chain tables"

    def cot_label(party, chooser, pads, domain, **kw) -> str:
        # q's random OTs carry the lattice proof's MACs (binding._D_FP) and steps 5-7's words
        return "2b proof: q's bit MACs" if domain == binding._D_FP else "5-7 MACs on q, products y.q"

    def commit_label(party, chooser, **kw) -> str:
        # u's commitment has one value per training point; step 9 commits lam masks
        return "4 commit u (N M COTs)" if kw.get("n") == _PP[0].n_train else "9 batched check"

    patches = [
        (binding, "bound_masked_distances", "1-9 other (Delta, mask-reveal 3, challenges 8)"),
        (au, "random_choices", "2a random OTs of q's bits"),
        (bfv_proof, "commit_bits", "2b proof: witness bits (COTs)"),
        (he_matvec_checked, "matvec_sender", "2c checked lattice cross term"),
        (he_matvec_checked, "matvec_receiver", "2c checked lattice cross term"),
        (au, "commit", commit_label),
        (au, "cot_on_pads", cot_label),
        (binding, "_check_combined", "9 batched check"),
        (gm, "kernel_output", "10-14 other (G-table masks, output share)"),
        (au, "bound_lut", lut_label),
    ]
    saved = [(mod, name, getattr(mod, name)) for mod, name, _ in patches]
    try:
        for mod, name, label in patches:
            setattr(mod, name, rec.wrap(getattr(mod, name), label))
        yield
    finally:
        for mod, name, fn in saved:
            setattr(mod, name, fn)


_PP: list[Any] = [None]


def run(N: int, d: int, reply_pads: int = 0) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One client-malicious session at N: per-step rows and the session's totals."""
    from bench.malicious_cost import _pair
    from bench.synthetic import synthetic_model, synthetic_queries
    from protocols.krr import ServedModel, gaussian_malicious, predict_features, serve_one

    model, rng = synthetic_model(N, d, 74.0, seed=0)
    Q = synthetic_queries(model, rng, 1)
    served = ServedModel(model, security="client-malicious")
    served.public.cross_term = "he"
    served.public.validate()
    # reply_pads: the query-independent half of the reply made here, before the session (stop 11);
    # no refill after it (target 0), so that the session's wall is the session's alone
    X, _ = gaussian_malicious.prepare_server(model, served.public, reply_pads=reply_pads)
    if reply_pads:
        from protocols.mpc import he_matvec_checked

        he_matvec_checked.prepare(X, served.public.x_bits, served.public.ring_bits, owner=model).pad_target = 0
    _PP[0] = served.public
    rec = _Recorder()
    with instrumented(rec):
        t0 = time.perf_counter()
        _, (pred, _, _), ch = _pair(lambda c: serve_one(served, c), lambda c: predict_features(c, Q))
        wall = time.perf_counter() - t0
    tp = gaussian_malicious.tail_plan(served.public)
    names = sorted({name for name, _ in rec.rows})
    rows = []
    for name in names:
        c = rec.rows.get((name, 1), {})
        s = rec.rows.get((name, 0), {})
        rows.append({"N": N, "step": name, "client_sent_B": int(c.get("sent", 0)),
                     "client_received_B": int(c.get("received", 0)),
                     "bytes_per_point": (c.get("sent", 0) + c.get("received", 0)) / N,
                     "client_cpu_s": round(c.get("cpu", 0.0), 3), "server_cpu_s": round(s.get("cpu", 0.0), 3),
                     "client_wall_s": round(c.get("wall", 0.0), 3)})
    total = {"N": N, "wall_s": round(wall, 3), "client_sent_B": ch.bytes_sent, "client_received_B": ch.bytes_received,
             "bytes": ch.bytes_sent + ch.bytes_received, "rounds": ch.stats()["rounds"],
             "abs_error": float(abs(pred[0] - model.predict(Q)[0])),
             "tail_plan": {"hb": tp.hb, "split": tp.split, "digits": len(tp.digits),
                           "digit_bits": tp.digits[0][1] - tp.digits[0][0], "chain_ring_bits": tp.ring_bits, "a_bytes": tp.a_bytes, "b_bytes": tp.b_bytes,
                           "g_ring_bits": tp.g_ring_bits, "mask_bits": tp.mask_bits, "flood_bits": tp.flood_bits,
                           "scale_bits": tp.scale_bits, "g_bytes_per_point": tp.g_bytes_per_point(),
                           "chain_bytes_per_point": tp.chain_bytes_per_point()},
             "loadavg_1m": float(Path("/proc/loadavg").read_text().split()[0])}
    unattributed = total["bytes"] - sum(r["client_sent_B"] + r["client_received_B"] for r in rows)
    rows.append({"N": N, "step": "hello, OT set-up, rest (outside the steps)", "client_sent_B": None,
                 "client_received_B": None, "bytes_per_point": unattributed / N, "client_cpu_s": None,
                 "server_cpu_s": None, "client_wall_s": None, "bytes": unattributed})
    return rows, total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="16384")
    ap.add_argument("--features", type=int, default=351)
    ap.add_argument("--out", default="")
    ap.add_argument("--reply-pads", type=int, default=0,
                    help="reply pads made before the session (as `secureml serve` keeps one; default 0: the inline path)")
    args = ap.parse_args(argv)
    all_rows, totals = [], []
    for N in [int(v) for v in args.sizes.split(",") if v.strip()]:
        rows, total = run(N, args.features, args.reply_pads)
        all_rows += rows
        totals.append(total)
        print(f"N={N}: {total['bytes']:,} B (client sent {total['client_sent_B']:,}, received "
              f"{total['client_received_B']:,}), {total['rounds']} rounds, {total['wall_s']:.2f} s, "
              f"error {total['abs_error']:.1e}, load {total['loadavg_1m']}; plan {total['tail_plan']}")
        for r in rows:
            b = r.get("bytes", (r["client_sent_B"] or 0) + (r["client_received_B"] or 0))
            print(f"  {r['step']:<48} {b:>13,} B {r['bytes_per_point']:>9.1f} B/pt"
                  f"  cpu client {r['client_cpu_s']} server {r['server_cpu_s']}  wall {r['client_wall_s']}")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "malicious_steps.json").write_text(json.dumps({"totals": totals, "rows": all_rows}, indent=1))
        keys = ["N", "step", "client_sent_B", "client_received_B", "bytes_per_point", "client_cpu_s",
                "server_cpu_s", "client_wall_s"]
        with open(out / "malicious_steps.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
            w.writeheader()
            w.writerows(all_rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
