"""Per-step timestamps of resumed compact-model sessions, on both sides of real TCP.

Where does a resumed RFF lattice session's wall time go once the crypto is off the critical path?
Both processes record ``time.perf_counter()`` (CLOCK_MONOTONIC on Linux: one clock for the whole
machine, so the two processes' stamps line up) at the steps below, through thin wrappers around the
channel's reads and writes, the TCP connect, the client's features, the next session's mask and
the server's lattice steps (the wrappers add a few microseconds each). Sessions run one after
the other with ``--gap-ms`` idle between them, on a kept-alive connection (``--keep-alive``, the
default) or a new connection each (``--no-keep-alive``); the first ``--warmup`` sessions are not
reported. Writes ``session_steps.json`` (every session's stamps, in ms from the client's call, and
the medians)::

    python -m bench.session_steps --model OUT/rff_gaussian_4096.npz --sessions 40 --out OUT

``SESSION_STEPS_FINE=1`` adds finer steps on both sides (the kept connection taken, the hello's
seed and send, the mask thread's start; the server's handshake, party, set-up, parsing, key store
and dot products), a few microseconds each.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np


def _stamp(log: list, what: str) -> None:
    log.append((what, time.perf_counter()))


_LOG_HACK: list = []


def _instrument(log: list, server: bool) -> None:
    """Wrap the steps of this process (client or server) to append (step, time) to ``log``."""
    from protocols.krr import linear_he
    from protocols.mpc import rlwe_ip
    from protocols.net import transport

    real_write, real_recv, real_recv_json = transport.TCPChannel._write, transport.Channel.recv, transport.Channel.recv_json
    real_recv_ba = getattr(transport.Channel, "recv_bytearray", None)

    def write(self, parts, wait=True):
        n = sum(memoryview(p).nbytes for p in parts)
        real_write(self, parts, wait)
        _stamp(log, f"write {'large' if n > 20000 else 'small'}")

    def recv(self, *a, **kw):
        out = real_recv(self, *a, **kw)
        _stamp(log, f"read {'large' if len(out) > 20000 else 'small'}")
        return out

    def recv_json(self, *a, **kw):
        out = real_recv_json(self, *a, **kw)
        if server and isinstance(out, dict) and "protocol" in out:
            _stamp(log, "SESSION")  # a hello: the server's next session begins
            _stamp(log, "hello read")
        return out

    def recv_bytearray(self, *a, **kw):
        out = real_recv_ba(self, *a, **kw)
        _stamp(log, f"read {'large' if len(out) > 20000 else 'small'}")
        return out

    if real_recv_ba is not None:  # every read goes through it (recv included): stamped once
        transport.Channel.recv_bytearray = recv_bytearray
    else:
        transport.Channel.recv = recv
    transport.TCPChannel._write = write
    transport.Channel.recv_json = recv_json

    def wrap(mod: Any, name: str, label: str) -> None:
        real = getattr(mod, name)

        def f(*a, **kw):
            _stamp(log, f"{label} start")
            out = real(*a, **kw)
            _stamp(log, f"{label} end")
            return out

        setattr(mod, name, f)

    if server:
        wrap(linear_he, "server_early", "hello-time re-randomisation (or the prepared one taken)")
        wrap(rlwe_ip, "server_finish", "v (online answer)")
        wrap(rlwe_ip, "server_prepare", "re-randomisation")
        if os.environ.get("SESSION_STEPS_FINE"):  # finer steps (each wrapper adds a few microseconds)
            from protocols.krr import server as server_mod
            wrap(server_mod, "server_handshake", "handshake (hello answered, ready read)")
            from protocols.krr import registry
            wrap(registry.CompactLinearProtocol, "server_party", "server party made")
            wrap(registry.CompactLinearProtocol, "server_setup", "server setup")
            wrap(registry.CompactLinearProtocol, "server_after_ready", "server after ready")
            wrap(linear_he, "server_online", "lattice server_online")
            wrap(linear_he, "_parse", "parse query")
            wrap(rlwe_ip.Ring, "from_bytes", "polynomial from bytes")
            wrap(rlwe_ip.Ring, "view_bytes", "polynomial viewed")
            wrap(rlwe_ip.KeyStore, "touch", "key store touch")
            wrap(rlwe_ip.Ring, "dot", "dot")
            wrap(rlwe_ip.KeyStore, "get", "key store get")
    else:
        wrap(rlwe_ip.ClientKey, "mask", "next session's mask")
        wrap(rlwe_ip.ClientKey, "decrypt", "decryption")
        from protocols.krr import client as client_mod
        from protocols.krr.params import PublicParams

        # the Python between the features and the query, step by step
        wrap(PublicParams, "encode_features", "encode phi'")
        wrap(client_mod, "client_ready", "ready message")
        wrap(linear_he, "client_online", "lattice client_online")
        wrap(rlwe_ip.ClientKey, "encrypt_with", "+ Delta phi' (encrypt_with)")
        wrap(client_mod._EarlyChannel, "_send_held", "held messages framed and written")
        if os.environ.get("SESSION_STEPS_FINE"):
            wrap(client_mod, "_take_connection", "take kept connection")
            wrap(linear_he, "hello_seed", "hello seed")
            wrap(client_mod._EarlyChannel, "__init__", "early channel (hello sent)")
            wrap(client_mod, "predict_features", "predict_features")
            wrap(linear_he._PendingMask, "__init__", "next mask handed to its worker")
            wrap(transport.TCPChannel, "flush", "channel flush")
        import socket

        real_conn = socket.create_connection

        def conn(*a, **kw):
            _stamp(log, "connect start")
            out = real_conn(*a, **kw)
            _stamp(log, "connect end")
            return out

        socket.create_connection = conn


def _server(path: str, n: int, q: Any, cpus: set[int] | None = None) -> None:
    import torch

    torch.set_num_threads(1)
    if cpus:
        os.sched_setaffinity(0, cpus)
    from protocols.krr import ServedModel, serve

    log: list = []
    _instrument(log, server=True)
    serve(ServedModel.from_file(path, security="semi-honest"), "127.0.0.1", 0, max_sessions=n, on_ready=q.put,
          concurrency=1)
    q.put(log)


def _sessions(log: list, marker: str) -> list[list[tuple[str, float]]]:
    out: list[list[tuple[str, float]]] = []
    for what, t in log:
        if what == marker:
            out.append([])
        elif out:
            out[-1].append((what, t))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True, help="a compact model file (e.g. the RFF model of "
                   "bench.local_model_bench --double-blind)")
    p.add_argument("--sessions", type=int, default=40, help="reported sessions (default 40)")
    p.add_argument("--warmup", type=int, default=5, help="sessions run first and not reported (default 5)")
    p.add_argument("--gap-ms", type=float, default=20.0, help="idle time after each session (default 20)")
    p.add_argument("--keep-alive", action=argparse.BooleanOptionalAction, default=True,
                   help="sessions on a kept-alive connection (default: on)")
    p.add_argument("--pin-cpus", action="store_true",
                   help="client on the first CPU, server on the others, as on separate machines (default: off)")
    p.add_argument("--out", type=Path, default=Path("bench/results/session_steps"))
    args = p.parse_args(argv)
    import multiprocessing as mp

    import torch

    torch.set_num_threads(1)
    from protocols.krr import linear_he, molecules_featurizer, predict
    from secureml.data import embedded_split, load_embedded
    from secureml.models.pipeline import MolecularModel

    args.out.mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()
    os.environ.setdefault("SECUREML_CACHE", str(args.out / "cache"))
    n = args.warmup + args.sessions
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    server_cpus = None
    if args.pin_cpus:
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[0]})
        server_cpus = set(cpus[1:])
    proc = ctx.Process(target=_server, args=(str(args.model), n, q, server_cpus), daemon=True)
    proc.start()
    port = q.get(timeout=600)
    mm = MolecularModel.load(args.model)
    data = load_embedded()
    _, te = embedded_split(0)
    mols = data.subset(te[:n])
    linear_he.PREPARE_NEXT = True
    log: list = []
    _instrument(log, server=False)
    plain = []
    for i in range(n):
        mol = mols.subset([i])
        t0 = time.perf_counter()
        mm.predict(mol)
        plain.append(time.perf_counter() - t0)
        base = molecules_featurizer(mol)

        def featurize(pp, public_model, base=base):
            _stamp(log, "features start")
            out = base(pp, public_model)
            _stamp(log, "features end")
            return out

        from protocols.krr import Featurizer

        _stamp(log, "SESSION")
        _stamp(log, "predict called")
        predict(f"127.0.0.1:{port}", featurize=Featurizer(n_queries=1, fn=featurize), keep_alive=args.keep_alive)
        _stamp(log, "predict returned")
        time.sleep(args.gap_ms / 1e3)
    server_log = q.get(timeout=120)
    proc.join(30)
    client = _sessions(log, "SESSION")[args.warmup:]
    server = _sessions(server_log, "SESSION")[args.warmup:]
    rows = []
    for c, s in zip(client, server):
        t0 = c[0][1]
        rows.append({"client": [(w, 1e3 * (t - t0)) for w, t in c], "server": [(w, 1e3 * (t - t0)) for w, t in s]})

    def medians(side: str) -> list[tuple[str, float]]:
        # each step by (name, k-th occurrence in its session), median over the sessions that have
        # it (steps in fewer than 90% of them left out), in order of their medians
        per: dict[str, list[float]] = {}
        for r in rows:
            seen: dict[str, int] = {}
            for w, t in r[side]:
                seen[w] = seen.get(w, 0) + 1
                per.setdefault(w if seen[w] == 1 else f"{w} ({seen[w]})", []).append(t)
        out = [(w, float(np.median(v))) for w, v in per.items() if len(v) >= 0.9 * len(rows)]
        return sorted(out, key=lambda x: x[1])

    result = {"benchmark": "per-step timestamps of resumed RFF lattice sessions (prepared between sessions)",
              "keep_alive": args.keep_alive, "pin_cpus": args.pin_cpus, "gap_ms": args.gap_ms, "sessions": len(rows),
              "load_average_start": load0, "plaintext_ms_median": 1e3 * float(np.median(plain[args.warmup:])),
              "client_median_ms": medians("client"), "server_median_ms": medians("server"), "rows": rows}
    result["load_average_end"] = os.getloadavg()
    name = ("session_steps_keepalive" if args.keep_alive else "session_steps_new_connection") \
        + ("_pinned" if args.pin_cpus else "") + ".json"
    (args.out / name).write_text(json.dumps(result, indent=1))
    print(f"plaintext {result['plaintext_ms_median']:.2f} ms (median); load {os.getloadavg()}")
    for side in ("client", "server"):
        print(side)
        for w, t in result[f"{side}_median_ms"]:
            print(f"  {t:7.2f} ms  {w}")
    print(f"wrote {args.out / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
