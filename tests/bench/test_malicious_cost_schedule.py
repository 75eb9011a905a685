"""bench.malicious_cost's in-process sessions run the server's end as `secureml serve` does over
plain TCP (pipelined), so their rounds are the deployed server's; ``--unpipelined-server`` (serve over
TLS) is labelled in the row."""
from __future__ import annotations

from bench import malicious_cost as mc
from bench.synthetic import LAPLACIAN_GRID_BITS, synthetic_model, synthetic_queries


def _session(piped: bool | None) -> dict:
    from protocols.krr import ServedModel

    model, rng = synthetic_model(1024, 351, 1000.0, seed=0, kernel="laplacian")
    Q = synthetic_queries(model, rng, 1)
    served = ServedModel(model, security="semi-honest", frac_bits=LAPLACIAN_GRID_BITS)
    served.public.ot_engine = "softspoken"
    served.public.validate()
    return mc._one_session(served, Q, float(model.predict(Q)[0]), part="laplacian", mode="semi-honest",
                           what="softspoken", label="test", server_pipelined=piped)


def test_pair_server_end_follows_serve() -> None:
    seen = {}

    def server(c):
        seen["server"] = c.pipelined
        c.send(b"x")

    def client(c):
        seen["client"] = c.pipelined
        return c.recv()

    assert mc._pair(server, client, timeout=10)[1] == b"x"
    assert seen == {"server": True, "client": True}  # frontdoor over plain TCP: pipelined
    mc._pair(server, client, timeout=10, server_pipelined=False)
    assert seen["server"] is False


def test_schedule_changes_rounds_not_bytes() -> None:
    tls_like, piped = _session(False), _session(None)
    assert tls_like["server_pipelined"] is False and piped["server_pipelined"] is True
    # the same messages, byte for byte, in two sessions with their own randomness (the output share
    # travels at a fixed width: its decimal length used to vary by a byte or two per session)
    assert tls_like["client_sent_B"] == piped["client_sent_B"]
    assert tls_like["client_received_B"] == piped["client_received_B"]
    assert tls_like["rounds"] > piped["rounds"]
    assert tls_like["abs_error"] < 1e-3 and piped["abs_error"] < 1e-3
