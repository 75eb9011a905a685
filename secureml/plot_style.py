"""One look for every secureml plot: readable sizes, a colour-blind-safe palette, units on axes.

Use :func:`new_figure` and :func:`save` instead of calling matplotlib directly::

    fig, ax = new_figure()
    ax.plot(n, mae, **series(0), label="Gaussian KRR")
    ax.set_xlabel("training molecules N"); ax.set_ylabel("MAE (kcal/mol)")
    log_axis(ax.yaxis)        # a log axis with enough labelled ticks
    save(fig, "curve.png")    # tight layout, 150 dpi, legend outside the data if asked

Every figure written this way should have its numbers in a JSON/CSV file beside it (the callers
write those; this module only draws).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

# Okabe & Ito (2008) palette: distinguishable with the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "--", "-.", ":")
SIZES = {"wide": (7.5, 4.2), "normal": (6.0, 4.2), "square": (4.8, 4.6), "tall": (6.0, 6.5)}

_RC = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 8.5,
    "legend.framealpha": 0.85,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "savefig.dpi": 150,
}


def series(i: int) -> dict[str, Any]:
    """Colour, marker and line style of the i-th data series (cycling)."""
    return {"color": PALETTE[i % len(PALETTE)], "marker": MARKERS[i % len(MARKERS)],
            "linestyle": LINESTYLES[(i // len(PALETTE)) % len(LINESTYLES)]}


def pyplot() -> Any:
    """``matplotlib.pyplot`` with the shared style applied (Agg backend): for code that builds
    its own figure grids (image mosaics, bar charts); prefer :func:`new_figure` and :func:`save`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(_RC)
    return plt


def new_figure(size: str = "normal", nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] | None = None,
               **subplots_kw: Any) -> tuple[Any, Any]:
    """(figure, axes) with the shared style; ``size`` is one of :data:`SIZES` (``figsize``, in
    inches, overrides it for panel grids of their own shape; ``subplots_kw`` go to plt.subplots)."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed on servers
    import matplotlib.pyplot as plt

    plt.rcParams.update(_RC)
    if figsize is None:
        w, h = SIZES[size]
        figsize = (w * (1 if ncols == 1 else 0.75 * ncols), h * (1 if nrows == 1 else 0.8 * nrows))
    return plt.subplots(nrows, ncols, figsize=figsize, **subplots_kw)


def _log_label(v: float, pos: Any = None) -> str:
    """Plain numbers from 0.001 to 99,999 (what a reader compares), powers of ten beyond."""
    import math

    if v <= 0:
        return ""
    if 1e-3 <= v < 1e5:
        return f"{v:g}"
    e = math.floor(math.log10(v) + 1e-9)
    m = v / 10.0**e
    return f"$10^{{{e}}}$" if abs(m - 1) < 1e-6 else f"${m:g}\\times10^{{{e}}}$"


def _readable_log_locator() -> Any:
    """A log locator that labels 1, 2, 5 x 10^k on short ranges, 1 and 3 x 10^k up to four
    decades and powers of ten (every other one when needed) beyond: never a crowded axis."""
    import math

    from matplotlib.ticker import LogLocator

    class ReadableLogLocator(LogLocator):
        def tick_values(self, vmin: float, vmax: float) -> Any:
            lo, hi = sorted((vmin, vmax))
            if lo <= 0:
                lo = hi * 1e-3 if hi > 0 else 1e-3
            decades = math.log10(hi / lo) if hi > 0 else 1.0
            self.set_params(subs=(1.0, 2.0, 5.0) if decades <= 2.2 else (1.0, 3.0) if decades <= 4.2 else (1.0,),
                            numticks=9)
            return super().tick_values(vmin, vmax)

    return ReadableLogLocator(base=10)


def log_axis(axis: Any) -> None:
    """Log scale with readable labels: 1, 2, 5 x 10^k on a short range (so that even one decade
    shows several ticks), sparser on long ones (no overlapping labels), plain numbers where they fit."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    (axis.axes.set_xscale if axis is axis.axes.xaxis else axis.axes.set_yscale)("log")
    axis.set_major_locator(_readable_log_locator())
    axis.set_major_formatter(FuncFormatter(_log_label))
    axis.set_minor_locator(LogLocator(base=10, subs="auto"))
    axis.set_minor_formatter(NullFormatter())


def legend_outside(ax: Any) -> None:
    """Legend to the right of the axes, where it cannot hide a line."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)


def save(fig: Any, path: str | Path) -> Path:
    """Write ``fig`` (tight layout, 150 dpi) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


__all__ = ["PALETTE", "MARKERS", "SIZES", "series", "pyplot", "new_figure", "log_axis", "legend_outside", "save"]
