"""bench.krr_cost compares the protocol modes in one run: both rows, each a real two-process session."""
from __future__ import annotations

import csv

from bench import krr_cost


def test_security_modes_alternate_in_one_run_and_each_row_is_a_real_session(tmp_path):
    assert krr_cost.main(["--kernel", "laplacian", "--security", "semi-honest,client-malicious", "--sizes", "64",
                          "--features", "8", "--ot-engine", "softspoken", "--out", str(tmp_path)]) == 0
    rows = list(csv.DictReader(open(tmp_path / "krr_cost.csv")))
    assert [r["security"] for r in rows] == ["semi-honest", "client-malicious"]
    for r in rows:
        assert float(r["max_abs_error"]) < 1e-3 and int(r["rounds"]) > 0
    # the client-malicious session sends its commitments and check tables on top of the chain
    assert float(rows[1]["total_MB"]) > float(rows[0]["total_MB"])
    assert rows[1]["inner_product"] == "checked"
    assert (tmp_path / "krr_cost.png").exists()
