"""Types shared by every two-party engine (OT-based, FHE, CrypTen, generic MPC, plaintext).

Every engine answers the same question -- "predict this query with that kernel model" -- and
reports its cost in the same :class:`CostReport`, so benchmarks can put engines side by side.
"""
from __future__ import annotations

import os
import resource
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from secureml.errors import ModelError, ProtocolError


@dataclass
class KernelModelParams:
    """The arrays of an exact KRR model, as the model owner holds them.

    prediction(q) = y_offset + sum_i dual_coef[i] * k(X_train[i], q), with
    k = exp(-||x - q||_2^2 / (2 sigma^2)) ("gaussian") or exp(-||x - q||_1 / sigma) ("laplacian").
    """

    X_train: np.ndarray
    dual_coef: np.ndarray
    y_offset: float
    kernel: str
    sigma: float
    #: ||x_i||^2 of the training rows, computed on the first Gaussian prediction (plaintext cache)
    _xx: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.X_train = np.ascontiguousarray(self.X_train, dtype=np.float64)
        self.dual_coef = np.ascontiguousarray(self.dual_coef, dtype=np.float64).ravel()
        if self.X_train.ndim != 2 or self.X_train.shape[0] != self.dual_coef.shape[0]:
            raise ModelError(
                f"X_train {self.X_train.shape} and dual_coef {self.dual_coef.shape} do not match"
            )
        if self.kernel not in ("gaussian", "laplacian"):
            raise ModelError(f"unknown kernel {self.kernel!r} (gaussian or laplacian)")
        if not np.isfinite(self.X_train).all() or not np.isfinite(self.dual_coef).all():
            raise ModelError("model arrays contain NaN or inf")

    @property
    def n_train(self) -> int:
        return int(self.X_train.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X_train.shape[1])

    def predict(self, Q: np.ndarray) -> np.ndarray:
        """Plaintext reference prediction, chunked over training points (float64)."""
        Q = np.atleast_2d(np.asarray(Q, dtype=np.float64))
        out = np.full(Q.shape[0], float(self.y_offset))
        if self.kernel == "gaussian" and self._xx is None:
            self._xx = (self.X_train * self.X_train).sum(1)  # cached: the fair plaintext denominator
        for start in range(0, self.n_train, 4096):
            X = self.X_train[start : start + 4096]
            if self.kernel == "gaussian":
                d = (
                    (Q * Q).sum(1)[:, None]
                    - 2.0 * Q @ X.T
                    + self._xx[None, start : start + 4096]
                )
                K = np.exp(-np.maximum(d, 0.0) / (2.0 * self.sigma**2))
            else:
                d = np.abs(Q[:, None, :] - X[None, :, :]).sum(-1)
                K = np.exp(-d / self.sigma)
            out += K @ self.dual_coef[start : start + 4096]
        return out

    @classmethod
    def from_estimator(cls, est: Any) -> "KernelModelParams":
        """Build from a fitted :class:`secureml.models.krr.KernelRidge`-like estimator."""
        return cls(
            X_train=est.X_fit_,
            dual_coef=est.dual_coef_,
            y_offset=float(est.y_offset_),
            kernel=est.kernel,
            sigma=float(est.sigma),
        )


@dataclass
class CostReport:
    """What one protocol run cost one party (or both, summed where said)."""

    engine: str
    wall_s: float = 0.0  # whole run, set-up included
    offline_s: float = 0.0  # input-independent preprocessing (base OTs, OT extension, keys)
    online_s: float = 0.0  # input-dependent phase
    bytes_sent: int = 0  # by the party that reports
    bytes_received: int = 0
    rounds: int = 0
    offline_bytes: int = 0  # of the traffic above, how much was preprocessing
    peak_rss_mb: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return self.bytes_sent + self.bytes_received

    @classmethod
    def from_channel(cls, engine: str, ch: Any, t0: float, t_off: float, t1: float, off_bytes: int,
                     extra: dict[str, Any] | None = None, peak_mb: float | None = None) -> "CostReport":
        """One party's cost of a session on ``ch``: set-up from t0 to t_off, online to t1.
        ``peak_mb``: the peak memory when the caller read it already (:func:`peak_rss_mb`)."""
        return cls(engine=engine, wall_s=t1 - t0, offline_s=t_off - t0, online_s=t1 - t_off,
                   bytes_sent=ch.bytes_sent, bytes_received=ch.bytes_received, rounds=ch.rounds,
                   offline_bytes=off_bytes, peak_rss_mb=peak_rss_mb() if peak_mb is None else peak_mb,
                   extra=dict(extra or {}))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["total_bytes"] = self.total_bytes
        return d


#: (pid, descriptor of /proc/<pid>/status) kept open by peak_rss_mb
_STATUS: tuple[int, int] | None = None


def peak_rss_mb() -> float:
    """Peak resident memory of this process image, in MB (VmHWM from /proc/self/status).

    ``getrusage(RUSAGE_SELF).ru_maxrss`` survives exec on Linux, so a child spawned by a big
    parent would report the parent's peak; VmHWM belongs to the current address space only.
    Falls back to ru_maxrss where /proc is unavailable.
    """
    global _STATUS
    try:  # one binary read and a search: ~10x cheaper than iterating the text lines (every session reports it)
        # the file stays open (one pread per report, no open/close); by pid: a forked child opens its own
        pid = os.getpid()
        if _STATUS is None or _STATUS[0] != pid:
            _STATUS = (pid, os.open(f"/proc/{pid}/status", os.O_RDONLY | os.O_CLOEXEC))
        data = os.pread(_STATUS[1], 8192, 0)
        at = data.find(b"VmHWM:")
        if at >= 0:
            return float(data[at + 6:data.index(b"kB", at)]) / 1024.0
    except (OSError, ValueError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def check_hello(hello: Any, protocol: str, version: int, max_queries: int,
                n_features: int | None = None) -> int:
    """Validate a client's session hello; returns the number of queries.

    Every engine's session starts with ``{protocol, version, n_queries[, n_features]}``; a wrong
    value is a :class:`~secureml.errors.ProtocolError` with a message the client is sent.
    """
    if not isinstance(hello, dict) or hello.get("protocol") != protocol:
        raise ProtocolError(f"not a {protocol} client")
    if hello.get("version") != version:
        raise ProtocolError(f"protocol version mismatch: client speaks {hello.get('version')}, server {version}")
    nq = hello.get("n_queries")
    if not isinstance(nq, int) or isinstance(nq, bool) or not 1 <= nq <= max_queries:
        raise ProtocolError(f"n_queries must be an integer in 1..{max_queries}")
    if n_features is not None and hello.get("n_features") != n_features:
        raise ProtocolError(f"the model expects {n_features} features, client has {hello.get('n_features')}")
    return nq


def send_hello(ch: Any, protocol: str, version: int, n_queries: int, n_features: int | None = None,
               max_reply: int = 1 << 20) -> Any:
    """Client side of the session hello: send it, return the server's ``params`` (or raise)."""
    hello: dict[str, Any] = {"protocol": protocol, "version": version, "n_queries": int(n_queries)}
    if n_features is not None:
        hello["n_features"] = int(n_features)
    ch.send_json(hello)
    reply = ch.recv_json(max_bytes=max_reply)
    if not isinstance(reply, dict) or not reply.get("ok"):
        err = reply.get("error") if isinstance(reply, dict) else "malformed reply"
        raise ProtocolError(f"server refused: {err}")
    return reply.get("params")
