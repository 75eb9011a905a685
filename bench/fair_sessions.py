"""One client identity floods `secureml serve` with sessions it holds open; is another client served?

A real server process (`secureml serve`, semi-honest exact Gaussian KRR, N = 48, two token
identities, --concurrency C (default 2, serve's default; 3 puts one slot beyond the bound),
--max-queue 16, --idle-timeout 10) per run. The attacker
opens ``--flood`` connections at once with a valid token and a valid hello and then sends nothing
(each admitted session holds its slot until its read times out; a queued one holds a queue place
for up to 5 s). While they hold, the victim runs one session with no retries: served (its
latency) or answered "busy". Runs alternate --max-sessions-per-client 2 (default) and 0 (off).
The attacker's sessions are counted by how they ended: admitted (held), "busy" within 1 s (refused
at once), or "busy" later (queued, or over the bound waiting for its own sessions, until the 5 s
queue wait ran out).

    nice python -m bench.fair_sessions --concurrency 2 --out docs/serving/fair_sessions/c2.json
    nice python -m bench.fair_sessions --concurrency 3 --out docs/serving/fair_sessions/c3.json
"""
from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.serving_fuzz import small_model, start_server
from protocols.krr import predict
from protocols.krr.params import PROTOCOL_NAME, PROTOCOL_VERSION
from protocols.net.dial import ServerBusy, open_session
from protocols.net.frontdoor import hash_token

VICTIM, ATTACKER = "sml_victim_token_0001", "sml_attacker_token_01"


def _flood(port: int, n: int, held: list, outcomes: list) -> list[threading.Thread]:
    hello = {"protocol": PROTOCOL_NAME, "version": PROTOCOL_VERSION, "n_queries": 1, "token": ATTACKER}

    def one() -> None:
        t0 = time.perf_counter()
        try:
            ch, _ = open_session("127.0.0.1", port, hello, handshake_timeout=20, retries=0)
            held.append(ch)  # admitted: hold it, send nothing
            outcomes.append("admitted")
        except ServerBusy:
            outcomes.append("busy_at_once" if time.perf_counter() - t0 < 1.0 else "busy_after_wait")

    ts = [threading.Thread(target=one, daemon=True) for _ in range(n)]
    for t in ts:
        t.start()
    return ts


def one_run(work: Path, Q: Any, bound: int, flood: int, concurrency: int) -> dict[str, Any]:
    proc, port = start_server(work / "model.npz", work / f"server_{bound}.log",
                              ["--tokens", str(work / "tokens.txt"), "--idle-timeout", "10",
                               "--concurrency", str(concurrency), "--max-sessions-per-client", str(bound)])
    held: list = []
    outcomes: list[str] = []
    try:
        t0 = time.perf_counter()
        predict(f"127.0.0.1:{port}", Q, token=VICTIM, retries=0, keep_alive=False)
        alone = time.perf_counter() - t0
        threads = _flood(port, flood, held, outcomes)
        time.sleep(1.5)  # every attacker connection has its answer or waits in the queue
        t0 = time.perf_counter()
        try:
            predict(f"127.0.0.1:{port}", Q, token=VICTIM, retries=0, keep_alive=False)
            victim = "served"
        except ServerBusy:
            victim = "busy"
        beside = time.perf_counter() - t0
        for t in threads:
            t.join(20)
    finally:
        for ch in held:
            ch.close()
        proc.terminate()
        proc.wait(10)
    return {"max_sessions_per_client": bound, "concurrency": concurrency, "flood": flood,
            "victim_alone_s": round(alone, 3), "victim_beside_flood": victim,
            "victim_beside_flood_s": round(beside, 3),
            **{f"attacker_{k}": outcomes.count(k) for k in ("admitted", "busy_at_once", "busy_after_wait")}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flood", type=int, default=24)
    ap.add_argument("--pairs", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--out", default="bench_results/fair_sessions.json")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="fair_sessions_"))
    model, test = small_model(work / "model.npz")
    (work / "tokens.txt").write_text(f"victim {hash_token(VICTIM)}\nattacker {hash_token(ATTACKER)}\n")
    Q = model.representation.transform(test)[:1]
    runs = []
    for _ in range(args.pairs):
        for bound in (2, 0):
            runs.append(one_run(work, Q, bound, args.flood, args.concurrency))
            print(json.dumps(runs[-1]))
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"runs": runs, "loadavg_1min_at_end": float(load)}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
