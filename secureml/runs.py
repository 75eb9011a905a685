"""Output folders per run: no run overwrites another's results.

Every command that writes results takes ``--out``; without it the results go to a new folder
``results/<kind>/<YYYYmmdd-HHMMSS>/`` (``-2``, ``-3`` ... appended when two runs start in the same
second). Commands that write models (``train``, ``demo``) use ``runs/<kind>-<time>/`` the same way.
Imports nothing from the project (any layer may use it).
"""
from __future__ import annotations

import time
from pathlib import Path

RESULTS = Path("results")


def new_run_folder(parent: str | Path, stem: str = "") -> Path:
    """Create and return a fresh folder ``parent/<stem><YYYYmmdd-HHMMSS>`` (a numbered suffix if
    that name is taken); never an existing one."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    base = f"{stem}{time.strftime('%Y%m%d-%H%M%S')}"
    for i in range(1, 1000):
        path = parent / (base if i == 1 else f"{base}-{i}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"no free run folder under {parent}")


def output_folder(out: str | Path | None, kind: str) -> Path:
    """``--out`` when given (created if needed: the user named it), else a new
    ``results/<kind>/<time>/`` folder."""
    if out is not None and str(out) != "":
        path = Path(out)
        path.mkdir(parents=True, exist_ok=True)
        return path
    return new_run_folder(RESULTS / kind)


__all__ = ["RESULTS", "new_run_folder", "output_folder"]
