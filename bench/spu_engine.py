"""SecretFlow SPU as a peer engine of `secureml bench cost`: the same KRR prediction in SPU, two processes.

SPU 0.9.5 needs numpy < 2 and jax <= 0.4.34, so it lives in its own virtual environment
(``make spu`` creates ``.venv-spu``; or set ``SECUREML_SPU_PYTHON`` to an interpreter with ``spu``).
This file is both the driver (imported by the benchmark in the project's venv: :func:`run_local`)
and the party program (run as ``.venv-spu/bin/python bench/spu_engine.py --party R ...``); the party
side imports only numpy, jax and spu.

What runs (per party, one process each, libspu brpc links over TCP loopback or through the
emulated link of :mod:`bench.netem`):
  1. both parties compile the same JAX function
        y = offset + alpha . exp(-(||x_i||^2 - 2 X q + ||q||^2) / (2 sigma^2))
     written in the form SPU handles best: X q is a secret-secret matrix product (CHEETAH does it
     with lattice HE), the norms are computed by each owner in the clear before sharing;
  2. inputs are secret-shared with a seed: the owner of a value sends a 16-byte seed, the peer's
     share is PRG(seed) and the owner's is value - PRG(seed) (no full share travels; this is how
     a careful deployment feeds SPU, and it keeps SPU's traffic to its protocol);
  3. ``Runtime.run``; party 0 sends its output share to party 1, which reconstructs (the
     prediction is revealed to the query owner only).
Party 0 holds X, ||x_i||^2, alpha and the offset; party 1 holds q and ||q||^2.

Protocols: ``CHEETAH`` (lattice HE + silent OT, two parties, no dealer) and ``SEMI2K`` (in SPU 0.9.5
only with a *trusted first party* generating Beaver triples: it is marked as a trusted-dealer engine).
Traffic: the bytes the two party processes wrote (``/proc/self/io`` ``wchar``, sockets and a few
log lines) on loopback, or the relay's exact count when a link is emulated. SPU's message count is
not exposed by its Python API (reported as 0 rounds).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# engine name -> SPU settings (field, fractional bits); FM128 with 40 bits is the precise one
CONFIGS = {
    "spu-cheetah": {"protocol": "CHEETAH", "field": "FM128", "frac_bits": 40},
    "spu-cheetah64": {"protocol": "CHEETAH", "field": "FM64", "frac_bits": 18},
    "spu-semi2k": {"protocol": "SEMI2K", "field": "FM128", "frac_bits": 40, "trusted_dealer": True},
}


def spu_python() -> str:
    """The interpreter with ``spu`` installed (``.venv-spu`` unless SECUREML_SPU_PYTHON says otherwise)."""
    exe = os.environ.get("SECUREML_SPU_PYTHON") or str(REPO / ".venv-spu" / "bin" / "python")
    if not Path(exe).exists():
        raise RuntimeError("the SPU engine needs its own venv: run `make spu` (creates .venv-spu with spu==0.9.5) "
                           "or set SECUREML_SPU_PYTHON")
    return exe


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_local(model: Any, queries: np.ndarray, *, protocol: str = "CHEETAH", field: str = "FM128",
              frac_bits: int = 40, link: str | None = None, timeout: float = 1800.0, **_: Any):
    """Both SPU parties as two processes: (predictions, client CostReport, server CostReport)."""
    from protocols.common import CostReport

    if model.kernel != "gaussian":
        raise ValueError("the SPU engine runs the Gaussian kernel only")
    Q = np.atleast_2d(np.asarray(queries, dtype=np.float64))
    exe = spu_python()
    with tempfile.TemporaryDirectory(prefix="secureml-spu-") as tmp:
        data = Path(tmp) / "model.npz"
        np.savez(data, X=model.X_train, alpha=model.dual_coef, offset=np.array([model.y_offset]),
                 sigma=np.array([model.sigma]), Q=Q)
        ports = [_free_port(), _free_port()]
        relays = []
        try:
            peer_addr = list(ports)
            if link:
                from bench.netem import Relay

                relays = [Relay(("127.0.0.1", ports[r]), link) for r in range(2)]
                peer_addr = [relays[0].port, relays[1].port]
            procs = []
            for rank in range(2):
                # each party listens on its own port and reaches the peer through peer_addr
                addrs = [ports[0] if rank == 0 else peer_addr[0], ports[1] if rank == 1 else peer_addr[1]]
                cmd = [exe, str(Path(__file__).resolve()), "--party", str(rank), "--data", str(data),
                       "--addr0", f"127.0.0.1:{addrs[0]}", "--addr1", f"127.0.0.1:{addrs[1]}",
                       "--protocol", protocol, "--field", field, "--frac-bits", str(frac_bits),
                       "--out", str(Path(tmp) / f"party{rank}.json")]
                procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                              env={**os.environ, "PYTHONPATH": "", "JAX_PLATFORMS": "cpu"}))
            errs = []
            for p in procs:
                try:
                    _, err = p.communicate(timeout=timeout)
                except subprocess.TimeoutExpired:
                    p.kill()
                    _, err = p.communicate()
                errs.append(err.decode(errors="replace")[-2000:] if err else "")
            link_bytes = relays[0].bytes() if relays else None
            link_bytes2 = relays[1].bytes() if relays else None
        finally:
            for r in relays:
                r.close()
        outs = []
        for rank in range(2):
            f = Path(tmp) / f"party{rank}.json"
            if not f.exists():
                raise RuntimeError(f"SPU party {rank} failed: {errs[rank].strip().splitlines()[-1:] or 'no output'}")
            outs.append(json.loads(f.read_text()))
    r0, r1 = outs
    if link_bytes is not None:
        # relay 0 sits in front of party 0 (traffic 1 -> 0 and back), relay 1 in front of party 1
        to0 = link_bytes[0] + link_bytes2[1]
        to1 = link_bytes[1] + link_bytes2[0]
    else:
        to0, to1 = r1["wchar"], r0["wchar"]
    extra = {"protocol": protocol, "field": field, "frac_bits": frac_bits, "compile_s": r1["compile_s"],
             "client_cpu_s": r1["cpu_s"], "server_cpu_s": r0["cpu_s"],
             "traffic_source": "relay" if link_bytes is not None else "wchar", "link": link or "loopback",
             "trusted_dealer": protocol == "SEMI2K"}
    client = CostReport(engine=f"spu-{protocol.lower()}-{field.lower()}", wall_s=r1["wall_s"], offline_s=0.0,
                        online_s=r1["wall_s"], bytes_sent=int(to0), bytes_received=int(to1), rounds=0,
                        peak_rss_mb=r1["peak_rss_mb"], extra=extra)
    server = CostReport(engine=client.engine, wall_s=r0["wall_s"], offline_s=0.0, online_s=r0["wall_s"],
                        bytes_sent=int(to1), bytes_received=int(to0), rounds=0, peak_rss_mb=r0["peak_rss_mb"],
                        extra=extra)
    return np.asarray(r1["preds"], dtype=float), client, server


# ---- the party program (runs inside .venv-spu) ----------------------------------------------
def _wchar() -> int:
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("wchar:"):
                return int(line.split()[1])
    return 0


def _party(args: argparse.Namespace) -> None:  # pragma: no cover - runs in the SPU venv
    import resource

    import jax.numpy as jnp
    import spu
    import spu.libspu as libspu
    import spu.utils.frontend as fe

    rank = args.party
    z = np.load(args.data)
    X, alpha, offset, sigma, Q = z["X"], z["alpha"], float(z["offset"][0]), float(z["sigma"][0]), z["Q"]
    inv = 1.0 / (2.0 * sigma * sigma)
    names = ["X", "xx", "alpha", "off", "q", "qq"]
    owners = [0, 0, 0, 0, 1, 1]

    def krr(X, xx, alpha, off, q, qq):
        d2 = xx - 2.0 * jnp.matmul(X, q) + qq
        return jnp.dot(alpha, jnp.exp(-d2 * inv)) + off

    cfg = libspu.RuntimeConfig(protocol=getattr(libspu.ProtocolKind, args.protocol),
                               field=getattr(libspu.FieldType, args.field), fxp_fraction_bits=args.frac_bits)
    if args.protocol == "SEMI2K":
        cfg.beaver_type = libspu.RuntimeConfig.BeaverType.TrustedFirstParty
    io = spu.Io(2, cfg)
    desc = libspu.link.Desc()
    desc.recv_timeout_ms = 30 * 60 * 1000
    desc.http_max_payload_size = 1 << 30
    desc.connect_retry_times = 600
    desc.connect_retry_interval_ms = 100
    desc.add_party("p0", args.addr0)
    desc.add_party("p1", args.addr1)
    preds = []
    t_compile = 0.0
    wall = cpu = 0.0
    w0 = 0
    lctx = None
    for qi in range(Q.shape[0]):
        q = Q[qi]
        vals = [X, np.sum(X * X, axis=1), alpha, np.array(offset), q, np.array(np.dot(q, q))]
        tc = time.perf_counter()
        exe, _ = fe.compile(fe.Kind.JAX, krr, vals, {}, names, [libspu.Visibility.VIS_SECRET] * 6,
                            lambda out: ["y"])
        t_compile += time.perf_counter() - tc
        if lctx is None:
            lctx = libspu.link.create_brpc(desc, rank)
            rt = spu.Runtime(lctx, cfg)
        lctx.barrier() if hasattr(lctx, "barrier") else None
        w0 = _wchar() if qi == 0 else w0
        t0 = time.perf_counter()
        c0 = time.process_time()  # all threads of this process
        # 2. seeded input sharing: the owner sends a seed; the peer's share is PRG(seed)
        seed_mine = np.frombuffer(os.urandom(16), dtype=np.uint64)
        lctx.send(1 - rank, seed_mine.tobytes().hex())
        seed_peer = np.frombuffer(bytes.fromhex(lctx.recv(1 - rank).decode()), dtype=np.uint64)
        words = 1 if args.field == "FM64" else 2
        for i, (name, v, owner) in enumerate(zip(names, vals, owners)):
            shares = io.make_shares(np.asarray(v, dtype=np.float64), libspu.Visibility.VIS_SECRET, owner)
            seed = seed_mine if owner == rank else seed_peer
            prg = np.random.Generator(np.random.Philox(key=[int(seed[0]), int(seed[1])], counter=[i, 0, 0, 0]))
            share = shares[rank]
            chunks = []
            for c_i, raw in enumerate(share.share_chunks):
                ch = libspu.ValueChunk()
                ch.ParseFromString(raw)
                if owner == rank:  # value - PRG(seed)
                    other = libspu.ValueChunk()
                    other.ParseFromString(shares[1 - rank].share_chunks[c_i])
                    a = np.frombuffer(ch.content, np.uint64).reshape(-1, words)
                    b = np.frombuffer(other.content, np.uint64).reshape(-1, words)
                    r = prg.integers(0, 2**64, a.shape, dtype=np.uint64, endpoint=False)
                    content = _sub(_add(a, b), r)
                else:
                    n = len(ch.content) // 8 // words
                    content = prg.integers(0, 2**64, (n, words), dtype=np.uint64, endpoint=False)
                ch.content = np.ascontiguousarray(content).tobytes()
                chunks.append(ch.SerializeToString())
            share.share_chunks = chunks
            rt.set_var(name, share)
        rt.run(exe)
        y = rt.get_var("y")
        # 3. reveal to party 1 only
        if rank == 0:
            lctx.send(1, json.dumps({"meta": y.meta.hex(), "chunks": [c.hex() for c in y.share_chunks]}))
        else:
            msg = json.loads(lctx.recv(0).decode())
            other = libspu.Share()
            other.meta = bytes.fromhex(msg["meta"])
            other.share_chunks = [bytes.fromhex(c) for c in msg["chunks"]]
            preds.append(float(io.reconstruct([other, y])))
        wall += time.perf_counter() - t0
        cpu += time.process_time() - c0
    out = {"rank": rank, "wall_s": wall, "cpu_s": cpu, "compile_s": t_compile, "wchar": _wchar() - w0, "preds": preds,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
    Path(args.out).write_text(json.dumps(out))
    lctx.stop_link()


def _add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Ring addition on (n, words) little-endian uint64 words (FM64: 1 word, FM128: 2)."""
    s = a + b
    if a.shape[1] == 2:
        carry = (s[:, 0] < a[:, 0]).astype(np.uint64)
        s[:, 1] += carry
    return s


def _sub(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    s = a - b
    if a.shape[1] == 2:
        borrow = (a[:, 0] < b[:, 0]).astype(np.uint64)
        s[:, 1] -= borrow
    return s


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="one SPU party of the KRR benchmark (runs in .venv-spu)")
    ap.add_argument("--party", type=int, choices=(0, 1), required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--addr0", required=True)
    ap.add_argument("--addr1", required=True)
    ap.add_argument("--protocol", default="CHEETAH", choices=("CHEETAH", "SEMI2K"))
    ap.add_argument("--field", default="FM128", choices=("FM64", "FM128"))
    ap.add_argument("--frac-bits", type=int, default=40)
    ap.add_argument("--out", required=True)
    _party(ap.parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
