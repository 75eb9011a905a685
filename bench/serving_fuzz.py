"""A bounded mutational fuzzer of `secureml serve` over recorded sessions.

1. Record the frames a real client sends in one session (hello, ready, base OTs, online phase).
2. For each case, mutate that stream (bit flips, wrong/huge/zero length prefixes, truncation,
   dropped/duplicated/swapped frames, JSON frames replaced by deep nesting, huge numbers, wrong
   types, non-finite values, random bytes, garbage inserted between frames) with a seeded RNG,
   send it on a fresh connection, half-close, and drain the server's answers.
3. A case *hangs* if the server has not closed the connection ``hang_s`` seconds after the
   mutated stream ended; after every ``check_every`` cases an honest client must get correct
   predictions; at the end the server's log must hold no traceback.

    python -m bench.serving_fuzz --cases 10000 --out bench_results/serving_fuzz.json

Writes the JSON summary (cases per mutation kind, outcomes, hangs, tracebacks, honest checks).
The server runs with short idle/handshake limits so a truncated stream ends in seconds.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

HEADER = struct.Struct(">II")  # payload length, acknowledgement (protocols.net.transport)

JSON_REPLACEMENTS: list[bytes] = [
    b"[" * 5000, b"{\"a\":" * 3000, b"[" * 40 + b"]" * 40, b"1e999999", b"-" + b"9" * 5000,
    b'{"protocol":"secureml-krr","version":true,"n_queries":1}',
    b'{"protocol":"secureml-krr","version":1,"n_queries":1e30}',
    b'{"protocol":"secureml-krr","version":1,"n_queries":-1}',
    b'{"protocol":"secureml-krr","version":1,"n_queries":[1]}',
    b'{"ready":NaN}', b'{"ready":true,"need_public_model":"\\ud800"}', b'"' + b"\\u0000" * 1000 + b'"',
    b"null", b"[]", b"\xff\xfe\xfd", b"", b'{"abort":"' + b"A" * 60000 + b'"}',
]


def record_session(port: int, queries: np.ndarray) -> list[bytes]:
    """The frames (header + payload) an honest client sends in one session."""
    from protocols.krr import predict_features
    from protocols.net.transport import connect

    ch = connect("127.0.0.1", port)
    frames: list[bytes] = []
    write = ch._write

    def tap(parts, wait=True):  # one _write call is one whole frame, header included
        frames.append(b"".join(bytes(memoryview(p).cast("B")) for p in parts))
        write(parts, wait)

    ch._write = tap
    try:
        predict_features(ch, queries)
    finally:
        ch.close()
    return frames


def ack(f: bytes) -> int:
    """The acknowledgement in a recorded frame's header (kept when its length or payload is mutated)."""
    return HEADER.unpack(bytes(f[:8]))[1] if len(f) >= 8 else 0


def mutate(frames: list[bytes], rng: random.Random) -> tuple[str, bytes]:
    """One mutated byte stream and the name of the mutation."""
    frames = list(frames)
    kind = rng.choice(["bitflip", "length", "truncate", "drop", "duplicate", "swap", "json",
                       "random", "insert", "huge-length", "zero-length"])
    i = rng.randrange(len(frames))
    f = bytearray(frames[i])
    if kind == "bitflip":
        for _ in range(rng.randint(1, 8)):
            pos = rng.randrange(len(f))
            f[pos] ^= 1 << rng.randrange(8)
        frames[i] = bytes(f)
    elif kind == "length":
        frames[i] = HEADER.pack(max(0, len(f) - 8 + rng.randint(-64, 64)), ack(f)) + bytes(f[8:])
    elif kind == "huge-length":
        frames[i] = HEADER.pack(rng.choice([0xFFFFFFFF, 1 << 31, 1 << 26, (1 << 20) + 1]), ack(f)) + bytes(f[8:])
    elif kind == "zero-length":
        frames[i] = HEADER.pack(0, ack(f))
    elif kind == "truncate":
        stream = b"".join(frames)
        return kind, stream[: rng.randrange(len(stream))]
    elif kind == "drop":
        del frames[i]
    elif kind == "duplicate":
        frames.insert(i, frames[i])
    elif kind == "swap":
        j = rng.randrange(len(frames))
        frames[i], frames[j] = frames[j], frames[i]
    elif kind == "json":
        j = rng.randrange(min(2, len(frames)))  # the hello or the ready message
        payload = rng.choice(JSON_REPLACEMENTS)
        frames[j] = HEADER.pack(len(payload), 0) + payload
    elif kind == "random":
        payload = rng.randbytes(rng.randint(0, 2048))
        frames[i] = HEADER.pack(len(payload), ack(f)) + payload
    elif kind == "insert":
        frames.insert(i, rng.randbytes(rng.randint(1, 64)))
    return kind, b"".join(frames)


def run_case(port: int, stream: bytes, hang_s: float) -> str:
    """Send ``stream``, half-close, drain; 'closed' when the server closed in time, else 'hang'."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
    except OSError:
        return "connect-failed"
    s.settimeout(hang_s)
    err: list[str] = []

    def writer() -> None:
        try:
            s.sendall(stream)
            s.shutdown(socket.SHUT_WR)
        except OSError as exc:
            err.append(type(exc).__name__)

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    outcome = "closed"
    try:
        while s.recv(1 << 20):
            pass
    except (socket.timeout, TimeoutError):
        outcome = "hang"
    except OSError:
        outcome = "closed"  # reset by the server: it is done with us
    t.join(hang_s)
    s.close()
    return outcome


def honest_check(port: int, queries: np.ndarray, expected: np.ndarray) -> bool:
    from protocols.krr import predict

    preds, _ = predict(f"127.0.0.1:{port}", queries, timeout=60)
    return bool(np.allclose(preds, expected, atol=1e-2))


def start_server(model_path: Path, log_path: Path, extra: list[str]) -> tuple[subprocess.Popen, int]:
    log = open(log_path, "w")
    if "--security" not in extra:  # the semi-honest exact protocols are what this fuzzer targets
        extra = ["--security", "semi-honest", *extra]
    proc = subprocess.Popen([sys.executable, "-m", "secureml.cli", "-v", "serve", "--model", str(model_path),
                             "--port", "0", *extra], stdout=subprocess.PIPE, stderr=log, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    deadline = time.time() + 120
    while time.time() < deadline:
        line = proc.stdout.readline()
        if "serving" in line:
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return proc, int(line.rsplit(":", 1)[1])
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError("server did not start: " + log_path.read_text()[-2000:])


def small_model(path: Path, n: int = 48) -> tuple[Any, Any]:
    from secureml.data import embedded_split, load_embedded
    from secureml.models.krr import KernelRidge
    from secureml.models.pipeline import MolecularModel
    from secureml.representations import CoulombMatrix

    data = load_embedded()
    tr, te = embedded_split(0)
    m = MolecularModel(CoulombMatrix(size=23), KernelRidge("gaussian", sigma=50.0, lam=1e-6), "U0_atomization")
    m.fit(data.subset(tr[:n]))
    m.save(path)
    test = data.subset(te[:1])
    return m, test


def run_fuzz(cases: int, seed: int = 0, workers: int = 8, check_every: int = 500, hang_s: float = 15.0,
             workdir: Path | None = None) -> dict[str, Any]:
    """Fuzz a fresh server with ``cases`` mutated sessions; returns the summary dict."""
    work = Path(workdir or tempfile.mkdtemp(prefix="serving_fuzz_"))
    work.mkdir(parents=True, exist_ok=True)
    model, test = small_model(work / "model.npz")
    Q = model.representation.transform(test)
    expected = model.estimator.predict(Q)
    proc, port = start_server(work / "model.npz", work / "server.log",
                              ["--concurrency", "4", "--handshake-timeout", "5", "--idle-timeout", "5"])
    rng = random.Random(seed)
    kinds: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    honest: list[bool] = []
    hung: list[str] = []
    hung_kinds: Counter[str] = Counter()
    t0 = time.time()
    try:
        frames = record_session(port, Q)
        honest.append(honest_check(port, Q, expected))
        done = 0
        with ThreadPoolExecutor(workers) as pool:
            while done < cases:
                batch = [mutate(frames, rng) for _ in range(min(check_every, cases - done))]
                for (kind, stream), out in zip(batch, pool.map(lambda b: run_case(port, b[1], hang_s), batch)):
                    kinds[kind] += 1
                    outcomes[out] += 1
                    if out == "hang":
                        hung_kinds[kind] += 1
                        if len(hung) < 20:  # kept for replay (python -m bench.serving_fuzz --replay DIR)
                            hung.append(kind)
                            (work / "hangs").mkdir(exist_ok=True)
                            (work / "hangs" / f"{len(hung):02d}-{kind}.bin").write_bytes(stream)
                done += len(batch)
                honest.append(honest_check(port, Q, expected))
                print(f"{done} cases, {dict(outcomes)}, honest ok {all(honest)}", file=sys.stderr)
        alive = proc.poll() is None
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    log = (work / "server.log").read_text(errors="replace")
    return {
        "cases": cases, "seed": seed, "recorded_frames": len(frames),
        "recorded_bytes": sum(len(f) for f in frames), "mutations": dict(kinds), "outcomes": dict(outcomes),
        "hangs": outcomes.get("hang", 0), "hangs_by_mutation": dict(hung_kinds),
        "hang_streams": str(work / "hangs") if hung else None, "tracebacks": log.count("Traceback") + log.count("session crashed"),
        "server_alive_at_end": alive, "honest_checks": len(honest), "honest_all_correct": all(honest),
        "wall_s": round(time.time() - t0, 1), "server_log_lines": len(log.splitlines()),
    }


def replay(folder: Path, hang_s: float = 15.0) -> int:
    """Send each saved stream alone to a fresh server; print how long the server took to close."""
    work = Path(tempfile.mkdtemp(prefix="serving_fuzz_replay_"))
    small_model(work / "model.npz")
    proc, port = start_server(work / "model.npz", work / "server.log",
                              ["--concurrency", "4", "--handshake-timeout", "5", "--idle-timeout", "5"])
    try:
        for f in sorted(folder.glob("*.bin")):
            t0 = time.time()
            out = run_case(port, f.read_bytes(), hang_s)
            print(f"{f.name}: {out} after {time.time() - t0:.2f} s")
    finally:
        proc.kill()
    print((work / "server.log").read_text()[-3000:])
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=8, help="fuzzing connections at once")
    ap.add_argument("--out", default="bench_results/serving_fuzz.json")
    ap.add_argument("--hang-s", type=float, default=15.0,
                    help="a case hangs if the server has not closed this long after the stream ended")
    ap.add_argument("--replay", default=None, help="replay the saved streams (*.bin) of a folder, one at a time")
    args = ap.parse_args(argv)
    if args.replay:
        return replay(Path(args.replay), args.hang_s)
    res = run_fuzz(args.cases, args.seed, args.workers, hang_s=args.hang_s)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))
    return 0 if res["hangs"] == 0 and res["tracebacks"] == 0 and res["honest_all_correct"] else 1


if __name__ == "__main__":
    sys.exit(main())
