"""Small pages for numpy's large arrays in this process: no ``madvise(MADV_HUGEPAGE)``.

numpy asks the kernel for transparent huge pages on every array of 4 MB or more. Where the
kernel's THP ``defrag`` setting is ``madvise`` (the default of common distributions, and this
project's machine), a fault on such an array may stall in direct compaction, charged to the
process as system time. A Laplacian session allocates and frees hundreds of such arrays (46 MB
products, 4 MB GGM batches, 1 MB hash pieces): at N = 16,384, d = 351 the server's system time
in the L1 step was 0.8-3.0 s with the hint and 0.2-0.7 s without, its user time the same
(docs/double-blind.md, "Semi-honest Laplacian server CPU (stop 10)").

Process-wide (numpy keeps one flag); it changes nothing computed or sent. An explicit
``NUMPY_MADVISE_HUGEPAGE`` in the environment (numpy's own knob) is left to win.
"""
from __future__ import annotations

import os


def prefer_small_pages() -> bool:
    """Turn numpy's huge-page hint off for this process unless ``NUMPY_MADVISE_HUGEPAGE`` is set;
    returns whether numpy's hint is on afterwards. Cheap: safe to call per session."""
    try:
        from numpy._core.multiarray import _get_madvise_hugepage, _set_madvise_hugepage
    except ImportError:  # numpy < 2: same functions under numpy.core
        try:
            from numpy.core.multiarray import _get_madvise_hugepage, _set_madvise_hugepage  # type: ignore[no-redef]
        except ImportError:  # a numpy without the hint: nothing to turn off
            return False
    if "NUMPY_MADVISE_HUGEPAGE" not in os.environ:
        _set_madvise_hugepage(False)
    return bool(_get_madvise_hugepage())
