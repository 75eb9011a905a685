"""Shared fixtures: a two-party runner over an in-process channel pair, and a test dealer."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from protocols.testing import install_test_dealer
from protocols.testing import run_two_party as _run_two_party


@pytest.fixture
def run_two_party() -> Callable[..., Any]:
    """``run_two_party(fn0, fn1, seed=..., record=..., setup=...) -> (r0, r1)`` (see protocols.testing)."""
    return _run_two_party


@pytest.fixture
def dealer_setup() -> Callable[[Any], None]:
    return install_test_dealer()
