"""A local random-feature model in the manner of qml-lightning (Browning et al. 2022).

Pipeline for one molecule with atoms a of elements e(a):

1. FCHL19 environment x_a (775 wide with the default settings; :mod:`secureml.representations.fchl`);
2. per-element projection p_a = x_a P_e(a) to ``npcas`` dimensions (uncentred PCA basis P_e);
3. structured orthogonal random features per element: ``nstacks`` blocks of
   (sqrt(npcas)/sigma) H D3 H D2 H D1 (random sign diagonals D, orthonormal Walsh-Hadamard H),
   giving F = nstacks * npcas coefficients c_a (:mod:`secureml.models.sorf`);
4. phi_a = sqrt(2/F) cos(c_a + b_e(a)) and the molecule's features Phi = sum_a phi_a;
5. y ~ Phi w + y_offset + sum_a s_e(a): ridge regression in the primal (F x F Cholesky in
   float64, lambda 1e-8) on the target minus per-element self energies s_e (least squares on
   element counts, as qml-lightning's QM9 example does) and minus its mean.

The kernel this approximates is a sum over same-element atom pairs of a Gaussian kernel on the
projected environments. A prediction costs O(n_atoms * F) whatever the training-set size.

What is public and what is secret: Phi depends only on the public parameters -- FCHL19 settings,
the PCA bases, the sign diagonals, the biases and sigma -- never on training labels, so a query
owner can compute Phi for its molecule itself; only ``coef_``, ``y_offset_`` and
``self_energies_`` are the model owner's secret. The PCA bases *are* a summary of the molecules
they were fitted on, so by default they are fitted on a public set disjoint from the training
set (``pca_fit_data="public"``: QM9 molecules not among the training molecules, by name), not on
the training set. ``pca_fit_data="train"`` fits them on the training molecules (needed when no
public set covers the chemistry; the basis then leaks a summary of the training inputs), and a
``MolecularDataset``/``AtomicEnvironments`` passed to ``fit(..., pca_data=...)`` is used as is.
"""
from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import torch
from sklearn.base import BaseEstimator, RegressorMixin
from threadpoolctl import threadpool_limits

from secureml.data.dataset import MolecularDataset
from secureml.data.qm9 import load_qm9
from secureml.errors import DataError, ModelError
from secureml.models import register_model
from secureml.models.io import register_estimator
from secureml.models.pipeline import MolecularModel
from secureml.models.random_features import NormalEquations, ridge_solve
from secureml.models.sorf import cos_features, default_device, random_bias, sorf_diagonals, sorf_matrix, sorf_transform
from secureml.representations.fchl import FCHL19, AtomicEnvironments

__all__ = ["LocalRandomFeatureModel", "public_pca_dataset"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def public_pca_dataset(exclude_names: set[str] | list[str], elements: list[int], n_molecules: int = 2000,
                       environments: int = 1024, seed: int = 0) -> MolecularDataset:
    """QM9 molecules for fitting PCA bases, none of them named in ``exclude_names``.

    Takes the first ``n_molecules`` of a seeded permutation of the eligible QM9 molecules, then
    adds molecules containing each rarer element until that element has ``environments`` atoms
    (QM9 has only ~3,000 fluorine atoms, so fluorine gets all it can).
    """
    pool = load_qm9(properties=[])
    excluded = set(exclude_names)
    ok = np.array([nm not in excluded for nm in pool.names], dtype=bool)
    order = np.random.default_rng(seed).permutation(len(pool))
    order = order[ok[order]]
    n_atoms = np.array([len(c) for c in pool.charges])
    all_z = np.concatenate(pool.charges)
    mol = np.repeat(np.arange(len(pool)), n_atoms)
    taken = np.zeros(len(pool), dtype=bool)
    taken[order[:n_molecules]] = True
    for e in elements:
        per_mol = np.bincount(mol, weights=(all_z == e), minlength=len(pool)).astype(np.int64)
        have = int(per_mol[taken].sum())
        if have >= environments:
            continue
        extra = order[(~taken[order]) & (per_mol[order] > 0)]
        k = int(np.searchsorted(np.cumsum(per_mol[extra]), environments - have) + 1)
        taken[extra[:k]] = True
    chosen = order[taken[order]]  # permutation order, deterministic
    ds = pool.subset(chosen)
    ds.provenance = {**pool.provenance, "use": "public PCA basis", "n_molecules": len(chosen),
                     "excluded_training_molecules": len(excluded), "seed": seed}
    return ds


# Below this many atoms a feature batch runs on one thread: the work (~1 ms) is smaller than the
# cost of waking OpenMP workers on a busy machine (measured here: one 14-atom molecule at 16,384
# features took 380 ms with 2 threads and 15 ms with 1 while other jobs shared the 2 cores).
_SMALL_BATCH_ATOMS = 512


@contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """Temporarily run torch CPU ops on ``n`` threads (None: leave the setting alone)."""
    old = torch.get_num_threads()
    if n is None or int(n) == old:
        yield
        return
    torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _segment_matrix(rows: np.ndarray, n_rows: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Sparse CSR (n_rows, len(rows)) matrix with a 1 at (rows[j], j); ``rows`` non-decreasing."""
    crow = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_rows), out=crow[1:])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(
            torch.from_numpy(crow), torch.arange(len(rows), dtype=torch.int64),
            torch.ones(len(rows), dtype=dtype), size=(n_rows, len(rows)),
        ).to(device)


@register_estimator
class LocalRandomFeatureModel(RegressorMixin, BaseEstimator):
    """FCHL19 -> per-element PCA -> SORF -> cos -> sum over atoms -> primal ridge (torch).

    Args:
        sigma: width of the Gaussian kernel on projected environments (qml-lightning QM9: 6.0).
        lam: ridge regularisation lambda.
        npcas: PCA width per element (a power of two; 128).
        nstacks: SORF blocks; F = nstacks * npcas features (128 -> 16,384).
        pca_fit_data: "public" (QM9 minus the training molecules; default) or "train".
        pca_n_molecules, pca_environments: size of the public PCA set (molecules; minimum atoms
            per element) and cap on the environments per element used in the SVD.
        self_energies: subtract per-element self energies fitted by least squares first.
        seed: seeds the sign diagonals, biases and PCA subsampling.
        device: torch device; ``None`` means "cuda" if available else "cpu".
        precision: "float32" (default) or "float64" for the SORF coefficients and cosines; the
            ridge solve is always float64.
        sorf_method: "dense" multiplies by the materialised SORF matrix (fast on CPUs);
            "fwht" applies the Walsh-Hadamard transforms to every environment (O(d log d)).
        solver: "auto" (the smaller of the F x F primal and N x N dual systems; same weights),
            "primal" (F x F, streamed over molecule batches) or "dual".
        batch_molecules: molecules per feature batch (bounds memory).
        num_threads: torch CPU threads while computing features (None: torch's setting). Batches
            under 512 atoms always use one thread (see ``_SMALL_BATCH_ATOMS``).

    Fitted attributes: ``coef_`` (F,), ``y_offset_``, ``self_energies_`` (per element),
    ``elements_``, ``pca_basis_`` (n_elements, width, npcas), ``diagonals_``
    (n_elements, 3, nstacks, npcas), ``bias_`` (n_elements, F), ``representation_params_``.
    """

    def __init__(self, sigma: float = 6.0, lam: float = 1e-8, npcas: int = 128, nstacks: int = 128,
                 pca_fit_data: str = "public", pca_n_molecules: int = 2000, pca_environments: int = 1024,
                 self_energies: bool = True, seed: int = 0, device: str | None = None,
                 precision: str = "float32", sorf_method: str = "dense", solver: str = "auto",
                 batch_molecules: int = 1024, num_threads: int | None = None) -> None:
        self.sigma = sigma
        self.lam = lam
        self.npcas = npcas
        self.nstacks = nstacks
        self.pca_fit_data = pca_fit_data
        self.pca_n_molecules = pca_n_molecules
        self.pca_environments = pca_environments
        self.self_energies = self_energies
        self.seed = seed
        self.device = device
        self.precision = precision
        self.sorf_method = sorf_method
        self.solver = solver
        self.batch_molecules = batch_molecules
        self.num_threads = num_threads

    # ------------------------------------------------------------------------------------------
    @property
    def n_random_features(self) -> int:
        return int(self.nstacks) * int(self.npcas)

    def _environments(self, X: Any) -> AtomicEnvironments:
        if isinstance(X, AtomicEnvironments):
            envs = X
        elif isinstance(X, MolecularDataset):
            params = getattr(self, "representation_params_", None)
            rep = FCHL19.from_params(params) if params else FCHL19()
            envs = rep.transform(X)
        else:
            raise ModelError(
                "LocalRandomFeatureModel takes AtomicEnvironments (FCHL19().transform(data)) or a "
                f"MolecularDataset, got {type(X).__name__}"
            )
        params = getattr(self, "representation_params_", None)
        if params is not None and envs.params and envs.params != params:
            raise ModelError(
                f"environments were computed with {envs.params}, but the model was fitted on {params}"
            )
        return envs

    def _check_params(self) -> None:
        npcas = int(self.npcas)
        if npcas < 1 or npcas & (npcas - 1):
            raise ModelError(f"npcas must be a power of two (Walsh-Hadamard), got {self.npcas}")
        if int(self.nstacks) < 1:
            raise ModelError(f"nstacks must be >= 1, got {self.nstacks}")
        if not self.sigma > 0:
            raise ModelError(f"sigma must be positive, got {self.sigma}")
        if self.precision not in _DTYPES:
            raise ModelError(f"precision must be 'float32' or 'float64', got {self.precision!r}")
        if self.sorf_method not in ("dense", "fwht"):
            raise ModelError(f"sorf_method must be 'dense' or 'fwht', got {self.sorf_method!r}")
        if not (isinstance(self.pca_fit_data, str) and self.pca_fit_data in ("public", "train")):
            raise ModelError(
                f"pca_fit_data must be 'public' or 'train' (pass a data set as fit(..., pca_data=...)), "
                f"got {self.pca_fit_data!r}"
            )

    # -- PCA bases ---------------------------------------------------------------------------
    def _fit_pca(self, envs: AtomicEnvironments, pca_data: Any) -> None:
        if pca_data is not None:
            source = self._environments(pca_data) if isinstance(pca_data, AtomicEnvironments) else \
                FCHL19.from_params(self.representation_params_).transform(pca_data)
            overlap = len(set(source.names) & set(envs.names)) if source.names and envs.names else 0
            self.pca_source_ = {"kind": "given", "n_molecules": len(source), "overlap_with_train": overlap}
        elif self.pca_fit_data == "train":
            source = envs
            self.pca_source_ = {"kind": "train", "n_molecules": len(source), "overlap_with_train": len(source)}
        else:
            ds = public_pca_dataset(envs.names, list(self.elements_), int(self.pca_n_molecules),
                                    int(self.pca_environments), int(self.seed))
            source = FCHL19.from_params(self.representation_params_).transform(ds)
            self.pca_source_ = {"kind": "public-qm9", "n_molecules": len(source), "overlap_with_train": 0}
        rng = np.random.default_rng([int(self.seed), 1])
        width, npcas = source.X.shape[1], int(self.npcas)
        basis = np.zeros((len(self.elements_), width, npcas))
        counts = np.zeros(len(self.elements_), dtype=np.int64)
        from_train: list[int] = []
        for k, e in enumerate(self.elements_):
            src = source
            rows = np.flatnonzero(source.Z == e)
            if rows.size == 0 and self.pca_source_["kind"] == "public-qm9" and (envs.Z == e).any():
                # QM9 has only H, C, N, O, F: an element of the training data beyond those (S, Cl,
                # Br, P ...) gets its basis from the training environments -- a summary of the
                # training inputs for that element, recorded in pca_source_ and the model file.
                src, rows = envs, np.flatnonzero(envs.Z == e)
                from_train.append(int(e))
            if rows.size > self.pca_environments:
                rows = np.sort(rng.choice(rows, int(self.pca_environments), replace=False))
            counts[k] = rows.size
            if rows.size == 0:
                continue
            # Uncentred PCA (as qml-lightning's SVD): the leading direction carries the mean
            # environment. Eigenvectors of the width x width Gram matrix are the left singular
            # vectors of X^T and much cheaper to get than an SVD of X.
            xe = src.X[rows].astype(np.float64)
            with threadpool_limits(1, user_api="blas"):
                # Single-threaded: a 775 x 775 eigh gains nothing from threads and suffers
                # badly from OpenBLAS thread contention on a shared machine (0.4 s vs 2-5 s here).
                evals, evecs = np.linalg.eigh(xe.T @ xe)
            m = min(npcas, rows.size, width)
            top = evecs[:, ::-1][:, :m]
            # Fix each vector's sign (largest-magnitude entry positive) so the basis is reproducible.
            top = top * np.where(top[np.abs(top).argmax(0), np.arange(m)] < 0, -1.0, 1.0)
            basis[k, :, :m] = top  # fewer environments than npcas: remaining columns stay 0
        missing = [int(e) for e, c in zip(self.elements_, counts) if c == 0 and (envs.Z == e).any()]
        if missing:
            raise ModelError(
                f"no environments of element(s) {missing} in the PCA data; pass pca_data covering "
                "them or pca_fit_data='train'"
            )
        if from_train:
            self.pca_source_["elements_from_train"] = from_train
            warnings.warn(f"no public environments of element(s) {from_train}: their PCA basis was fitted "
                          "on the training molecules", stacklevel=3)
        self.pca_basis_ = basis
        self.pca_counts_ = counts

    # -- the public feature map ---------------------------------------------------------------
    def _torch_params(self) -> dict[str, Any]:
        cache = getattr(self, "_torch_cache", None)
        if cache is not None:
            return cache
        dev = torch.device(self.device_)
        dt = _DTYPES[self.precision]
        diag = torch.from_numpy(self.diagonals_.astype(np.float64))
        cache = {
            "P": torch.from_numpy(self.pca_basis_).to(device=dev, dtype=dt),
            "b": torch.from_numpy(self.bias_).to(device=dev, dtype=dt),
            "D": diag.to(device=dev, dtype=dt),
        }
        if self.sorf_method == "dense":
            # Build each element's SORF matrix in float64 by the Hadamard pipeline, then cast.
            cache["M"] = torch.stack([sorf_matrix(diag[k], float(self.sigma)) for k in range(len(self.elements_))]).to(
                device=dev, dtype=dt)
        self._torch_cache = cache
        return cache

    def _batch_features(self, envs: AtomicEnvironments, m0: int, m1: int) -> torch.Tensor:
        """(m1 - m0, F) float64 features of molecules m0..m1-1 (on the model's device)."""
        t = self._torch_params()
        dev, dt = torch.device(self.device_), _DTYPES[self.precision]
        F = self.n_random_features
        a0, a1 = int(envs.offsets[m0]), int(envs.offsets[m1])
        Xb = torch.from_numpy(np.ascontiguousarray(envs.X[a0:a1])).to(device=dev, dtype=dt)
        Zb = envs.Z[a0:a1]
        mol = np.repeat(np.arange(m1 - m0), np.diff(envs.offsets[m0:m1 + 1]))
        out = torch.zeros(m1 - m0, F, dtype=dt, device=dev)
        chunk = max(64, (1 << 25) // F)  # bounds the (atoms, F) temporary to ~128 MB in float32
        for k, e in enumerate(self.elements_):  # a handful of elements, not a loop over data
            sel = np.flatnonzero(Zb == e)
            if sel.size == 0:
                continue
            if self.pca_counts_[k] == 0:
                raise ModelError(f"element {int(e)} was absent from the PCA data; the model cannot describe it")
            proj = Xb[torch.from_numpy(sel).to(dev)] @ t["P"][k]
            mol_k = mol[sel]  # non-decreasing: atoms are stored molecule by molecule
            for c0 in range(0, sel.size, chunk):
                p = proj[c0:c0 + chunk]
                if self.sorf_method == "dense":
                    coeff = p @ t["M"][k]
                else:
                    coeff = sorf_transform(p, t["D"][k], float(self.sigma))
                phi = cos_features(coeff, t["b"][k], F)
                # Sum atoms into their molecules with a sparse (molecules x atoms) 0/1 matrix:
                # ~3x faster than index_add_ on the CPU here, and cuSPARSE on a GPU.
                out += _segment_matrix(mol_k[c0:c0 + chunk], m1 - m0, dt, dev) @ phi
        return out.to(torch.float64)

    def _batches(self, envs: AtomicEnvironments, step: int | None = None) -> Iterator[tuple[int, int, torch.Tensor]]:
        n, step = len(envs), max(1, int(step or self.batch_molecules))
        for m0 in range(0, n, step):
            m1 = min(n, m0 + step)
            small = envs.offsets[m1] - envs.offsets[m0] < _SMALL_BATCH_ATOMS
            with _torch_threads(1 if small else getattr(self, "num_threads", None)):
                Zb = self._batch_features(envs, m0, m1)
            yield m0, m1, Zb

    def _check_elements(self, envs: AtomicEnvironments) -> None:
        unknown = sorted(set(np.unique(envs.Z).tolist()) - set(int(e) for e in self.elements_))
        if unknown:
            raise DataError(f"element(s) {unknown} are not covered by this model (elements {list(self.elements_)})")

    def features(self, X: AtomicEnvironments | MolecularDataset) -> np.ndarray:
        """(n_molecules, F) random features Phi: computable by a client from public parameters."""
        self._check_fitted()
        envs = self._environments(X)
        self._check_elements(envs)
        out = np.empty((len(envs), self.n_random_features))
        for m0, m1, Zb in self._batches(envs):
            out[m0:m1] = Zb.cpu().numpy()
        return out

    def public_parameters(self) -> dict[str, Any]:
        """Everything a query owner needs to compute :meth:`features` (none of it label-derived)."""
        self._check_fitted()
        return {
            "representation": dict(self.representation_params_), "elements": self.elements_.copy(),
            "sigma": float(self.sigma), "npcas": int(self.npcas), "nstacks": int(self.nstacks),
            "pca_basis": self.pca_basis_.copy(), "diagonals": self.diagonals_.copy(), "bias": self.bias_.copy(),
        }

    # -- estimator API ------------------------------------------------------------------------
    def fit(self, X: AtomicEnvironments | MolecularDataset, y: np.ndarray,
            pca_data: AtomicEnvironments | MolecularDataset | None = None) -> "LocalRandomFeatureModel":
        """Fit on environments (or molecules) X and targets y (e.g. kcal/mol).

        ``pca_data``: molecules or environments to fit the PCA bases on, overriding ``pca_fit_data``.
        """
        self._check_params()
        for attr in ("representation_params_", "_torch_cache"):
            self.__dict__.pop(attr, None)
        envs = self._environments(X)
        y = np.asarray(y, dtype=np.float64).ravel()
        if y.shape[0] != len(envs):
            raise ModelError(f"X has {len(envs)} molecules but y has {y.shape[0]} values")
        if len(envs) == 0:
            raise DataError("cannot fit on an empty data set")
        if not np.all(np.isfinite(y)):
            raise DataError("training targets contain NaN or infinite values")
        self.representation_params_ = dict(envs.params) if envs.params else FCHL19().get_params()
        self.elements_ = np.array(self.representation_params_.get("elements", sorted(set(envs.Z.tolist()))),
                                  dtype=np.int64)
        self._check_elements(envs)
        self.device_ = self.device or default_device()

        self._fit_pca(envs, pca_data)
        rng = np.random.default_rng(int(self.seed))
        F = self.n_random_features
        self.diagonals_ = np.stack([sorf_diagonals(int(self.nstacks), int(self.npcas), rng)
                                    for _ in self.elements_])
        self.bias_ = np.stack([random_bias(F, rng) for _ in self.elements_])

        counts = envs.element_counts(self.elements_)
        if self.self_energies:
            self.self_energies_ = np.linalg.lstsq(counts, y, rcond=None)[0]
        else:
            self.self_energies_ = np.zeros(len(self.elements_))
        resid = y - counts @ self.self_energies_
        self.y_offset_ = float(resid.mean())
        target = resid - self.y_offset_

        solver = self.solver
        if solver == "auto":
            solver = "dual" if len(envs) < F else "primal"
        if solver == "primal":
            from tqdm import tqdm

            ne = NormalEquations(F, device=self.device_)
            n_batches = -(-len(envs) // max(1, int(self.batch_molecules)))
            # minutes at N = 16,384, F = 16,384 on a CPU: show progress over the batches
            for m0, m1, Zb in tqdm(self._batches(envs), total=n_batches, desc="local-sorf normal equations",
                                   unit="batch", disable=n_batches < 4, leave=False):
                ne.add(Zb, torch.from_numpy(target[m0:m1]))
            w, self.ridge_shift_ = ne.solve(float(self.lam))
        else:
            Z = torch.from_numpy(self.features(envs)).to(self.device_)
            w, self.ridge_shift_ = ridge_solve(Z, torch.from_numpy(target), float(self.lam), solver)
        self.coef_ = w.detach().cpu().numpy().astype(np.float64)
        self.n_train_ = len(envs)
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "pca_basis_"):
            raise ModelError("LocalRandomFeatureModel is not fitted: call fit() first")

    def predict(self, X: AtomicEnvironments | MolecularDataset) -> np.ndarray:
        """Predicted targets, one per molecule."""
        if not hasattr(self, "coef_"):
            raise ModelError("LocalRandomFeatureModel is not fitted: call fit() first")
        envs = self._environments(X)
        self._check_elements(envs)
        out = np.empty(len(envs))
        w = torch.from_numpy(self.coef_).to(self.device_)
        from tqdm import tqdm

        # ~20 ms per molecule at F = 16,384 on a CPU: a 1,000-molecule test set takes ~20 s, so
        # large sets go in 20 steps (at least 128 molecules each) behind a progress bar
        step = min(int(self.batch_molecules), max(128, -(-len(envs) // 20)))
        n_batches = -(-len(envs) // step)
        for m0, m1, Zb in tqdm(self._batches(envs, step), total=n_batches, desc="local-sorf features",
                               unit="batch", disable=n_batches < 4, leave=False):
            out[m0:m1] = (Zb @ w).cpu().numpy()
        return out + self.y_offset_ + envs.element_counts(self.elements_) @ self.self_energies_

    # -- model files ---------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        """Hyperparameters, public map and secret weights for a single-.npz model file."""
        if not hasattr(self, "coef_"):
            raise ModelError("cannot save an unfitted LocalRandomFeatureModel")
        return {
            "params": {k: v for k, v in self.get_params().items()},
            "representation": dict(self.representation_params_),
            "elements": self.elements_, "pca_basis": self.pca_basis_, "pca_counts": self.pca_counts_,
            "pca_source": dict(self.pca_source_), "diagonals": self.diagonals_, "bias": self.bias_,
            "coef": self.coef_, "y_offset": float(self.y_offset_), "self_energies": self.self_energies_,
            "ridge_shift": float(self.ridge_shift_), "n_train": int(self.n_train_),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "LocalRandomFeatureModel":
        try:
            params = dict(state["params"])
            if params.get("device") is not None and params["device"] != "cpu" and not torch.cuda.is_available():
                params["device"] = None  # trained on a GPU, loaded where there is none
            est = cls(**params)
            est.representation_params_ = dict(state["representation"])
            est.elements_ = np.asarray(state["elements"], dtype=np.int64)
            est.pca_basis_ = np.asarray(state["pca_basis"], dtype=np.float64)
            est.pca_counts_ = np.asarray(state["pca_counts"], dtype=np.int64)
            est.pca_source_ = dict(state.get("pca_source", {}))
            est.diagonals_ = np.asarray(state["diagonals"], dtype=np.int8)
            est.bias_ = np.asarray(state["bias"], dtype=np.float64)
            est.coef_ = np.asarray(state["coef"], dtype=np.float64)
            est.y_offset_ = float(state["y_offset"])
            est.self_energies_ = np.asarray(state["self_energies"], dtype=np.float64)
            est.ridge_shift_ = float(state.get("ridge_shift", est.lam))
            est.n_train_ = int(state.get("n_train", 0))
        except KeyError as exc:
            raise ModelError(f"LocalRandomFeatureModel state is missing {exc}") from None
        except TypeError as exc:
            raise ModelError(f"bad LocalRandomFeatureModel parameters in state: {exc}") from None
        n_el, F = len(est.elements_), est.n_random_features
        if (est.pca_basis_.shape[::2] != (n_el, int(est.npcas)) or est.bias_.shape != (n_el, F)
                or est.diagonals_.shape != (n_el, 3, int(est.nstacks), int(est.npcas)) or est.coef_.shape != (F,)):
            raise ModelError("LocalRandomFeatureModel state has inconsistent array shapes")
        est.device_ = est.device or default_device()
        return est

    def __getstate__(self) -> dict[str, Any]:
        # Torch caches are rebuilt on demand; do not pickle/deepcopy them.
        d = dict(self.__dict__)
        d.pop("_torch_cache", None)
        return d


def _parse_bool(v: Any) -> bool:
    if isinstance(v, str):
        if v.lower() in ("1", "true", "yes", "on"):
            return True
        if v.lower() in ("0", "false", "no", "off"):
            return False
        raise ModelError(f"expected a boolean, got {v!r}")
    return bool(v)


@register_model("local-sorf", sigma=6.0, lam=1e-8, npcas=128, nstacks=128, pca_fit_data="public")
def _local_sorf_recipe(sigma: float | None = None, lam: float | None = None, npcas: int = 128,
                       nstacks: int = 128, pca_fit_data: str = "public", pca_n_molecules: int = 2000,
                       pca_environments: int = 1024, self_energies: Any = True, seed: int = 0,
                       device: str | None = None, precision: str = "float32", sorf_method: str = "dense",
                       solver: str = "auto", **options: Any) -> Any:
    """FCHL19 + per-element PCA + structured orthogonal random features summed over atoms (qml-lightning style)."""
    if options:
        raise ModelError(f"model 'local-sorf' does not take option(s) {', '.join(sorted(options))}")
    est = LocalRandomFeatureModel(
        sigma=6.0 if sigma is None else float(sigma), lam=1e-8 if lam is None else float(lam),
        npcas=int(npcas), nstacks=int(nstacks), pca_fit_data=str(pca_fit_data),
        pca_n_molecules=int(pca_n_molecules), pca_environments=int(pca_environments),
        self_energies=_parse_bool(self_energies), seed=int(seed), device=device,
        precision=str(precision), sorf_method=str(sorf_method), solver=str(solver),
    )
    # The elements of the training molecules, plus -- with the public (QM9) PCA basis -- H, C, N,
    # O, F, so that QM9 models keep their settings whatever elements a small training set has.
    base = (1, 6, 7, 8, 9) if est.pca_fit_data == "public" else ()
    return MolecularModel(FCHL19(elements=base, extend_elements=True), est)
