"""One client flooding the server's resumable-session stores, with and without the per-client quota
(``secureml serve --max-per-client``, protocols.net.quota): what the victim's next session costs,
what the stores hold, and the bytes per entry.

For each compact-model path -- client-malicious OT path (OT-session tickets with their checked
random-OT pools) and semi-honest lattice path (client public keys, prepared re-randomisations) --
and each quota (4, then 0 = off), alternately: ``protocols.krr.serve`` in a thread of this process
(real TCP on loopback, token identities "victim" and "attacker"), stores with cap ``--cap`` (the
default 1,024 needs a flood of over 1,024 sessions to show the eviction; the mechanism is the same);

1. the victim's first session (its ticket / key / next re-randomisation stored);
2. the attacker's ``--flood`` sessions, each with a fresh ticket (``resume_ot=False``) or, on the
   lattice path, a fresh key and a fresh announced seed it never comes back for;
3. the victim's second session: resumed or not, its bytes and rounds (deterministic) and wall time.

Model: the random-Fourier-feature model of bench.local_model_bench (F = 4,096, 2,048 embedded
training molecules). Writes ``client_quota.json`` to ``--out``::

    nice .venv/bin/python -m bench.client_quota --out docs/serving/quota
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

VICTIM, ATTACKER = "sml_victim_token_0001", "sml_attacker_token_01"


def _model(out: Path, seed: int = 0) -> tuple[Any, Any]:
    from secureml.data import embedded_split, load_embedded
    from secureml.models import build_model
    from secureml.models.pipeline import MolecularModel

    data = load_embedded()
    tr, te = embedded_split(seed)
    path = out / "rff_gaussian_4096.npz"
    if not path.exists():
        mm = build_model("rff-gaussian")
        mm.property_name = "U0_atomization"
        mm.fit(data.subset(tr[:2048]))
        mm.save(path)
    return MolecularModel.load(path), data.subset(te[:4])


def _run(mm: Any, mols: Any, security: str, quota: int, cap: int, flood: int) -> dict[str, Any]:
    from protocols.krr import ServedModel, close_kept_connections, linear_he, molecules_featurizer, predict, serve
    from protocols.krr.server import client_stores
    from protocols.mpc import rlwe_ip
    from protocols.net.frontdoor import Authenticator, hash_token
    from protocols.net.limits import DEFAULT_LIMITS
    from protocols.net.quota import OwnedLRU, entry_bytes
    from protocols.ot import session as ot_session

    # fresh stores of the given cap (server) and fresh client state: each run starts clean
    ot_session.SERVER_TICKETS = ot_session.TicketStore(max_entries=cap)
    linear_he.KEYS, linear_he.NEXT = rlwe_ip.KeyStore(capacity=cap), OwnedLRU(cap)
    ot_session.CLIENT_TICKETS = ot_session.ClientTickets()
    linear_he._CLIENT_KEYS.clear()
    linear_he._NEXT_MASKS.clear()
    linear_he._KEY_SENT.clear()
    close_kept_connections()
    served = ServedModel.from_molecular_model(mm, security=security)
    stop, ports = threading.Event(), []
    auth = Authenticator(tokens={hash_token(VICTIM): "victim", hash_token(ATTACKER): "attacker"})
    th = threading.Thread(target=serve, args=(served, "127.0.0.1", 0), daemon=True,
                          kwargs=dict(on_ready=ports.append, stop=stop, auth=auth,
                                      limits=replace(DEFAULT_LIMITS, max_per_client=quota)))
    th.start()
    while not ports:
        time.sleep(0.01)
    addr = f"127.0.0.1:{ports[0]}"

    def ask(token: str, i: int, **kw: Any) -> Any:
        t0 = time.perf_counter()
        _, cost = predict(addr, featurize=molecules_featurizer(mols.subset([i % len(mols)])), token=token,
                          keep_alive=False, **kw)
        return cost, time.perf_counter() - t0

    try:
        first, first_s = ask(VICTIM, 0)
        victim_keys = dict(linear_he._CLIENT_KEYS)
        t0 = time.perf_counter()
        for i in range(flood):
            if security == "semi-honest":
                linear_he._CLIENT_KEYS.clear()  # a fresh key, so a fresh seed, each session
                ask(ATTACKER, i)
            else:
                ask(ATTACKER, i, resume_ot=False)  # a fresh ticket each session
        flood_s = time.perf_counter() - t0
        linear_he._CLIENT_KEYS.clear()
        linear_he._CLIENT_KEYS.update(victim_keys)
        stores = {}
        for name, store in client_stores().items():
            sizes = [entry_bytes(v) for v in store.values()]
            stores[name] = {"cap": store.max_entries, "per_owner": store.per_owner, "entries": len(store),
                            "by_owner": store.owners(), "evicted": dict(store.evicted),
                            "bytes": int(sum(sizes)), "entry_bytes_max": max(sizes, default=0),
                            "entry_bytes_min": min(sizes, default=0)}
        second, second_s = ask(VICTIM, 1)
    finally:
        stop.set()
        th.join(10)
    ex = second.extra
    return {"security": security, "quota": quota, "cap": cap, "flood": flood, "flood_s": round(flood_s, 3),
            "victim_first": {"resumed": bool(first.extra.get("resumed")), "bytes": first.total_bytes,
                             "rounds": first.rounds, "wall_s": round(first_s, 4)},
            "victim_second": {"resumed": bool(ex.get("resumed")), "key_sent": ex.get("key_sent"),
                              "ot_pool_used": ex.get("ot_pool_used"), "bytes": second.total_bytes,
                              "rounds": second.rounds, "wall_s": round(second_s, 4)},
            "stores_after_flood": stores}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("docs/serving/quota"))
    ap.add_argument("--cap", type=int, default=64, help="entries each store holds (default 64)")
    ap.add_argument("--flood", type=int, default=80, help="the attacker's sessions (default 80)")
    ap.add_argument("--pairs", type=int, default=2, help="quota-on/off pairs per path, alternating (default 2)")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    mm, mols = _model(args.out)
    runs = []
    for security in ("client-malicious", "semi-honest"):
        for _ in range(args.pairs):
            for quota in (4, 0):
                r = _run(mm, mols, security, quota, args.cap, args.flood)
                r["load_1min"] = float(open("/proc/loadavg").read().split()[0])
                runs.append(r)
                v = r["victim_second"]
                print(f"{security:16s} quota={quota} victim resumed={v['resumed']} bytes={v['bytes']} "
                      f"rounds={v['rounds']} wall={v['wall_s']:.3f}s load={r['load_1min']}", flush=True)
    result = {"machine": platform.node(), "cpus": os.cpu_count(), "model": "rff-gaussian F=4096 (embedded, 2048)",
              "command": "nice python -m bench.client_quota --out " + str(args.out), "runs": runs}
    (args.out / "client_quota.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
