"""QM9 from qm9pack: parsing, atomization energies, selection rules, the cache, the embedded set."""
from __future__ import annotations

import time

import numpy as np
import pytest

from secureml.data import embedded_split, load_embedded, load_qm9
from secureml.data import qm9
from secureml.data.build_embedded import EMBEDDED_FILE, build_arrays
from secureml.errors import DataError


def test_first_rows_of_the_real_csv_methane():
    flat = qm9._parse_csv(qm9.qm9pack_data_dir(), max_rows=20)
    ds = qm9.dataset_from_flat(flat, np.arange(20))
    assert ds.names[0] == "qm9_000001" and ds.smiles[0] == "C"
    assert ds.charges[0].tolist() == [6, 1, 1, 1, 1]
    assert ds.coordinates[0][0] == pytest.approx([-0.0126981359, 1.0858041578, 0.0080009958])
    # U0(CH4) = -40.47893 Ha; atoms: C -37.846772, H -0.500273 Ha (QM9 atomref, B3LYP/6-31G(2df,p)).
    assert ds.properties["U0_atomization"][0] == pytest.approx(-396.0, abs=0.01)
    assert ds.properties["U0_atomization"][0] == pytest.approx(
        (-40.47893 + 37.846772 + 4 * 0.500273) * 627.5094740631, abs=1e-9
    )
    assert ds.properties["H_atomization"][0] == pytest.approx((-40.475117 + 37.844411 + 4 * 0.497912) * 627.5094740631)
    assert ds.properties["gap"][0] == pytest.approx(0.5048 * 27.211386245988)
    assert ds.properties["zpve_hartree"][0] == 0.044749
    # every molecule is bound (negative); water: U0 = -76.404702 Ha, O -75.064579, H -0.500273
    assert (ds.properties["U0_atomization"] < 0).all()
    assert ds.properties["U0_atomization"][2] == pytest.approx(-213.09, abs=0.01)


def test_select_indices_rules():
    heavy = np.array([1, 5, 7, 8, 9, 7, 3])
    assert qm9.select_indices(7, heavy, None, 7, 0).tolist() == [0, 1, 2, 5, 6]
    a = qm9.select_indices(7, heavy, 3, None, seed=1)
    b = qm9.select_indices(7, heavy, 5, None, seed=1)
    assert b[:3].tolist() == a.tolist()  # nested for growing n
    with pytest.raises(DataError, match="only 5 match"):
        qm9.select_indices(7, heavy, 6, 7, 0)
    with pytest.raises(DataError, match="unknown QM9 properties"):
        load_qm9(n=1, properties=["U0_atomisation"])


@pytest.fixture(scope="module")
def fresh_cache(tmp_path_factory):
    """Parse all of qm9pack once into an empty cache folder (a few seconds)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("SECUREML_CACHE", str(tmp_path_factory.mktemp("cache")))
    t0 = time.perf_counter()
    first = load_qm9(max_heavy_atoms=7, properties=["U0_atomization", "gap"])
    parse_s = time.perf_counter() - t0
    yield first, parse_s
    mp.undo()


def test_full_parse_cache_and_counts(fresh_cache):
    first, parse_s = fresh_cache
    assert qm9.cache_path().is_file() and "qm9pack-1.0.3" in qm9.cache_path().name
    t0 = time.perf_counter()
    flat = qm9._load_flat()
    cached_s = time.perf_counter() - t0
    assert len(flat["n_atoms"]) == 130_831 and int(flat["n_atoms"].max()) == 29
    heavy = qm9.heavy_atom_counts(flat)
    assert int((heavy <= 7).sum()) == 3_921 and int((heavy <= 8).sum()) == 21_800
    assert cached_s < parse_s
    second = load_qm9(max_heavy_atoms=7, properties=["U0_atomization", "gap"])
    assert second.names == first.names and len(first) == 3921
    np.testing.assert_array_equal(second.properties["U0_atomization"], first.properties["U0_atomization"])
    sub = load_qm9(n=50, seed=3, properties=["H_atomization"])
    assert len(sub) == 50 and list(sub.properties) == ["H_atomization"]
    assert load_qm9(n=20, seed=3).names == sub.names[:20]
    assert sub.provenance["selection"] == {"n": 50, "max_heavy_atoms": None, "seed": 3}


def test_embedded_file_is_what_the_builder_makes(fresh_cache):
    rebuilt = build_arrays()
    with np.load(EMBEDDED_FILE, allow_pickle=False) as f:
        shipped = {k: f[k] for k in f.files}
    assert sorted(rebuilt) == sorted(shipped)
    for k in shipped:
        assert rebuilt[k].dtype == shipped[k].dtype, k
        np.testing.assert_array_equal(rebuilt[k], shipped[k], err_msg=k)
    first, _ = fresh_cache
    emb = load_embedded()
    assert emb.names == first.names
    np.testing.assert_array_equal(emb.properties["U0_atomization"], first.properties["U0_atomization"])
    for a, b in zip(emb.coordinates[::97], first.coordinates[::97]):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_embedded_loads_fast_with_right_shapes():
    load_embedded()  # warm the file read
    t0 = time.perf_counter()
    ds = load_embedded()
    assert time.perf_counter() - t0 < 0.5
    assert EMBEDDED_FILE.stat().st_size < 3e6
    assert len(ds) == 3921 and len(ds.coordinates) == 3921 and len(ds.names) == 3921 == len(ds.smiles)
    assert all(c.shape == (len(z), 3) for z, c in zip(ds.charges, ds.coordinates))
    assert max(len(z) for z in ds.charges) == 23
    assert all(int((z > 1).sum()) <= 7 for z in ds.charges)
    assert set(np.concatenate(ds.charges).tolist()) == {1, 6, 7, 8, 9}
    assert all(v.shape == (3921,) and np.isfinite(v).all() for v in ds.properties.values())
    ds.properties["gap"][0] = 0.0  # a caller's edit must not leak into the next load
    assert load_embedded().properties["gap"][0] != 0.0


def test_embedded_split():
    train, test = embedded_split()
    assert len(train) == 3137 and len(test) == 784
    assert np.intersect1d(train, test).size == 0 and np.union1d(train, test).size == 3921
    t2, s2 = embedded_split(seed=0, n_train=100)
    assert np.array_equal(t2, train[:100]) and np.array_equal(s2, test)
    t3, s3 = embedded_split(seed=1)
    assert not np.array_equal(s3, test)
    with pytest.raises(DataError, match="n_train"):
        embedded_split(n_train=5000)
