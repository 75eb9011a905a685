"""Every attack against every defense, with the adaptive attacker each defense invites.

Scenario (as :mod:`attacks.scenario`): the model owner trains on the first N molecules of the
embedded split (sorted Coulomb matrix, 29 atoms, 435 features; U0 atomization energy, kcal/mol);
the attacker owns the 784 public test-split molecules with their labels and knows every public
parameter, including the defense's mechanism (grid, noise distribution), as the protocols
publish it.

Defenses (``DEFENSES``; "family" and "strength"):
  none           the undefended model;
  dressed        reference: the same model on labels minus a public dressed-atom baseline (per-
                 element energies fitted on public molecules), no privacy -- the DP models use
                 that baseline, so their utility cost is measured against this row;
  round g        answers rounded half up on the grid g (kcal/mol) -- exact inside the OT protocols
                 (:mod:`protocols.krr.defense`), so the plaintext mechanism here *is* the service's;
  noise s        fresh Gaussian noise, sd s, on every answer (OT and FHE services);
  noise+round    both (noise first);
  prf-noise s    deterministic noise per query (a keyed PRF of the query quantised to a 2^-4 cell):
                 repeating a query returns the same answer. *Simulated only*: computing a PRF of the
                 client's query inside the two-party protocol needs a garbled PRF; measured here to
                 see whether it would be worth building;
  ridge lambda   a stronger ridge at training time (exact KRR); full run also with the dressed-atom
                 baseline ("dressed+ridge");
  dp eps         differentially private random-feature ridge (:mod:`secureml.models.dp`),
                 (eps, 1e-5)-DP; serves through the OT linear protocol.

Attacks and their adaptive variants (the reported value is the best variant, i.e. an upper
bound on what this attacker family reaches; each variant's value is kept in the row):
  mia         loss-threshold membership inference (Yeom et al. 2018) on 784 members + 784
              non-members; AUC, TPR at 1% and 0.1% FPR (0.1% is read at 0 of 784 non-members).
              Variants: single query; the same query repeated R times and averaged (defeats fresh
              noise); dithering -- R queries at x + N(0, tau^2) perturbations, averaged (defeats
              rounding and per-query deterministic noise).
  rank-kink   label-free kink ranking of a 100-member + 784-public pool (Laplacian KRR), P@50.
              Variants: finite-difference step h in {1e-3, 0.1, 10} (a rounding-aware attacker
              picks a step whose kink signal exceeds the grid), repeats R averaged.
  extract     compact model (random Fourier features, F = 1,024 in quick mode, 4,096 in full):
              the client computes its own features, so it can send +-c Hadamard rows as
              feature vectors and solve for the weights by least squares from Q = F (one
              budget) or 16 F answers; then least-squares pool membership from the extracted
              weights (:func:`attacks.whitebox.pool_membership_from_weights`) on 200 members +
              784 public molecules; AUC and relative weight error.
  reconstruct-kink  the exact kink reconstruction of a 32-molecule Laplacian model (docs/attacks.md
              section 3) by an attacker that knows sigma and sets its kink detector's threshold
              to the defense's error, with the measured assembly (``membership="measure"``);
              fraction of training points recovered to 1e-3.
Utility: mean absolute error of the defended answers on the 784 public molecules (kcal/mol),
and its increase over the undefended model (%).
"""
from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np

from attacks.metrics import precision_at_k, roc_auc, tpr_at_fpr
from protocols.krr.defense import OutputDefense
from secureml.models import _KRR_DEFAULTS
from secureml.models.krr import KernelRidge
from secureml.models.random_features import RandomFourierRidge
from secureml.models.dp import DPRandomFeatureRidge
from secureml.models.dp import analytic_gaussian_sigma, ridge_sensitivity
from attacks.scenario import embedded_features
from secureml.data import embedded_split
from secureml.models.baseline import composition
from attacks.ranking import kink_score
from attacks import reconstruction, scenario
from attacks.experiments import CM_RANGE
from attacks.whitebox import pool_membership_from_weights

Progress = Callable[[str], None] | None


@dataclass(frozen=True)
class Defense:
    family: str  # none, round, noise, noise+round, prf-noise, ridge, dp
    strength: float = 0.0  # grid / sd / lambda / epsilon
    grid: float | None = None  # for noise+round
    # where it applies: output defenses in the services; training-time ones in every deployment
    deployments: tuple[str, ...] = ("api", "ot", "fhe")

    @property
    def label(self) -> str:
        if self.family == "none":
            return "none"
        if self.family == "dressed":
            return "none, dressed-atom baseline (reference for DP)"
        if self.family == "noise+round":
            return f"noise {self.strength:g} + round {self.grid:g}"
        unit = {"round": " kcal/mol", "noise": " kcal/mol", "prf-noise": " kcal/mol"}.get(self.family, "")
        name = {"ridge": "ridge lambda", "dp": "DP eps",
                "dressed+ridge": "dressed atoms + ridge lambda"}.get(self.family, self.family)
        return f"{name} {self.strength:g}{unit}"

    @property
    def output(self) -> OutputDefense | None:
        if self.family == "round":
            return OutputDefense.from_options(round_to=self.strength)
        if self.family == "noise":
            return OutputDefense.from_options(noise=self.strength)
        if self.family == "noise+round":
            return OutputDefense.from_options(round_to=self.grid, noise=self.strength)
        return None


def defenses(quick: bool) -> list[Defense]:
    svc = ("api", "ot")  # rounding is not available in CKKS (FHE): noise only there
    out = [Defense("none"), Defense("dressed")]
    grids = (1 / 128, 1.0, 4.0) if quick else (1 / 128, 1 / 16, 1.0, 4.0, 16.0)
    out += [Defense("round", g, deployments=svc) for g in grids]
    sds = (1.0, 4.0, 16.0) if quick else (0.5, 1.0, 4.0, 8.0, 16.0)
    out += [Defense("noise", s) for s in sds]
    out += [Defense("noise+round", 4.0, grid=1.0, deployments=svc)]
    out += [Defense("prf-noise", s, deployments=("simulated",)) for s in ((4.0,) if quick else (4.0, 16.0))]
    out += [Defense("ridge", lam) for lam in ((1e-2, 1.0) if quick else (1e-4, 1e-2, 1e-1, 1.0))]
    # a training-time combination: public dressed-atom baseline + stronger ridge
    out += [Defense("dressed+ridge", lam, deployments=("api", "ot", "fhe")) for lam in ((1e-2,) if quick else (1e-2, 1e-1))]
    out += [Defense("dp", eps) for eps in ((1.0, 100.0) if quick else (1.0, 10.0, 100.0, 1000.0))]
    return out


# ---- answering queries under a defense -------------------------------------------------------
def prf_noise(Q: np.ndarray, sd: float, key: bytes = b"server-secret", cell: float = 1 / 16) -> np.ndarray:
    """Deterministic N(0, sd^2) noise per query: a keyed hash of the query on a 2^-4 grid."""
    cells = np.floor(np.asarray(Q) / cell).astype(np.int64)
    u = np.empty(len(cells))
    for i, row in enumerate(cells):
        h = hashlib.blake2b(row.tobytes(), key=key, digest_size=16).digest()
        a, b = int.from_bytes(h[:8], "little"), int.from_bytes(h[8:], "little")
        u1, u2 = (a >> 11) / 2.0**53 + 2.0**-54, (b >> 11) / 2.0**53
        u[i] = math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)
    return sd * u


class Oracle:
    """Answers of one model under one output defense; counts queries."""

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray], d: Defense, seed: int = 0) -> None:
        self.f, self.d = predict, d
        self.rng = np.random.default_rng(seed)
        self.queries = 0

    def clean(self, Q: np.ndarray) -> np.ndarray:
        return np.asarray(self.f(Q), dtype=np.float64)

    def defend(self, Q: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The defended answers for exact answers y of queries Q (one fresh draw)."""
        self.queries += len(y)
        od = self.d.output
        if od is not None:
            return od.apply(y, self.rng)
        if self.d.family == "prf-noise":
            return y + prf_noise(Q, self.d.strength)
        return y

    def __call__(self, Q: np.ndarray) -> np.ndarray:
        return self.defend(Q, self.clean(Q))

    def repeated(self, Q: np.ndarray, R: int) -> np.ndarray:
        """Each query asked R times, answers averaged (exact answers computed once)."""
        y = self.clean(Q)
        return np.mean([self.defend(Q, y) for _ in range(R)], axis=0)

    def dithered(self, Q: np.ndarray, R: int, tau: float, lo: float, hi: float, rng: np.random.Generator
                 ) -> np.ndarray:
        """R perturbed copies of every query (N(0, tau^2) on each feature, kept within the
        service's public bounds), answers averaged."""
        acc = np.zeros(len(Q))
        for _ in range(R):
            P = np.clip(Q + rng.normal(0.0, tau, Q.shape), lo, hi)
            acc += self.defend(P, self.clean(P))
        return acc / R


# ---- the models ------------------------------------------------------------------------------
@dataclass
class Models:
    """The model owner's models for one run (fitted once, shared by all defenses)."""

    X: np.ndarray
    y: np.ndarray
    train: np.ndarray
    public: np.ndarray
    lo: float
    hi: float
    counts: np.ndarray  # atoms per element (H, C, N, O, F) of every molecule
    cache: dict[str, Any] = field(default_factory=dict)

    def krr(self, kernel: str, lam: float | None = None, n: int = 1000) -> Any:
        d = _KRR_DEFAULTS[kernel]
        lam = float(d["lam"] if lam is None else lam)
        key = f"krr-{kernel}-{lam:g}-{n}"
        if key not in self.cache:
            self.cache[key] = KernelRidge(kernel, float(d["sigma"]), lam).fit(self.X[self.train[:n]],
                                                                              self.y[self.train[:n]])
        return self.cache[key]

    def baseline(self) -> np.ndarray:
        """Dressed-atom energies sum_Z n_Z e_Z for every molecule, e_Z fitted on the *public*
        molecules only (so the DP model's label centre is public)."""
        if "baseline" not in self.cache:
            e, *_ = np.linalg.lstsq(self.counts[self.public].astype(float), self.y[self.public], rcond=None)
            self.cache["baseline"] = self.counts.astype(float) @ e
        return self.cache["baseline"]

    def dressed_krr(self, kernel: str, n: int = 1000, lam: float | None = None) -> Any:
        """The recipe's exact KRR on labels minus the public dressed-atom baseline (the same
        pipeline as the DP model, without privacy: the fair utility reference for DP rows)."""
        key = f"dressed-krr-{kernel}-{n}-{lam}"
        if key not in self.cache:
            d, tr, base = _KRR_DEFAULTS[kernel], self.train[:n], self.baseline()
            est = KernelRidge(kernel, float(d["sigma"]), float(d["lam"] if lam is None else lam)).fit(
                self.X[tr], self.y[tr] - base[tr])
            self.cache[key] = _Shifted(est, self)
        return self.cache[key]

    def dressed_rff(self, n_features: int, n: int) -> Any:
        key = f"dressed-rff-{n_features}-{n}"
        if key not in self.cache:
            tr, base = self.train[:n], self.baseline()
            est = RandomFourierRidge("gaussian", 100.0, n_features, 1e-8).fit(self.X[tr], self.y[tr] - base[tr])
            self.cache[key] = _Shifted(est, self)
        return self.cache[key]

    def rff(self, n_features: int, n: int = 1000, dp_eps: float | None = None, seed: int = 0) -> Any:
        key = f"rff-{n_features}-{n}-{dp_eps}"
        if key not in self.cache:
            Xt, yt = self.X[self.train[:n]], self.y[self.train[:n]]
            if dp_eps is None:
                est = RandomFourierRidge("gaussian", 100.0, n_features, 1e-8, seed=seed).fit(Xt, yt)
            else:
                est = self._dp(n_features, n, dp_eps, seed)
            self.cache[key] = est
        return self.cache[key]

    def _dp(self, n_features: int, n: int, eps: float, seed: int) -> Any:
        """DP random-feature ridge on labels minus the public dressed-atom baseline; the label
        bound Y and lambda are chosen on public molecules only (:func:`dp_lambda`)."""
        base = self.baseline()
        r_pub = self.y[self.public] - base[self.public]
        Y = float(np.percentile(np.abs(r_pub), 95))
        lam = dp_lambda(eps, n, self.X[self.public], r_pub, Y, n_features, seed)
        tr = self.train[:n]
        est = DPRandomFeatureRidge("gaussian", 100.0, n_features, lam, seed=seed, epsilon=eps, delta=1e-5,
                                   label_bound=Y, label_center=0.0, noise_seed=seed + 1)
        est.fit(self.X[tr], self.y[tr] - base[tr])
        return _Shifted(est, self)


class _Shifted:
    """A model on baseline-subtracted labels, answering in absolute energies (the baseline is
    public: the client adds it itself, as the services do for dressed-atom models)."""

    def __init__(self, est: Any, models: "Models") -> None:
        self.est, self.models = est, models
        for k in ("W_", "b_", "coef_", "y_offset_", "privacy_", "sigma"):
            if hasattr(est, k):
                setattr(self, k, getattr(est, k))
        self._index = {row.tobytes(): i for i, row in enumerate(models.X)}

    def _base(self, X: np.ndarray) -> np.ndarray:
        base = self.models.baseline()
        return np.array([base[self._index[r.tobytes()]] if r.tobytes() in self._index else 0.0 for r in X])

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.est.predict(X) + self._base(np.asarray(X))


def dp_lambda(eps: float, n: int, X_pub: np.ndarray, r_pub: np.ndarray, Y: float, n_features: int,
              seed: int = 0) -> float:
    """Ridge for the DP model, chosen on public data only: the lambda minimising (validation MAE
    of a non-private model fitted on half the public molecules, rescaled to n) + (expected |noise|
    of the release, sqrt(2/pi) noise_sd ||phi||, ||phi|| ~ 1)."""
    half = len(r_pub) // 2
    best, best_cost = 1.0, math.inf
    for lam in (0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0):
        m = RandomFourierRidge("gaussian", 100.0, n_features, lam * half / n, seed=seed).fit(
            X_pub[:half], np.clip(r_pub[:half], -Y, Y))
        bias = float(np.mean(np.abs(m.predict(X_pub[half:]) - r_pub[half:])))
        sd = analytic_gaussian_sigma(eps, 1e-5, ridge_sensitivity(n, lam, Y))
        cost = bias + math.sqrt(2 / math.pi) * sd
        if cost < best_cost:
            best, best_cost = lam, cost
    return best


def load_models(seed: int = 0) -> Models:
    data, X, y = embedded_features(29, "sorted", None)
    train, public = embedded_split(seed=seed)
    rng = np.random.default_rng(seed)
    train = rng.permutation(np.asarray(train))
    hi = float(2 ** math.ceil(math.log2(X.max() * 1.0001)))  # the OT service's public bound
    return Models(np.asarray(X), np.asarray(y), train, np.asarray(public), 0.0, hi,
                  composition(data, [1, 6, 7, 8, 9]))


def _model_for(models: Models, d: Defense, kernel: str) -> Any:
    if d.family == "dressed":
        return models.dressed_krr(kernel)
    if d.family == "dressed+ridge":
        return models.dressed_krr(kernel, lam=d.strength)
    if d.family == "ridge":
        return models.krr(kernel, d.strength)
    if d.family == "dp":
        return models.rff(4096, dp_eps=d.strength)
    return models.krr(kernel)


# ---- attacks ---------------------------------------------------------------------------------
def _mia_scores(ans: np.ndarray, y: np.ndarray) -> np.ndarray:
    return -np.log(np.abs(ans - y) + 1e-12)


def _mia_metrics(s: np.ndarray, lab: np.ndarray) -> dict[str, float]:
    return {"auc": roc_auc(s, lab), "tpr_1pct": tpr_at_fpr(s, lab, 0.01), "tpr_01pct": tpr_at_fpr(s, lab, 0.001)}


def attack_mia(models: Models, d: Defense, quick: bool, seed: int = 0) -> dict[str, Any]:
    """Loss-threshold MIA with its adaptive variants (see module docstring)."""
    rng = np.random.default_rng(seed)
    est = _model_for(models, d, "gaussian")
    n_mem = 784
    mem = models.train[:1000][rng.permutation(1000)[:n_mem]] if d.family != "dp" else models.train[:1000][:n_mem]
    idx = np.r_[mem, models.public]
    lab = np.r_[np.ones(n_mem), np.zeros(len(models.public))].astype(int)
    Xc, yc = models.X[idx], models.y[idx]
    orc = Oracle(est.predict, d, seed)
    variants: dict[str, dict[str, float]] = {}
    variants["1 query"] = _mia_metrics(_mia_scores(orc(Xc), yc), lab)
    R = 16 if quick else 64
    if d.family in ("noise", "noise+round"):
        variants[f"avg {R} repeats"] = _mia_metrics(_mia_scores(orc.repeated(Xc, R), yc), lab)
    if d.family in ("round", "noise+round", "prf-noise"):
        for tau in ((0.005, 0.05) if quick else (0.005, 0.05, 0.5)):
            a = orc.dithered(Xc, R, tau, models.lo, models.hi, np.random.default_rng(seed + 7))
            variants[f"dither {R} tau {tau:g}"] = _mia_metrics(_mia_scores(a, yc), lab)
    best = max(variants, key=lambda k: (variants[k]["tpr_1pct"], variants[k]["auc"]))
    pub = models.public
    util = Oracle(est.predict, d, seed + 99)
    mae = float(np.mean(np.abs(util(models.X[pub]) - models.y[pub])))
    v = variants[best]
    return {"attack": "mia", "metric": "TPR at 1% FPR", "value": v["tpr_1pct"], "chance": 0.01,
            "auc": v["auc"], "tpr_01pct": v["tpr_01pct"], "attacker": best, "variants": variants,
            "mae": mae, "queries_per_target": _queries_of(best)}


def attack_rank_kink(models: Models, d: Defense, quick: bool, seed: int = 0) -> dict[str, Any]:
    """Label-free kink ranking on the Laplacian model, with rounding-aware steps and repeats."""
    if d.family in ("dp", "dressed", "dressed+ridge"):
        return {"attack": "rank-kink", "skipped": "DP models are random-feature models: no kinks" if d.family == "dp"
                else "dressed-atom rows: measured for membership and extraction only"}
    if d.family == "prf-noise":
        return {"attack": "rank-kink", "skipped": "not simulated (the kink filter's queries each get independent PRF noise, as fresh noise)"}
    rng = np.random.default_rng(seed)
    est = _model_for(models, d, "laplacian")
    n_mem, n_pub = (60, 440) if quick else (100, 784)
    pool = np.r_[models.train[:1000][rng.permutation(1000)[:n_mem]], rng.permutation(models.public)[:n_pub]]
    lab = np.r_[np.ones(n_mem), np.zeros(n_pub)].astype(int)
    Xp = models.X[pool]
    orc = Oracle(est.predict, d, seed)
    R = 8 if quick else 64
    variants: dict[str, dict[str, float]] = {}
    for h in ((1e-3, 0.1) if quick else (1e-3, 0.1, 10.0)):
        reps = (1, R) if d.family in ("noise", "noise+round") else (1,)
        for r in reps:
            pred = (lambda Q, r=r: orc.repeated(Q, r)) if r > 1 else orc
            s, q = kink_score(pred, Xp, float(est.sigma), h=h, lo=models.lo, hi=models.hi)
            variants[f"h {h:g}" + (f", avg {r} repeats" if r > 1 else "")] = {
                "p_at_50": precision_at_k(s, lab, 50), "auc": roc_auc(s, lab), "queries": q * r}
    best = max(variants, key=lambda k: variants[k]["p_at_50"])
    pub = models.public
    mae = float(np.mean(np.abs(Oracle(est.predict, d, seed + 99)(models.X[pub]) - models.y[pub])))
    return {"attack": "rank-kink", "metric": "P@50", "value": variants[best]["p_at_50"],
            "chance": n_mem / (n_mem + n_pub), "auc": variants[best]["auc"], "attacker": best,
            "variants": variants, "mae": mae, "queries_per_target": 9 * _queries_of(best)}


#: the kink attack's assembly: the strongest one (docs/attacks.md section 3), as a real attacker would run
KINK_MEMBERSHIP = "measure"


def attack_reconstruct_kink(models: Models, d: Defense, quick: bool, seed: int = 0) -> dict[str, Any]:
    """The exact kink reconstruction (Laplacian KRR on 32 molecules, docs/attacks.md section 3)
    through the defended API, by a defense-aware attacker: it knows sigma (the services publish it)
    and sets the kink detector's threshold to the defense's error (half the grid, or 4 noise sd)."""
    if d.family == "prf-noise":
        return {"attack": "reconstruct-kink", "skipped": "not simulated (its line queries are all distinct: as fresh noise)"}
    if d.family not in ("none", "round", "noise", "noise+round"):
        return {"attack": "reconstruct-kink", "skipped": "measured for output defenses (a stronger ridge or a DP "
                                                         "model changes the model, not its answers)"}
    scn = scenario.build("laplacian", n_train=32, seed=seed)
    est = scn.model.estimator
    od = d.output
    err = 0.0 if od is None else (od.grid or 0.0) / 2 + 4 * od.noise_std
    orc = Oracle(est.predict, d, seed)
    t0 = time.perf_counter()
    try:
        res = reconstruction.kink_attack(orc, scn.X.shape[1], *CM_RANGE, h=1.0, refine=8,
                                         depth=3, sigma=float(est.sigma), noise=err,  # depth 2 finds nothing
                                         n_hint=32, membership=KINK_MEMBERSHIP)
        m = reconstruction.match_points(scn.X_train, res.centres, 1e-3)
        rec, q = float(m["fraction_recovered"]), int(res.n_queries)
    except reconstruction.AttackError as exc:
        rec, q = 0.0, orc.queries
    pub = models.public
    mae = float(np.mean(np.abs(Oracle(models.krr("laplacian").predict, d, seed + 99)(models.X[pub]) - models.y[pub])))
    # (MAE: the 1,000-molecule Laplacian model under the same defense; the 32-molecule target is a toy)
    return {"attack": "reconstruct-kink", "metric": "training points recovered (rel. L2 < 1e-3)",
            "value": rec, "chance": 0.0, "attacker": f"sigma known, threshold {err:g}, {KINK_MEMBERSHIP} assembly",
            "variants": {}, "mae": mae, "queries_total": q, "seconds": time.perf_counter() - t0}


def _hadamard(F: int) -> np.ndarray:
    from scipy.linalg import hadamard

    return hadamard(F).astype(np.float64)


def attack_extract(models: Models, d: Defense, quick: bool, seed: int = 0) -> dict[str, Any]:
    """Least-squares weight extraction from a compact model's answers, then pool membership."""
    if d.family in ("ridge", "dressed+ridge"):
        return {"attack": "extract", "skipped": "ridge rows are exact KRR (the compact model's ridge is not varied)"}
    F = 1024 if quick else 4096
    n_train = 200
    est = models.dressed_rff(F, n_train) if d.family == "dressed" else \
        models.rff(F, n=n_train, dp_eps=d.strength if d.family == "dp" else None)
    w = est.coef_
    c = math.sqrt(2.0 / F)  # the service's public feature bound: queries are +-c per feature
    H = _hadamard(F)
    orc = Oracle(lambda P: P @ w + est.y_offset_, d, seed)
    variants: dict[str, dict[str, float]] = {}
    rng = np.random.default_rng(seed)
    pool = np.r_[models.train[:n_train], models.public]
    lab = np.r_[np.ones(n_train), np.zeros(len(models.public))].astype(int)
    for reps in (1, 16):
        # offset first (phi = 0, asked reps times), then Hadamard rows (each asked reps times)
        off = float(np.mean(orc(np.zeros((reps, F)))))
        acc = np.zeros(F)
        for r in range(reps):
            P = c * H
            acc += orc(P) - off
        w_hat = (H.T @ (acc / reps)) / (c * F)  # H^T H = F I
        rel = float(np.linalg.norm(w_hat - w) / np.linalg.norm(w))
        ext = type("E", (), {"W_": est.W_, "b_": est.b_, "coef_": w_hat})()
        s = pool_membership_from_weights(ext, models.X[pool])
        variants[f"{reps} F queries"] = {"auc": roc_auc(s, lab), "p_at_50": precision_at_k(s, lab, 50),
                                         "rel_weight_error": rel, "queries": reps * (F + 1)}
    best = max(variants, key=lambda k: variants[k]["auc"])
    pub = models.public
    mae = float(np.mean(np.abs(Oracle(est.predict, d, seed + 99)(models.X[pub]) - models.y[pub])))
    return {"attack": "extract", "metric": "pool-membership AUC from extracted weights",
            "value": variants[best]["auc"], "chance": 0.5, "attacker": best, "variants": variants,
            "rel_weight_error": variants[best]["rel_weight_error"], "mae": mae,
            "queries_total": variants[best]["queries"], "n_features": F, "n_train": n_train}


def _queries_of(variant: str) -> int:
    for tok in ("repeats", "dither"):
        if tok in variant:
            return int([t for t in variant.split() if t.isdigit()][0])
    return 1


ATTACKS: dict[str, Callable[..., dict[str, Any]]] = {
    "mia": attack_mia, "rank-kink": attack_rank_kink, "extract": attack_extract,
    "reconstruct-kink": attack_reconstruct_kink,
}
OPTIONAL_ATTACKS: dict[str, Callable[..., dict[str, Any]]] = {}


def run_matrix(attacks: Iterable[str] | None = None, quick: bool = True, seed: int = 0,
               progress: Progress = None) -> list[dict[str, Any]]:
    """One row per (attack, defense): leakage, chance, utility (MAE), the attacker variant."""
    models = load_models(seed)
    names = list(attacks or ATTACKS)
    rows: list[dict[str, Any]] = []
    base_mae: dict[tuple[str, str], float] = {}
    for name in names:
        for d in defenses(quick):
            t0 = time.perf_counter()
            res = {**ATTACKS, **OPTIONAL_ATTACKS}[name](models, d, quick, seed)
            res.update(defense=d.label, family=d.family, strength=d.strength, deployments=list(d.deployments),
                       seconds=time.perf_counter() - t0)
            if "skipped" not in res:
                if d.family in ("none", "dressed"):
                    base_mae[(name, d.family)] = res["mae"]
                res["above_chance"] = res["value"] - res["chance"]
            rows.append(res)
            if progress:
                progress(f"{name} / {d.label}")
    for r in rows:
        # utility cost against the same pipeline without the defense: DP models (dressed-atom
        # baseline + random features) against the non-private dressed-atom model, the rest against
        # the undefended recipe model; both numbers are kept
        ref = "dressed" if r["family"] in ("dp", "dressed", "dressed+ridge") else "none"
        if "mae" in r and (r["attack"], ref) in base_mae:
            r["reference"] = ref
            r["mae_increase_pct"] = 100.0 * (r["mae"] / base_mae[(r["attack"], ref)] - 1.0)
            if (r["attack"], "none") in base_mae:
                r["mae_vs_recipe_pct"] = 100.0 * (r["mae"] / base_mae[(r["attack"], "none")] - 1.0)
    return rows


def pareto(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated points when both coordinates are to be minimised."""
    keep = []
    for i, (x, y) in enumerate(points):
        if not any((x2 <= x and y2 <= y) and (x2 < x or y2 < y) for j, (x2, y2) in enumerate(points) if j != i):
            keep.append(i)
    return keep
