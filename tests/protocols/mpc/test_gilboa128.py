"""128-bit Gilboa inner products: one function, either party the chooser, against Python integers."""
from __future__ import annotations

import numpy as np
import pytest

from protocols.mpc import u128
from protocols.mpc.gilboa128 import inner_products128
from protocols.testing import run_two_party
from secureml.errors import ProtocolError

U64 = np.uint64


@pytest.mark.parametrize("chooser", [0, 1])
@pytest.mark.parametrize("n_bits", [1, 9, 40])
def test_inner_products_match_python_ints(chooser, n_bits):
    rng = np.random.default_rng(n_bits + 10 * chooser)
    k, n = 3, 17
    hi = rng.integers(0, 2**63, (k, n), dtype=U64) * U64(2)
    lo = rng.integers(0, 2**63, (k, n), dtype=U64) * U64(2) + U64(1)
    y = rng.integers(0, 2**n_bits, (k, n), dtype=U64)

    def run(p):
        if p.role == chooser:
            return inner_products128(p, chooser, bits=y, n_bits=n_bits)
        return inner_products128(p, chooser, values=(hi, lo), n_bits=n_bits)

    s0, s1 = run_two_party(run, run)
    vals = np.array(u128.to_int((hi.ravel(), lo.ravel())), dtype=object).reshape(k, n)
    want = [sum(int(v) * int(c) for v, c in zip(vals[a], y[a])) % u128.MOD for a in range(k)]
    assert [(a + b) % u128.MOD for a, b in zip(s0, s1)] == want
    # the holder's share alone is uniform-looking (the pads), not the product
    holder = s1 if chooser == 0 else s0
    assert holder != want


def test_chooser_refuses_values_wider_than_advertised():
    y = np.array([[1, 2, 300]], dtype=U64)
    with pytest.raises(ProtocolError, match="wider than advertised"):
        run_two_party(lambda p: inner_products128(p, 1, values=(y, y), n_bits=8),
                      lambda p: inner_products128(p, 1, bits=y, n_bits=8), timeout=10)
