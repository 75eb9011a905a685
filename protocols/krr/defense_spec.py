"""The public description of an output defense (grid and noise), shared by the handshake's
parameter check and the protocol steps in :mod:`protocols.krr.defense`.

Kept apart from the steps so that :mod:`protocols.krr.params` can validate it without importing
the borrow-chain machinery above it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from secureml.errors import ProtocolError


@dataclass(frozen=True)
class OutputDefense:
    """Public description of an output defense.

    ``round_bits``: answers on the grid 2^round_bits (0: 1 kcal/mol, -7: 1/128); None: no rounding.
    ``noise_std``: standard deviation of the Gaussian noise added before rounding (kcal/mol).
    """

    round_bits: int | None = None
    noise_std: float = 0.0

    @classmethod
    def from_options(cls, round_to: float | None = None, noise: float = 0.0) -> "OutputDefense":
        """From user-facing values: ``round_to`` snaps to the nearest power of two (the protocol
        truncates whole bits), ``noise`` is a standard deviation in the answer's unit."""
        rb = None
        if round_to is not None and round_to > 0:
            rb = int(round(math.log2(float(round_to))))
        d = cls(rb, float(noise or 0.0))
        d.validate()
        return d

    @property
    def grid(self) -> float | None:
        return None if self.round_bits is None else 2.0 ** self.round_bits

    @property
    def enabled(self) -> bool:
        return self.round_bits is not None or self.noise_std > 0

    def validate(self) -> None:
        if self.round_bits is not None and not (isinstance(self.round_bits, int) and -32 <= self.round_bits <= 16):
            raise ProtocolError(f"output grid 2^{self.round_bits!r} out of range (2^-32 .. 2^16)")
        if not (isinstance(self.noise_std, (int, float)) and math.isfinite(self.noise_std)
                and 0 <= self.noise_std <= 1e6):
            raise ProtocolError(f"bad output noise {self.noise_std!r}")

    def to_dict(self) -> dict[str, Any]:
        if not self.enabled:
            return {}
        return {"round_bits": self.round_bits, "noise_std": float(self.noise_std), "noise": "gaussian-fresh"}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "OutputDefense":
        if not d:
            return cls()
        if not isinstance(d, dict) or set(d) - {"round_bits", "noise_std", "noise"}:
            raise ProtocolError("bad output_defense parameters")
        if d.get("noise", "gaussian-fresh") != "gaussian-fresh":
            raise ProtocolError(f"unknown output noise mechanism {d.get('noise')!r}")
        out = cls(d.get("round_bits"), float(d.get("noise_std", 0.0)))
        out.validate()
        return out

    def describe(self) -> str:
        parts = []
        if self.noise_std > 0:
            parts.append(f"Gaussian noise sd {self.noise_std:g}")
        if self.round_bits is not None:
            parts.append(f"rounded to {self.grid:g}")
        return ", ".join(parts) or "none"

    # ---- the same mechanism in the clear (plaintext API, evaluation) ---------------------------
    def apply(self, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """What the protocol returns for exact answers ``y``: round_half_up(y + n) on the grid."""
        y = np.asarray(y, dtype=np.float64)
        if self.noise_std > 0:
            y = y + rng.normal(0.0, self.noise_std, size=y.shape)
        if self.round_bits is not None:
            y = np.floor(y / self.grid + 0.5) * self.grid
        return y
