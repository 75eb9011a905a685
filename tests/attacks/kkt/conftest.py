"""Shared by the KKT tests: many small torch steps run several times faster on one thread than on
two contended ones on a shared machine."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
