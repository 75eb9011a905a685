"""`secureml bench cost` outputs from given rows (no engine runs): files, trusted-dealer marks, the
--quick note, the shared plot style's readable log axis."""
from __future__ import annotations

import argparse
import json

from bench import cost


def _rows():
    rows = []
    for e, (t, mb) in {"plaintext": (1e-4, 0), "ot": (0.3, 1.0), "crypten": (0.4, 0.2), "generic": (1.3, 33)}.items():
        for N in cost.QUICK_SIZES:
            rows.append({"engine": e, "N": N, "wall_s": t * N / 32, "offline_s": 0.0, "online_s": t, "rounds": 30,
                         "client_to_server_MB": mb / 2, "server_to_client_MB": mb / 2, "abs_error": 1e-5,
                         "ratio_vs_plaintext": t / 1e-4, "trusted_dealer": e in cost.TRUSTED_DEALER})
    return rows


def test_quick_outputs_mark_trusted_dealers_and_the_left_out_engine(tmp_path):
    args = argparse.Namespace(features=351, sigma=74.0, kernel="gaussian", link=None, quick=True,
                              engines=cost.QUICK_ENGINES, precision_n=512)
    cost.write_outputs(tmp_path, _rows(), [{"frac_bits": 8, "max_abs_error": 3e-3, "total_MB": 5.4}], {}, args)
    for f in ("cost.json", "cost.csv", "cost.png", "precision.png", "report.md"):
        assert (tmp_path / f).stat().st_size > 0, f
    report = (tmp_path / "report.md").read_text()
    assert "| crypten* |" in report and "| ot |" in report and "trusted dealer" in report
    assert "leaves out **fhe**" in report
    assert len(json.loads((tmp_path / "cost.json").read_text())["rows"]) == 12
    assert cost.engine_label("crypten") == "crypten (trusted dealer)" and cost.engine_label("ot") == "ot"
    assert "fhe" not in cost.QUICK_ENGINES.split(",") and "fhe" in cost.DEFAULT_ENGINES.split(",")


def test_log_axis_labels_stay_readable_over_many_decades():
    from secureml.plot_style import _log_label, log_axis, new_figure

    fig, ax = new_figure()
    ax.plot([32, 16384], [1e-5, 1e4])
    log_axis(ax.yaxis)
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert 3 <= len(labels) <= 12  # powers of ten, not 1-2-5 in each of nine decades
    assert _log_label(0.001) == "0.001" and _log_label(20000) == "20000" and _log_label(1e-5) == "$10^{-5}$"
    fig2, ax2 = new_figure()
    ax2.plot([1, 2], [3.0, 9.0])  # less than one decade: still several labelled ticks
    log_axis(ax2.yaxis)
    fig2.canvas.draw()
    assert len([t for t in ax2.get_yticklabels() if t.get_text()]) >= 2
