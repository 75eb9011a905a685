"""Steps 4-10 of exact KRR (kernel_sum): from shares of encoded distances to the prediction."""
from __future__ import annotations

import numpy as np
import pytest

from protocols.common import KernelModelParams
from protocols.krr import ServedModel
from protocols.krr.expsum import encode_weights, kernel_sum, plan_digits
from protocols.testing import run_two_party

U64 = np.uint64


@pytest.mark.parametrize("inner_product", ["ot", "he"])
def test_kernel_sum_of_shared_distances_matches_plaintext(inner_product):
    """Both routes of step 9 (Gilboa over OT, lattice HE) give the same exact sum; k = 3 queries."""
    rng = np.random.default_rng(4)
    X = rng.uniform(0, 30, (25, 6))
    model = KernelModelParams(X, rng.normal(0, 40, 25), 2.5, "gaussian", 15.0)
    pp = ServedModel(model).public
    pp.inner_product = inner_product
    assert pp.lattice_sum == (inner_product == "he")
    Q = np.vstack([X[0], X[3] + 0.7, np.full(6, 29.0)])  # distance 0, near, far
    xe, qe = pp.encode_features(X).astype(np.int64), pp.encode_features(Q).astype(np.int64)
    D = ((qe[:, None, :] - xe[None, :, :]) ** 2).sum(axis=2).astype(U64)  # (k, N) encoded distances
    mask = U64((1 << pp.ring_bits) - 1)
    D_S = rng.integers(0, 2**63, D.shape, dtype=U64) & mask
    D_C = (D - D_S) & mask

    def run(p):
        p.setup_ot(softspoken_k=4)
        return kernel_sum(p, pp, D_S if p.role == 0 else D_C, model if p.role == 0 else None)

    out_server, preds = run_two_party(run, run)
    assert out_server is None
    np.testing.assert_allclose(preds, model.predict(Q), atol=1e-2)


def test_weights_encoding_and_digit_plan_are_public_functions_of_the_params():
    enc, bits = encode_weights(np.array([0.5, -1.25, 3.0]), 4)
    assert enc.tolist() == [8, -20, 48] and bits == 7  # 48 needs 6 bits plus the sign
    pp = ServedModel(KernelModelParams(np.eye(3) * 10, np.ones(3), 0.0, "gaussian", 5.0)).public
    low, lut, top = plan_digits(pp)
    covered = [b for a, c in low + [lut] + top for b in range(a, c)]
    assert covered == list(range(pp.d_bits))  # every bit of the shifted distance, once, in order
