"""Public parameters of the CKKS KRR engine and how the model owner chooses them.

The circuit (see :mod:`protocols.baselines.fhe.server`) has multiplicative depth ``L = 4 + k``:
1 level for the distances (plaintext-ciphertext products), 3 for the degree-7 polynomial
p(u) ~ exp(u) on u in [-1, 0], and k for the range extension exp(t) = exp(t / 2^k)^(2^k).
The prime chain is ``[60, scale_bits x L, 60]`` bits; the smallest ring degree whose 128-bit
security bound (SEAL's table, HomomorphicEncryption.org standard) admits that many bits is used.

Range check: with a public centre c (the training mean) and radius R = max_i ||x_i - c||, and a
public query radius B (the client refuses any query with ||q - c|| > B), every squared distance
obeys ||x_i - q||^2 <= (R + B)^2, so t = -D / (2 sigma^2) lies in [-T, 0] with
T = (R + B)^2 / (2 sigma^2), and k = ceil(log2 T) puts t / 2^k in [-1, 0], where the polynomial is
accurate (max relative error :data:`EXP_POLY_REL_ERROR`). This check is rigorous (triangle
inequality), not statistical: a query that passes it can never leave the polynomial's range.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from protocols.common import KernelModelParams
from secureml.errors import ModelError, ProtocolError

PROTOCOL_NAME = "secureml-fhe-ckks"
PROTOCOL_VERSION = 1
EXP_POLY_DEGREE = 7
# The query is encrypted at 2^(scale_bits + 5) and the model's diagonals encoded at ~2^(scale_bits - 5):
# the product still rescales to 2^scale_bits, but the client's fresh encryption noise (~2^10 integer
# units) and the model's encoding rounding (~2^5 units) then weigh about equally in u.
INPUT_SCALE_EXTRA_BITS = 5
FIRST_PRIME_BITS = 60
SPECIAL_PRIME_BITS = 60
# SEAL's CoeffModulus::MaxBitCount(N, tc128) (HomomorphicEncryption.org security standard)
MAX_BITS_128 = {4096: 109, 8192: 218, 16384: 438, 32768: 881}


def exp_poly_coefficients(degree: int = EXP_POLY_DEGREE) -> np.ndarray:
    """Power-basis coefficients c_0..c_n of the Chebyshev interpolant of exp on [-1, 0].

    Interpolating at Chebyshev nodes keeps the error near the minimax error
    (about 2 (1/4)^(n+1) / (n+1)! for an interval of half-width 1/2).
    """
    n = degree
    nodes = -0.5 + 0.5 * np.cos((2 * np.arange(n + 1) + 1) * np.pi / (2 * (n + 1)))
    V = np.vander(nodes, n + 1, increasing=True)
    return np.linalg.solve(V, np.exp(nodes))


def exp_poly_error(degree: int = EXP_POLY_DEGREE) -> float:
    """Max relative error of the polynomial on [-1, 0] (dense grid)."""
    c = exp_poly_coefficients(degree)
    u = np.linspace(-1.0, 0.0, 20001)
    p = np.polynomial.polynomial.polyval(u, c)
    return float(np.max(np.abs(p / np.exp(u) - 1.0)))


EXP_POLY_REL_ERROR = exp_poly_error()


@dataclass
class FHEParams:
    """What both parties know (sent by the server in its first message)."""

    poly_degree: int
    coeff_bits: list[int]
    scale_bits: int
    input_scale_bits: int  # the query is encrypted at scale 2^input_scale_bits (> scale_bits: see server.py)
    n_features: int
    d_pad: int  # augmented query length (d + 1, for ||q||^2) rounded up to a power of two
    baby_steps: int  # g: the client sends g rotated copies of its packed query
    k: int  # range-extension squarings
    center: list[float]  # public centre c of the input ball
    query_radius: float  # public B: the client's ||q - c|| must not exceed it
    flood_bits: int  # statistical security parameter s of the noise flooding (0: off)
    protocol: str = PROTOCOL_NAME
    version: int = PROTOCOL_VERSION

    @property
    def depth(self) -> int:
        return 4 + self.k

    @property
    def slots(self) -> int:
        return self.poly_degree // 2

    @property
    def giant_steps(self) -> int:
        return self.d_pad // self.baby_steps

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> "FHEParams":
        if not isinstance(d, dict):
            raise ProtocolError("FHE parameters must be a JSON object")
        names = {f for f in cls.__dataclass_fields__}
        if set(d) != names:
            raise ProtocolError(f"FHE parameters have fields {sorted(d)}, expected {sorted(names)}")
        try:
            p = cls(**d)
            p.poly_degree = int(p.poly_degree)
            p.coeff_bits = [int(b) for b in p.coeff_bits]
            p.center = [float(v) for v in p.center]
            p.query_radius = float(p.query_radius)
        except (TypeError, ValueError) as exc:
            raise ProtocolError(f"malformed FHE parameters: {exc}") from None
        p.validate()
        return p

    def validate(self) -> None:
        """Reject parameter sets that are insecure, inconsistent or absurdly large."""
        if self.protocol != PROTOCOL_NAME or self.version != PROTOCOL_VERSION:
            raise ProtocolError(f"peer speaks {self.protocol} v{self.version}, not {PROTOCOL_NAME} v{PROTOCOL_VERSION}")
        if self.poly_degree not in MAX_BITS_128:
            raise ProtocolError(f"ring degree {self.poly_degree} not supported")
        if sum(self.coeff_bits) > MAX_BITS_128[self.poly_degree]:
            raise ProtocolError("coefficient modulus too large for 128-bit security")
        if len(self.coeff_bits) != self.depth + 2 or not 20 <= self.scale_bits <= 59:
            raise ProtocolError("prime chain does not match the circuit depth")
        if not self.scale_bits <= self.input_scale_bits <= self.scale_bits + 20:
            raise ProtocolError("bad input scale")
        if not (1 <= self.n_features < self.d_pad <= self.slots) or self.d_pad & (self.d_pad - 1):
            raise ProtocolError("bad feature packing")
        g = self.baby_steps
        if g < 1 or g & (g - 1) or g > self.d_pad:
            raise ProtocolError("baby steps must be a power of two <= d_pad")
        if len(self.center) != self.n_features or not math.isfinite(self.query_radius) or self.query_radius <= 0:
            raise ProtocolError("bad input ball")
        if not 0 <= self.flood_bits <= 64 or not 0 <= self.k <= 20:
            raise ProtocolError("bad flooding or range parameters")


def plan(
    model: KernelModelParams,
    *,
    scale_bits: int | None = None,
    min_scale_bits: int | None = None,
    query_radius: float | None = None,
    query_radius_factor: float = 1.5,
    baby_steps: int | None = None,
    flood_bits: int = 20,
    poly_degree: int | None = None,
) -> FHEParams:
    """Choose the public parameters for ``model`` (model owner's side).

    ``query_radius`` defaults to ``query_radius_factor`` times the training radius. The ring is
    the smallest whose 128-bit modulus budget gives every level at least ``min_scale_bits``
    (default 55 with flooding -- it costs ~``flood_bits`` bits of precision, so precision comes
    first -- else 40); the scale is then the largest prime size (<= 59 bits) that fits.
    """
    if model.kernel != "gaussian":
        raise ModelError(
            "the CKKS engine supports the Gaussian kernel only: a Laplacian kernel needs |x_ij - q_j| "
            f"for all {model.n_train} x {model.n_features} pairs, i.e. a deep polynomial approximation "
            "of |.| on every entry (depth ~10-12 for 10-bit accuracy) before the exponential; with the "
            "exp circuit that exceeds the 881-bit modulus of the largest 128-bit SEAL ring, and SEAL has "
            "no bootstrapping. Use the OT engine (protocols.krr) for Laplacian models."
        )
    d = model.n_features
    center = model.X_train.mean(axis=0)
    radius = float(np.sqrt(((model.X_train - center) ** 2).sum(axis=1)).max())
    radius = max(radius, 1e-12)
    B = float(query_radius) if query_radius is not None else query_radius_factor * radius
    T = (radius + B) ** 2 / (2.0 * float(model.sigma) ** 2)
    k = max(0, math.ceil(math.log2(T))) if T > 1.0 else 0
    depth = 4 + k
    d_pad = 1 << math.ceil(math.log2(d + 1))
    fixed = FIRST_PRIME_BITS + SPECIAL_PRIME_BITS
    candidates = [poly_degree] if poly_degree else [8192, 16384, 32768]
    if min_scale_bits is None:
        min_scale_bits = 55 if flood_bits > 0 else 40
    # preferred: the smallest ring with >= min_scale_bits per level; failing that (deep circuits,
    # i.e. a narrow kernel), the largest scale any ring allows down to 30 bits (less precision)
    tiers = [30] if poly_degree or scale_bits else [int(min_scale_bits), 30]
    chosen = None
    for min_bits in tiers:
        for n in candidates:
            if n not in MAX_BITS_128:
                raise ModelError(f"poly_degree must be one of {sorted(MAX_BITS_128)}")
            if d_pad > n // 2:
                continue
            sb = min(59, (MAX_BITS_128[n] - fixed) // depth) if scale_bits is None else int(scale_bits)
            if sb >= min_bits and fixed + depth * sb <= MAX_BITS_128[n]:
                chosen = (n, sb)
                break
        if chosen is not None:
            break
    if chosen is None:
        raise ModelError(
            f"no 128-bit CKKS ring fits depth {depth} (range T = {T:.1f}: k = {k} squarings) with "
            f"{d} features; increase sigma, lower query_radius or reduce the representation"
        )
    n, sb = chosen
    if baby_steps is None:
        baby_steps = 1 << max(0, (int(math.log2(d_pad)) - 1) // 2)
    params = FHEParams(
        poly_degree=n,
        coeff_bits=[FIRST_PRIME_BITS] + [sb] * depth + [SPECIAL_PRIME_BITS],
        scale_bits=sb,
        input_scale_bits=sb + INPUT_SCALE_EXTRA_BITS,
        n_features=d,
        d_pad=d_pad,
        baby_steps=int(baby_steps),
        k=k,
        center=[float(v) for v in center],
        query_radius=B,
        flood_bits=int(flood_bits),
    )
    params.validate()
    return params
