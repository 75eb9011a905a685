"""The scaffold + motif generator pointed at a served KRR model instead of a released encoder.

Setting: the model owner fits exact kernel ridge regression (Laplacian kernel, lambda 1e-8, as
the published KRR study) on its private molecules -- the same private library the GNN owner
pretrains on -- and serves it through one of secureml's deployments (:mod:`attacks.targets`:
the plaintext API, or the double-blind OT service, whose answers equal the API's up to its
fixed-point grid). The representation is public and computed by the client: folded Morgan
*count* fingerprints (radius 2), which RDKit computes from SMILES alone, so any molecule the
generator builds can be queried. The property is Crippen logP (RDKit), a label the attacker can
compute for its own candidates, as QM9's labels are public for the KRR attacks of docs/attacks.md.

Scores (higher = more likely a training molecule), each a function of the molecule and the
service's answers only:

* ``label``: -log |f(x) - y(x)|. With lambda = 1e-8 the model interpolates its training set, so a
  member's answer equals its label; a non-member's differs by the model's error.
* ``kink`` (label-free): the Laplacian kernel exp(-|x - x_i|_1 / sigma) has a kink along every
  coordinate axis through a training point; the three-point filter
  f(x - h e_k) + f(x + h e_k) - 2 cosh(h / sigma) f(x) is -2 sinh(h / sigma) sum_i alpha_i
  exp(-|x - x_i|_1 / sigma) over training points sharing x's k-th entry, which for a member
  includes its own term at distance 0. Axes: the ``n_axes`` non-zero entries of x that are
  rarest in the attacker's public data (a common entry is shared by many training points, whose
  kinks would add up at any candidate). 1 + 2 n_axes queries per molecule.

Threat model: a semi-honest (or curious) client of the service that may ask any number of
well-formed queries within the public bounds; no access to the weights or the training set.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from attacks.gnn.space import Action
from attacks.targets import make_target
from secureml.models.krr import KernelRidge


def fingerprints(smiles: Sequence[str], n_bits: int = 256, radius: int = 2) -> np.ndarray:
    """Folded Morgan count fingerprints (float64, one row per molecule)."""
    from rdkit import Chem
    from rdkit.Chem import rdFingerprintGenerator

    gen = rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=n_bits)
    out = np.zeros((len(smiles), n_bits))
    for i, s in enumerate(smiles):
        out[i] = gen.GetCountFingerprintAsNumPy(Chem.MolFromSmiles(s))
    return out


def logp(smiles: Sequence[str]) -> np.ndarray:
    """Crippen logP (RDKit): the served property, computable by anyone for any molecule."""
    from rdkit import Chem
    from rdkit.Chem import Crippen

    return np.array([Crippen.MolLogP(Chem.MolFromSmiles(s)) for s in smiles])


@dataclass
class KRRService:
    """The owner's served model and what the deployment publishes (kernel, sigma, bounds)."""

    target: Any  # an attacks.targets.Target
    sigma: float
    n_bits: int
    lo: float
    hi: float
    h: float  # the kink step: at least the service's input grid

    @property
    def queries(self) -> int:
        return int(self.target.cost()["queries"])


def train_service(private: Sequence[str], deployment: str = "api", n_bits: int = 256, sigma: float | None = None,
                  lam: float = 1e-8, protocol_sample: int = 4) -> KRRService:
    """Fit the owner's Laplacian KRR on ``private`` (logP labels) and deploy it.

    sigma defaults to the median L1 distance between the owner's training fingerprints (the
    owner's choice; public once served, as every deployment announces its kernel width).
    """
    from scipy.spatial.distance import pdist

    X = fingerprints(private, n_bits)
    y = logp(private)
    if sigma is None:
        sigma = float(np.median(pdist(X, "cityblock")))
    est = KernelRidge("laplacian", sigma, lam).fit(X, y)
    target = make_target(deployment, est, protocol_sample=protocol_sample)
    pub = target.public
    lo, hi = float(pub.get("feature_lo", 0.0)), float(pub.get("feature_hi", np.inf))
    h = 1e-3
    if "frac_bits" in pub:  # the service computes on a 2^-frac_bits grid: a smaller step vanishes
        h = max(h, 4.0 / (1 << int(pub["frac_bits"])))
    return KRRService(target, sigma, n_bits, lo, hi, h)


@dataclass
class ServiceScore:
    """A generator scoring function backed by a deployed KRR model (``kind``: label or kink)."""

    service: KRRService
    kind: str = "kink"
    public: Sequence[str] = ()  # attacker's public molecules: entry frequencies for the kink axes
    n_axes: int = 4
    _freq: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in ("label", "kink"):
            raise ValueError(f"unknown service score {self.kind!r}: label or kink")
        if self.kind == "kink":
            P = fingerprints(list(self.public), self.service.n_bits) if len(self.public) else \
                np.zeros((1, self.service.n_bits))
            self._P = P

    def __call__(self, smiles: list[str], actions: list[Action]) -> np.ndarray:
        X = fingerprints(smiles, self.service.n_bits)
        svc = self.service
        if self.kind == "label":
            r = svc.target.predict(np.clip(X, svc.lo, svc.hi)) - logp(smiles)
            return -np.log(np.abs(r) + 1e-12)
        n, d = X.shape
        # rarity of x's own entry value on each axis among public molecules (lower = rarer)
        share = (self._P[None, :, :] == X[:, None, :]).mean(1)
        share = np.where(X > 0, share, np.inf)
        axes = np.argsort(share, axis=1, kind="stable")[:, :self.n_axes]
        Q = np.repeat(X, 1 + 2 * self.n_axes, axis=0).reshape(n, 1 + 2 * self.n_axes, d)
        rows = np.arange(n)[:, None]
        Q[rows, 1 + 2 * np.arange(self.n_axes)[None, :], axes] -= svc.h
        Q[rows, 2 + 2 * np.arange(self.n_axes)[None, :], axes] += svc.h
        Q = np.clip(Q.reshape(-1, d), svc.lo, svc.hi)
        f = np.asarray(svc.target.predict(Q), dtype=np.float64).reshape(n, 1 + 2 * self.n_axes)
        filt = f[:, 1::2] + f[:, 2::2] - 2.0 * math.cosh(svc.h / svc.sigma) * f[:, :1]
        return np.log(np.abs(np.nan_to_num(filt)).sum(1) + 1e-300)
