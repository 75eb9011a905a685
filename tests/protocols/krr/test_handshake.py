"""Session opening: hello, version and query-count checks, ready/abort."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from protocols.common import KernelModelParams
from protocols.krr import ServedModel
from protocols.krr.handshake import (CLIENT_MALFORMED, CLIENT_REJECTED, MAX_QUERIES_PER_SESSION, client_abort,
                                     client_hello, client_ready,
                                     server_handshake)
from protocols.net.transport import local_channel_pair
from secureml.errors import ProtocolError


def _public():
    rng = np.random.default_rng(0)
    return ServedModel(KernelModelParams(rng.uniform(0, 9, (6, 3)), rng.normal(0, 1, 6), 0.0, "gaussian", 4.0)).public


def _serve(ch, box):
    try:
        box["out"] = server_handshake(ch, _public())
    except ProtocolError as exc:
        box["error"] = exc


def test_hello_params_ready():
    c0, c1 = local_channel_pair(timeout=10)
    box: dict = {}
    t = threading.Thread(target=_serve, args=(c0, box))
    t.start()
    pp = client_hello(c1, 3)
    client_ready(c1, need_public_model=True)
    t.join(10)
    assert pp == _public() and box["out"] == (3, {"ready": True, "need_public_model": True})


def test_abort_and_bad_hellos_end_with_clear_errors():
    c0, c1 = local_channel_pair(timeout=10)
    box: dict = {}
    t = threading.Thread(target=_serve, args=(c0, box))
    t.start()
    client_hello(c1, 1)
    client_abort(c1)  # the fixed code: why a query was rejected names the query
    t.join(10)
    assert str(box["error"]) == CLIENT_REJECTED
    # a client that sends its own reason anyway: the server does not quote it
    c0, c1 = local_channel_pair(timeout=10)
    box = {}
    t = threading.Thread(target=_serve, args=(c0, box))
    t.start()
    client_hello(c1, 1)
    c1.send_json({"abort": "molecule CCO.xyz\nforged log line"})
    t.join(10)
    assert str(box["error"]) == CLIENT_MALFORMED and "CCO" not in str(box["error"])
    for n in (0, MAX_QUERIES_PER_SESSION + 1):
        c0, c1 = local_channel_pair(timeout=10)
        box = {}
        t = threading.Thread(target=_serve, args=(c0, box))
        t.start()
        with pytest.raises(ProtocolError, match="n_queries"):
            client_hello(c1, n)
        t.join(10)
        assert "n_queries must be an integer" in str(box["error"])
