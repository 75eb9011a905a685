"""One definition of rounds (protocols.net.transport): the client and the server of one session
report the same number, for an exact kernel (semi-honest and client-malicious), a compact model
and a defended model.

Real TCP with the production front door (`serve`, its cost from the audit log): in threads of this
process (fast), and between two processes with the CLI server (`secureml serve`, slow: three
interpreter start-ups). Before the definition moved into the frame header a pipelined session was
counted 32 rounds by the client and 34 by the server.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from protocols.krr import ServedModel, molecules_featurizer, predict
from protocols.krr.server import serve
from protocols.net.frontdoor import AuditLog
from secureml.data import embedded_split, load_embedded
from secureml.models.krr import KernelRidge
from secureml.models.pipeline import MolecularModel
from secureml.models.random_features import RandomFourierRidge
from secureml.representations import CoulombMatrix


def _start(args: list[str], audit) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "secureml.cli", "serve", *args, "--port", "0", "--max-sessions", "1",
           "--audit-log", str(audit)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))


def _port(proc: subprocess.Popen) -> int:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if "serving" in line:
            return int(line.rsplit(":", 1)[1])
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError("server did not start")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("rounds")
    data = load_embedded()
    tr, te = embedded_split(0)
    train, test = data.subset(tr[:120]), data.subset(te[:2])
    exact = MolecularModel(CoulombMatrix(size=23), KernelRidge("gaussian", sigma=50.0, lam=1e-6),
                           "U0_atomization").fit(train.subset(np.arange(60)))
    compact = MolecularModel(CoulombMatrix(size=23),
                             RandomFourierRidge("gaussian", sigma=50.0, n_features=64, lam=1e-6),
                             "U0_atomization").fit(train)
    return d, exact.save(d / "exact.npz"), compact.save(d / "compact.npz"), test


def _check(seen: dict) -> None:
    for name, (client, server) in seen.items():
        assert client == server > 4, (name, seen)
    # the defense adds its table OTs: more rounds than the same model undefended
    assert seen["defended"][0] > seen["exact"][0]


def test_client_and_server_report_the_same_rounds(models, tmp_path):
    _, exact, compact, test = models
    served = {"exact": ServedModel.from_file(exact, security="semi-honest"), "compact": ServedModel.from_file(compact),
              "defended": ServedModel.from_file(exact, security="semi-honest").set_defense(round_to=4.0),
              "exact, client-malicious": ServedModel.from_file(exact, security="client-malicious")}
    seen = {}
    for name, model in served.items():
        ready, port = threading.Event(), []
        audit = AuditLog(tmp_path / f"{name}.audit")
        th = threading.Thread(target=serve, args=(model, "127.0.0.1", 0), daemon=True,
                              kwargs=dict(max_sessions=1, audit=audit,
                                          on_ready=lambda p: (port.append(p), ready.set())))
        th.start()
        assert ready.wait(30)
        _, cost = predict(f"127.0.0.1:{port[0]}", featurize=molecules_featurizer(test))
        th.join(30)
        audit.close()
        rec = json.loads((tmp_path / f"{name}.audit").read_text().splitlines()[-1])
        assert rec["outcome"] == "ok", rec
        seen[name] = (cost.rounds, rec["rounds"])
    _check(seen)


@pytest.mark.slow
def test_client_and_cli_server_process_report_the_same_rounds(models, tmp_path):
    _, exact, compact, test = models
    cases = {"exact": [str(exact)], "compact": [str(compact)], "defended": [str(exact), "--security", "semi-honest", "--round-to", "4"]}
    # all three servers start together (interpreter start-up dominates this test)
    procs = {name: _start(["--model", args[0], *args[1:]], tmp_path / f"{name}.audit") for name, args in cases.items()}
    try:
        ports = {name: _port(p) for name, p in procs.items()}
        seen = {}
        for name, port in ports.items():
            _, cost = predict(f"127.0.0.1:{port}", featurize=molecules_featurizer(test))
            procs[name].wait(60)
            rec = json.loads((tmp_path / f"{name}.audit").read_text().splitlines()[-1])
            assert rec["outcome"] == "ok", rec
            seen[name] = (cost.rounds, rec["rounds"])
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
    _check(seen)
