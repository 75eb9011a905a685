"""MP-SPDZ as an optional engine of ``secureml bench cost`` (used only when MP_SPDZ_HOME is set).

The published study ran KRR prediction as an MP-SPDZ program; ANCHORS.md carries figures measured
with an MP-SPDZ built from source. This runner makes the same measurement beside the others, on the
same synthetic model and query: it writes the .mpc program and both parties' input files, compiles
the program with ``compile.py`` and runs the two party binaries of the chosen protocol on loopback.

Program (both kernels; party 0 = model owner, party 1 = query owner, output to party 1 only):
  1. inputs: party 0 its N x d training features, N weights and the offset; party 1 its d-long
     query. Each owner divides its own features by the public c (sqrt(2) sigma Gaussian, sigma
     Laplacian) before sharing, so that the exponent needs no multiplication by a tiny public
     constant (at 16 fractional bits 1/(2 sigma^2) is 8.5% off: ANCHORS.md's pitfall);
  2. per training point: t_i = sum_j (x_ij - q_j)^2 (Gaussian) or sum_j |x_ij - q_j| (Laplacian);
  3. K_i = exp(-t_i) (MP-SPDZ's ``mpc_math.exp2_fx`` of -t_i log2 e);
  4. y = sum_i alpha_i K_i + offset, revealed to party 1 only (``reveal_to(1)``) and printed
     there. No distance or kernel value is revealed (the published program printed every distance).

Threat model: that of the chosen MP-SPDZ protocol (``semi``: semi-honest, OT-based triples, no
dealer; ``mascot``: malicious). Cost: MP-SPDZ's own "Global data sent" (both parties) and its
round count and time, as reported by the binaries. Without MP_SPDZ_HOME the engine is skipped with
a one-line note (:func:`skip_note`).
"""
from __future__ import annotations

import math
import os
import re
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

#: protocol -> (party binary, extra compile.py arguments)
PROTOCOLS: dict[str, tuple[str, tuple[str, ...]]] = {
    "semi": ("semi-party.x", ()),
    "mascot": ("mascot-party.x", ()),
    "semi2k": ("semi2k-party.x", ("-R", "64")),
}
PROGRAM = "secureml_krr"
PREDICTION_TAG = "secureml-prediction"


class MPSPDZUnavailable(RuntimeError):
    """MP_SPDZ_HOME is unset or does not hold a built MP-SPDZ."""


def skip_note() -> str | None:
    """None if the engine can run; else the one line ``bench cost`` prints when it skips it."""
    try:
        mp_spdz_home()
    except MPSPDZUnavailable as exc:
        return str(exc)
    return None


def mp_spdz_home() -> Path:
    """The MP-SPDZ source tree (compile.py and the party binaries), from MP_SPDZ_HOME."""
    home = os.environ.get("MP_SPDZ_HOME")
    if not home:
        raise MPSPDZUnavailable("mp-spdz skipped: MP_SPDZ_HOME is not set (point it at a built MP-SPDZ)")
    path = Path(home)
    if not (path / "compile.py").exists():
        raise MPSPDZUnavailable(f"mp-spdz skipped: no compile.py in MP_SPDZ_HOME={home}")
    return path


def scale_constant(kernel: str, sigma: float) -> float:
    """c with exponent t = sum_j f(x_j / c - q_j / c): sqrt(2) sigma (Gaussian), sigma (Laplacian)."""
    return math.sqrt(2.0) * sigma if kernel == "gaussian" else sigma


def program_text(N: int, d: int, kernel: str, k: int = 1, frac_bits: int = 16, total_bits: int = 48) -> str:
    """The .mpc source for k queries against an N x d model (inputs already divided by c)."""
    if kernel not in ("gaussian", "laplacian"):
        raise ValueError(f"unknown kernel {kernel!r}")
    if not (0 < frac_bits < total_bits):
        raise ValueError("need 0 < frac_bits < total_bits")
    # Arrays rather than vectors where MP-SPDZ's documented calls take iterables (dot_product)
    dist = ("diff = X[i].get_vector() - qv\n"
            "        da = sfix.Array(D)\n"
            "        da.assign_vector(diff)\n"
            "        t = sfix.dot_product(da, da)" if kernel == "gaussian" else
            "diff = X[i].get_vector() - qv\n"
            "        da = sfix.Array(D)\n"
            "        da.assign_vector((diff < 0).if_else(-diff, diff))\n"
            "        t = sum(da)")
    return f'''# written by secureml bench/mpspdz_engine.py: {kernel} KRR prediction, N={N}, d={d}, k={k}
# party 0: training features / c, weights, offset; party 1: query / c; output to party 1 only
from Compiler import mpc_math

sfix.set_precision({frac_bits}, {total_bits})
N, D, K = {N}, {d}, {k}
LOG2E = {1.0 / math.log(2.0)!r}

X = sfix.Matrix(N, D)
X.input_from(0)
alpha = sfix.Array(N)
alpha.input_from(0)
offset = sfix.get_input_from(0)
q = sfix.Matrix(K, D)
q.input_from(1)
kern = sfix.Array(N)

for a in range(K):
    qv = q[a].get_vector()

    @for_range_opt(N)
    def _(i):
        {dist}
        kern[i] = mpc_math.exp2_fx(-t * LOG2E)

    y = sfix.dot_product(alpha, kern) + offset
    print_ln_to(1, '{PREDICTION_TAG} %s', y.reveal_to(1))
'''


def _fmt(a: np.ndarray) -> str:
    return " ".join(f"{v:.10g}" for v in np.ravel(a)) + "\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_party_output(text: str) -> dict[str, Any]:
    """MP-SPDZ's cost lines: total MB both parties, time, rounds (party's own), predictions."""
    out: dict[str, Any] = {"predictions": [float(v) for v in re.findall(PREDICTION_TAG + r"\s+(\S+)", text)]}
    m = re.search(r"Global data sent = ([0-9.eE+-]+) MB", text)
    out["global_MB"] = float(m.group(1)) if m else None
    m = re.search(r"Data sent = ([0-9.eE+-]+) MB in ~(\d+) rounds", text)
    out["party_MB"], out["rounds"] = (float(m.group(1)), int(m.group(2))) if m else (None, 0)
    m = re.search(r"^Time = ([0-9.eE+-]+) seconds", text, re.M)
    out["time_s"] = float(m.group(1)) if m else None
    return out


def run_local(model: Any, queries: np.ndarray, *, protocol: str = "semi", frac_bits: int = 16,
              total_bits: int = 48, timeout: float = 3600.0, relay: Any = None, **_: Any):
    """Compile and run both parties: (predictions, client CostReport, server CostReport)."""
    from protocols.common import CostReport

    home = mp_spdz_home()
    if relay is not None:  # MP-SPDZ's parties dial each other itself: no relay in between
        raise MPSPDZUnavailable("mp-spdz skipped: it runs on plain loopback only (no --link)")
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown MP-SPDZ protocol {protocol!r}; supported: {sorted(PROTOCOLS)}")
    binary, compile_args = PROTOCOLS[protocol]
    if not (home / binary).exists():
        raise MPSPDZUnavailable(f"mp-spdz skipped: {binary} is not built in MP_SPDZ_HOME={home}")
    Q = np.atleast_2d(np.asarray(queries, dtype=np.float64))
    N, d = model.X_train.shape
    c = scale_constant(model.kernel, float(model.sigma))
    name = f"{PROGRAM}_{model.kernel}_{N}_{d}_{Q.shape[0]}"
    (home / "Programs" / "Source").mkdir(parents=True, exist_ok=True)
    (home / "Programs" / "Source" / f"{name}.mpc").write_text(
        program_text(N, d, model.kernel, Q.shape[0], frac_bits, total_bits))
    t0 = time.perf_counter()
    subprocess.run([str(home / "compile.py"), *compile_args, name], cwd=home, check=True,
                   capture_output=True, timeout=timeout)
    t_compile = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="secureml-mpspdz-") as tmp:
        (Path(tmp) / "in-P0-0").write_text(_fmt(model.X_train / c) + _fmt(model.dual_coef) + _fmt([model.y_offset]))
        (Path(tmp) / "in-P1-0").write_text(_fmt(Q / c))
        port = _free_port()
        t1 = time.perf_counter()
        procs = [subprocess.Popen([str(home / binary), "-N", "2", "-p", str(p), "-h", "127.0.0.1", "-pn", str(port),
                                   "-IF", str(Path(tmp) / "in"), "-OF", ".", name],
                                  cwd=home, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for p in (0, 1)]
        texts = [p.communicate(timeout=timeout)[0] for p in procs]
        wall = time.perf_counter() - t1
    if any(p.returncode for p in procs):
        raise RuntimeError(f"MP-SPDZ {binary} failed: {texts[0].strip().splitlines()[-1:] or texts[1][-200:]}")
    server, client = parse_party_output(texts[0]), parse_party_output(texts[1])
    preds = np.asarray(client["predictions"] or server["predictions"])
    total = int((server["global_MB"] or 0.0) * 1e6)
    extra = {"protocol": protocol, "compile_s": t_compile, "frac_bits": frac_bits, "total_bits": total_bits}
    # MP-SPDZ reports the traffic of both parties together: booked half each way
    report = CostReport(engine=f"mp-spdz-{protocol}", wall_s=wall, online_s=wall, bytes_sent=total // 2,
                        bytes_received=total - total // 2, rounds=max(server["rounds"], client["rounds"]), extra=extra)
    return preds, report, report
