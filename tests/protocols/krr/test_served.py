"""What the model owner serves: public parameters and precision from the secret arrays."""
from __future__ import annotations

import numpy as np
import pytest

from protocols.common import KernelModelParams
from protocols.krr import CompactServedModel, Served, ServedModel
from protocols.krr.params import LAPLACIAN_MAX_X_BITS, SILENT_OT_MIN_ELEMENTS
from protocols.krr.served import auto_frac_bits, laplacian_frac_bits
from secureml.errors import ModelError


def test_precision_choice():
    assert laplacian_frac_bits(64.0) == LAPLACIAN_MAX_X_BITS - 6  # 64 * 2^14 = 2^20
    assert laplacian_frac_bits(2.0**30) == 0
    # squared distances of 351 features in a 60-bit ring: 9 + 2 (x_bits) + 1 <= 60
    assert auto_frac_bits(351, 128.0) == 16  # x_bits 23: fits at the 16-bit cap
    assert auto_frac_bits(351, 4096.0) == 13  # x_bits 12 + F <= 25
    assert auto_frac_bits(351, 2.0**20) == 8  # the floor


def test_exact_model_fields_and_kind():
    rng = np.random.default_rng(1)
    X = rng.uniform(0, 50, (8, 4))
    params = KernelModelParams(X, rng.normal(0, 3, 8), 1.0, "laplacian", 100.0)
    s = ServedModel(params, frac_bits=16, security="semi-honest")
    assert s.public.kind == "krr-laplacian" and s.public.x_bits <= LAPLACIAN_MAX_X_BITS
    assert s.public.frac_bits == laplacian_frac_bits(s.public.feature_hi - s.public.feature_lo)  # capped
    # the API's default is client-malicious, whose check's tables cap entries at 16 bits
    m = ServedModel(params, frac_bits=16)
    assert m.public.security == "client-malicious" and m.public.x_bits == 16 and m.public.ot_engine == "softspoken"
    # the size rule picks the engine in both modes (protocol 27: client-malicious on silent OT too)
    big = KernelModelParams(rng.uniform(0, 50, (200, 400)), rng.normal(0, 3, 200), 1.0, "laplacian", 100.0)
    assert 200 * 400 >= SILENT_OT_MIN_ELEMENTS
    for security in ("semi-honest", "client-malicious"):
        assert ServedModel(big, frac_bits=8, security=security).public.ot_engine == "silent"
    assert s.params is not None and (s.precompute_ot, s.resume_ot) == (False, True)
    assert not isinstance(s, CompactServedModel) and isinstance(s, Served)


def test_only_known_kernels_are_served():
    params = KernelModelParams(np.eye(2), np.ones(2), 0.0, "gaussian", 1.0)
    params.kernel = "cubic"
    with pytest.raises(ModelError, match="Gaussian- and Laplacian-kernel"):
        ServedModel(params)
