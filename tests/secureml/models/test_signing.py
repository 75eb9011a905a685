"""Model-file integrity: tampered, inconsistent and unsigned files are refused with one line."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from secureml.data import load_embedded
from secureml.errors import ModelError
from secureml.models.io import META_KEY, rehash_model_file, sign_model_file
from secureml.models.krr import KernelRidge
from secureml.models.pipeline import MolecularModel
from secureml.models.signing import HASH_KEY, SIG_KEY, generate_signing_key, load_private_key, load_public_key
from secureml.representations import CoulombMatrix


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    for name in ("owner", "other"):
        priv, pub = generate_signing_key()
        (d / f"{name}.key").write_bytes(priv)
        (d / f"{name}.pub").write_bytes(pub)
    return d


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, keys):
    d = tmp_path_factory.mktemp("m")
    data = load_embedded().subset(np.arange(60))
    m = MolecularModel(CoulombMatrix(23), KernelRidge("gaussian", 74.0, 1e-8), "U0_atomization").fit(data)
    return m.save(d / "model.npz", sign_key=load_private_key(keys / "owner.key")), data


def _edit(src: Path, dst: Path, arrays_fn=None, meta_fn=None) -> Path:
    with np.load(src, allow_pickle=False) as f:
        entries = {k: f[k] for k in f.files}
    if arrays_fn:
        arrays_fn(entries)
    if meta_fn:
        entries[META_KEY] = np.array(json.dumps(meta_fn(json.loads(str(entries[META_KEY])))))
    np.savez(dst, **entries)
    return dst


load_model = MolecularModel.load
W = "estimator.state.dual_coef_"
X = "estimator.state.X_fit_"


def test_signed_file_loads_and_predicts(model_file, keys):
    path, data = model_file
    m = load_model(path, verify_key=load_public_key(keys / "owner.pub"))
    assert len(m.sha256_) == 64
    assert np.isfinite(m.predict(data.subset(np.arange(3)))).all()


@pytest.mark.parametrize("label,arrays_fn,meta_fn", [
    ("weights x 1.05", lambda e: e.__setitem__(W, e[W] * 1.05), None),
    ("offset + 100", None, lambda m: {**m, "estimator": {**m["estimator"], "state": {
        **m["estimator"]["state"], "y_offset_": m["estimator"]["state"]["y_offset_"] + 100}}}),
    ("hash stripped", lambda e: e.pop(HASH_KEY), None),
])
def test_modified_files_are_refused(model_file, tmp_path, label, arrays_fn, meta_fn):
    path, _ = model_file
    bad = _edit(path, tmp_path / "bad.npz", arrays_fn, meta_fn)
    with pytest.raises(ModelError, match="SHA-256|no content hash") as e:
        load_model(bad)
    assert str(bad) in str(e.value) and "\n" not in str(e.value)


def test_tamperer_who_rehashes_is_caught_by_the_signature(model_file, keys, tmp_path):
    path, _ = model_file
    bad = rehash_model_file(_edit(path, tmp_path / "bad.npz", lambda e: e.__setitem__(W, e[W] * 1.05)))
    load_model(bad)  # consistent: only the signature can tell
    with pytest.raises(ModelError, match="not signed"):
        load_model(bad, verify_key=load_public_key(keys / "owner.pub"))
    # keep the owner's signature entry on modified content
    with np.load(path) as f:
        sig = f[SIG_KEY]
    forged = _edit(bad, tmp_path / "forged.npz", lambda e: e.__setitem__(SIG_KEY, sig))
    with pytest.raises(ModelError, match="signature is invalid"):
        load_model(forged, verify_key=load_public_key(keys / "owner.pub"))
    # re-signed by someone else
    other = sign_model_file(bad, load_private_key(keys / "other.key"), tmp_path / "other.npz")
    with pytest.raises(ModelError, match="another key"):
        load_model(other, verify_key=load_public_key(keys / "owner.pub"))


def test_inconsistent_files_are_refused(model_file, tmp_path):
    path, _ = model_file
    narrow = rehash_model_file(_edit(path, tmp_path / "narrow.npz", lambda e: e.__setitem__(X, e[X][:, :-5].copy())))
    with pytest.raises(ModelError, match="takes 271 features but its representation gives 276"):
        load_model(narrow)
    cplx = rehash_model_file(_edit(path, tmp_path / "c.npz", lambda e: e.__setitem__(W, e[W].astype(np.complex128))))
    with pytest.raises(ModelError, match="real numbers only"):
        load_model(cplx)
    inf = _edit(path, tmp_path / "inf.npz", lambda e: e[X].__setitem__((0, 0), np.inf))
    with pytest.raises(ModelError, match="NaN or inf"):
        load_model(rehash_model_file(inf))


def test_sign_command_roundtrip(model_file, keys, tmp_path):
    from secureml.models.io import read_model_file

    path, _ = model_file
    out = sign_model_file(path, load_private_key(keys / "other.key"), tmp_path / "s.npz")
    meta, _ = read_model_file(out, verify_key=load_public_key(keys / "other.pub"))
    assert meta["_signed"]
