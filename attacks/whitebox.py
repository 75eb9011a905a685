"""White-box attacks on model files: what a shared model file gives away.

* Exact KRR stores its training representations (``X_fit_``): with a Coulomb matrix each row
  *is* a molecule (:mod:`attacks.chem`): charges, distances, geometry, bonds, SMILES.
* Random-feature ridge stores W, b (the public feature map) and coef = Phi^T alpha, a combination
  of the training points' feature vectors (push-through identity: (Phi^T Phi + lam I)^-1 Phi^T =
  Phi^T (Phi Phi^T + lam I)^-1). With F features the equation coef = sum_i alpha_i phi(x_i) has F
  equations and n (d + 1) unknowns, so once F exceeds ~ n (d + 1) the training set is determined;
  :func:`invert_random_features` solves it with the free-centre fit of
  :mod:`attacks.reconstruction`. :func:`pool_membership_from_weights` needs far fewer features:
  given a pool of candidates, least squares coef ~ Phi_pool^T beta puts the weight on the members.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from attacks.chem import (
    Reconstruction,
    canonical_smiles,
    coulomb_matrix,
    features_to_matrices,
    invert_coulomb_matrix,
    matched_rmsd,
    model_elements,
    molecule_smiles,
    quiet_stdout,
)
from attacks.reconstruction import AttackError, FitResult, fit_centres, match_points
from secureml.data.dataset import MolecularDataset


@dataclass
class Extraction:
    """Molecules rebuilt from Coulomb-matrix rows (one per row, in the model's order)."""

    molecules: list[Reconstruction]
    smiles: list[str]
    size: int
    variant: str
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def cm_settings(model: Any) -> tuple[int, str]:
    """(size, variant) of a model's Coulomb-matrix representation, or AttackError."""
    rep = getattr(model, "representation", None)
    params = rep.get_params() if rep is not None else {}
    if params.get("name") != "coulomb_matrix":
        raise AttackError(f"white-box molecule extraction needs a Coulomb-matrix model, not {params.get('name')!r}")
    variant = params.get("variant", "sorted")
    if variant == "eigenspectrum":
        raise AttackError(
            "a Coulomb-matrix eigenspectrum keeps only eigenvalues; it does not determine the "
            "interatomic distances, so this inversion does not apply"
        )
    return int(params["size"]), str(variant)


def molecules_from_features(features: np.ndarray, size: int | None = None, variant: str = "sorted",
                            progress: Callable[[int], None] | None = None,
                            elements: tuple[int, ...] | None = None) -> Extraction:
    """Invert every Coulomb-matrix row to (Z, xyz) and a stereo-free canonical SMILES.

    ``elements``: the charges a row may contain (the model's element set, :func:`attacks.chem.model_elements`);
    None accepts any integer Z.
    """
    import time

    t0 = time.perf_counter()
    mats = features_to_matrices(features, size)
    recs: list[Reconstruction] = []
    smiles: list[str] = []
    with quiet_stdout():
        for m in mats:
            rec = invert_coulomb_matrix(m, elements=elements)
            recs.append(rec)
            smiles.append(molecule_smiles(rec.charges, rec.coords) if rec.valid else "")
            if progress:
                progress(1)
    return Extraction(recs, smiles, mats.shape[1], variant, time.perf_counter() - t0,
                      {"elements": list(elements) if elements is not None else None})


def extract_krr_molecules(model: Any, progress: Callable[[int], None] | None = None) -> Extraction:
    """White-box extraction from an exact Coulomb-matrix KRR model (MolecularModel)."""
    size, variant = cm_settings(model)
    est = getattr(model, "estimator", None)
    if not hasattr(est, "X_fit_"):
        raise AttackError(f"{type(est).__name__} does not store its training representations")
    return molecules_from_features(est.X_fit_, size, variant, progress, elements=model_elements(model))


def score_extraction(ext: Extraction, truth: MolecularDataset, rmsd_tol: float = 0.01) -> dict[str, Any]:
    """Compare row i of the extraction with training molecule i (evaluation only).

    ``smiles_exact``: canonical stereo-free SMILES equal to the data set's SMILES; data sets
    without SMILES (QM7's xyz files) are compared with the SMILES the same bond perception gives on
    the *true* geometry (``smiles_reference`` says which was used).
    ``bonds_from_true_geometry``: the same bond perception run on the *true* geometry, to separate
    inversion errors from RDKit's bond-perception errors. ``geometry_recovered``: RMSD below
    ``rmsd_tol`` Angstrom after optimal superposition (mirror images allowed: a CM cannot tell them
    apart) with the atom correspondence of the matrix ordering, refined per element.
    """
    n = len(ext.molecules)
    if n != len(truth):
        raise AttackError(f"{n} extracted molecules but {len(truth)} true ones")
    exact = np.zeros(n, dtype=bool)
    formula_ok = np.zeros(n, dtype=bool)
    ref_ok = np.zeros(n, dtype=bool)
    rmsd = np.full(n, np.inf)
    refs = np.empty(n, dtype=object)
    from_geometry = 0
    with quiet_stdout():
        for i, rec in enumerate(ext.molecules):
            z_true = np.asarray(truth.charges[i])
            x_true = np.asarray(truth.coordinates[i], dtype=float)
            true_smi = canonical_smiles(truth.smiles[i]) if truth.smiles and truth.smiles[i] else ""
            if true_smi:
                ref_ok[i] = molecule_smiles(z_true, x_true) == true_smi
            else:
                true_smi = molecule_smiles(z_true, x_true)
                from_geometry += 1
                ref_ok[i] = bool(true_smi)
            refs[i] = true_smi
            if not rec.valid:
                continue
            formula_ok[i] = sorted(rec.charges.tolist()) == sorted(z_true.tolist())
            exact[i] = bool(true_smi) and ext.smiles[i] == true_smi
            if formula_ok[i]:
                # sorted/unsorted rows have a known atom order; other orders (canonical) are
                # matched per element by the Hungarian method inside matched_rmsd
                order = coulomb_matrix(z_true, x_true, ext.size, ext.variant)[1] \
                    if ext.variant in ("sorted", "unsorted") else None
                rmsd[i] = matched_rmsd(rec.charges, rec.coords, z_true, x_true, order)
    finite = rmsd[np.isfinite(rmsd)]
    return {
        "n_molecules": n,
        "fraction_smiles_exact": float(exact.mean()),
        "fraction_formula": float(formula_ok.mean()),
        "fraction_geometry_recovered": float(np.mean(rmsd < rmsd_tol)),
        "rmsd_tolerance_angstrom": rmsd_tol,
        "median_rmsd_angstrom": float(np.median(finite)) if finite.size else float("inf"),
        "max_rmsd_angstrom": float(finite.max()) if finite.size else float("inf"),
        "fraction_bonds_from_true_geometry": float(ref_ok.mean()),
        "seconds": ext.seconds,
        "elements": ext.extra.get("elements"),
        "smiles_reference": "data set" if from_geometry == 0 else
        ("bond perception on the true geometry" if from_geometry == n else f"mixed ({from_geometry} from geometry)"),
        "invalid_reasons": _reason_counts(ext),
        "exact_mask": exact,
        "reference_smiles": refs,
    }


def _reason_counts(ext: Extraction) -> dict[str, int]:
    """How many rows failed to decode, by reason (numbers stripped so reasons group)."""
    import re

    out: dict[str, int] = {}
    for rec in ext.molecules:
        if not rec.valid:
            key = re.sub(r"[-+]?\d[\d.e+-]*", "#", rec.reason)
            out[key] = out.get(key, 0) + 1
    return out


def random_baseline(pool: MolecularDataset, truth: MolecularDataset, n: int = 200, seed: int = 0,
                    truth_smiles: Any = None) -> float:
    """Fraction of guesses that name a training molecule, guessing random public molecules.

    Molecules without SMILES in the data set (QM7) are named by bond perception on their geometry,
    as in :func:`score_extraction` (``truth_smiles``: its ``reference_smiles``, to avoid redoing them).
    """
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(pool), min(n, len(pool)), replace=False)

    def name(ds: MolecularDataset, i: int) -> str:
        if ds.smiles and ds.smiles[i]:
            return canonical_smiles(ds.smiles[i])
        return molecule_smiles(np.asarray(ds.charges[i]), np.asarray(ds.coordinates[i], dtype=float))

    with quiet_stdout():
        true = set(truth_smiles) if truth_smiles is not None else {name(truth, i) for i in range(len(truth))}
        guesses = [name(pool, int(i)) for i in idx]
    true.discard("")
    return float(np.mean([g != "" and g in true for g in guesses]))


# ---------------------------------------------------------------------------------------------
# random-feature models
# ---------------------------------------------------------------------------------------------
def _rf_parts(est: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    for a in ("W_", "b_", "coef_"):
        if not hasattr(est, a):
            raise AttackError(f"{type(est).__name__} has no {a}: not a random-feature model")
    return np.asarray(est.W_), np.asarray(est.b_), np.asarray(est.coef_)


def pool_membership_from_weights(est: Any, pool_X: np.ndarray, ridge: float = 1e-10) -> np.ndarray:
    """Scores |beta_j| from least squares coef ~ Phi_pool^T beta (high = member).

    When F exceeds the pool size and the pool holds every training point, coef lies exactly in the
    span of the members' feature vectors and the solution puts zero weight on non-members.
    """
    W, b, coef = _rf_parts(est)
    F = W.shape[1]
    P = np.sqrt(2.0 / F) * np.cos(pool_X @ W + b)  # (pool, F)
    G = P @ P.T
    G[np.diag_indices_from(G)] += ridge * np.trace(G) / len(G)
    beta = np.linalg.solve(G, P @ coef)
    return np.abs(beta)


def invert_random_features(est: Any, n_centres: int, init: np.ndarray, *, adam_steps: int = 1000,
                           lbfgs_steps: int = 200, lr: float = 0.5, seed: int = 0,
                           progress: Callable[[int], None] | None = None) -> FitResult:
    """Recover training representations from (W, b, coef) alone by the free-centre fit.

    ``init``: starting centres (n_centres, d), e.g. random public molecules' representations.
    Over-parametrising (n_centres a few times the training size) makes the fit far more reliable;
    spurious centres end with small coefficients.
    """
    import torch

    W, b, coef = _rf_parts(est)
    F = W.shape[1]
    Wt = torch.as_tensor(W)
    bt = torch.as_tensor(b)
    norm = float(np.sqrt(2.0 / F))

    def design(C: Any) -> Any:
        return (norm * torch.cos(C @ Wt + bt)).T  # (F, m): column j = phi(c_j)

    rng = np.random.default_rng(seed)
    C0 = init[rng.choice(len(init), n_centres, replace=n_centres > len(init))]
    return fit_centres(design, coef, C0, adam_steps=adam_steps, lbfgs_steps=lbfgs_steps, lr=lr,
                       progress=progress)


def score_rf_inversion(fit: FitResult, true_X: np.ndarray, rel_tol: float = 1e-2,
                       coef_quantile: float = 0.0) -> dict[str, Any]:
    """Fraction of training points recovered by the fitted centres (relative L2 tolerance)."""
    C = fit.centres
    if coef_quantile > 0:
        keep = np.abs(fit.coef) >= np.quantile(np.abs(fit.coef), coef_quantile)
        C = C[keep]
    m = match_points(true_X, C, rel_tol)
    return {"fraction_recovered": m["fraction_recovered"], "precision": m["precision"],
            "rel_tol": rel_tol, "final_loss": fit.loss, "median_rel_error": float(np.median(m["rel_errors"]))}
