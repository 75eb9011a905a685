"""FCHL19 environments and the qml-lightning-style local random-feature model."""
from __future__ import annotations

import numpy as np
import pytest
from ase.build import molecule

from secureml.data import embedded_split, load_embedded
from secureml.data.dataset import MolecularDataset
from secureml.errors import DataError, ModelError
from secureml.models.local import LocalRandomFeatureModel
from secureml.models.pipeline import MolecularModel
from secureml.representations import representation_from_params
from secureml.representations.fchl import FCHL19, AtomicEnvironments

PROP = "U0_atomization"


def _ase_dataset(names=("CH4", "NH3", "H2O", "CH3OH", "HCN", "H2CCHF")) -> MolecularDataset:
    mols = [molecule(n) for n in names]
    return MolecularDataset(charges=[m.numbers for m in mols], coordinates=[m.positions for m in mols],
                            names=list(names))


@pytest.fixture(scope="module")
def small():
    """Embedded molecules: 400 train, 200 test, 300 disjoint ones for the PCA bases."""
    ds = load_embedded()
    train, test = embedded_split(seed=0)
    rep = FCHL19()
    tr, te, pc = ds.subset(train[:400]), ds.subset(test[:200]), ds.subset(train[-300:])
    return {"train": tr, "test": te, "pca": pc, "env_train": rep.transform(tr),
            "env_test": rep.transform(te), "env_pca": rep.transform(pc)}


# -- FCHL19 ----------------------------------------------------------------------------------------
def test_fchl19_shapes_params_and_registry():
    rep = FCHL19()
    assert rep.n_features == 5 * 23 + 30 * 22 == 775
    ds = _ase_dataset()
    envs = rep.transform(ds)
    assert isinstance(envs, AtomicEnvironments) and len(envs) == len(ds)
    mols = envs.molecules()
    for m, z, r in zip(mols, envs.elements(), ds.charges):
        assert m.shape == (len(r), 775) and m.dtype == np.float32
        np.testing.assert_array_equal(z, r)
    np.testing.assert_allclose(mols[2], rep.transform_one(ds.charges[2], ds.coordinates[2]))
    # Environments are translation/rotation invariant.
    R = ds.coordinates[3]
    Q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))
    np.testing.assert_allclose(rep.transform_one(ds.charges[3], R @ Q.T + 1.5), mols[3], rtol=1e-4, atol=1e-4)
    back = representation_from_params(rep.get_params())
    assert isinstance(back, FCHL19) and back == rep
    counts = envs.element_counts([1, 6, 9])
    np.testing.assert_array_equal(counts[-1], [3, 2, 1])  # H2C=CHF
    sub = envs.subset([5, 0])
    np.testing.assert_array_equal(sub.molecules()[0], mols[5])
    np.testing.assert_array_equal(sub.molecules()[1], mols[0])
    assert sub.names == ["H2CCHF", "CH4"]


def test_fchl19_bad_input():
    rep = FCHL19()
    with pytest.raises(DataError, match="contains S: the model never saw it in training"):
        rep.transform_one(np.array([16, 1, 1]), np.zeros((3, 3)) + np.arange(3)[:, None])
    with pytest.raises(DataError, match="NaN"):
        rep.transform_one(np.array([6, 1]), np.array([[0.0, 0, 0], [np.nan, 0, 0]]))
    with pytest.raises(ModelError):
        FCHL19(elements=(1, 1))


# -- the local model -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fitted(small):
    m = LocalRandomFeatureModel(nstacks=8, device="cpu")
    return m.fit(small["env_train"], small["train"].properties[PROP], pca_data=small["env_pca"])


def test_local_model_beats_mean_predictor_by_a_wide_margin(small, fitted):
    y_tr, y_te = small["train"].properties[PROP], small["test"].properties[PROP]
    m = fitted
    mae = np.abs(m.predict(small["env_test"]) - y_te).mean()
    baseline = np.abs(y_te - y_tr.mean()).mean()
    assert baseline > 100  # atomization energies spread over hundreds of kcal/mol
    assert mae < 0.03 * baseline, (mae, baseline)
    # Self energies alone (a linear model on element counts) are much worse than the full model.
    counts = small["env_test"].element_counts(m.elements_)
    mae_counts = np.abs(counts @ m.self_energies_ + m.y_offset_ - y_te).mean()
    assert mae < 0.5 * mae_counts
    assert m.pca_source_["kind"] == "given" and m.pca_source_["overlap_with_train"] == 0
    assert m.coef_.shape == (8 * 128,)


def test_features_do_not_depend_on_labels(small, fitted):
    env = small["env_train"]
    y = small["train"].properties[PROP]
    other = LocalRandomFeatureModel(nstacks=8, device="cpu").fit(
        env, np.random.default_rng(0).permutation(y) * 3 + 7, pca_data=small["env_pca"])
    probe = small["env_test"].subset(np.arange(20))
    np.testing.assert_array_equal(fitted.features(probe), other.features(probe))
    pa, pb = fitted.public_parameters(), other.public_parameters()
    for key in ("pca_basis", "diagonals", "bias", "elements"):
        np.testing.assert_array_equal(pa[key], pb[key])
    assert not np.allclose(fitted.coef_, other.coef_)
    # Training-set PCA never looks at the labels either.
    few = env.subset(np.arange(100))
    c = LocalRandomFeatureModel(nstacks=1, pca_fit_data="train", device="cpu").fit(few, y[:100])
    d = LocalRandomFeatureModel(nstacks=1, pca_fit_data="train", device="cpu").fit(few, -y[:100])
    np.testing.assert_array_equal(c.pca_basis_, d.pca_basis_)
    assert c.pca_source_["kind"] == "train"


def test_save_load_round_trip_predicts_identically(small, fitted, tmp_path):
    mm = MolecularModel(FCHL19(), fitted, property_name=PROP)
    test = small["test"].subset(np.arange(50))
    pred = mm.predict(test)
    np.testing.assert_array_equal(pred, fitted.predict(small["env_test"].subset(np.arange(50))))
    path = mm.save(tmp_path / "local.npz")
    back = MolecularModel.load(path)
    assert isinstance(back.estimator, LocalRandomFeatureModel)
    np.testing.assert_array_equal(back.predict(test), pred)
    # The estimator alone also takes molecules and rebuilds FCHL19 from the stored settings.
    np.testing.assert_array_equal(back.estimator.features(test.subset([0, 1, 2])),
                                  fitted.features(small["env_test"].subset([0, 1, 2])))


def test_pipeline_fit_from_molecules(small):
    mm = MolecularModel(FCHL19(), LocalRandomFeatureModel(nstacks=1, pca_fit_data="train", device="cpu"))
    train = small["train"].subset(np.arange(100))
    mm.fit(train, PROP)
    y = train.properties[PROP]
    assert np.abs(mm.predict(train) - y).mean() < 0.05 * np.abs(y - y.mean()).mean()


def test_fwht_and_dense_sorf_paths_agree(small):
    env, y = small["env_train"].subset(np.arange(30)), small["train"].properties[PROP][:30]
    a = LocalRandomFeatureModel(nstacks=2, pca_fit_data="train", device="cpu", precision="float64").fit(env, y)
    b = LocalRandomFeatureModel.from_state({**a.get_state(), "params": {**a.get_params(), "sorf_method": "fwht"}})
    assert b.sorf_method == "fwht"
    np.testing.assert_allclose(a.features(env), b.features(env), atol=1e-9)


def test_primal_and_dual_solvers_agree(small):
    env, y = small["env_train"].subset(np.arange(60)), small["train"].properties[PROP][:60]
    kw = dict(nstacks=1, pca_fit_data="train", device="cpu", lam=1e-6, precision="float64")
    a = LocalRandomFeatureModel(solver="primal", **kw).fit(env, y)
    b = LocalRandomFeatureModel(solver="dual", **kw).fit(env, y)
    np.testing.assert_allclose(a.predict(env), b.predict(env), atol=1e-4)


def test_local_model_errors(small):
    with pytest.raises(ModelError, match="power of two"):
        LocalRandomFeatureModel(npcas=100).fit(small["env_train"], small["train"].properties[PROP])
    with pytest.raises(ModelError, match="pca_fit_data"):
        LocalRandomFeatureModel(pca_fit_data="everything").fit(small["env_train"], small["train"].properties[PROP])
    with pytest.raises(ModelError, match="not fitted"):
        LocalRandomFeatureModel().predict(small["env_test"])
    m = LocalRandomFeatureModel(nstacks=1, pca_fit_data="train", device="cpu")
    m.fit(small["env_train"].subset(np.arange(40)), small["train"].properties[PROP][:40])
    # Environments computed with different FCHL19 settings are refused.
    other = FCHL19(rcut=4.0).transform(small["test"].subset([0, 1]))
    with pytest.raises(ModelError, match="fitted on"):
        m.predict(other)
    # Elements the representation does not cover are a data error.
    bad = MolecularDataset(charges=[np.array([16, 1, 1])], coordinates=[np.array([[0, 0, 0], [1.3, 0, 0], [0, 1.3, 0.0]])])
    with pytest.raises(DataError):
        m.predict(bad)


def test_local_sorf_recipe():
    from secureml.models import build_model

    mm = build_model("local-sorf", nstacks=1, pca_fit_data="train", device="cpu", self_energies="false")
    assert isinstance(mm.representation, FCHL19)
    assert mm.estimator.nstacks == 1 and mm.estimator.self_energies is False
    with pytest.raises(ModelError):
        build_model("local-sorf", bogus=1)


@pytest.mark.slow
def test_public_pca_set_is_disjoint_from_training_molecules(small):
    from secureml.models.local import public_pca_dataset

    train_names = small["train"].names
    ds = public_pca_dataset(train_names, [1, 6, 7, 8, 9], n_molecules=300, environments=200, seed=0)
    assert not set(ds.names) & set(train_names)
    z = np.concatenate(ds.charges)
    assert all((z == e).sum() >= 200 for e in (1, 6, 7, 8, 9))
    m = LocalRandomFeatureModel(nstacks=1, pca_n_molecules=300, pca_environments=200, device="cpu")
    m.fit(small["env_train"], small["train"].properties[PROP])
    assert m.pca_source_["kind"] == "public-qm9" and m.pca_source_["overlap_with_train"] == 0


def test_local_sorf_trains_and_predicts_sulfur_and_chlorine(tmp_path):
    """Elements beyond QM9's (S, Cl) are added from the training data; their PCA basis comes from the
    training environments (QM9 has none), recorded in the model; an unseen element (Br) is refused
    by name."""
    import warnings

    from secureml.data.geometry import smiles_to_molecule
    from secureml.models import build_model

    smiles = ["CS", "CCS", "CSC", "OCCS", "CSSC", "CCl", "ClCCl", "CCCl", "ClC=C", "SCCCl", "CC(S)C",
              "CCSC", "ClCC=O", "CN", "CO", "CC", "CCO", "CSCCl"]
    mols = [smiles_to_molecule(s, relax="mmff") for s in smiles]
    counts = np.array([[np.sum(z == e) for e in (1, 6, 7, 8, 16, 17)] for z, _ in mols], float)
    y = counts @ np.array([-60.0, -150.0, -110.0, -100.0, -90.0, -70.0]) + np.arange(len(mols)) * 0.1
    ds = MolecularDataset([z for z, _ in mols], [x for _, x in mols], {"e": y}, list(smiles))
    model = build_model("local-sorf", npcas=16, nstacks=2, pca_n_molecules=100, pca_environments=64)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        model.fit(ds, "e")
    assert any("PCA basis was fitted on the training molecules" in str(x.message) for x in w)
    assert model.representation.elements == [1, 6, 7, 8, 9, 16, 17]
    assert model.estimator.pca_source_["elements_from_train"] == [16, 17]
    path = model.save(tmp_path / "s.npz")
    back = MolecularModel.load(path)
    np.testing.assert_allclose(back.predict(ds), model.predict(ds), atol=1e-6)
    assert np.abs(model.predict(ds) - y).mean() < 5.0
    z, x = smiles_to_molecule("CBr", relax="mmff")
    with pytest.raises(DataError, match="contains Br: the model never saw it in training"):
        back.predict(MolecularDataset([z], [x], names=["CBr"]))
