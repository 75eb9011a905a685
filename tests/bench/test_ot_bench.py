"""bench.ot_bench with several engines in one run: two processes over TCP, JSON/CSV/PNG written,
and the silent engine's measured bits per COT below SoftSpoken's."""
from __future__ import annotations

import csv
import json

import pytest

from bench import ot_bench


@pytest.mark.slow  # spawns two receiver processes and runs silent OT's set-up iteration (~20 s here)
def test_engines_side_by_side(tmp_path):
    out = tmp_path / "ot.json"
    assert ot_bench.main(["--engines", "softspoken4,ferret-b11", "--sizes", "65536", "--quiet",
                          "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    ss, fe = (res["engines"][e]["sizes"][0] for e in ("softspoken4", "ferret-b11"))
    assert ss["cot"]["bits_per_cot"] == pytest.approx(32 + 64, abs=0.5)
    # silent OT at 65,536 COTs from an empty buffer pays one batch of trees (128 trees' openings,
    # 47 kB: 5.8 bits per COT), the 1-bit derandomisation and the 64-bit correction
    assert 65 < fe["cot"]["bits_per_cot"] < 75
    assert fe["silent_random_cot"]["bytes_receiver_to_sender"] == 0  # silent: the receiver sends nothing
    rows = list(csv.DictReader(out.with_suffix(".csv").open()))
    assert [r["engine"] for r in rows] == ["softspoken4", "ferret-b11"]
    assert out.with_suffix(".png").stat().st_size > 0
