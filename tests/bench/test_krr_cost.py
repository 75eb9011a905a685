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


def test_bench_cost_has_serves_default_mode_as_an_engine():
    """`secureml bench cost --engines ot,ot-cm`: the same model served semi-honest and as `serve`
    does by default (client-malicious); both exact, the client-malicious one sends more."""
    import numpy as np

    from bench.cost import run_engine
    from bench.synthetic import synthetic_model, synthetic_queries

    model, rng = synthetic_model(48, 6, 74.0, 0, "gaussian")
    Q = synthetic_queries(model, rng, 1)
    sh, cm = run_engine("ot", model, Q), run_engine("ot-cm", model, Q)
    for r in (sh, cm):
        np.testing.assert_allclose(r["preds"], model.predict(Q), atol=1e-3)
    assert cm["server_to_client_MB"] > sh["server_to_client_MB"]
