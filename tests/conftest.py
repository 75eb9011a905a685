"""Shared fixtures: a two-party runner over an in-process channel pair, and a test dealer."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from protocols.testing import dealer_provider
from protocols.testing import run_two_party as _run_two_party


@pytest.fixture
def run_two_party() -> Callable[..., Any]:
    """``run_two_party(fn0, fn1, seed=..., record=..., provider=...) -> (r0, r1)`` (see protocols.testing)."""
    return _run_two_party


@pytest.fixture
def dealer() -> Callable[[Any], Any]:
    """A ``provider`` factory: the insecure test dealer (fast triples for unit tests)."""
    return dealer_provider()
