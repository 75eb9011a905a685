"""White-box attacks: Coulomb matrix -> molecule, KRR model files, random-feature weights."""
from __future__ import annotations

import numpy as np
import pytest

from attacks import chem, scenario, whitebox
from attacks.reconstruction import AttackError


@pytest.fixture(scope="module")
def small_scn():
    # 60 training molecules, CM size 23 (every embedded molecule fits): fast and still real data
    return scenario.build("gaussian", n_train=60, cm_size=23)


def test_numpy_cm_matches_representation(small_scn):
    """Our inversion assumes the representation's layout: check it on real molecules."""
    data = small_scn.data
    for i in small_scn.train[:20]:
        feats, _ = chem.coulomb_matrix(data.charges[i], data.coordinates[i], 23, "sorted")
        np.testing.assert_allclose(feats, small_scn.X[i], rtol=1e-12, atol=1e-12)


def test_invert_single_matrix_exact(small_scn):
    i = small_scn.train[0]
    m = chem.features_to_matrices(small_scn.X[i])[0]
    rec = chem.invert_coulomb_matrix(m)
    z, x = small_scn.data.charges[i], small_scn.data.coordinates[i]
    assert rec.valid and sorted(rec.charges) == sorted(z)
    _, order = chem.coulomb_matrix(z, x, 23, "sorted")
    assert chem.matched_rmsd(rec.charges, rec.coords, z, x, order) < 1e-6


def test_invalid_matrix_is_flagged():
    m = np.zeros((4, 4))
    m[0, 0] = 20.0  # not 0.5 Z^2.4 for any element
    assert not chem.invert_coulomb_matrix(m).valid
    assert not chem.invert_coulomb_matrix(np.zeros((3, 3))).valid


def test_kabsch_handles_rotation_and_mirror():
    rng = np.random.default_rng(0)
    p = rng.normal(size=(7, 3))
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    mirrored = (p @ q) * np.array([1.0, 1.0, -1.0]) + 3.0
    assert chem.kabsch_rmsd(p, mirrored) < 1e-10
    assert chem.kabsch_rmsd(p, mirrored, allow_reflection=False) > 1e-3


def test_whitebox_extraction_recovers_training_molecules(small_scn):
    ext = whitebox.extract_krr_molecules(small_scn.model)
    res = whitebox.score_extraction(ext, small_scn.data.subset(small_scn.train))
    base = whitebox.random_baseline(small_scn.data.subset(small_scn.public), small_scn.data.subset(small_scn.train))
    assert res["fraction_smiles_exact"] >= 0.95
    assert res["fraction_geometry_recovered"] >= 0.99
    assert res["median_rmsd_angstrom"] < 1e-6
    assert base <= 0.05  # guessing public molecules essentially never names a training molecule
    assert res["fraction_smiles_exact"] > base + 0.9


def test_eigenspectrum_model_is_refused():
    from secureml.models.krr import KernelRidge
    from secureml.models.pipeline import MolecularModel
    from secureml.representations.coulomb import CoulombMatrix

    mm = MolecularModel(CoulombMatrix(size=23, variant="eigenspectrum"), KernelRidge())
    with pytest.raises(AttackError, match="eigenspectrum"):
        whitebox.cm_settings(mm)


def _rf_scn(n: int, F: int):
    from secureml.models.random_features import RandomFourierRidge

    est = RandomFourierRidge("gaussian", sigma=100.0, n_features=F, lam=1e-8, seed=1)
    return scenario.build(n_train=n, cm_size=23, estimator=est)


def test_rf_weights_reveal_training_points_when_features_exceed_nd():
    n = 2
    scn = _rf_scn(n, 2048)  # F / (n (d + 1)) = 2048 / 554 = 3.7
    fit = whitebox.invert_random_features(scn.model.estimator, 4 * n, scn.X[scn.public], adam_steps=400,
                                          lbfgs_steps=100)
    got = whitebox.score_rf_inversion(fit, scn.X_train, 1e-2)
    # the same number of random public molecules as centres is nowhere near
    from attacks.reconstruction import match_points

    base = match_points(scn.X_train, scn.X[scn.public[:4 * n]], 1e-2)["fraction_recovered"]
    assert got["fraction_recovered"] == 1.0
    assert base == 0.0


def test_rf_pool_membership_from_weights():
    n = 8
    scn = _rf_scn(n, 1024)  # needs only F > pool size, far below n (d + 1)
    pool = np.concatenate([scn.X_train, scn.X[scn.public[:300]]])
    s = whitebox.pool_membership_from_weights(scn.model.estimator, pool)
    top = np.argsort(-s)[:n]
    assert np.all(top < n)  # exactly the members, against a base rate of 8/308


def test_whitebox_on_fixed_point_grid_model():
    """Models for the OT service store CM entries rounded to 2^-16: still every molecule."""
    scn = scenario.build("gaussian", n_train=40, cm_size=23, grid_bits=16)
    assert np.array_equal(scn.X_train * 2**16, np.round(scn.X_train * 2**16))  # really on the grid
    ext = whitebox.extract_krr_molecules(scn.model)
    res = whitebox.score_extraction(ext, scn.data.subset(scn.train))
    assert res["fraction_smiles_exact"] >= 0.95 and res["median_rmsd_angstrom"] < 1e-3
