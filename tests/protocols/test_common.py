"""protocols.common: the per-session peak-memory report reads this process's own figure."""
from __future__ import annotations

import os

import numpy as np
import pytest

from protocols.common import peak_rss_mb


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc")
def test_peak_rss_follows_this_process_and_a_forked_child_reads_its_own():
    """The status file stays open between reports (one pread each): the figure still grows with
    an allocation, and a forked child reads its own /proc entry, not its parent's."""
    # start from the current resident size: after a long run of other tests the peak may already
    # exceed it by more than the allocation below ("5" resets VmHWM, Linux >= 4.0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = peak_rss_mb()
    x = np.ones(40_000_000)  # 320 MB touched
    after = peak_rss_mb()
    assert after > before + 250
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its own figure comes from /proc/<its pid>
        from protocols import common
        os.write(w, f"{common._STATUS is None or common._STATUS[0] != os.getpid()} {os.getpid()}".encode())
        peak_rss_mb()
        os.write(w, f" {common._STATUS[0] == os.getpid()}".encode())
        os._exit(0)
    os.waitpid(pid, 0)
    os.close(w)
    out = os.read(r, 200).decode().split()
    os.close(r)
    assert out[0] == "True" and out[2] == "True"
    del x
