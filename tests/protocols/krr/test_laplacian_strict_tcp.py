"""The strict (bound-chain) client-malicious Laplacian protocol over real TCP against
`protocols.krr.serve` (`secureml serve`'s server code, in a thread of this process; client patches act
on the client's -- this test's -- thread only): an honest client gets the plaintext prediction; a
deviating client (a patched client step, or one flipped bit in one of its messages) is aborted at a
check, logged without client text and counted against --max-aborts, and the next honest client is
served; the start-up line names the bound chain; and the same deviation against two servers whose
models differ only in the training data X aborts at the same check at both (issue 12)."""
from __future__ import annotations

import traceback

import numpy as np
import pytest

from protocols.krr import ServedModel, bound_chain, predict
from protocols.krr import laplacian_strict as ls
from protocols.net.transport import Channel
from secureml.errors import SecureMLError
from tests.protocols.krr.deviations import patch_on_this_thread as _client_patch
from tests.protocols.krr.test_laplacian_malicious import _TCPServer
from tests.protocols.krr.test_laplacian_strict import _case

U64 = np.uint64


def _served(data_seed: int = 0, engine: str | None = None) -> tuple:
    model = _case(N=16, d=5, seed=4, data_seed=data_seed)[0]
    served = ServedModel(model, frac_bits=4)  # the API's default: client-malicious, the bound chain
    assert served.public.security == "client-malicious" and served.public.laplacian_chain == "bound"
    if engine is not None:
        served.public.ot_engine = engine
        served.public.validate()
    return model, served


def _off_by_one(orig, b, c):
    v = orig(b, c)
    v[3] += U64(1)
    return v


def _flip_b_c(orig, bits):
    bits = bits.copy()
    bits.flat[5] ^= 1
    return bits


@pytest.mark.parametrize("engine", ["softspoken", "silent"])
def test_tcp_honest_then_deviating_clients_abort_are_counted_and_the_next_is_served(capsys, monkeypatch, engine):
    model, served = _served(engine=None if engine == "softspoken" else engine)
    assert served.public.ot_engine == engine
    srv = _TCPServer(served, max_aborts=2)
    try:
        out = capsys.readouterr().out  # the start-up line names the bound chain (and no bit)
        assert "client-malicious Laplacian protocol, bound chain" in out and "one bit" not in out
        Q = model.X_train[[2, 7]] + 0.5
        plain = model.predict(Q)
        preds, _ = predict(srv.address, Q)
        np.testing.assert_allclose(preds, plain, atol=1e-3)
        # step 4: v off by one at one point -> step 6's check
        _client_patch(monkeypatch, ls, "client_masked", _off_by_one)
        with pytest.raises(SecureMLError):
            predict(srv.address, Q[:1], retries=0)
        monkeypatch.undo()
        assert any("failed a protocol check (StrictCheckError): abort 1 of 2" in ln for ln in srv.lines)
        preds, _ = predict(srv.address, Q[:1])  # the next honest session is served
        np.testing.assert_allclose(preds, plain[:1], atol=1e-3)
        # step 2: a wrong b_C committed -> the chain's check
        _client_patch(monkeypatch, bound_chain, "client_final", _flip_b_c)
        with pytest.raises(SecureMLError):
            predict(srv.address, Q[:1], retries=0)
        monkeypatch.undo()
        assert any("failed a protocol check (ChainCheckError): abort 2 of 2" in ln for ln in srv.lines)
        # two aborts used up: refused before any OT
        with pytest.raises(SecureMLError, match="failed 2 protocol checks"):
            predict(srv.address, Q[:1], retries=0)
        assert srv.aborts.count("ip:127.0.0.1") == 2
        assert all("Error:" not in ln for ln in srv.lines)  # server-side facts only, no client text
        assert srv.thread.is_alive()
    finally:
        srv.stop()


def _sent_from(where: str) -> bool:
    """Whether the frame being sent comes straight from the function or module ``where`` (the
    innermost caller outside the transport and these tests' wrappers)."""
    for f in reversed(traceback.extract_stack()):
        if not f.filename.endswith(("transport.py", "deviations.py", __file__.rsplit("/", 1)[-1])):
            return f.name == where or f.filename.endswith(where)
    return False


def _flip_first_frame_from(monkeypatch, where: str, bit_seed: int) -> dict:
    """On this (the client's) thread: flip one random payload bit of the first frame sent from inside
    the function or module ``where`` (counted per session: the array header is left alone)."""
    rng = np.random.default_rng(bit_seed)
    state = {"hit": False}

    def send(orig, self, parts, wait=True):
        if state["hit"] or not _sent_from(where):
            return orig(self, parts, wait)
        raw = bytearray(b"".join(bytes(memoryview(x).cast("B")) for x in parts))
        skip = memoryview(parts[0]).nbytes if len(parts) > 1 else 0
        bit = int(rng.integers(8 * skip, 8 * len(raw)))
        raw[bit // 8] ^= 1 << (bit % 8)
        state["hit"] = True
        return orig(self, [bytes(raw)], wait)
    _client_patch(monkeypatch, Channel, "_send_frame", send)
    return state


# the client's own protocol messages (not the OT extension's): where it sends from, the check the
# server's abort comes from
FLIPS = {
    "the chain's QuickSilver message (U, V)": ("finish", "ChainCheckError"),
    "the lattice proof": ("check_wellformed", "MacCheckError"),
    "the check word": ("laplacian_strict.py", "StrictCheckError"),
}


def test_tcp_a_flipped_bit_in_each_client_message_aborts_the_same_way_whatever_x(monkeypatch):
    """Two servers whose models differ only in X; the same flipped bit (same message, same bit)
    against both: each session aborts at the same check, is counted, and an honest session follows."""
    servers = []
    try:
        for data_seed in (0, 1):
            model, served = _served(data_seed)
            servers.append((model, _TCPServer(served, max_aborts=None)))
        Q = servers[0][0].X_train[[2]] + 0.5
        counted = 0
        for what, (where, check) in FLIPS.items():
            for model, srv in servers:
                state = _flip_first_frame_from(monkeypatch, where, bit_seed=len(what))
                with pytest.raises(SecureMLError):
                    predict(srv.address, Q, retries=0, resume_ot=False)
                monkeypatch.undo()
                assert state["hit"], what
                # (both servers log to the one "secureml.serve" logger: its newest such line is this session's)
                failed = [ln for ln in srv.lines if "failed a protocol check" in ln]
                assert f"failed a protocol check ({check})" in failed[-1], (what, failed[-1])
                assert srv.aborts.count("ip:127.0.0.1") == counted + 1
            counted += 1
        for model, srv in servers:
            assert srv.aborts.count("ip:127.0.0.1") == counted
            preds, _ = predict(srv.address, Q)
            np.testing.assert_allclose(preds, model.predict(Q), atol=1e-3)
            assert all("Error:" not in ln for ln in srv.lines)
    finally:
        for _, srv in servers:
            srv.stop()
