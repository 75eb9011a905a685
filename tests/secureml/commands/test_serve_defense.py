"""`secureml serve --round-to` (the CLI's own argument handling and server, in a thread), queried
over real TCP by the client library: the client gets the answers on the announced grid."""
from __future__ import annotations

import socket
import threading
import time

import numpy as np
import pytest

from protocols.krr import predict
from protocols.krr import molecules_featurizer
from secureml.cli import build_parser
from secureml.data import embedded_split, load_embedded
from secureml.models.krr import KernelRidge
from secureml.models.pipeline import MolecularModel
from secureml.representations import CoulombMatrix


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_serve_rounds_answers_inside_the_protocol(tmp_path, capsys):
    data = load_embedded()
    tr, te = embedded_split(0)
    model = MolecularModel(CoulombMatrix(size=23), KernelRidge("gaussian", sigma=50.0, lam=1e-6), "U0_atomization")
    model.fit(data.subset(tr[:60]))
    path = model.save(tmp_path / "model.npz")
    test = data.subset(te[:2])
    port = _free_port()
    # one admitted session: the query (the readiness probe below is an empty connection the front
    # door drops before admission, so it does not count)
    args = build_parser().parse_args(["serve", "--model", str(path), "--port", str(port), "--max-sessions", "1",
                                      "--security", "semi-honest", "--round-to", "5"])
    th = threading.Thread(target=args.func, args=(args,), daemon=True)
    th.start()
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    got, _ = predict(f"127.0.0.1:{port}", featurize=molecules_featurizer(test))
    th.join(30)
    assert not th.is_alive()  # the server stopped after its one session
    assert "output defense: rounded to 4" in capsys.readouterr().out  # 5 snapped to a power of two
    want = model.predict(test)
    assert np.all(got % 4.0 == 0) and np.all(np.abs(got - want) <= 2.0 + 1e-2)


def test_cli_serve_refuses_bad_defense_settings(tmp_path):
    from secureml.errors import ProtocolError

    args = build_parser().parse_args(["serve", "--model", str(tmp_path / "none.npz"), "--noise", "-1"])
    from secureml.commands.serve import output_defense

    with pytest.raises(ProtocolError, match="bad output noise"):
        output_defense(args)
