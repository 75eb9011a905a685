"""What the model owner serves: the secret arrays, the public parameters derived from them, and
the precision chosen for them.

:class:`ServedModel` is an exact KRR model (Gaussian or Laplacian kernel);
:class:`CompactServedModel` a compact random-feature model (public feature map, secret weights).
:meth:`ServedModel.from_molecular_model` picks the right one for a trained ``MolecularModel``.
Per-session options (OT precomputation, SoftSpoken k, OT-session resumption) are plain fields.
"""
from __future__ import annotations

import hashlib
import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from protocols.common import KernelModelParams
from protocols.krr import expsum
from protocols.krr import linear as compact
from protocols.krr import linear_he
from protocols.krr.params import (AUTO_CLIENT_MALICIOUS_KINDS, DEFAULT_SECURITY, LAPLACIAN_MALICIOUS_MAX_X_BITS,
                                  LAPLACIAN_MAX_X_BITS, SECURITY_MODES, SILENT_OT_MIN_ELEMENTS, PublicParams,
                                  feature_bounds)
from protocols.krr.registry import KERNEL_KINDS
from protocols.ot.session import DEFAULT_K
from secureml.data import load_embedded
from secureml.errors import ModelError, ProtocolError
from secureml.models.pipeline import MolecularModel
from protocols.krr.defense import OutputDefense


def laplacian_frac_bits(span: float, max_x_bits: int = LAPLACIAN_MAX_X_BITS) -> int:
    """Finest 2^-F grid (F <= 16) whose encoded entries fit ``max_x_bits`` bits."""
    for f in range(16, -1, -1):
        if math.ceil(math.log2(span * (1 << f))) <= max_x_bits:
            return f
    return 0


def auto_frac_bits(n_features: int, span: float, max_ring_bits: int = 60) -> int:
    """Largest precision <= 16 bits whose squared distances fit a ring of ``max_ring_bits``."""
    for f in range(16, 7, -1):
        x_bits = max(1, math.ceil(math.log2(span * (1 << f))))
        if math.ceil(math.log2(n_features)) + 2 * x_bits + 1 <= max_ring_bits:
            return f
    return 8


def _lattice_fits(public: PublicParams) -> bool:
    try:
        return public.lattice_cross_term_fits()
    except ProtocolError:  # no lattice plan fits the noise budget: the OT cross term
        return False


def _energies(element_energies: dict[int, float] | None) -> dict[str, float]:
    return {str(int(z)): float(e) for z, e in (element_energies or {}).items()}


def security_mode(kind: str, security: str | None) -> str:
    """The session security asked for a served model (docs/malicious.md).

    ``None`` (the Python API's default) means "client-malicious where the kind has a protocol"
    (:data:`AUTO_CLIENT_MALICIOUS_KINDS`: compact models, the Gaussian and the Laplacian kernel);
    :class:`ServedModel` falls back to semi-honest, with a warning, where this model's plan does not
    fit the client-malicious protocol -- as ``secureml serve --security auto`` does. The mode is
    announced to the client in the handshake.
    """
    if security is None:
        return DEFAULT_SECURITY if kind in AUTO_CLIENT_MALICIOUS_KINDS else "semi-honest"
    if security not in SECURITY_MODES:
        raise ModelError(f"unknown security mode {security!r}; choose one of {SECURITY_MODES}")
    return security


class Served:
    """Any served model: its public parameters and the session options (fields, set freely)."""

    public: PublicParams
    #: compact models: extend the OTs before the online phase (offline/online split)
    precompute_ot: bool = compact.PRECOMPUTE_OT
    #: compact models: SoftSpoken k of the OT sessions
    softspoken_k: int = DEFAULT_K
    #: compact models: keep OT-session state so a client's later sessions skip the base OTs
    resume_ot: bool = True
    #: compact models, client-malicious: keep a checked random-OT pool with each ticket, refilled
    #: after every reply, so resumed sessions only derandomise online (protocols.ot.pool)
    ot_pool: bool = compact.OT_POOL
    #: compact models, client-malicious: the pool's refill also sends the next session's
    #: corrections (precorrected pool: resumed sessions send only d online; same bytes per session)
    ot_pool_precorrect: bool = compact.OT_POOL_PRECORRECT
    #: SHA-256 of the model file served (verified on load; the audit log's model id)
    sha256: str = ""

    def set_defense(self, round_to: float | None = None, noise: float = 0.0) -> "Served":
        """Answer on the grid ``round_to`` (a power of two) with fresh Gaussian noise of sd ``noise``
        added first -- inside the protocol (:mod:`protocols.krr.defense`); the mechanism is public
        and announced to clients in the handshake. ``set_defense()`` removes it."""
        self.public.output_defense = OutputDefense.from_options(round_to=round_to, noise=noise).to_dict()
        self.public.validate()  # e.g. the client-malicious Gaussian protocol has noise but no rounding yet
        return self


class ServedModel(Served):
    """An exact KRR model as served: ``ServedModel(KernelModelParams(...))``.

    Fields: ``params`` (the secret arrays), ``public`` (:class:`PublicParams`) and the session
    options of :class:`Served`. Compact random-feature models: :meth:`linear` (or
    :meth:`from_molecular_model`, which picks the right kind).
    """

    params: KernelModelParams

    def __init__(self, params: KernelModelParams, representation: dict[str, Any] | None = None,
                 property_name: str = "", frac_bits: int | None = None, weight_frac_bits: int = 16,
                 element_energies: dict[int, float] | None = None, security: str | None = None) -> None:
        if params.kernel not in KERNEL_KINDS:
            raise ModelError(
                f"the OT protocol serves Gaussian- and Laplacian-kernel KRR; this model uses {params.kernel!r}"
            )
        self.params = params
        kind = KERNEL_KINDS[params.kernel]
        mode = security_mode(kind, security)
        try:
            self.public = self._public(params, mode, representation, property_name, frac_bits, weight_frac_bits,
                                       element_energies)
        except ProtocolError as exc:
            if security is not None or mode == "semi-honest":
                raise
            # the API's default: client-malicious where this model's plan fits, else semi-honest (as
            # `serve --security auto`), said once
            warnings.warn(f"{kind} model served semi-honest: {exc}", stacklevel=2)
            self.public = self._public(params, "semi-honest", representation, property_name, frac_bits,
                                       weight_frac_bits, element_energies)

    @staticmethod
    def _public(params: KernelModelParams, security: str, representation: dict[str, Any] | None,
                property_name: str, frac_bits: int | None, weight_frac_bits: int,
                element_energies: dict[int, float] | None) -> PublicParams:
        lo, hi = feature_bounds(params.X_train)
        _, wbits = expsum.encode_weights(params.dual_coef, weight_frac_bits)
        malicious = security == "client-malicious"
        if params.kernel == "laplacian":
            # entries of at most LAPLACIAN_MAX_X_BITS bits (16 client-malicious: its check's tables
            # grow as 2^x_bits); finer grids are rounded (error budget: docs/double-blind.md) --
            # train on the 2^-F grid to be exact
            cap = laplacian_frac_bits(hi - lo, LAPLACIAN_MALICIOUS_MAX_X_BITS if malicious else LAPLACIAN_MAX_X_BITS)
            frac_bits = cap if frac_bits is None else min(frac_bits, cap)
        elif frac_bits is None:
            frac_bits = auto_frac_bits(params.n_features, hi - lo)
        public = PublicParams(
            kind=KERNEL_KINDS[params.kernel], n_train=params.n_train, n_features=params.n_features,
            frac_bits=frac_bits, feature_lo=lo, feature_hi=hi, sigma=float(params.sigma),
            weight_bits=wbits, weight_frac_bits=weight_frac_bits,
            representation=dict(representation or {}), property_name=property_name,
            element_energies=_energies(element_energies), security=security,
        )
        if public.kind == "krr-gaussian" and malicious:
            public.cross_term = "he"  # the checked lattice cross term (protocols.mpc.he_matvec_checked)
        elif public.kind == "krr-gaussian" and not _lattice_fits(public):
            public.cross_term = "ot"  # exact: the lattice one's rounding is too coarse for this grid
        if params.n_train * params.n_features < SILENT_OT_MIN_ELEMENTS:
            # silent OT's set-up (~0.6 MB for both directions) outweighs its ~15 bytes per element
            # saved below this size, and it costs more CPU per OT (docs/ot-engine.md); the same rule
            # in both security modes (client-malicious: checked where the client chooses, protocol 27)
            public.ot_engine = "softspoken"
        public.validate()
        return public

    @classmethod
    def from_file(cls, path: str, verify_key: Any = None, **kw: Any) -> Served:
        """Load, verify (hash; signature by ``verify_key`` if given) and prepare a model file."""
        mm = MolecularModel.load(path, verify_key=verify_key)
        served = cls.from_molecular_model(mm, **kw)
        served.sha256 = getattr(mm, "sha256_", "")
        return served

    @classmethod
    def from_molecular_model(cls, mm: MolecularModel, *, frac_bits: int | None = None,
                             calibration: Any = None, security: str | None = None) -> Served:
        """Exact KRR for a kernel estimator, a compact model for a random-feature one."""
        est = mm.estimator
        if hasattr(est, "dual_coef_"):
            rep = mm.representation.get_params()
            if frac_bits is None and rep.get("grid_bits") is not None:
                # the model's features already sit on a 2^-grid_bits grid: encode them exactly
                frac_bits = int(rep["grid_bits"])
            served: Served = cls(KernelModelParams.from_estimator(est), representation=rep,
                                 property_name=mm.property_name, element_energies=mm.element_energies_,
                                 frac_bits=frac_bits, security=security)
            _publish_model_facts(served, mm)
            return served
        return CompactServedModel.from_molecular_model(mm, calibration=calibration, security=security)

    @classmethod
    def linear(cls, mm: MolecularModel, calibration: Any = None, security: str | None = None
               ) -> "CompactServedModel":
        """Serve a compact random-feature model (see :class:`CompactServedModel`)."""
        return CompactServedModel.from_molecular_model(mm, calibration=calibration, security=security)


@dataclass
class CompactSecret:
    """The secret side of a compact model, and the public blob of its feature map."""

    weights: np.ndarray  # w (features, then per-element counts)
    offset: float  # y_offset
    out_bits: int  # public ring width of the output shares
    public_blob: bytes  # the public model file (feature map), sent once per client


class CompactServedModel(Served):
    """A compact random-feature model as served: ``compact`` (secret weights) and ``public``."""

    def __init__(self, compact_secret: CompactSecret, public: PublicParams) -> None:
        self.compact = compact_secret
        self.public = public
        self.public.validate()

    @classmethod
    def from_molecular_model(cls, mm: MolecularModel, *, frac_bits: int | None = None,
                             calibration: Any = None, security: str | None = None) -> "CompactServedModel":
        """``calibration`` molecules set the public bounds (default: the embedded data set, public)."""
        w, offset, public_model = compact.linear_parts(mm)
        if calibration is None:
            calibration = load_embedded().subset(np.arange(0, 3921, 8))
            if mm.elements_:
                # only public molecules made of the model's elements (one trained without
                # fluorine cannot featurize F)
                known = set(mm.elements_)
                keep = [i for i, z in enumerate(calibration.charges) if set(np.unique(z).tolist()) <= known]
                calibration = calibration.subset(keep) if keep else calibration
        phi = compact.client_features(public_model, calibration)
        pred = phi @ w
        plan = compact.plan(phi, w, float(np.max(np.abs(pred))) if pred.size else 1.0,
                            bound=compact.feature_bound(public_model, phi))
        blob = compact.model_bytes(public_model)
        public = PublicParams(
            kind="linear", n_train=int(mm.provenance.get("n_train", 1) or 1),
            n_features=int(w.shape[0]), representation=dict(mm.representation.get_params()),
            property_name=mm.property_name,
            public_model_sha256=hashlib.sha256(blob).hexdigest(), public_model_bytes=len(blob),
            element_energies=_energies(mm.element_energies_), security=security_mode("linear", security),
            **plan,
        )
        out_bits = compact.output_bits(pred + offset, public)  # public ring width
        public.output_bits = out_bits
        # semi-honest: the lattice inner product (linear_he) when its noise fits this model's
        # weights, else the OT path; client-malicious: the checked OT path
        public.cross_term = "he" if public.security == "semi-honest" and linear_he.fits(w, public, out_bits) \
            is not None else "ot"
        served = cls(CompactSecret(w, offset, out_bits, blob), public)
        _publish_model_facts(served, mm)
        return served

    def round_ot_corrections(self, on: bool = True, tol: float = compact.DEFAULT_TOL) -> "CompactServedModel":
        """Client-malicious pooled sessions send rounded COT corrections (public ``ot_round_bits``,
        :func:`protocols.krr.linear.round_bits`: the largest L within the error budget ``tol``), or
        exact ones (``on=False``). Announced to clients in the public parameters."""
        if on and self.public.security != "client-malicious":
            raise ModelError("rounded OT corrections are for client-malicious compact sessions (the OT pool)")
        self.public.ot_round_bits = compact.round_bits(self.public, self.compact.out_bits, tol) if on else 0
        self.public.validate()
        return self


def _publish_model_facts(served: Served, mm: MolecularModel) -> None:
    """The unit of the predictions and the training elements, from the model file, made public
    (the client prints the unit and refuses a molecule with another element by name)."""
    served.public.property_unit = str(getattr(mm, "property_unit", "") or "")
    served.public.elements = [int(z) for z in (getattr(mm, "elements_", None) or [])]
    served.public.validate()
