"""Model files: one ``.npz`` holding a representation, a fitted estimator and their provenance.

Layout of the file (readable with plain ``numpy.load(path, allow_pickle=False)``):

* ``__secureml_model__``: a JSON document (0-d unicode array) with ``format`` ("secureml-model"),
  ``format_version``, ``secureml_version``, ``created_utc``, ``property_name``, ``property_unit``
  (the unit of the predictions; absent in older files), ``elements`` (nuclear charges of the
  training molecules, ascending; a query with another element is refused), ``provenance``,
  ``representation`` (its ``get_params()``), ``n_features``, ``estimator``
  (``class``, ``module``, ``params`` = scikit-learn ``get_params()``, ``state``), ``baseline``
  ("mean" or "dressed-atoms") and ``element_energies`` (``{"<Z>": e_Z}`` for dressed atoms,
  else null). Version 1 files have no baseline entries and load as "mean".
* ``__secureml_sha256__`` (version 3 on): SHA-256 over the metadata text and every array, and
  optionally ``__secureml_signature__``, an Ed25519 signature of it (:mod:`secureml.models.signing`).
* one array per ndarray found anywhere in those trees, named by its path, e.g.
  ``estimator.state.X_fit_`` or ``estimator.state.pca.6.basis``; in the JSON the array's place
  holds ``{"__array__": "<name>"}``.

Estimators are found by class name in a registry (:func:`register_estimator`); each exposes
``get_state() -> dict`` (arrays, scalars, strings, nested dicts/lists) and
``@classmethod from_state(state)``. Only modules inside ``secureml.models`` are ever imported to
find a class, so a model file cannot make the loader import arbitrary code, and no pickles are
read.

Note what a model file reveals: an exact KRR file contains the training representations
(``X_fit_``), from which training geometries can largely be recovered -- it is the model owner's
secret, not something to hand to clients.
"""
from __future__ import annotations

import datetime as _dt
import importlib
import json
import pkgutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

import secureml.models as _models_pkg
from secureml import __version__
from secureml.errors import ModelError
from secureml.models.signing import HASH_KEY, SIG_KEY, content_digest, sign_digest, verify_signature
from secureml.models.baseline import BASELINES
from secureml.representations import representation_from_params
from secureml.representations.base import Representation

FORMAT = "secureml-model"
# 2: adds "baseline" / "element_energies". Written for every model so that an older reader
# refuses a dressed-atom model instead of silently predicting without its baseline.
# 3: adds the content hash (and optional signature) of :mod:`secureml.models.signing`; required
# from version 3 on, so stripping the hash does not make a modified file load.
FORMAT_VERSION = 3
HASHED_FROM = 3
META_KEY = "__secureml_model__"

_ESTIMATORS: dict[str, type] = {}
T = TypeVar("T", bound=type)


def register_estimator(cls: T) -> T:
    """Class decorator: let :func:`read_model_parts` rebuild ``cls`` from its ``get_state()``."""
    for attr in ("get_state", "from_state"):
        if not callable(getattr(cls, attr, None)):
            raise TypeError(f"{cls.__name__} must define {attr}() to be stored in model files")
    _ESTIMATORS[cls.__name__] = cls
    return cls


def estimator_class(name: str, module: str | None = None) -> type:
    """Registered estimator class by name, importing ``secureml.models`` modules if needed."""
    if name in _ESTIMATORS:
        return _ESTIMATORS[name]
    if module and module.startswith("secureml.models."):
        try:
            importlib.import_module(module)
        except ImportError:
            pass
    if name not in _ESTIMATORS:
        for info in pkgutil.iter_modules(_models_pkg.__path__):
            if not info.name.startswith("_"):
                try:
                    importlib.import_module(f"secureml.models.{info.name}")
                except ImportError:
                    continue
    if name not in _ESTIMATORS:
        raise ModelError(f"unknown estimator class {name!r}; known: {', '.join(sorted(_ESTIMATORS))}")
    return _ESTIMATORS[name]


# -- trees of JSON values and arrays ------------------------------------------------------------
def _pack(obj: Any, path: str, arrays: dict[str, np.ndarray]) -> Any:
    """Replace every ndarray in ``obj`` by a reference, collecting the arrays under their path."""
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            raise ModelError(f"{path}: object arrays cannot be stored in a model file")
        arrays[path] = obj
        return {"__array__": path}
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, (str, int)) or "." in str(k):
                raise ModelError(f"{path}: keys must be strings or ints without '.', got {k!r}")
            if str(k) == "__array__":
                raise ModelError(f"{path}: the key '__array__' is reserved")
            out[str(k)] = _pack(v, f"{path}.{k}", arrays)
        return out
    if isinstance(obj, (list, tuple)):
        return [_pack(v, f"{path}.{i}", arrays) for i, v in enumerate(obj)]
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        return float(obj)  # json writes inf/nan as Infinity/NaN and reads them back
    if obj is None or isinstance(obj, str):
        return obj
    raise ModelError(f"{path}: cannot store a value of type {type(obj).__name__} in a model file")


def _unpack(obj: Any, arrays: Any, source: str) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__array__"}:
            key = obj["__array__"]
            if key not in arrays.files:
                raise ModelError(f"{source}: array {key!r} is missing from the file")
            return arrays[key]
        return {k: _unpack(v, arrays, source) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unpack(v, arrays, source) for v in obj]
    return obj


# -- saving and loading -------------------------------------------------------------------------
def save_model(model: Any, path: str | Path, sign_key: Any = None) -> Path:
    """Write ``model`` (representation + fitted estimator + provenance) to one ``.npz`` file,
    with its content hash and, given an Ed25519 ``sign_key``, its signature.

    ``model``: a :class:`~secureml.models.pipeline.MolecularModel` (this module sits below it and
    reads only its fields: representation, estimator, property_name, provenance, baseline,
    element_energies_).

    Returns the path written (numpy appends ``.npz`` if missing, so we do it first).
    """
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    est = model.estimator
    cls = type(est)
    if _ESTIMATORS.get(cls.__name__) is not cls:
        raise ModelError(f"estimator class {cls.__name__} cannot be stored in a model file (not registered "
                         "with register_estimator; scikit-learn KernelRidge is converted automatically)")
    arrays: dict[str, np.ndarray] = {}
    params = est.get_params() if hasattr(est, "get_params") else {}
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "secureml_version": __version__,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "property_name": model.property_name,
        "property_unit": getattr(model, "property_unit", ""),
        "elements": None if getattr(model, "elements_", None) is None else [int(z) for z in model.elements_],
        "provenance": _pack(model.provenance, "provenance", arrays),
        "representation": _pack(model.representation.get_params(), "representation", arrays),
        "n_features": int(model.representation.n_features),
        "estimator": {
            "class": cls.__name__,
            "module": cls.__module__,
            "params": _pack({k: v for k, v in params.items()}, "estimator.params", arrays),
            "state": _pack(est.get_state(), "estimator.state", arrays),
        },
        "baseline": model.baseline,
        "element_energies": None if model.element_energies_ is None
        else {str(int(z)): float(e) for z, e in sorted(model.element_energies_.items())},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    _write(path, json.dumps(meta), arrays, sign_key)
    return path


def _write(path: Path, meta_json: str, arrays: dict[str, np.ndarray], sign_key: Any = None) -> None:

    arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    digest = content_digest(meta_json, arrays)
    extra = {HASH_KEY: np.array(digest)}
    if sign_key is not None:
        extra[SIG_KEY] = np.array(sign_digest(digest, sign_key))
    tmp = path.with_name(path.name + ".tmp.npz")
    # Write then rename, so a crash never leaves a half-written model where a good one was.
    np.savez(tmp, **{META_KEY: np.array(meta_json)}, **extra, **arrays)
    tmp.replace(path)


def sign_model_file(path: str | Path, sign_key: Any, out: str | Path | None = None) -> Path:
    """Sign an existing model file (after verifying its hash); writes ``out`` (default: in place)."""
    path = Path(path)
    meta_json, arrays, _ = _read_raw(path)
    meta = json.loads(meta_json)
    if meta.get("format_version", 0) < HASHED_FROM:  # an old file: upgrade it as it is signed
        meta["format_version"] = FORMAT_VERSION
        meta_json = json.dumps(meta)
    dst = Path(out) if out is not None else path
    _write(dst, meta_json, arrays, sign_key)
    return dst


def rehash_model_file(path: str | Path) -> Path:
    """Recompute a file's hash as if it had been written so (for tests of schema errors, and
    for tools that edit metadata on purpose); drops any signature, which no longer applies."""
    path = Path(path)
    with np.load(path, allow_pickle=False) as npz:
        entries = {k: npz[k] for k in npz.files}

    meta_json = str(entries.pop(META_KEY))
    entries.pop(HASH_KEY, None)
    entries.pop(SIG_KEY, None)
    _write(path, meta_json, entries)
    return path


def _read_raw(path: Path) -> tuple[str, dict[str, np.ndarray], dict[str, str]]:
    """(metadata text, arrays, integrity entries) of a model file; ModelError if unreadable."""

    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ModelError(f"{path}: not a secureml model file (not a readable .npz: {exc})") from exc
    with npz:
        if META_KEY not in npz.files:
            raise ModelError(f"{path}: not a secureml model file (no {META_KEY} entry)")
        try:
            meta_json = str(npz[META_KEY])
            integrity = {k: str(npz[k]) for k in (HASH_KEY, SIG_KEY) if k in npz.files}
            arrays = {k: npz[k] for k in npz.files if k not in (META_KEY, HASH_KEY, SIG_KEY)}
        except (ValueError, zipfile.BadZipFile, OSError, EOFError) as exc:
            raise ModelError(f"{path}: corrupt model file ({exc})") from exc
    return meta_json, arrays, integrity


# array kinds a model file may hold: bool, integers, reals, strings (never complex or objects)
_ALLOWED_KINDS = frozenset("biufU")


def read_model_file(path: str | Path, verify_key: Any = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metadata JSON with arrays still referenced, {array name: array}) of a model file.

    Checks, in this order, each failure one ModelError naming the file: readable, a secureml
    model of a known version, the content hash (version 3 on), the signature by ``verify_key``
    (an Ed25519 public key: the file must be signed by it), and a strict schema: real dtypes
    only, finite fitted arrays.  The verified hash is returned as ``meta["_sha256"]``.
    """

    path = Path(path)
    meta_json, arrays, integrity = _read_raw(path)
    try:
        meta = json.loads(meta_json)
    except ValueError as exc:
        raise ModelError(f"{path}: corrupt model metadata ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelError(f"{path}: not a secureml model file (format {meta.get('format') if isinstance(meta, dict) else meta!r})")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
        raise ModelError(
            f"{path}: model format version {version!r} is not supported by secureml {__version__} "
            f"(reads versions 1..{FORMAT_VERSION})"
        )
    for name, a in arrays.items():
        if a.dtype.kind not in _ALLOWED_KINDS:
            raise ModelError(f"{path}: array {name!r} has dtype {a.dtype}; model files hold real numbers only")
    digest = content_digest(meta_json, arrays)
    stored = integrity.get(HASH_KEY)
    if stored is None and version >= HASHED_FROM:
        raise ModelError(f"{path}: model file has no content hash (format {version} requires one)")
    if stored is not None and stored != digest:
        raise ModelError(f"{path}: model file does not match its SHA-256 (modified after it was written)")
    if verify_key is not None:
        verify_signature(digest, integrity.get(SIG_KEY), verify_key, str(path))
    for name, a in arrays.items():
        if name.startswith("estimator.state.") and a.dtype.kind == "f" and not np.isfinite(a).all():
            raise ModelError(f"{path}: array {name!r} contains NaN or inf")
    meta["_sha256"] = digest
    meta["_signed"] = SIG_KEY in integrity
    return meta, arrays


class _Arrays:
    """Minimal mapping view with ``files`` so :func:`_unpack` can resolve references."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self._a = arrays
        self.files = list(arrays)

    def __getitem__(self, key: str) -> np.ndarray:
        return self._a[key]


@dataclass
class ModelParts:
    """The parts of a model file, from which :func:`secureml.models.pipeline.load_model` builds
    the model (this module stays below the pipeline)."""

    representation: Representation
    estimator: Any
    property_name: str
    baseline: str
    provenance: dict[str, Any]
    element_energies: dict[int, float] | None
    #: the verified content hash (SHA-256 hex; the audit log's model id)
    sha256: str = ""
    #: unit of the predictions ("" if the file predates it) and the training molecules' elements
    property_unit: str = ""
    elements: list[int] | None = None


def read_model_parts(path: str | Path, verify_key: Any = None) -> ModelParts:
    """Read a file written by :func:`save_model`; ModelError for a bad, modified or unknown file
    (and, given an Ed25519 ``verify_key``, for one not signed by it)."""
    path = Path(path)
    meta, arrays = read_model_file(path, verify_key)
    view = _Arrays(arrays)
    try:
        est_meta = meta["estimator"]
        rep_params = _unpack(meta["representation"], view, str(path))
        state = _unpack(est_meta["state"], view, str(path))
        provenance = _unpack(meta.get("provenance", {}), view, str(path))
        cls_name, module = est_meta["class"], est_meta.get("module")
    except (KeyError, TypeError) as exc:
        raise ModelError(f"{path}: model file is missing {exc}") from exc
    try:
        representation = representation_from_params(rep_params)
        estimator = estimator_class(cls_name, module).from_state(state)
    except ModelError as exc:
        raise ModelError(f"{path}: {exc}") from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{path}: bad {cls_name} state in model file ({exc!r})") from exc
    n_features = meta.get("n_features")
    if n_features is not None and representation.n_features != n_features:
        raise ModelError(
            f"{path}: representation gives {representation.n_features} features but the file "
            f"records {n_features}"
        )
    n_in = getattr(estimator, "n_features_in_", None)
    if n_in is not None and n_in != representation.n_features:
        raise ModelError(
            f"{path}: the fitted model takes {n_in} features but its representation gives "
            f"{representation.n_features}"
        )
    baseline, energies = _read_baseline(meta, path)
    return ModelParts(
        representation=representation, estimator=estimator,
        property_name=str(meta.get("property_name", "")), baseline=baseline,
        provenance=provenance if isinstance(provenance, dict) else {"value": provenance},
        element_energies=energies, sha256=meta["_sha256"],
        property_unit=str(meta.get("property_unit") or ""), elements=_read_elements(meta, energies, path),
    )


def _read_elements(meta: dict[str, Any], energies: dict[int, float] | None, path: Path) -> list[int] | None:
    """The training elements a file records (a dressed-atom file without them: its e_Z elements)."""
    elements = meta.get("elements")
    if elements is None:
        return sorted(energies) if energies else None
    if not isinstance(elements, list) or not all(
            isinstance(z, int) and not isinstance(z, bool) and 0 < z < 119 for z in elements):
        raise ModelError(f"{path}: bad element list {elements!r}")
    return sorted(elements)


def _read_baseline(meta: dict[str, Any], path: Path) -> tuple[str, dict[int, float] | None]:
    """(baseline, element energies) recorded in a model file; files before version 2 are "mean"."""
    baseline = meta.get("baseline", "mean")
    if baseline not in BASELINES:
        raise ModelError(f"{path}: unknown baseline {baseline!r} (known: {', '.join(BASELINES)})")
    raw = meta.get("element_energies")
    if baseline == "mean":
        return baseline, None
    if not isinstance(raw, dict) or not raw:
        raise ModelError(f"{path}: a dressed-atom model needs its element energies (got {raw!r})")
    energies: dict[int, float] = {}
    for z, e in raw.items():
        if not str(z).isdigit() or isinstance(e, bool) or not isinstance(e, (int, float)):
            raise ModelError(f"{path}: bad element energy {z!r}: {e!r}")
        zi, ef = int(z), float(e)
        if not 0 < zi < 119 or not np.isfinite(ef):
            raise ModelError(f"{path}: bad element energy {z!r}: {e!r}")
        energies[zi] = ef
    return baseline, energies


def describe_model(path: str | Path) -> dict[str, Any]:
    """Metadata of a model file with array references replaced by their shapes (for display)."""
    meta, arrays = read_model_file(path)

    def shapes(obj: Any) -> Any:
        if isinstance(obj, dict):
            if set(obj) == {"__array__"}:
                a = arrays.get(obj["__array__"])
                return f"array{list(a.shape) if a is not None else '?'} {a.dtype if a is not None else ''}".strip()
            return {k: shapes(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [shapes(v) for v in obj]
        return obj

    return shapes(meta)


__all__ = [
    "FORMAT_VERSION",
    "register_estimator",
    "estimator_class",
    "save_model",
    "ModelParts",
    "read_model_parts",
    "read_model_file",
    "describe_model",
    "sign_model_file",
    "rehash_model_file",
]
