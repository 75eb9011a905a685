"""Fixed-point encoding: round trip, error bound, overflow and NaN handling."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.mpc.fixed_point import FixedPointFormat, from_signed, to_signed
from secureml.errors import DataError


@settings(max_examples=30, deadline=None)
@given(
    f=st.integers(0, 40),
    xs=st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=50),
)
def test_round_trip_error_at_most_half_ulp(f: int, xs: list[float]) -> None:
    fmt = FixedPointFormat(frac_bits=f)
    x = np.array(xs)
    u = fmt.encode(x)
    assert u.dtype == np.uint64
    err = np.abs(fmt.decode(u) - x)
    # rounding to the nearest multiple of 2^-f, plus float64 rounding of the product
    assert np.all(err <= 0.5 * fmt.resolution + 1e-9 * np.abs(x))


def test_negative_values_are_twos_complement() -> None:
    fmt = FixedPointFormat(frac_bits=16)
    u = fmt.encode(np.array([-1.0, 1.0, -0.5]))
    assert u[0] == np.uint64(2**64 - 2**16)
    assert u[1] == np.uint64(2**16)
    assert np.array_equal(to_signed(u), np.array([-65536, 65536, -32768]))
    assert np.array_equal(from_signed(to_signed(u)), u)
    # ring addition is real addition
    assert fmt.decode(u[0:1] + u[1:2])[0] == 0.0


def test_product_has_double_fraction_bits() -> None:
    fmt = FixedPointFormat(frac_bits=20)
    a, b = fmt.encode(np.array([-3.25])), fmt.encode(np.array([7.5]))
    assert fmt.decode(a * b, frac_bits=40)[0] == pytest.approx(-24.375)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_inf_rejected(bad: float) -> None:
    with pytest.raises(DataError, match="NaN or inf"):
        FixedPointFormat().encode(np.array([1.0, bad]))


def test_overflow_rejected_and_limit_exact() -> None:
    fmt = FixedPointFormat(frac_bits=16)
    assert fmt.max_abs == 2.0**47
    fmt.encode(np.array([2.0**46, -(2.0**47)]))  # -2^47 is representable
    with pytest.raises(DataError, match="overflows"):
        fmt.encode(np.array([2.0**47]))
    with pytest.raises(DataError, match="overflows"):
        fmt.encode(np.array([-(2.0**47) - 1.0]))


def test_small_ring_sign_extension() -> None:
    fmt = FixedPointFormat(frac_bits=4, ring_bits=16)
    u = fmt.encode(np.array([-2.5, 3.0]))
    assert int(u.max()) < 2**16
    assert np.array_equal(fmt.decode(u), [-2.5, 3.0])
    with pytest.raises(DataError):
        fmt.encode(np.array([2.0**11]))


@pytest.mark.parametrize("kw", [{"frac_bits": -1}, {"frac_bits": 63}, {"ring_bits": 65}, {"ring_bits": 0}])
def test_bad_format(kw: dict) -> None:
    with pytest.raises(DataError):
        FixedPointFormat(**kw)
