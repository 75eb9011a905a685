"""What an attacker gets from each deployment of a model, behind one interface.

Four deployments of the same fitted model:

* :class:`ModelFileTarget` -- the model file is shared (white box: every array in it).
* :class:`PlaintextAPITarget` -- a prediction API: representation in, prediction out, in the clear.
* :class:`OTServiceTarget` -- the double-blind OT service (:mod:`protocols.krr`): the server never
  sees the query, the client never sees the model, and the client still gets the prediction.
* :class:`FHEServiceTarget` -- the CKKS service (:mod:`protocols.baselines.fhe`), same promise.

Every target has ``predict(Q)`` (counted), ``public`` (what the deployment publishes anyway:
kernel, width, N, input bounds ...) and ``cost()`` (queries, wall time and bytes per query).
The double-blind services return the *same numbers* as the API, up to their fixed-point error,
so any attack that only needs answers works on them unchanged. Running every attack query through
the real protocols would take hours, so they run a sample of ``protocol_sample`` queries through
the real protocol (real TCP between two processes), record how far each answer is from the
plaintext one, and answer the rest from the plaintext model -- after enforcing every restriction
the real service enforces (kernel kind; input bounds: refused queries come back as NaN), so an
attack the service would refuse fails here too. ``cost()`` reports measured per-query cost and
the extrapolated total.
"""
from __future__ import annotations

import abc
import multiprocessing as mp
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from attacks.reconstruction import AttackError
from protocols.common import KernelModelParams
from protocols.krr import ServedModel, predict, serve
from protocols.krr.handshake import MAX_QUERIES_PER_SESSION
from secureml.errors import ModelError, SecureMLError
from secureml.models.pipeline import MolecularModel

DEPLOYMENTS = ("model-file", "api", "ot", "fhe")


class EngineUnavailable(SecureMLError):
    """A deployment's engine cannot be used here (module missing or model kind not served)."""


@dataclass
class Cost:
    """Queries answered and what they cost; per-query figures are measured ones."""

    queries: int = 0
    protocol_queries: int = 0  # answered by the real protocol
    wall_s: float = 0.0  # measured, all queries answered so far (protocol + plaintext)
    protocol_wall_s: float = 0.0
    protocol_bytes: int = 0
    max_abs_deviation: float = 0.0  # |protocol answer - plaintext answer|, max over the sample
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        d: dict[str, Any] = {"queries": self.queries, "protocol_queries": self.protocol_queries}
        if self.protocol_queries:
            per_s = self.protocol_wall_s / self.protocol_queries
            per_b = self.protocol_bytes / self.protocol_queries
            d.update(seconds_per_query=per_s, bytes_per_query=per_b,
                     extrapolated_seconds=per_s * self.queries, extrapolated_bytes=per_b * self.queries,
                     max_abs_deviation=self.max_abs_deviation)
        else:
            d.update(seconds_per_query=self.wall_s / max(self.queries, 1), bytes_per_query=0.0,
                     extrapolated_seconds=self.wall_s, extrapolated_bytes=0.0, max_abs_deviation=0.0)
        d.update(self.extra)
        return d


def _as_molecular_model(model: Any) -> Any:
    if isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
        return MolecularModel.load(str(model))
    return model


class Target:
    """Base class: a deployment answering representation queries."""

    name = "target"
    white_box = False

    def __init__(self, model: Any) -> None:
        self.model = _as_molecular_model(model)
        self.estimator = getattr(self.model, "estimator", self.model)
        self._cost = Cost()

    # what the deployment publishes anyway
    @property
    def public(self) -> dict[str, Any]:
        est = self.estimator
        d: dict[str, Any] = {"estimator": type(est).__name__}
        for k in ("kernel", "sigma", "lam"):
            if hasattr(est, k):
                d[k] = getattr(est, k)
        if hasattr(est, "X_fit_"):
            d["n_train"] = int(est.X_fit_.shape[0])
            d["n_features"] = int(est.X_fit_.shape[1])
        elif hasattr(est, "W_"):
            d["n_features"] = int(est.W_.shape[0])
        rep = getattr(self.model, "representation", None)
        if rep is not None:
            d["representation"] = rep.get_params()
        return d

    def _plain(self, Q: np.ndarray) -> np.ndarray:
        return np.asarray(self.estimator.predict(Q), dtype=np.float64)

    def predict(self, Q: np.ndarray) -> np.ndarray:
        Q = np.atleast_2d(np.asarray(Q, dtype=np.float64))
        t0 = time.perf_counter()
        out = self._plain(Q)
        self._cost.wall_s += time.perf_counter() - t0
        self._cost.queries += len(Q)
        return out

    def cost(self) -> dict[str, Any]:
        return self._cost.summary()

    def reset(self) -> None:
        self._cost = Cost()


class ModelFileTarget(Target):
    """White box: the attacker holds the model file (path or loaded MolecularModel)."""

    name = "model-file"
    white_box = True


class PlaintextAPITarget(Target):
    """Black box in the clear: query representation -> prediction; queries are counted."""

    name = "api"


class _ServiceTarget(Target, abc.ABC):
    """Common logic of the two double-blind services (sampled protocol runs, plaintext rest)."""

    def __init__(self, model: Any, protocol_sample: int = 8, seed: int = 0) -> None:
        super().__init__(model)
        self.protocol_sample = int(protocol_sample)
        self.seed = seed
        self._check_engine()

    @abc.abstractmethod
    def _check_engine(self) -> None:
        """Import the engine and check it serves this model (raise EngineUnavailable if not)."""

    @abc.abstractmethod
    def _accepted(self, Q: np.ndarray) -> np.ndarray:
        """Boolean mask of the queries the real service would accept."""

    @abc.abstractmethod
    def _protocol(self, Q: np.ndarray) -> tuple[np.ndarray, float, int]:
        """Answer Q through the real protocol: (answers, seconds, bytes both ways)."""

    def predict(self, Q: np.ndarray) -> np.ndarray:
        """Answers; NaN where the real service would refuse the query (counted as ``refused``)."""
        Q = np.atleast_2d(np.asarray(Q, dtype=np.float64))
        ok = self._accepted(Q)
        t0 = time.perf_counter()
        out = np.full(len(Q), np.nan)
        if ok.any():
            out[ok] = self._plain(Q[ok])
        self._cost.wall_s += time.perf_counter() - t0
        self._cost.extra["refused"] = int(self._cost.extra.get("refused", 0) + (~ok).sum())
        room = self.protocol_sample - self._cost.protocol_queries
        good = np.flatnonzero(ok)
        if room > 0 and good.size:
            # spread the sample over the batch: the first, the last and some in between
            idx = good[np.unique(np.linspace(0, good.size - 1, min(room, good.size)).round().astype(int))]
            ans, secs, nbytes = self._protocol(Q[idx])
            self._cost.protocol_queries += len(idx)
            self._cost.protocol_wall_s += secs
            self._cost.protocol_bytes += nbytes
            dev = float(np.max(np.abs(ans - out[idx])))
            self._cost.max_abs_deviation = max(self._cost.max_abs_deviation, dev)
            out[idx] = ans  # those answers are the protocol's own
        self._cost.queries += len(Q)
        return out


def _ot_server_proc(served: Any, port_q: Any, n_sessions: int) -> None:
    serve(served, "127.0.0.1", 0, max_sessions=n_sessions, concurrency=1,
          on_ready=lambda p: port_q.put(p))


class OTServiceTarget(_ServiceTarget):
    """The double-blind OT service: exact Gaussian and Laplacian KRR (and linear compact models).

    Queries must lie within the public feature bounds the server announces (the protocol refuses
    others), so attacks that need far-away queries fail here, as they would against the service.
    """

    name = "ot"

    def _check_engine(self) -> None:
        try:
            # query-only attacks see answers, which are the same function in both security modes: the
            # semi-honest protocols give them at a fraction of the cost (the Laplacian's client-malicious
            # check alone sends ~145 MB per query at d = 276)
            self.served = (ServedModel.from_molecular_model(self.model, security="semi-honest")
                           if hasattr(self.model, "representation")
                           else ServedModel(KernelModelParams.from_estimator(self.estimator), security="semi-honest"))
        except ModelError as exc:
            raise EngineUnavailable(f"the OT service does not serve this model: {exc}") from exc
        self.public_params = self.served.public

    @property
    def public(self) -> dict[str, Any]:
        d = super().public
        pp = self.public_params
        d.update(n_train=pp.n_train, feature_lo=pp.feature_lo, feature_hi=pp.feature_hi,
                 sigma=pp.sigma, frac_bits=pp.frac_bits)
        return d

    def _plain(self, Q: np.ndarray) -> np.ndarray:
        # the service computes on the protocol's fixed-point grid: answer the rounded query
        pp = self.public_params
        if pp.kind == "linear":
            return super()._plain(Q)
        scale = float(1 << pp.frac_bits)
        top = ((1 << pp.x_bits) - 1) / scale
        return super()._plain(pp.feature_lo + np.minimum(np.rint((Q - pp.feature_lo) * scale) / scale, top))

    def _accepted(self, Q: np.ndarray) -> np.ndarray:
        pp = self.public_params
        if Q.shape[1] != pp.n_features:
            raise AttackError(f"the OT service expects {pp.n_features} features, got {Q.shape[1]}")
        # the client library checks the public bounds before anything private moves
        return np.isfinite(Q).all(1) & (Q.min(1) >= pp.feature_lo) & (Q.max(1) <= pp.feature_hi)

    def _protocol(self, Q: np.ndarray) -> tuple[np.ndarray, float, int]:
        chunks = [Q[s:s + MAX_QUERIES_PER_SESSION] for s in range(0, len(Q), MAX_QUERIES_PER_SESSION)]
        ctx = mp.get_context("spawn")
        port_q = ctx.Queue()
        proc = ctx.Process(target=_ot_server_proc, args=(self.served, port_q, len(chunks)), daemon=True)
        proc.start()
        try:
            port = port_q.get(timeout=120)
            outs, secs, nbytes = [], 0.0, 0
            for chunk in chunks:
                t0 = time.perf_counter()
                preds, cost = predict(f"127.0.0.1:{port}", chunk)
                secs += time.perf_counter() - t0
                nbytes += cost.bytes_sent + cost.bytes_received
                outs.append(np.asarray(preds, dtype=np.float64))
        finally:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.terminate()
        return np.concatenate(outs), secs, nbytes


class FHEServiceTarget(_ServiceTarget):
    """The CKKS service (Gaussian kernel): queries must lie in the public input ball."""

    name = "fhe"

    def _check_engine(self) -> None:
        try:
            from protocols.baselines.fhe import plan
        except ImportError as exc:  # pragma: no cover - depends on the checkout
            raise EngineUnavailable(f"FHE engine not available: {exc}") from exc
        self.params = KernelModelParams.from_estimator(self.estimator) if hasattr(self.estimator, "dual_coef_") \
            else None
        if self.params is None:
            raise EngineUnavailable("the FHE service serves exact KRR models only")
        try:
            self.fhe_params = plan(self.params)
        except ModelError as exc:
            raise EngineUnavailable(f"the FHE service does not serve this model: {exc}") from exc

    @property
    def public(self) -> dict[str, Any]:
        d = super().public
        d.update(query_radius=float(self.fhe_params.query_radius), n_train=self.params.n_train)
        return d

    def _accepted(self, Q: np.ndarray) -> np.ndarray:
        if Q.shape[1] != self.params.n_features:
            raise AttackError(f"the FHE service expects {self.params.n_features} features, got {Q.shape[1]}")
        # the client's range check: the exp approximation only holds inside the public ball
        r = np.linalg.norm(Q - np.asarray(self.fhe_params.center)[None, :], axis=1)
        return np.isfinite(Q).all(1) & (r <= self.fhe_params.query_radius)

    def _protocol(self, Q: np.ndarray) -> tuple[np.ndarray, float, int]:
        from protocols.baselines.fhe import run_local

        t0 = time.perf_counter()
        preds, ccost, _scost = run_local(self.params, Q)
        secs = time.perf_counter() - t0
        return np.asarray(preds, dtype=np.float64), secs, int(ccost.bytes_sent + ccost.bytes_received)


def make_target(kind: str, model: Any, protocol_sample: int = 8) -> Target:
    """The target for deployment ``kind`` (one of :data:`DEPLOYMENTS`)."""
    if kind == "model-file":
        return ModelFileTarget(model)
    if kind == "api":
        return PlaintextAPITarget(model)
    if kind == "ot":
        return OTServiceTarget(model, protocol_sample=protocol_sample)
    if kind == "fhe":
        return FHEServiceTarget(model, protocol_sample=protocol_sample)
    raise AttackError(f"unknown target {kind!r}; use one of {', '.join(DEPLOYMENTS)}")
