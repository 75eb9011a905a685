"""Gaussian KRR prediction with CrypTen (Meta's MPC library): a baseline with a WEAKER trust model.

Threat model. CrypTen's default tuple provider is the "trusted first party" (TFP): rank 0
generates every Beaver triple and shares it with the other party for free (pseudo-random zero
sharing), so rank 0 knows all the masks and could unmask every value opened during the
computation. Here rank 0 is the model owner, i.e. the model owner must be TRUSTED not to look:
the query is protected only against outsiders and against the query owner's view. CrypTen's
own documentation calls TFP a debugging provider. This engine is therefore a cost baseline for
an (honest-dealer) arithmetic-sharing protocol, not a double-blind protocol. Both parties learn
the public sizes (N, d), sigma and the range-reduction settings; the prediction is revealed to
the query owner only.

Computation (all on secret-shared fixed-point values, ``precision_bits`` fractional bits):
  1. the server shares x_i / c, the client q / c, with c = sigma * sqrt(2^(k+1)) (each owner
     scales its own plaintext, so no tiny public constant is ever multiplied in fixed point);
  2. v_i = -sum_j (x_ij/c - q_j/c)^2 = -D_i / (2 sigma^2 2^k)  (N*d Beaver squares, summed
     before the single truncation per training point);
  3. clip: v_i <- max(v_i, -1) = relu(v_i + 1) - 1 (one secure comparison per training point):
     beyond the clip the true kernel is below exp(-2^k) = 1.1e-7 (k = 4), so clipping costs at
     most that much per weight and keeps the polynomial inside its range;
  4. exp by range reduction: p(v)^(2^k), p the degree-7 Chebyshev interpolant of exp on [-1, 0]
     (Horner, 7 products), then k squarings -- CrypTen's own exp (1 + x/2^8)^(2^8) is several
     percent off for kernel-sized arguments (see :func:`crypten_default_exp_error`);
  5. y = sum_i alpha_i K_i + offset, from untruncated Beaver products, revealed to the client at
     scale 2^(2 precision) (no truncation, so no truncation failure; the weights are divided by a
     public power of two 2^a only if the sum could overflow).

CrypTen's two-party truncation divides each share locally: it fails (an error of about
2^(64 - precision)) with probability ~|x| / 2^63 per product, x the product at scale 2^(2 precision).
That is why its default precision is 16 bits and why sums of products are formed here from
untruncated Beaver products (:func:`failure_probability` gives the remaining per-query risk).

Compatibility: ``import crypten`` (0.4.1) fails on torch 2.13 because
``torch.onnx._internal.registration`` moved to ``torch.onnx._internal.torchscript_exporter
.registration``; :func:`import_crypten` installs an alias module first. Installing: CrypTen's
``sklearn`` requirement is a deprecated PyPI placeholder (set
SKLEARN_ALLOW_DEPRECATED_SKLEARN_PACKAGE_INSTALL=True) and its ``torchvision`` requirement would
upgrade torch: install with ``pip install --no-deps crypten==0.4.1`` plus ``omegaconf onnx pyyaml``.

Traffic is CrypTen's own count (``communicator.verbose``): the bytes of every tensor it sends or
receives through torch.distributed (gloo over TCP); like CrypTen we split it evenly between
sent and received (openings are symmetric all-reduces).
"""
from __future__ import annotations

import importlib
import math
import os
import socket
import sys
import time
import types
from typing import Any

import numpy as np

from protocols.baselines.fhe.params import exp_poly_coefficients
from protocols.baselines.fhe.procs import run_engine_local
from protocols.common import CostReport, KernelModelParams, check_hello, send_hello
from protocols.common import peak_rss_mb
from protocols.net.transport import Channel
from secureml.errors import ModelError, ProtocolError, SecureMLError

PROTOCOL_NAME = "secureml-crypten"
PROTOCOL_VERSION = 1
EXP_K = 4  # squarings after the polynomial: clip floor exp(-16) = 1.1e-7
DEFAULT_PRECISION_BITS = 16
MAX_QUERIES_PER_SESSION = 64
PRODUCT_BITS = 63  # CrypTen multiplies two encodings in Z_2^64 before truncating


class CrypTenUnavailable(SecureMLError):
    """CrypTen is not installed or cannot be imported here."""


_ONNX_OLD = "torch.onnx._internal.registration"
_ONNX_NEW = "torch.onnx._internal.torchscript_exporter.registration"


def install_torch_onnx_shim() -> bool:
    """Alias the moved torch.onnx registration module under its old name (returns True if installed).

    CrypTen 0.4.1's ONNX converter does ``from torch.onnx._internal.registration import registry``
    at import time; torch 2.13 moved that module. The alias is only added when the old name is
    missing and the new one exists, so newer or older torch versions are left untouched.
    """
    if _ONNX_OLD in sys.modules:
        return False
    try:
        importlib.import_module(_ONNX_OLD)
        return False
    except ImportError:
        pass
    try:
        new = importlib.import_module(_ONNX_NEW)
    except ImportError:
        return False
    sys.modules[_ONNX_OLD] = new
    parent = importlib.import_module("torch.onnx._internal")
    setattr(parent, "registration", new)
    return True


def import_crypten() -> types.ModuleType:
    """``import crypten`` with the torch 2.13 shim, or a clear :class:`CrypTenUnavailable`."""
    if "crypten" in sys.modules:
        return sys.modules["crypten"]
    install_torch_onnx_shim()
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import crypten  # noqa: F401
    except ImportError as exc:
        raise CrypTenUnavailable(
            f"CrypTen cannot be imported ({exc}). Install it with: "
            "SKLEARN_ALLOW_DEPRECATED_SKLEARN_PACKAGE_INSTALL=True pip install --no-deps crypten==0.4.1 "
            "&& pip install omegaconf onnx pyyaml"
        ) from exc
    return sys.modules["crypten"]


def exp_poly() -> np.ndarray:
    return exp_poly_coefficients()


def encrypted_exp(v: Any, k: int = EXP_K) -> Any:
    """exp(2^k v) for a CrypTensor v in [-1, 0]: Horner on the degree-7 polynomial, k squarings."""
    c = exp_poly()
    r = v * float(c[-1]) + float(c[-2])
    for j in range(len(c) - 3, -1, -1):
        r = r * v + float(c[j])
    for _ in range(k):
        r = r.square()
    return r


def crypten_default_exp_error(lo: float = -16.0, n: int = 2001) -> float:
    """Max absolute error of CrypTen's built-in exp on [lo, 0] (the problem this engine fixes)."""
    crypten = import_crypten()
    import torch

    if not crypten.is_initialized():
        crypten.init()
    x = torch.linspace(lo, 0.0, n, dtype=torch.float64)
    return float((crypten.cryptensor(x).exp().get_plain_text().double() - torch.exp(x)).abs().max())


def documented_error(alpha: np.ndarray, precision_bits: int = DEFAULT_PRECISION_BITS, k: int = EXP_K,
                     kernel: np.ndarray | None = None) -> float:
    """Bound on |prediction - plaintext| (no truncation failure), used in the docs and tests.

    p(v) carries <= 9 fixed-point errors of 2^-f (7 truncated products, the encoded coefficients);
    the 2^k-th power turns an absolute error e of p into ~2^k K^(1 - 2^-k) e / e^-1 in K; the clip
    adds < exp(-2^k) per point. With the query's exact kernel values ``kernel`` the bound is per
    point, otherwise K <= 1 everywhere (worst case). Weights and offset: 2^(shift - f) each.
    """
    alpha = np.asarray(alpha, dtype=np.float64)
    K = np.ones_like(alpha) if kernel is None else np.maximum(np.asarray(kernel, dtype=np.float64), math.exp(-(2.0**k)))
    eps = 2.0**k * 9 * 2.0 ** (-precision_bits) * math.e * K ** (1.0 - 2.0**-k) + math.exp(-(2.0**k))
    shift = _alpha_shift(alpha, precision_bits)
    return float(np.abs(alpha) @ eps) + (alpha.size + 1) * 2.0 ** (shift - precision_bits)


def _alpha_shift(alpha: np.ndarray, precision_bits: int) -> int:
    """Public power of two dividing the weights so the revealed sum (scale 2^(2f)) stays below 2^61."""
    total = float(np.sum(np.abs(alpha))) if alpha.size else 0.0
    if total == 0.0:
        return 0
    return max(0, math.ceil(math.log2(total)) - (61 - 2 * precision_bits))


def failure_probability(n_train: int, precision_bits: int = DEFAULT_PRECISION_BITS, k: int = EXP_K) -> float:
    """Per-query probability that one of CrypTen's local truncations fails (|x| <= 1 products).

    Each remaining truncation of a value of magnitude <= 2^(2f) fails with probability
    <= 2^(2f - 63); there are about (8 + k) N of them (Horner, squarings, clip) plus N for the
    distances (whose magnitude is that of D / (2 sigma^2 2^k), assumed <= 2^4 here).
    """
    per = 2.0 ** (2 * precision_bits - 63)
    return min(1.0, n_train * ((8 + k) * per + 16 * per))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _init_crypten(rank: int, host: str, port: int, precision_bits: int) -> Any:
    crypten = import_crypten()
    if crypten.is_initialized():
        raise ProtocolError("CrypTen is already initialised in this process (one session at a time)")
    os.environ.update(
        {
            "DISTRIBUTED_BACKEND": "gloo",
            "RENDEZVOUS": f"tcp://{host}:{port}",
            "WORLD_SIZE": "2",
            "RANK": str(rank),
        }
    )
    crypten.cfg.encoder.precision_bits = int(precision_bits)
    crypten.cfg.communicator.verbose = True
    crypten.cfg.mpc.provider = "TFP"
    crypten.init()
    crypten.reset_communication_stats()
    return crypten


def _compute(crypten: Any, X_or_none: np.ndarray | None, q_or_none: np.ndarray | None, n: int, d: int,
             weights: np.ndarray | None, k: int) -> Any:
    """Steps 1-5 for one query; returns the shared prediction at scale 2^(2 precision) (not truncated).

    CrypTen truncates after every product by dividing each share locally, which fails (an error
    of ~2^(64 - precision)) with probability ~|x| 2^(2 precision) / 2^63 per product. Sums of
    products are therefore formed from untruncated Beaver products (crypten.mpc.primitives.beaver)
    and truncated once (distances) or not at all (the prediction is revealed at scale 2^(2 f)).
    """
    import torch
    from crypten.mpc import MPCTensor
    from crypten.mpc.primitives import beaver

    f = int(crypten.cfg.encoder.precision_bits)
    xs = torch.zeros(n, d, dtype=torch.float64) if X_or_none is None else torch.from_numpy(X_or_none)
    qs = torch.zeros(d, dtype=torch.float64) if q_or_none is None else torch.from_numpy(q_or_none)
    ws = torch.zeros(n + 1, dtype=torch.float64) if weights is None else torch.from_numpy(weights)
    x_enc = crypten.cryptensor(xs, src=0)  # step 1
    q_enc = crypten.cryptensor(qs, src=1)
    w_enc = crypten.cryptensor(ws[:n], src=0)
    off_enc = crypten.cryptensor(ws[n:] * 2.0**f, src=0)  # the offset at scale 2^(2f)
    diff = x_enc - q_enc.unsqueeze(0)  # broadcasting: N x d
    sq = beaver.square(diff._tensor).sum(1)  # step 2: N d Beaver squares, summed at scale 2^(2f)
    sq.div_(2**f)  # one truncation per training point
    v = -MPCTensor.from_shares(sq.share, precision=f)
    v = (v + 1.0).relu() - 1.0  # step 3
    K = encrypted_exp(v, k)  # step 4
    y = beaver.mul(w_enc._tensor, K._tensor).sum()  # step 5, scale 2^(2f)
    y.share = y.share + off_enc._tensor.share  # raw share addition: no re-encoding between scales
    return y


def serve_one(
    model: KernelModelParams,
    ch: Channel,
    *,
    precision_bits: int = DEFAULT_PRECISION_BITS,
    k: int = EXP_K,
    host: str = "127.0.0.1",
    **_ignored: Any,
) -> CostReport:
    """Model owner's side (rank 0, the trusted first party): handshake, then CrypTen steps 1-5."""
    if model.kernel != "gaussian":
        raise ModelError(f"the CrypTen engine implements the Gaussian kernel; this model uses {model.kernel!r}")
    try:  # importing torch + CrypTen (~5 s) is not protocol cost; a failure is reported to the peer below
        import_crypten()
    except CrypTenUnavailable:
        pass
    t0 = time.perf_counter()
    hello = ch.recv_json(max_bytes=4096)
    try:
        nq = check_hello(hello, PROTOCOL_NAME, PROTOCOL_VERSION, MAX_QUERIES_PER_SESSION, model.n_features)
        import_crypten()
    except SecureMLError as exc:
        ch.send_json({"ok": False, "error": str(exc)})
        raise
    shift = _alpha_shift(model.dual_coef, precision_bits)
    c = float(model.sigma) * math.sqrt(2.0 ** (k + 1))
    port = _free_port()
    params = {
        "n_train": model.n_train, "n_features": model.n_features, "c": c, "k": k,
        "precision_bits": precision_bits, "alpha_shift": shift, "port": port, "provider": "TFP",
    }
    ch.send_json({"ok": True, "params": params})
    ready = ch.recv_json(max_bytes=4096)
    if not isinstance(ready, dict) or not ready.get("ready"):
        raise ProtocolError("client aborted")
    t_init = time.perf_counter()
    crypten = _init_crypten(0, host, port, precision_bits)
    t_on = time.perf_counter()
    try:
        X = np.ascontiguousarray(model.X_train / c)
        w = np.concatenate([model.dual_coef, [model.y_offset]]) / 2.0**shift
        for _ in range(nq):
            y = _compute(crypten, X, None, model.n_train, model.n_features, w, k)
            y.reveal(dst=1)
        stats = crypten.communicator.get().get_communication_stats()
    finally:
        crypten.uninit()
    t1 = time.perf_counter()
    ch.send_json({"done": True})
    return _cost("crypten-tfp", t0, t_init, t_on, t1, ch, stats, {"n_queries": nq, **params})


def predict(ch: Channel, queries: np.ndarray, *, host: str | None = None, **_ignored: Any) -> tuple[np.ndarray, CostReport]:
    """Query owner's side (rank 1): handshake, CrypTen steps 1-5, the prediction revealed to it."""
    Q = np.atleast_2d(np.asarray(queries, dtype=np.float64))
    if not np.isfinite(Q).all():
        raise ModelError("queries contain NaN or inf")
    import_crypten()
    t0 = time.perf_counter()
    p = send_hello(ch, PROTOCOL_NAME, PROTOCOL_VERSION, Q.shape[0], Q.shape[1], 4096)
    try:
        n, d, c, k = int(p["n_train"]), int(p["n_features"]), float(p["c"]), int(p["k"])
        bits, shift, port = int(p["precision_bits"]), int(p["alpha_shift"]), int(p["port"])
    except (KeyError, TypeError, ValueError):
        raise ProtocolError("malformed CrypTen parameters") from None
    if d != Q.shape[1] or not (1 <= n and 8 <= bits <= 28 and 0 <= k <= 8 and 0 < port < 65536 and c > 0):
        raise ProtocolError("CrypTen parameters out of range")
    if host is None:
        sock = getattr(ch, "sock", None)
        host = sock.getpeername()[0] if sock is not None else "127.0.0.1"
    ch.send_json({"ready": True})
    t_init = time.perf_counter()
    crypten = _init_crypten(1, host, port, bits)
    t_on = time.perf_counter()
    out = np.empty(Q.shape[0])
    try:
        for i, q in enumerate(Q):
            y = _compute(crypten, None, np.ascontiguousarray(q / c), n, d, None, k)
            raw = y.reveal(dst=1)  # ring element at scale 2^(2 bits)
            out[i] = float(raw.item()) / 2.0 ** (2 * bits) * 2.0**shift
        stats = crypten.communicator.get().get_communication_stats()
    finally:
        crypten.uninit()
    t1 = time.perf_counter()
    done = ch.recv_json(max_bytes=4096)
    if not isinstance(done, dict) or not done.get("done"):
        raise ProtocolError("server did not finish the session")
    return out, _cost("crypten-tfp", t0, t_init, t_on, t1, ch, stats, {"precision_bits": bits, "k": k})


def _cost(engine: str, t0: float, t_init: float, t_on: float, t1: float, ch: Channel,
          stats: dict[str, Any], extra: dict[str, Any]) -> CostReport:
    cb = int(stats.get("bytes", 0))
    return CostReport(
        engine=engine,
        wall_s=t1 - t0,
        offline_s=t_on - t0,  # handshake + torch.distributed/CrypTen set-up (TFP triples cost no traffic)
        online_s=t1 - t_on,
        bytes_sent=ch.bytes_sent + cb // 2,
        bytes_received=ch.bytes_received + cb - cb // 2,
        rounds=ch.rounds + int(stats.get("rounds", 0)),
        offline_bytes=ch.bytes_sent + ch.bytes_received,
        peak_rss_mb=peak_rss_mb(),
        extra={**extra, "crypten_bytes": cb, "crypten_rounds": int(stats.get("rounds", 0)),
               "crypten_comm_s": float(stats.get("time", 0.0)), "init_s": t_on - t_init},
    )


def run_local(model: KernelModelParams, queries: np.ndarray, timeout: float = 3600.0,
              **opts: Any) -> tuple[np.ndarray, CostReport, CostReport]:
    """Both parties as two spawned processes over TCP loopback: (predictions, client cost, server cost)."""
    return run_engine_local("protocols.baselines.crypten_engine", model, queries, timeout=timeout, **opts)
