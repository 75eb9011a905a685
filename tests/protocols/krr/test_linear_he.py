"""Semi-honest compact models: the lattice inner product (protocols/krr/linear_he.py), real TCP."""
from __future__ import annotations

import multiprocessing as mp
import re
import threading

import numpy as np
import pytest

from protocols.krr import ServedModel, linear_he, molecules_featurizer, predict, predict_features, serve_one
from protocols.net.transport import local_channel_pair
from tests.protocols.krr.compact import ERROR_BUDGET, rff_model_and_queries
from secureml.errors import ProtocolError, SecureMLError



@pytest.fixture(scope="module")
def rff_model():
    return rff_model_and_queries(4)


def _serve_file(path, q, n):
    from protocols.krr import ServedModel, serve

    serve(ServedModel.from_file(path, security="semi-honest"), "127.0.0.1", 0, max_sessions=n, on_ready=q.put)


def test_semi_honest_compact_model_uses_the_lattice_path(rff_model):
    mm, _ = rff_model
    weak = ServedModel.from_molecular_model(mm, security="semi-honest")
    strong = ServedModel.from_molecular_model(mm)
    assert weak.public.lattice_linear and weak.public.cross_term == "he"
    assert not strong.public.lattice_linear and strong.public.security == "client-malicious"
    assert weak.public.output_bits == weak.compact.out_bits
    assert linear_he.prepared(weak).max_error < 1e-3
    weak.set_defense(round_to=0.5)  # output defenses run on shares: the OT path
    assert not weak.public.lattice_linear


def test_lattice_sessions_over_tcp_and_a_garbage_client(rff_model, tmp_path, monkeypatch):
    """Two processes on TCP: predictions equal plaintext; the key is sent once, then remembered,
    and the next session sends its ciphertext with the hello (2 rounds); a client sending a
    wrong-size ciphertext fails alone (its early try and its ordinary retry) and the server keeps
    serving."""
    monkeypatch.setenv("SECUREML_CACHE", str(tmp_path))
    monkeypatch.setattr(linear_he, "PREPARE_NEXT", True)  # the between-sessions work, used in session 2
    mm, test = rff_model
    path = mm.save(tmp_path / "rff.npz")
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=_serve_file, args=(str(path), q, 5), daemon=True)
    proc.start()
    try:
        addr = f"127.0.0.1:{q.get(timeout=120)}"
        p1, c1 = predict(addr, featurize=molecules_featurizer(test.subset([0])))
        p2, c2 = predict(addr, featurize=molecules_featurizer(test.subset([1, 2])))
        real = linear_he._request
        monkeypatch.setattr(linear_he, "_request", lambda key, with_pk, cts, nxt=None: real(key, with_pk, cts)[:-1]
                            + [b"junk"])
        with pytest.raises(SecureMLError):
            predict(addr, featurize=molecules_featurizer(test.subset([3])), retries=0)
        monkeypatch.setattr(linear_he, "_request", real)
        p4, c4 = predict(addr, featurize=molecules_featurizer(test.subset([3])))
    finally:
        proc.join(60)
        if proc.is_alive():
            proc.kill()
    np.testing.assert_allclose(np.r_[p1, p2, p4], mm.predict(test), atol=ERROR_BUDGET)
    assert c1.extra["engine"] == "lattice" and c2.extra["resumed"] and c4.extra["resumed"]
    # the seed announced in session 1 was prepared between sessions on both sides and used once
    assert not c1.extra["prepared"] and c2.extra["prepared"]
    # the first session with this server carries the public key (one polynomial); later ones do not
    assert abs(c1.bytes_sent - c4.bytes_sent - 57_344) < 200
    # after the handshake one message each way (4 rounds, public model cached); with the cached
    # parameters the hello, ready and ciphertext travel together (2 rounds)
    assert c2.extra.get("early_data") and c2.rounds == 2
    assert not c4.extra.get("early_data") and c4.rounds == 4  # the failed early try dropped the cache


def _in_process(served, featurize, **kw):
    c0, c1 = local_channel_pair(timeout=30)
    box = {}

    def server():
        try:
            serve_one(served, c0)
        except Exception as exc:  # noqa: BLE001 - checked below
            box["error"] = exc
            c0.close()

    t = threading.Thread(target=server, daemon=True)
    t.start()
    try:
        out = predict_features(c1, featurize=featurize, **kw)
    except SecureMLError as exc:
        out = exc
    t.join(30)
    return out, box.get("error")


def test_server_errors_are_one_line_and_name_no_query(rff_model, tmp_path, monkeypatch):
    monkeypatch.setenv("SECUREML_CACHE", str(tmp_path))
    mm, test = rff_model
    served = ServedModel.from_molecular_model(mm, security="semi-honest")
    feat = molecules_featurizer(test.subset([0]))
    real = linear_he._request
    cases = {
        "wrong size": (lambda key, pk, cts, nxt=None: real(key, pk, cts)[:-1] + [b"\0" * 100],
                       r"expected \d+ bytes, got \d+"),
        "bad key id": (lambda key, pk, cts, nxt=None: [real(key, True, cts)[0], b"\1" * 16] + real(key, True, cts)[2:],
                       "key id does not match"),
        "out of range": (lambda key, pk, cts, nxt=None: real(key, pk, cts)[:-1] + [b"\xff" * len(cts[-1][1])],
                         "out of range"),
    }
    for name, (fake, message) in cases.items():
        monkeypatch.setattr(linear_he, "_request", fake)
        client_out, server_err = _in_process(served, feat)
        assert isinstance(client_out, SecureMLError), name
        assert isinstance(server_err, ProtocolError) and "\n" not in str(server_err), name
        assert re.search(message, str(server_err)), (name, server_err)
    monkeypatch.setattr(linear_he, "_request", real)
    (preds, cost, _), err = _in_process(served, feat)
    assert err is None and abs(preds[0] - mm.predict(test.subset([0]))[0]) < ERROR_BUDGET


def test_server_that_forgot_the_key_asks_again(rff_model, tmp_path, monkeypatch):
    monkeypatch.setenv("SECUREML_CACHE", str(tmp_path))
    mm, test = rff_model
    served = ServedModel.from_molecular_model(mm, security="semi-honest")
    feat = molecules_featurizer(test.subset([0]))
    linear_he._KEY_SENT.clear()
    (_, first, _), _ = _in_process(served, feat)  # key sent (and the public model fetched)
    (_, second, _), _ = _in_process(served, feat)  # key remembered
    linear_he.KEYS._d.clear()  # a restarted server
    (preds, again, _), err = _in_process(served, feat)
    assert err is None and abs(preds[0] - mm.predict(test.subset([0]))[0]) < ERROR_BUDGET
    assert first.extra["key_sent"] and not second.extra["key_sent"] and again.extra["key_sent"]
    assert again.rounds == second.rounds + 2  # "need-key", then the queries again with the key
    # unlinkable sessions: a fresh key every time, always sent
    (_, fresh, _), _ = _in_process(served, feat, resume_ot=False)
    assert fresh.extra["key_sent"] and fresh.extra["keygen_s"] > 0


@pytest.mark.slow
def test_cli_serves_a_compact_model_semi_honest_with_the_lattice_path(rff_model, tmp_path):
    """`secureml serve --security semi-honest` + `secureml predict` (two subprocesses)."""
    import json
    import subprocess
    import sys

    from protocols.krr.runner import start_serve_process
    from secureml.data import write_extxyz

    mm, test = rff_model
    path = mm.save(tmp_path / "rff.npz")
    write_extxyz(test.subset([0, 1]), tmp_path / "q.xyz")
    head: list[str] = []
    proc, port = start_serve_process([sys.executable, "-m", "secureml.cli", "serve", "--model", str(path), "--port",
                                      "0", "--max-sessions", "1", "--security", "semi-honest"], head=head)
    try:
        out = subprocess.run([sys.executable, "-m", "secureml.cli", "predict", "--server", f"127.0.0.1:{port}",
                              "--xyz", str(tmp_path / "q.xyz"), "--json", str(tmp_path / "out.json")],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        got = [r["prediction"] for r in json.loads((tmp_path / "out.json").read_text())["predictions"]]
        np.testing.assert_allclose(got, mm.predict(test.subset([0, 1])), atol=ERROR_BUDGET)
        assert "security=semi-honest" in "".join(head)
    finally:
        proc.kill()


def test_stale_cached_parameters_are_refused_and_the_client_starts_over(rff_model, tmp_path, monkeypatch):
    """Early data made for other parameters: the server refuses before reading it (one line), the
    client repeats the session the ordinary way."""
    from protocols.krr import client as client_mod
    from protocols.krr import serve

    monkeypatch.setenv("SECUREML_CACHE", str(tmp_path))
    mm, test = rff_model
    served = ServedModel.from_molecular_model(mm, security="semi-honest")
    ports: list[int] = []
    th = threading.Thread(target=serve, args=(served, "127.0.0.1", 0),
                          kwargs=dict(max_sessions=3, on_ready=ports.append), daemon=True)
    th.start()
    while not ports:
        threading.Event().wait(0.01)
    addr = f"127.0.0.1:{ports[0]}"
    predict(addr, featurize=molecules_featurizer(test.subset([0])))
    key = f"127.0.0.1:{ports[0]}"
    stale = dict(client_mod._EARLY_PARAMS[key], frac_bits=served.public.frac_bits - 1)
    client_mod._EARLY_PARAMS[key] = stale
    p, c = predict(addr, featurize=molecules_featurizer(test.subset([1])))
    th.join(60)
    assert abs(p[0] - mm.predict(test.subset([1]))[0]) < ERROR_BUDGET
    assert not c.extra.get("early_data") and c.rounds == 4
    assert client_mod._EARLY_PARAMS[key] != stale  # replaced by the server's current parameters
