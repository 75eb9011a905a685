"""Both sides of an exact-KRR prediction as two real processes on TCP loopback (benchmarks), and
a `secureml serve` process started the way a model owner starts it (benchmarks, demo, tests)."""
from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import time
from typing import Any

import numpy as np

from protocols.common import CostReport, KernelModelParams
from protocols.krr.client import predict
from protocols.krr.served import ServedModel
from protocols.krr.server import serve


def _serve_process(params: KernelModelParams, frac_bits: int | None, q: Any) -> None:
    # the semi-honest protocols: what the engine comparisons (`secureml bench cost`) measure
    serve(ServedModel(params, frac_bits=frac_bits, security="semi-honest"), "127.0.0.1", 0, max_sessions=1,
          on_ready=q.put)


def run_local(model: KernelModelParams, queries: np.ndarray, frac_bits: int | None = None,
              timeout: float = 3600.0) -> tuple[np.ndarray, CostReport, CostReport]:
    """Both sides as two real processes on TCP loopback: (predictions, client cost, server cost),
    the same convention as the baseline engines.

    The server process reports only through its log line, so the returned server cost mirrors the
    client's (same bytes, swapped directions).
    """
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=_serve_process, args=(model, frac_bits, q), daemon=True)
    proc.start()
    try:
        port = q.get(timeout=120)
        preds, cost = predict(f"127.0.0.1:{port}", queries, timeout=timeout)
    finally:
        proc.join(60)
        if proc.is_alive():
            proc.kill()
    server = CostReport(engine=cost.engine, wall_s=cost.wall_s, offline_s=cost.offline_s,
                        online_s=cost.online_s, bytes_sent=cost.bytes_received,
                        bytes_received=cost.bytes_sent, rounds=cost.rounds)
    return preds, cost, server


def start_serve_process(cmd: list[str], *, timeout: float = 60.0, head: list[str] | None = None,
                        **popen_kw: Any) -> tuple[subprocess.Popen, int]:
    """Start ``cmd`` (a `secureml serve ... --port 0` command line) and wait for its "serving ... :PORT"
    line; returns (process, port). Output is merged into ``process.stdout``; the lines printed before
    the port go to ``head`` when given (start-up warnings). RuntimeError if it does not start."""
    env = dict(popen_kw.pop("env", os.environ), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            **popen_kw)
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        if head is not None:
            head.append(line)
        if "serving" in line:
            return proc, int(line.rsplit(":", 1)[1])
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError("server did not start: " + (proc.stdout.read() or ""))
