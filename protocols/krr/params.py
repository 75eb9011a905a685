"""Public parameters of a double-blind KRR session (agreed in :mod:`protocols.krr.handshake`).

Everything in :class:`PublicParams` is known to both parties; nothing else about the model
(training representations, weights, offset) or about the query leaves its owner. The fixed-point
plan (ring sizes, digit sizes, precisions) is *derived* from these public numbers by the same code
on both sides, so the two parties cannot disagree on it.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from protocols.krr.defense_spec import OutputDefense
from protocols.mpc.he_matvec import make_plan
from protocols.mpc.he_matvec_checked import make_plan as make_checked_plan
from protocols.mpc.rlwe_ip128 import gilboa_bytes as gilboa128_bytes
from protocols.mpc.rlwe_ip128 import make_plan as ip128_plan
from secureml.data.formats import symbol
from secureml.errors import ModelError, ProtocolError

PROTOCOL_NAME = "secureml-krr"
PROTOCOL_VERSION = 42  # 2: SoftSpoken OT extension, Laplacian kernel, resumable compact sessions;
# 3: property_unit, elements; 4: security modes (client-malicious: checked OT extension), fixed
# abort code, column-OT PRG tweak; 5: lattice (BFV) cross term for the Gaussian kernel;
# 6: output defenses (noise, rounding inside the protocol); 7: Laplacian digit step with two
# threshold tables and a random OT (no correction), four digits for 15-bit entries, products
# mod 2^(M-1); 8: client-malicious Gaussian kernel (protocols.krr.gaussian_malicious);
# 9: the Laplacian digit plan weighs compute (three digits for 15-bit entries)
# 10: 8-byte frame headers carrying the acknowledgement that defines rounds (protocols.net.transport)
# 11: client-malicious Gaussian: the query's bits fixed once (one set of random OTs for the cross
# term, its MACs and products: no selective failure through a second query)
# 12: semi-honest compact models: the lattice inner product (protocols.krr.linear_he); output_bits field
# 13: client-malicious Gaussian with the checked lattice cross term (protocols.mpc.he_matvec_checked:
# the client's RLWE key and ciphertexts proven well formed, exact BGV-style shares)
# 14: the Laplacian kernel's OTs from silent OT (protocols.ot.ferret; public ot_engine), its
# digit plan weighed with that engine's costs
# 15: early data: a ready message may carry the digest of the public parameters its sender used
# (resumed semi-honest compact sessions send hello, ready and ciphertext in one flight)
# 16: silent OT's LPN code columns are w mod k (was floor(w k / 2^32)): other bits on the wire
# 17: client-malicious Laplacian kernel (protocols.krr.laplacian_malicious)
# 18: lattice compact sessions: an early-data hello may carry lattice_seed (the first ciphertext's
# seed of a, so the server re-randomises while the client featurises); the lattice request header
# is version 2 without the next-session seed (flag bit 1)
# 19: exact kernels' step-9 inner product in Z_2^128 by lattice HE (protocols.mpc.rlwe_ip128) where it
# sends fewer bytes than the OT route (public field inner_product); semi-honest exact kernels split the
# exponent with a low part spanning 8 in t and centred factors (half the step-7 table)
# 20: lattice compact sessions: every TCP hello may carry lattice_seed (first sessions too); the
# lattice request's flag bit 1 again names the next session's seed (16 bytes; the server
# re-randomises for it after its reply, the client makes its mask while it waits)
# 21: kept-alive connections: a hello may ask "keep_alive" and the server's answer says whether it
# keeps the connection; the client's next session then starts with a new hello on it
# (protocols.net.frontdoor, step 8)
# 22: client-malicious compact sessions: a checked random-OT pool kept with the OT-session ticket,
# refilled after the reply and spent by derandomisation (protocols.ot.pool); the ot-session reply
# carries ot_pool / pool, the linear-ip echo pool / refill
# 23: client-malicious kernels' tail (steps 10-14 of protocols.krr.gaussian_malicious): a masked
# public-factor chain in Z_2^R (R = 64 limbs, R > w + g + K V + 24), one bound table per digit, no
# client commitments and no check (replaces the earlier versions' committed, proved factor chain
# and its step-12 check); y mod 2^R at scale 2^(w + g + K V); later in the same version (no new message), step 13a
# floods the output word below the one-factor scale 2^(w + g + V) (e_T uniform on 2^((K - 1) V))
# 24: silent OT's LPN code columns are floor(w k / 2^32) again, by an integer multiply-shift (half
# the modulo's time); the Laplacian digit plan on silent OT re-weighed: five 3-bit digits for
# 15-bit entries (docs/double-blind.md, protocol version 24)
# 25: client-malicious kernels' step 10 may split the G table in rank 2 over two digits of x_hi
# (gaussian_malicious.tail_plan takes it where it sends fewer bytes: the Gaussian at CM settings),
# three words per entry in Z_2^192 and 40 more bits of output scale
# 26: client-malicious kernels' chain re-scaled: masks on [2^m, 2^R - 2^m), both sides truncate
# V bits per digit (one-factor output scale, a 256-bit ring at CM settings), step 13a floods the carries
# 27: client-malicious Laplacian chain on silent OT where the semi-honest one uses it (ot_engine silent
# allowed client-malicious): the client-receiver direction's S1 on the checked SoftSpoken extension
# 28: silent OT's single-point COTs on Half-Tree's correlated GGM trees (one 16-byte block per level
# and tree instead of two and a c per tree; one AES block per node)
# 29: client-malicious kernels' tail in whole bytes: the chain's ring and step 10's ring sized to the byte
# (216 and 168 bits at CM settings), the split's A~, B~ words narrow statistically hiding integers, entry 0
# of each chain table free (the client's pad fixes the mask): 1-bit chain digits, one entry each; the
# Gaussian's commitment of u and the correlation words on q's bits (steps 4-7) send bit b's corrections in
# M + 64 - b bits (their check ring)
# 30: compact models' public ot_round_bits: pooled client-malicious sessions may send rounded COT corrections;
# precorrected pools (the ot-session reply's ot_pool_pre, a pool status's pre): the refill sends the next corrections
# 31: client-malicious Laplacian check (steps 4-6) with MACs mod p = 2^64 - 59: u's commitment sends 8-byte
# corrections per bit, step 5's MAC-word tables 8-byte entries, chi and the check word residues mod p
# 32: client-malicious Laplacian chain mod 2^M (the semi-honest one) lifted to 64-bit shares by one COT per point
# (step 2b); step 5's chi expanded from a 32-byte seed
# 33: bound table OTs (authenticated.bound_lut: the client-malicious Laplacian's step 5, the tails' G and chain
# tables) pad their entries with the leaves of a binary tree over the index bits' OT keys (FixedKeyAES.tree_pads)
# 34: client-malicious Laplacian check mod q = 2^48 - 59 on v = b + c's M + 1 bits and one product OT per point
# (c = a + rho mod 2^M, no lift): 6-byte MAC words and corrections, c in 4 bytes; the Laplacian tail's own split point
# 35: client-malicious Gaussian's lattice proof (protocols.mpc.bfv_proof): witness and query bits MACed once in Z_2^R
# (ceil(R / 8) = 14-byte COT corrections) instead of mod each prime (4 x 7 bytes), each prime's relation lifted to the integers
# (k committed); its reply switched BGV-style to two primes, 9-byte trimmed words; step 9's products MACed through one
# gamma-combined word, check ring 2^(M + 44)
# 36: the kernels' tail (gaussian_malicious.tail_plan): the Gaussian's own split point too, and the output scale
# T - 1 + OUTPUT_NOISE_BITS (20) bits (step 10b truncates the split's h, or the first digit truncates more): narrower chain rings;
# the split's weights on the e0 table where cheaper
# 37: the tail's split G tables: entry 0 of both free (the client's pads fix the masks), the c words without their low
# bytes below step 10b's truncation, h0 past lut (A with ga = g + x bits, e^step / 2^x <= 2^10); the chain ring from the one-sided
# wrap bound (N sum_k |v g| <= 2^(R-40))
# 38: silent OT (protocols.ot.ferret) takes each batch's GGM leaves node-major (no transpose): the COT outputs' order
# 39: semi-honest sessions hash their OTs' one-block outputs (random-OT bits, one- and two-word pads) with one
# fixed-key AES call, pi(sigma(x)) ^ sigma(x) (protocols.ot.crypto, CCR); client-malicious sessions keep TCCR
# 40: bound table OTs' pads under their own AES key (the tag "secureml/authenticated/bound-lut" gave the commitments' key)
# 41: derive_key hashes its whole tag, length-prefixed, instead of taking it as BLAKE2b's 16-byte personalisation (every
# derived key changes; the class of protocol 40's collision is gone)
# 42: the client-malicious Laplacian kernel's default chain is bound (laplacian_chain "bound": protocols.krr.laplacian_strict,
# no selective failure); the unbound one-bit protocol stays as laplacian_chain "unbound"
#: security modes of a served model (docs/malicious.md); `serve --security auto` picks client-malicious where the kind has it
SECURITY_MODES = ("client-malicious", "semi-honest")
DEFAULT_SECURITY = "client-malicious"
#: kinds with a protocol secure against a deviating client (docs/malicious.md; the Laplacian one with
#: laplacian_chain "unbound" up to a one-bit abort leakage per session, bounded by `serve --max-aborts`)
CLIENT_MALICIOUS_KINDS = ("linear", "krr-gaussian", "krr-laplacian")
#: kinds that `--security auto` (and the Python API's default) serves client-malicious where the
#: model's plan fits (else semi-honest, with a warning): every kind that has such a protocol
AUTO_CLIENT_MALICIOUS_KINDS = CLIENT_MALICIOUS_KINDS
#: client-malicious Laplacian protocol: widest encoded entry (its check sends 2^x_bits x 6 bytes
#: per feature) and widest L1 distance (c = a + rho mod 2^M travels in 4 bytes, and the checked
#: relation |e_i| < 2^(M+3) must stay below q = 2^48 - 59; M = 25-26 for Coulomb matrices, d = 351,
#: 15-16-bit entries)
LAPLACIAN_MALICIOUS_MAX_X_BITS = 16
LAPLACIAN_MALICIOUS_MAX_RING_BITS = 32
#: client-malicious Gaussian protocol: widest high part of the distance its one table OT serves
MALICIOUS_MAX_HI_BITS = 12
#: the one reason a client gives when it rejects its own query (never why: that would name its data)
ABORT_CODE = "query-rejected"
KINDS = ("krr-gaussian", "krr-laplacian", "linear")
EXACT_KINDS = ("krr-gaussian", "krr-laplacian")
# how the Gaussian protocol computes its cross term X q: "he" lattice HE (BFV, coefficient packing,
# protocols.mpc.he_matvec: ~9 MB at N = 16,384), "ot" the OT-based vector OLE (~850 MB, exact)
CROSS_TERMS = ("he", "ot")
# how the exact kernels' last step (protocols.krr.expsum, step 9: shares of sum_i r_i v_i in Z_2^128)
# runs: "he" one RLWE ciphertext each way (protocols.mpc.rlwe_ip128: ~1.4 MB at N = 16,384, about
# constant in N), "ot" Gilboa products over random OT (protocols.mpc.gilboa128: ~0.7 kB per training
# point), "auto" whichever sends fewer bytes for the public N (PublicParams.lattice_sum: the lattice from
# N = 932 on for bench/krr_cost.py's Gaussian model, 1,272 for its Laplacian one on silent OT, whose
# random OTs are priced at 3 bits there and at 32 on SoftSpoken)
INNER_PRODUCTS = ("auto", "he", "ot")
# OT extension under the exact Laplacian protocol: "silent" (protocols.ot.ferret, LPN-based: ~2.5 bits
# per OT with a chosen choice bit, more CPU) or "softspoken" (k = 4: 32 bits per OT); public, both use it;
# client-malicious sessions run either in checked mode where the client chooses (protocol 27)
OT_ENGINES = ("silent", "softspoken")
# client-malicious Laplacian kernel: "bound" (protocols.krr.laplacian_strict: every client value of the
# comparison chain committed and checked, no abort that depends on the training data) or "unbound"
# (protocols.krr.laplacian_malicious: the semi-honest chain checked afterwards; whether a deviating
# client's session aborts can tell it one bit about the training data, bounded by --max-aborts)
LAPLACIAN_CHAINS = ("bound", "unbound")
# a served Laplacian model with fewer elements (N x d) than this uses SoftSpoken: silent OT's set-up
# (~0.6 MB, both directions) costs more than its ~15 bytes per element save
SILENT_OT_MIN_ELEMENTS = 1 << 16
# Laplacian kernel: representation entries of at most this many bits (column OTs grow as 2^digit)
LAPLACIAN_MAX_X_BITS = 20

# kernel values below 2^-KERNEL_FRAC_BITS do not matter at the precision we keep; exp(-T_CUT) is below it
KERNEL_FRAC_BITS = 36
# the most the semi-honest lattice cross term may move a Gaussian kernel's exponent t: a relative
# error of 6e-8 per kernel value (models on the default grids are at 1e-11..1e-8: CM, d = 351,
# F = 8..16); coarser grids get the exact OT cross term
LATTICE_T_ERROR = 2.0 ** -24


@dataclass
class PublicParams:
    """What both parties know. Sizes, kernel family and width, fixed-point format, input bounds."""

    kind: str
    n_train: int
    n_features: int
    frac_bits: int  # fractional bits of the query / training representations
    feature_lo: float  # every representation entry must lie in [feature_lo, feature_hi]
    feature_hi: float
    sigma: float = 0.0  # kernel width (public: the client needs it for its local factor)
    weight_bits: int = 0  # two's-complement width of the encoded weights (reveals only a bound on max|w|)
    weight_frac_bits: int = 12
    representation: dict[str, Any] = field(default_factory=dict)
    property_name: str = ""
    # dressed-atom baseline of the model: per-element energies e_Z ({"1": e_H, "6": e_C, ...}); the
    # client adds sum_Z n_Z e_Z of its own molecule to the protocol's output. Public: a least-squares
    # energy per element, fitted on the training set (a handful of numbers, no molecule).
    element_energies: dict[str, float] = field(default_factory=dict)
    # unit of the predictions ("kcal/mol", "eV" ...; "" unknown) and the nuclear charges of the
    # training molecules (a query with another element is refused by name before anything private
    # moves; empty: not checked). Both are in the model file; neither says anything about a molecule.
    property_unit: str = ""
    elements: list[int] = field(default_factory=list)
    # output defense applied inside the protocol (protocols.krr.defense.OutputDefense.to_dict):
    # public, so the client knows the grid and the noise distribution of what it receives
    output_defense: dict[str, Any] = field(default_factory=dict)
    public_model_sha256: str = ""  # linear models: the public feature map the client must hold
    public_model_bytes: int = 0
    # what the protocol promises against a client that deviates (docs/malicious.md)
    security: str = DEFAULT_SECURITY
    cross_term: str = "he"  # Gaussian kernel: "he" (lattice) or "ot" (vector OLE); see CROSS_TERMS
    ot_engine: str = "silent"  # Laplacian kernel: the OT extension, see OT_ENGINES
    laplacian_chain: str = "bound"  # client-malicious Laplacian kernel: see LAPLACIAN_CHAINS
    inner_product: str = "auto"  # exact kernels' step 9: see INNER_PRODUCTS
    # compact (linear) models: public width of the output ring (0: announced in the OT session
    # only); semi-honest sessions with cross_term "he" and no output defense run the lattice inner
    # product (protocols.krr.linear_he), which needs it before the first message
    output_bits: int = 0
    # compact models, client-malicious sessions that spend the checked OT pool: bit i's COT
    # correction drops its lowest max(0, L - i) bits, L = ot_round_bits (0: exact corrections);
    # the client's prediction gains a centred error independent of the weights
    # (protocols.mpc.gilboa.inner_products_pipelined, protocols.krr.linear.round_bits)
    ot_round_bits: int = 0
    version: int = PROTOCOL_VERSION

    # ---- derived fixed-point plan (identical on both sides) -----------------------------------
    @property
    def x_bits(self) -> int:
        """Bits of an encoded (shifted, non-negative) representation entry."""
        span = (self.feature_hi - self.feature_lo) * (1 << self.frac_bits)
        return max(1, math.ceil(math.log2(span)))

    @property
    def ring_bits(self) -> int:
        """Ring Z_2^M for distances: holds d * (2^x_bits)^2 (squared L2) or d * 2^x_bits (L1),
        plus one margin bit; at least 8 bits (the exponential keeps the distance's top 8 bits:
        ``shift_bits`` <= M - 8; tiny models -- a few features on a coarse grid -- failed with a
        negative shift before)."""
        per_entry = self.x_bits if self.kind == "krr-laplacian" else 2 * self.x_bits
        return max(8, math.ceil(math.log2(self.n_features)) + per_entry + 1)

    @property
    def kernel_scale(self) -> float:
        """t = D_enc * kernel_scale is the kernel's exponent for the encoded distance D:
        ||x - q||^2 / (2 sigma^2) (Gaussian) or ||x - q||_1 / sigma (Laplacian)."""
        if self.kind == "krr-laplacian":
            return 1.0 / ((1 << self.frac_bits) * self.sigma)
        return 1.0 / ((1 << (2 * self.frac_bits)) * 2.0 * self.sigma**2)

    def lattice_cross_term_fits(self) -> bool:
        """Whether the semi-honest lattice cross term (:mod:`protocols.mpc.he_matvec`) keeps this
        Gaussian model's precision: it returns X q - delta with 0 <= delta <= 2E, so D moves by up
        to 4E units and t by 4E kernel_scale, which must stay within ``LATTICE_T_ERROR``. Why: on a coarse grid (e.g. --frac-bits 0, one unit = 1 feature unit
        squared) that error was ~10% of a prediction, silently; the OT cross term is exact.
        ProtocolError if no lattice plan fits the noise budget at all."""
        plan = make_plan(self.n_train, self.n_features, self.x_bits, self.ring_bits)
        return 4 * plan.error_bound * self.kernel_scale <= LATTICE_T_ERROR

    @property
    def shift_bits(self) -> int:
        """Low bits of D dropped before the exponential (their effect on t is < 2^-(K+2))."""
        # dropping s bits changes t by at most 2^s * kernel_scale; keep that below 2^-(K+2)
        s = math.floor(-math.log2(self.kernel_scale) - (KERNEL_FRAC_BITS + 2))
        return int(min(max(s, 0), self.ring_bits - 8))

    @property
    def d_bits(self) -> int:
        """Bits of D' = D >> shift."""
        return self.ring_bits - self.shift_bits

    @property
    def c(self) -> float:
        """t = c * D'."""
        return self.kernel_scale * (1 << self.shift_bits)

    @property
    def lo_span_log2(self) -> int:
        """log2 of the largest exponent range of the low part: c * 2^lo_bits <= 2^lo_span_log2.

        Semi-honest (protocols.krr.expsum): 8 -- the client's and the server's factors are centred
        (each in (e^-4, e^4], step 8 of expsum), which halves the table of step 7 against a span of
        4 at one bit of kernel precision. Client-malicious (protocols.krr.gaussian_malicious, its own
        steps with factors in (e^-4, 1]): 4.
        """
        return 2 if self.security == "client-malicious" else 3

    @property
    def lo_bits(self) -> int:
        """Low part of D' whose exponential factor spans at most 2^lo_span_log2 in t:
        c * 2^lo_bits <= 8 (semi-honest) or 4 (client-malicious).

        A wider low part means a smaller table (fewer high values of t to tabulate); the factors
        of the client (e^{-c u_lo}) and the server (e^{c rho_lo}) then span at most e^8 together
        (e^4 each once centred, < 2^6), which the 40-bit fixed-point encodings absorb: a kernel
        term's rounding error is at most e^4 2^-40 = 2^-34.2.
        """
        # at most d_bits - 1: the exponent split needs H = u_hi - rho_hi to have at least one bit
        # (protocols/krr/expsum.py, step 6)
        return int(min(self.d_bits - 1, max(0, math.floor(self.lo_span_log2 - math.log2(self.c)))))

    @property
    def step(self) -> float:
        """t per unit of the high part: c * 2^lo_bits, in (4, 8] semi-honest, (2, 4] client-malicious
        (smaller only where the distance has too few bits)."""
        return self.c * (1 << self.lo_bits)

    @property
    def v_bits(self) -> int:
        """Bits of the client's centred factor e^{step/2 - c u_lo} 2^v_frac_bits < e^4 2^v_frac_bits."""
        return self.v_frac_bits + math.floor(self.step / 2 / math.log(2)) + 1

    @property
    def lut_bits(self) -> int:
        """Bits of D' above lo_bits handled by the look-up table (covers t up to T_CUT)."""
        step = self.step  # t per unit of the high part, in (4, 8] or (2, 4] (lo_span_log2)
        t_cut = (KERNEL_FRAC_BITS + 4) * math.log(2)
        need = math.ceil(math.log2(t_cut / step + 1))
        return int(min(need, self.d_bits - self.lo_bits))

    @property
    def top_bits(self) -> int:
        """Bits of D' above the table: any non-zero one means t > T_CUT, kernel 0."""
        return self.d_bits - self.lo_bits - self.lut_bits

    digit_bits: int = 4  # digit size of the borrow/zero chains (1-out-of-2^(digit_bits+2) OTs)
    g_frac_bits: int = 40  # table output precision
    v_frac_bits: int = 40  # client factor precision

    @property
    def out_scale_bits(self) -> int:
        return self.weight_frac_bits + self.g_frac_bits + self.v_frac_bits

    # linear (compact) models: features phi with this many fractional bits, weights likewise
    feature_frac_bits: int = 24

    # ---- (de)serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if not d["ot_round_bits"]:  # exact corrections (the default): the field stays off the wire
            del d["ot_round_bits"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PublicParams":
        if not isinstance(d, dict):
            raise ProtocolError("public parameters must be a JSON object")
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ProtocolError(f"unknown public parameters: {sorted(unknown)}")
        try:
            p = cls(**d)
        except TypeError as exc:
            raise ProtocolError(f"bad public parameters: {exc}") from None
        p.validate()
        return p

    def check_elements(self, charges: Any, names: Any = None) -> None:
        """ModelError naming the first query molecule with an element the model never saw."""
        if not self.elements:
            return
        known = set(self.elements)
        for i, z in enumerate(charges):
            extra = sorted(set(np.unique(np.asarray(z)).tolist()) - known)
            if extra:
                who = f"molecule {names[i]!r}" if names is not None and len(names) > i and names[i] else f"molecule {i}"
                raise ModelError(
                    f"{who} contains {', '.join(symbol(e) for e in extra)}: the served model never saw it in "
                    f"training (its training molecules have {', '.join(symbol(e) for e in self.elements)})")

    def validate(self) -> None:
        if self.version != PROTOCOL_VERSION:
            raise ProtocolError(
                f"protocol version mismatch: peer speaks {self.version}, we speak {PROTOCOL_VERSION}"
            )
        if self.kind not in KINDS:
            raise ProtocolError(f"unknown model kind {self.kind!r}; supported: {KINDS}")
        if self.security not in SECURITY_MODES:
            raise ProtocolError(f"unknown security mode {self.security!r}; supported: {SECURITY_MODES}")
        if not (1 <= self.n_train <= 1 << 22 and 1 <= self.n_features <= 1 << 16):
            raise ProtocolError(f"sizes out of range: n_train={self.n_train} n_features={self.n_features}")
        if not (0 <= self.frac_bits <= (24 if self.kind in EXACT_KINDS else 40)) or not (
            self.feature_hi > self.feature_lo
        ):
            raise ProtocolError("bad fixed-point format or feature bounds")
        if not isinstance(self.element_energies, dict) or len(self.element_energies) > 118:
            raise ProtocolError("element_energies must be a small {atomic number: energy} object")
        for z, e in self.element_energies.items():
            if not (str(z).isdigit() and 1 <= int(z) <= 118) or not isinstance(e, (int, float)) \
                    or not math.isfinite(float(e)):
                raise ProtocolError(f"bad element energy {z!r}: {e!r}")
        if not isinstance(self.property_unit, str) or len(self.property_unit) > 64:
            raise ProtocolError("property_unit must be a short string")
        if not isinstance(self.elements, list) or len(self.elements) > 118 or not all(
                isinstance(z, int) and not isinstance(z, bool) and 1 <= z <= 118 for z in self.elements):
            raise ProtocolError("elements must be a list of atomic numbers (1..118)")
        if self.output_defense:
            OutputDefense.from_dict(self.output_defense)
        if self.kind == "krr-laplacian" and self.x_bits > LAPLACIAN_MAX_X_BITS:
            raise ProtocolError(
                f"Laplacian-kernel entries need {self.x_bits} bits > {LAPLACIAN_MAX_X_BITS}: "
                "lower frac_bits (train on a coarser representation grid) or the bounds"
            )
        if self.ot_engine not in OT_ENGINES:
            raise ProtocolError(f"unknown OT engine {self.ot_engine!r}; supported: {OT_ENGINES}")
        if self.laplacian_chain not in LAPLACIAN_CHAINS:
            raise ProtocolError(f"unknown Laplacian chain {self.laplacian_chain!r}; supported: {LAPLACIAN_CHAINS}")
        if not isinstance(self.output_bits, int) or not (self.output_bits == 0 or 8 <= self.output_bits <= 64):
            raise ProtocolError(f"bad output_bits {self.output_bits!r}")
        if (not isinstance(self.ot_round_bits, int) or isinstance(self.ot_round_bits, bool)
                or not 0 <= self.ot_round_bits <= self.frac_bits + self.weight_frac_bits
                or (self.ot_round_bits and (self.kind != "linear" or self.output_bits < self.ot_round_bits + 8))):
            raise ProtocolError(f"bad ot_round_bits {self.ot_round_bits!r} for this model")
        if self.inner_product not in INNER_PRODUCTS:
            raise ProtocolError(f"unknown inner product {self.inner_product!r}; supported: {INNER_PRODUCTS}")
        if self.kind in EXACT_KINDS and self.inner_product == "he":
            ip128_plan(self.n_train)  # ProtocolError if the ring cannot hold it
        if self.cross_term not in CROSS_TERMS:
            raise ProtocolError(f"unknown cross term {self.cross_term!r}; supported: {CROSS_TERMS}")
        if self.kind == "krr-gaussian" and self.cross_term == "he":
            if self.security == "client-malicious":  # the checked lattice cross term (no SEAL)
                make_checked_plan(self.n_train, self.n_features, self.x_bits, self.ring_bits)
            elif not self.lattice_cross_term_fits():  # ProtocolError if too wide for the noise budget
                raise ProtocolError("the lattice cross term's rounding is above this model's fixed-point budget "
                                    "(a coarse --frac-bits grid): use --cross-term ot, or more --frac-bits")
        if self.kind == "krr-gaussian" and self.security == "client-malicious":
            if self.lo_bits < 1 or not 1 <= self.d_bits - self.lo_bits <= MALICIOUS_MAX_HI_BITS:
                raise ProtocolError(f"the client-malicious Gaussian protocol serves distances whose high part has "
                                    f"1..{MALICIOUS_MAX_HI_BITS} bits, this model's has {self.d_bits - self.lo_bits}: "
                                    "serve it with --security semi-honest")
            # noise (D1) is added by the server after the protocol's last check (gaussian_malicious
            # step 14)
        if self.kind == "krr-laplacian" and self.security == "client-malicious":
            if self.x_bits > LAPLACIAN_MALICIOUS_MAX_X_BITS or self.ring_bits > LAPLACIAN_MALICIOUS_MAX_RING_BITS:
                raise ProtocolError(
                    f"the client-malicious Laplacian protocol serves entries of at most {LAPLACIAN_MALICIOUS_MAX_X_BITS} "
                    f"bits and distances of at most {LAPLACIAN_MALICIOUS_MAX_RING_BITS}, this model's have {self.x_bits} "
                    f"and {self.ring_bits}: train on a coarser grid or serve it with --security semi-honest")
            if self.lo_bits < 1 or not 1 <= self.d_bits - self.lo_bits <= MALICIOUS_MAX_HI_BITS:
                raise ProtocolError(f"the client-malicious Laplacian protocol serves distances whose high part has "
                                    f"1..{MALICIOUS_MAX_HI_BITS} bits, this model's has {self.d_bits - self.lo_bits}: "
                                    "serve it with --security semi-honest")
        # rounding (D2-D5) takes the client's share bits as table-OT choices that nothing checks: a
        # deviating client could pick them to learn a threshold bit of the sub-grid value per answer
        # (and all of it over repeated queries), so no client-malicious session rounds (docs/malicious.md)
        if (self.security == "client-malicious" and self.output_defense
                and OutputDefense.from_dict(self.output_defense).round_bits is not None):
            raise ProtocolError("output rounding (--round-to) is not part of the client-malicious protocols yet "
                                "(--noise is): serve it with --security semi-honest to round")
        if self.kind in EXACT_KINDS:
            if not (self.sigma > 0 and math.isfinite(self.sigma)):
                raise ProtocolError("sigma must be positive")
            if self.ring_bits > 64:
                raise ProtocolError(
                    f"distances need {self.ring_bits} bits > 64: lower frac_bits or the bounds"
                )
            if not (1 <= self.weight_bits <= 48):
                raise ProtocolError("weight_bits out of range")
            if self.out_scale_bits + 24 > 126:  # predictions up to 2^24 in magnitude
                raise ProtocolError("fixed-point plan exceeds the 128-bit output ring")

    # ---- encoding helpers both parties use ----------------------------------------------------
    @property
    def checked_ot(self) -> bool:
        """Client-malicious mode: every OT extension in which the client chooses is checked."""
        return self.security == "client-malicious"

    @property
    def lattice_sum(self) -> bool:
        """Exact kernels: step 9 of protocols.krr.expsum by lattice HE (True) or by OT (False).
        "auto" compares the two routes' bytes for one query at this N (public, so both sides agree); the
        OT route's random OTs cost ~3 bits on silent OT (Laplacian, ``ot_engine`` silent), 32 on SoftSpoken."""
        if self.inner_product != "auto":
            return self.inner_product == "he"
        ot_bits = 3 if self.kind == "krr-laplacian" and self.ot_engine == "silent" else 32
        return ip128_plan(self.n_train).traffic_bytes(1) < gilboa128_bytes(self.n_train, self.v_bits, ot_bits)

    @property
    def lattice_linear(self) -> bool:
        """Compact model served semi-honest with the lattice inner product (protocols.krr.linear_he)."""
        return (self.kind == "linear" and self.security == "semi-honest" and self.cross_term == "he"
                and not self.output_defense and self.output_bits > 0)

    @property
    def baseline_elements(self) -> list[int]:
        """Atomic numbers of the dressed-atom baseline, ascending (empty: no baseline)."""
        return sorted(int(z) for z in self.element_energies)

    def baseline_energy(self, counts: np.ndarray) -> np.ndarray:
        """sum_Z n_Z e_Z for element counts (k, len(baseline_elements)) in ascending-Z order."""
        counts = np.atleast_2d(np.asarray(counts, dtype=np.float64))
        zs = self.baseline_elements
        if counts.shape[1] != len(zs):
            raise ModelError(f"element counts have {counts.shape[1]} columns, the model's baseline has "
                             f"{len(zs)} elements {zs}")
        return counts @ np.array([float(self.element_energies[str(z)]) for z in zs])

    def encode_features(self, X: np.ndarray, who: str = "input") -> np.ndarray:
        """Shift into [0, hi-lo] and encode with frac_bits; refuses NaN and out-of-bound entries."""
        X = np.asarray(X, dtype=np.float64)
        if X.shape[-1] != self.n_features:
            raise ModelError(f"{who} has {X.shape[-1]} features, the model expects {self.n_features}")
        # two reductions check everything: a NaN makes min and max NaN, an inf makes one infinite
        mn, mx = float(X.min()), float(X.max())
        if not (math.isfinite(mn) and math.isfinite(mx)):
            raise ModelError(f"{who} contains NaN or inf")
        if mn < self.feature_lo or mx > self.feature_hi:
            raise ModelError(
                f"{who} has entries outside the public bound [{self.feature_lo}, {self.feature_hi}]"
            )
        # one temporary, updated in place (the same operations as rint((X - lo) 2^F))
        enc = np.subtract(X, self.feature_lo)
        enc *= float(1 << self.frac_bits)
        np.rint(enc, out=enc)
        # the top of the range rounds to 2^x_bits; clip it (an error of one unit, 2^-frac_bits)
        np.minimum(enc, float((1 << self.x_bits) - 1), out=enc)
        return enc.astype(np.uint64)


def feature_bounds(X: np.ndarray) -> tuple[float, float]:
    """Public bounds from training data, revealing only powers of two: [lo, lo + 2^k].

    lo is 0 for non-negative data, else -2^j (j >= 0, the smallest power of two covering the most
    negative entry): an integer, so every 2^-F grid stays aligned, and no finer than a power of two.
    """
    mn = float(np.min(X))
    lo = 0.0 if mn >= 0 else -float(2 ** max(0, math.ceil(math.log2(-mn))))
    span = max(float(np.max(X)) - lo, 1.0)
    return lo, lo + float(2 ** math.ceil(math.log2(span * 1.0001)))
