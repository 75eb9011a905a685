"""`secureml serve` exposed: real server processes against idle, slow, nested, foreign, plaintext,
unauthenticated and tampering peers, each beside an honest client that must still be served."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from bench.serving_fuzz import small_model, start_server
from bench.serving_load import hold_connections
from protocols.krr import predict
from protocols.net.transport import frame, listen
from secureml.data import embedded_split, load_embedded, write_extxyz

CLI = [sys.executable, "-m", "secureml.cli"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    d = tmp_path_factory.mktemp("exposed")
    m, test = small_model(d / "model.npz", n=64)
    write_extxyz(test, d / "q.xyz")
    Q = m.representation.transform(test)
    return d, m, Q, m.estimator.predict(Q)


def _cli(*args, timeout=120):
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, PYTHONUNBUFFERED="1"))


def test_default_server_serves_a_good_client_beside_idle_and_slow_connections(model):
    d, m, Q, expected = model
    proc, port = start_server(d / "model.npz", d / "dos.log", [])  # default settings
    stop = threading.Event()
    try:
        held, _ = hold_connections(port, idle=100, slow=20, stop=stop)
        time.sleep(1.5)
        t0 = time.monotonic()
        preds, _ = predict(f"127.0.0.1:{port}", Q)
        assert time.monotonic() - t0 < 10
        np.testing.assert_allclose(preds, expected, atol=1e-2)
        out = _cli("predict", "--server", f"127.0.0.1:{port}", "--xyz", d / "q.xyz")
        assert out.returncode == 0, out.stderr
    finally:
        stop.set()
        proc.kill()
    assert "Traceback" not in (d / "dos.log").read_text()


def _fake_server(reply: bytes | None):
    srv = listen("127.0.0.1", 0)

    def run():
        c, _ = srv.accept()
        c.recv(4096)
        if reply is not None:
            c.sendall(reply)
        time.sleep(5)
        c.close()

    threading.Thread(target=run, daemon=True).start()
    return srv.getsockname()[1]


@pytest.mark.parametrize("reply,message", [
    (frame(b"[" * 8000), "nested"),
    (b"HTTP/1.1 400 Bad Request\r\n\r\n", "did not answer as a secureml server"),
    (None, "no answer from"),
])
def test_predict_against_bad_servers_is_one_line_and_quick(model, reply, message):
    d = model[0]
    port = _fake_server(reply)
    t0 = time.monotonic()
    out = _cli("predict", "--server", f"127.0.0.1:{port}", "--xyz", d / "q.xyz", "--handshake-timeout", "2")
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert time.monotonic() - t0 < 60  # (process start included; was 316 s before deadlines)


def test_mutual_tls_tokens_audit_and_plaintext_mismatch(model, tmp_path):
    d, m, Q, expected = model
    k = tmp_path
    for args in (["ca", "--out", k / "ca"], ["server", "--ca", k / "ca", "--out", k / "server"],
                 ["client", "--ca", k / "ca", "--name", "alice", "--out", k / "alice"],
                 ["token", "--name", "bob", "--tokens", k / "tokens.txt", "--out", k / "bob.token"]):
        assert _cli("keys", *args).returncode == 0
    audit = k / "audit.jsonl"
    proc, port = start_server(d / "model.npz", k / "tls.log",
                              ["--tls-cert", k / "server.pem", "--tls-key", k / "server.key",
                               "--client-ca", k / "ca.pem", "--tokens", k / "tokens.txt",
                               "--audit-log", audit])
    base = ["predict", "--server", f"127.0.0.1:{port}", "--xyz", d / "q.xyz", "--json"]
    try:
        out = _cli(*base, k / "a.json", "--ca", k / "ca.pem", "--cert", k / "alice.pem", "--key", k / "alice.key")
        assert out.returncode == 0, out.stderr
        got = [r["prediction"] for r in json.loads((k / "a.json").read_text())["predictions"]]
        np.testing.assert_allclose(got, m.predict(load_embedded().subset(embedded_split(0)[1][:1])), atol=1e-2)
        out = _cli(*base, k / "b.json", "--ca", k / "ca.pem", "--token-file", k / "bob.token")
        assert out.returncode == 0, out.stderr
        out = _cli(*base, k / "c.json", "--ca", k / "ca.pem")  # neither certificate nor token
        assert out.returncode == 2 and "unauthenticated" in out.stderr, out.stderr
        out = _cli(*base, k / "d.json")  # plaintext client on a TLS server
        assert out.returncode == 2 and "requires TLS" in out.stderr, out.stderr
        out = _cli(*base, k / "e.json", "--ca", k / "ca.pem", "--tls-server-name", "elsewhere.example",
                   "--cert", k / "alice.pem", "--key", k / "alice.key")
        assert out.returncode == 2 and "does not trust" in out.stderr, out.stderr
    finally:
        proc.kill()
    recs = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [r["outcome"] for r in recs] == ["ok", "ok", "unauthenticated", "tls-required", "tls-handshake"]
    assert recs[0]["client"] == "cert:alice" and recs[1]["client"] == "token:bob"
    assert recs[0]["bytes_sent"] > 0 and len(recs[0]["model_sha256"]) == 64
    text = audit.read_text() + (k / "tls.log").read_text()
    assert "sml_" not in text and "Traceback" not in text


def test_serve_refuses_tampered_and_unsigned_models(model, tmp_path):
    d = model[0]
    assert _cli("keys", "signing", "--out", tmp_path / "owner").returncode == 0
    signed = tmp_path / "signed.npz"
    assert _cli("sign", "--model", d / "model.npz", "--key", tmp_path / "owner.key", "--out", signed).returncode == 0
    with np.load(signed) as f:
        entries = {k: f[k] for k in f.files}
    entries["estimator.state.dual_coef_"] = entries["estimator.state.dual_coef_"] * 1.05
    np.savez(tmp_path / "tampered.npz", **entries)
    for path, message in ((tmp_path / "tampered.npz", "SHA-256"), (d / "model.npz", "not signed")):
        out = _cli("serve", "--model", path, "--port", "0", "--verify-key", tmp_path / "owner.pub", timeout=60)
        assert out.returncode == 2 and message in out.stderr, out.stderr
        assert len(out.stderr.strip().splitlines()) == 1


def test_batches_over_a_session_are_split(model):
    d, m, Q, expected = model
    proc, port = start_server(d / "model.npz", d / "batch.log", [])
    try:
        data = load_embedded()
        big = m.representation.transform(data.subset(embedded_split(0)[1][:300]))
        big = np.clip(big, None, None)
        preds, cost = predict(f"127.0.0.1:{port}", big, batch_size=128)
        np.testing.assert_allclose(preds, m.estimator.predict(big), atol=1e-2)
        assert cost.extra["sessions"] == 3
    finally:
        proc.kill()


def test_workers_serve_in_several_processes(model, tmp_path):
    d, m, Q, expected = model
    audit = tmp_path / "audit.jsonl"
    proc, port = start_server(d / "model.npz", tmp_path / "w.log",
                              ["--workers", "2", "--concurrency", "1", "--audit-log", audit])
    try:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(4) as pool:
            for preds, _ in pool.map(lambda _: predict(f"127.0.0.1:{port}", Q), range(4)):
                np.testing.assert_allclose(preds, expected, atol=1e-2)
        kids = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert len(kids) == 2
        # a worker writes its audit line after the client has its reply: wait for the last one
        # (four sessions of one client at the default --max-aborts 3: one was answered "busy" and
        # retried, since the workers count its sessions in progress together; and one client -- one
        # address here -- has at most --max-sessions-per-client 2 sessions running or queued per
        # worker, so a third sent to the same worker waits for one of them, or, past the 5 s queue
        # wait, is answered "busy" (audited) and retried)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (not audit.exists() or audit.read_text().count('"ok"') < 4):
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(10)
    recs = [json.loads(line) for line in audit.read_text().splitlines()]
    assert sum(r["outcome"] == "ok" for r in recs) == 4 and {r["outcome"] for r in recs} <= {"ok", "busy"}
    assert {r["pid"] for r in recs} <= {int(k) for k in kids}
