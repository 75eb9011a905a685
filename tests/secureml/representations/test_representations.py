"""Coulomb-matrix representation: against a direct numpy computation, qmllib, and bad input."""
from __future__ import annotations

import numpy as np
import pytest
from ase.build import molecule

from secureml.data.dataset import MolecularDataset
from secureml.errors import DataError, ModelError
from secureml.representations import (
    CoulombMatrix,
    Representation,
    registered_representations,
    representation_from_params,
)

NAMES = ["CH4", "H2O", "CH3CH2OH", "C6H6", "CH3CONH2", "HCOOH", "C2H6"]


def _ase_dataset(names: list[str] = NAMES) -> MolecularDataset:
    mols = [molecule(n) for n in names]
    return MolecularDataset([m.numbers.copy() for m in mols], [m.positions.copy() for m in mols], names=list(names))


def numpy_cm(z: np.ndarray, r: np.ndarray) -> np.ndarray:
    """C_ii = 0.5 Z^2.4, C_ij = Z_i Z_j / |R_i - R_j| with R in Angstrom (the units dscribe uses)."""
    d = np.linalg.norm(r[:, None, :] - r[None, :, :], axis=-1)
    np.fill_diagonal(d, 1.0)
    m = np.outer(z, z).astype(float) / d
    np.fill_diagonal(m, 0.5 * z.astype(float) ** 2.4)
    return m


def padded_upper(m: np.ndarray, size: int) -> np.ndarray:
    p = np.zeros((size, size))
    p[: len(m), : len(m)] = m
    return p[np.triu_indices(size)]


def test_unsorted_equals_direct_numpy_in_angstrom() -> None:
    ds = _ase_dataset()
    X = CoulombMatrix(size=12, variant="unsorted").transform(ds)
    for i, (z, r) in enumerate(zip(ds.charges, ds.coordinates)):
        np.testing.assert_allclose(X[i], padded_upper(numpy_cm(z, r), 12), rtol=1e-12, atol=1e-12)
    # Units: the ethanol C-O entry is 6*8/r with r in Angstrom (~33.6), not in Bohr (~17.8).
    z, r = ds.charges[2], ds.coordinates[2]
    o = int(np.flatnonzero(z == 8)[0])
    c = min(np.flatnonzero(z == 6), key=lambda k: np.linalg.norm(r[k] - r[o]))
    entry = CoulombMatrix(size=12, variant="unsorted").to_matrix(X[2])[c, o]
    assert entry == pytest.approx(48.0 / np.linalg.norm(r[c] - r[o]), rel=1e-12)
    assert 30 < entry < 40


def test_sorted_equals_numpy_row_norm_sort() -> None:
    ds = _ase_dataset()
    cm = CoulombMatrix(size=12, variant="sorted")
    X = cm.transform(ds)
    for i, (z, r) in enumerate(zip(ds.charges, ds.coordinates)):
        m = numpy_cm(z, r)
        norms = np.linalg.norm(m, axis=1)
        order = np.argsort(-norms, kind="stable")
        expected = padded_upper(m[np.ix_(order, order)], 12)
        if np.min(np.diff(np.sort(norms))) > 1e-6:
            np.testing.assert_allclose(X[i], expected, rtol=1e-10, atol=1e-10)
        else:
            # Symmetry-equivalent atoms (benzene, methane) tie in row norm; tie order is arbitrary,
            # so compare what does not depend on it: the multiset of entries and the spectrum.
            np.testing.assert_allclose(np.sort(X[i]), np.sort(expected), rtol=1e-10, atol=1e-10)
            np.testing.assert_allclose(np.linalg.eigvalsh(cm.to_matrix(X[i])), np.linalg.eigvalsh(
                cm.to_matrix(expected)), rtol=1e-9, atol=1e-9)
        # Rows come out in descending norm order.
        full = cm.to_matrix(X[i])[: len(z), : len(z)]
        norms = np.linalg.norm(full, axis=1)
        assert np.all(np.diff(norms) <= 1e-9)


def test_eigenspectrum_equals_numpy() -> None:
    ds = _ase_dataset()
    X = CoulombMatrix(size=12, variant="eigenspectrum").transform(ds)
    assert X.shape == (len(ds), 12)
    for i, (z, r) in enumerate(zip(ds.charges, ds.coordinates)):
        ev = np.linalg.eigvalsh(numpy_cm(z, r))
        ev = ev[np.argsort(-np.abs(ev), kind="stable")]
        np.testing.assert_allclose(X[i, : len(z)], ev, rtol=1e-9, atol=1e-9)
        assert np.all(X[i, len(z):] == 0)


def test_sorted_is_permutation_invariant_unsorted_is_not() -> None:
    m = molecule("CH3CH2OH")
    perm = np.random.default_rng(1).permutation(len(m))
    for variant, invariant in (("sorted", True), ("eigenspectrum", True), ("unsorted", False)):
        cm = CoulombMatrix(size=10, variant=variant)
        a = cm.transform_one(m.numbers, m.positions)
        b = cm.transform_one(m.numbers[perm], m.positions[perm])
        assert np.allclose(a, b, atol=1e-9) == invariant, variant


def test_matches_qmllib_coulomb_matrix_on_qm9_molecules() -> None:
    """Same convention as qmllib (Angstrom, row-norm sorting), so qml/qmllib widths carry over."""
    qr = pytest.importorskip("qmllib.representations")
    from secureml.data import load_embedded

    ds = load_embedded().subset(np.arange(0, 3900, 130))
    for variant, sorting in (("sorted", "row-norm"), ("unsorted", "unsorted")):
        cm = CoulombMatrix(size=23, variant=variant)
        X = cm.transform(ds)
        for i, (z, r) in enumerate(zip(ds.charges, ds.coordinates)):
            q = qr.generate_coulomb_matrix(z, r, size=23, sorting=sorting)
            # qmllib packs the lower triangle row by row; rebuild both as full matrices.
            full = np.zeros((23, 23))
            il = np.tril_indices(23)
            full[il] = q
            full.T[il] = q
            np.testing.assert_allclose(cm.to_matrix(X[i]), full, rtol=1e-9, atol=1e-9)


def test_widths_and_transform_one() -> None:
    assert CoulombMatrix(29).n_features == 435
    assert CoulombMatrix(26).n_features == 351
    assert CoulombMatrix(23).n_features == 276
    assert CoulombMatrix(23, "eigenspectrum").n_features == 23
    ds = _ase_dataset()
    cm = CoulombMatrix(29)
    X = cm.transform(ds)
    assert X.shape == (len(ds), 435) and X.dtype == np.float64
    np.testing.assert_array_equal(cm.transform_one(ds.charges[3], ds.coordinates[3]), X[3])
    assert cm.transform(ds.subset([])).shape == (0, 435)


def test_size_none_fits_largest_molecule() -> None:
    ds = _ase_dataset()
    cm = CoulombMatrix(size=None)
    with pytest.raises(ModelError):
        _ = cm.n_features
    cm.fit(ds)
    assert cm.size == max(len(z) for z in ds.charges) == 12
    assert cm.transform(ds).shape == (len(ds), 78)


def test_params_round_trip_and_registry() -> None:
    assert registered_representations()["coulomb_matrix"] is CoulombMatrix
    for cm in (CoulombMatrix(), CoulombMatrix(23, "eigenspectrum"), CoulombMatrix(17, "unsorted")):
        back = representation_from_params(cm.get_params())
        assert isinstance(back, Representation) and back == cm
    with pytest.raises(ModelError, match="unknown representation"):
        representation_from_params({"name": "no_such_representation"})
    with pytest.raises(ModelError):
        representation_from_params({"size": 3})
    with pytest.raises(ModelError):
        representation_from_params({"name": "coulomb_matrix", "bogus": 1})
    with pytest.raises(ModelError):
        CoulombMatrix(10, "diagonal")
    with pytest.raises(ModelError):
        CoulombMatrix(0)


def test_bad_molecules_give_data_errors() -> None:
    cm = CoulombMatrix(size=5)
    m = molecule("CH3CH2OH")  # 9 atoms > 5
    ds = MolecularDataset([m.numbers], [m.positions], names=["ethanol"])
    with pytest.raises(DataError, match=r"ethanol\) has 9 atoms; this model's Coulomb matrix holds at most 5 \(train a model with --cm-size 9"):
        cm.transform(ds)
    w = molecule("H2O")
    bad = w.positions.copy()
    bad[1, 2] = np.nan
    with pytest.raises(DataError, match="NaN"):
        cm.transform_one(w.numbers, bad)
    with pytest.raises(DataError, match="unknown element"):
        cm.transform_one(np.array([8, 0, 1]), w.positions)
    with pytest.raises(DataError, match="unknown element"):
        cm.transform_one(np.array([8, 150, 1]), w.positions)
    with pytest.raises(DataError, match="integers"):
        cm.transform_one(np.array([8.5, 1, 1]), w.positions)
    with pytest.raises(DataError, match="shape"):
        cm.transform_one(w.numbers, w.positions[:2])
    with pytest.raises(DataError, match="non-empty"):
        cm.transform_one(np.array([], dtype=int), np.zeros((0, 3)))


def test_ase_version_supported_by_dscribe() -> None:
    """dscribe 2.1.2 breaks with ase >= 3.27 ("Use only one of momenta and velocities")."""
    import ase

    major_minor = tuple(int(p) for p in ase.__version__.split(".")[:2])
    assert major_minor < (3, 27), "setup.cfg pins ase<3.27 for dscribe 2.1.2"


def test_qm9_atom_order_is_heavy_atoms_first() -> None:
    """The unsorted CM's accuracy on QM9 (docs/models.md, pipeline study) rests on QM9's own atom
    order: heavy atoms first, then hydrogens, in all but a handful of molecules (6 of the 3,921
    embedded ones, e.g. qm9_000024 C C C H N)."""
    from secureml.data import load_embedded

    ds = load_embedded()
    # Heavy atoms first <=> the heavy-atom flags are sorted in descending order.
    ordered = [bool(np.all(np.diff((np.asarray(z) > 1).astype(int)) <= 0)) for z in ds.charges]
    assert 0.995 < np.mean(ordered) < 1.0


def test_canonical_cm_is_permutation_invariant_and_heavy_atoms_first():
    from secureml.data import load_embedded
    from secureml.representations import CoulombMatrix
    from secureml.representations.canonical_order import canonical_atom_order

    data = load_embedded()
    rep = CoulombMatrix(size=23, variant="canonical")
    rng = np.random.default_rng(3)
    for i in range(0, len(data), 197):
        z, r = np.asarray(data.charges[i]), np.asarray(data.coordinates[i])
        p = rng.permutation(len(z))
        np.testing.assert_array_equal(rep.transform_one(z, r), rep.transform_one(z[p], r[p]))
        order = canonical_atom_order(z, r)
        assert sorted(order) == list(range(len(z)))
        zs = z[order]
        assert np.all(zs[: np.sum(zs > 1)] > 1)  # heavy atoms first, then the hydrogens
    # the unsorted variant is not invariant: the canonical one is doing the work
    z, r = np.asarray(data.charges[97]), np.asarray(data.coordinates[97])
    p = rng.permutation(len(z))
    plain = CoulombMatrix(size=23, variant="unsorted")
    assert not np.allclose(plain.transform_one(z, r), plain.transform_one(z[p], r[p]))
    # odd inputs still get an order: one atom; two atoms too far apart to bond
    assert list(canonical_atom_order(np.array([6]), np.zeros((1, 3)))) == [0]
    assert sorted(canonical_atom_order(np.array([1, 8]), np.array([[0, 0, 0], [9.0, 0, 0]]))) == [0, 1]


def test_sorted_tie_break_is_independent_of_atom_order() -> None:
    """Rows with tied norms are ordered by a documented key (charge, then sorted row entries), so
    every input order of a molecule gives the same matrix (dscribe keeps tied atoms in input order)."""
    from secureml.data import load_embedded

    ds = load_embedded().subset(np.arange(0, 3900, 13))
    cm = CoulombMatrix(size=29)
    rng = np.random.default_rng(0)
    for z, r in zip(ds.charges, ds.coordinates):
        ref = cm.transform_one(z, r)
        for _ in range(3):
            p = rng.permutation(len(z))
            np.testing.assert_array_equal(cm.transform_one(z[p], r[p]), ref)
    # a near-symmetric molecule: two H at the same distance from C, one of them near an O
    z = np.array([6, 1, 1, 8])
    r = np.array([[0, 0, 0], [1.1, 0, 0], [-1.1, 0, 0], [1.1, 1.5, 0.0]], float)
    a = cm.transform_one(z, r)
    b = cm.transform_one(z[[0, 2, 1, 3]], r[[0, 2, 1, 3]])
    np.testing.assert_array_equal(a, b)


# QM7 molecules 0023 (HC#C-C#CH) and 0627 (NC-C#C-CN), coordinates as in QM7 (Angstrom): every atom's
# row norm ties exactly with its mirror image's, and the rows of a tied pair are equal as multisets,
# so neither the norm nor the row entries order them; dscribe and qmllib gave different matrices.
QM7_TIED = {
    "0023": ([6, 6, 6, 6, 1, 1], [0.990375, 2.195046, 3.559154, 4.763825, -0.074065, 5.828265], (-0.063, 0.0776)),
    "0627": ([7, 6, 6, 6, 6, 7], [1.003544, 2.158678, 3.522248, 4.729352, 6.092922, 7.248056], (0.077, -0.0628)),
}


@pytest.mark.parametrize("name", sorted(QM7_TIED))
def test_qm7_exactly_tied_molecules_give_one_matrix_for_every_atom_order(name):
    """All 720 atom orders give the same sorted CM (to float rounding); the norm and row-entry keys
    alone left 8 different matrices, entries apart by up to 28 (module docstring: the placement step)."""
    import itertools

    z, xs, (y, zc) = QM7_TIED[name]
    z = np.array(z)
    r = np.array([[x, y, zc] for x in xs])
    cm = CoulombMatrix(size=23)
    X = np.array([cm.transform_one(z[list(p)], r[list(p)]) for p in itertools.permutations(range(6))])
    np.testing.assert_allclose(X, np.broadcast_to(X[0], X.shape), rtol=0, atol=1e-9)
    # the ends come first (largest norms), and each end is followed by its own neighbour's mirror:
    # the matrix is the one whose entries towards the atoms already placed are largest
    full = cm.to_matrix(X[0])[:6, :6]
    assert full[0, 2] > full[0, 3]
