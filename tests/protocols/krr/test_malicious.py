"""Client-malicious double-blind KRR (issue 12): real deviating clients over TCP against `serve`.

The servers run `protocols.krr.serve` over real TCP in threads of the test process (their log
captured; the `secureml serve` CLI process is exercised by test_service_e2e.py and the acceptance
check); each attack is a client that patches one of its own protocol steps -- on the client's
thread only -- or flips bytes of its own messages, and talks to them over TCP. Every test ends in an abort or in the ideal output f(q') for the q' the client's
choice bits encode; and the server keeps serving honest clients afterwards.
"""
from __future__ import annotations

import socket
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from protocols.krr import predict
from protocols.krr.featurize import Featurizer
from protocols.krr import linear as lin
from protocols.krr import gaussian_malicious
from protocols.krr.params import ABORT_CODE, PublicParams
from protocols.ot import session as ot_session
from protocols.ot.softspoken import SoftSpokenReceiver
from secureml.data import embedded_split, load_embedded
from secureml.errors import SecureMLError
from secureml.models.krr import KernelRidge
from secureml.models.pipeline import MolecularModel
from secureml.models.random_features import RandomFourierRidge
from secureml.representations import CoulombMatrix
from tests.protocols.krr.deviations import bit_flipping_send, perturbed_mask_reveal
from tests.protocols.krr.deviations import patch_on_this_thread as _client_patch

U64 = np.uint64
OUTCOMES: list[str] = []


class InProcessServer:
    """`protocols.krr.serve` in a thread of this process (real TCP), its log captured: for servers
    whose client-side patches cannot leak into them (the exact model in client-malicious mode)."""

    def __init__(self, model: Path, security: str, noise: float = 0.0, round_ot: bool = False,
                 precorrect: bool = False) -> None:
        import logging

        from protocols.krr import ServedModel, serve
        from protocols.krr.server import AbortCounter

        self.stop_event = threading.Event()
        self.ready = threading.Event()
        self.port = 0
        self.lines: list[str] = []
        handler = logging.Handler()
        handler.emit = lambda rec: self.lines.append(rec.getMessage())  # type: ignore[method-assign]
        logging.getLogger("secureml.serve").addHandler(handler)
        self._handler = handler
        # a small public calibration set (the bounds' default uses 490 embedded molecules)
        served = ServedModel.from_file(str(model), security=security,
                                       calibration=load_embedded().subset(np.arange(0, 3921, 61)))
        if noise:
            served.set_defense(noise=noise)  # as `serve --noise`
        if round_ot:
            served.round_ot_corrections()  # as `serve --compact-corrections rounded`
        served.ot_pool_precorrect = precorrect  # as `serve --compact-precorrect`
        self.log = Path(model).with_suffix(".log")
        self.public = served.public

        def on_ready(port: int) -> None:
            self.port = port
            self.ready.set()

        def run() -> None:
            # these servers see many deliberately deviating sessions from one address: count their
            # failed checks but never refuse (the refusal itself: test_laplacian_malicious.py)
            serve(served, "127.0.0.1", 0, on_ready=on_ready, stop=self.stop_event, session_timeout=20,
                  aborts=AbortCounter(None))

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def wait(self) -> "InProcessServer":
        assert self.ready.wait(60), "in-process server did not start"
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.thread.is_alive()

    def text(self) -> str:
        return "\n".join(self.lines)

    def stop(self) -> None:
        import logging

        self.stop_event.set()
        self.thread.join(5)
        logging.getLogger("secureml.serve").removeHandler(self._handler)


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """Four servers, started in parallel: a compact random-Fourier-feature model (client-malicious;
    its ideal output is computable from its weights), an exact Gaussian model served
    semi-honest ("weak") and client-malicious ("strong"), and an exact Laplacian model served
    client-malicious ("laplace": the strict protocol, its bound chain, the default)."""
    tmp = tmp_path_factory.mktemp("mal")
    data = load_embedded()
    tr, te = embedded_split(0)
    rff = MolecularModel(CoulombMatrix(size=23), RandomFourierRidge(n_features=64, sigma=50.0, lam=1e-6, seed=0),
                         "U0_atomization").fit(data.subset(tr[:150]))
    gauss = MolecularModel(CoulombMatrix(size=23), KernelRidge("gaussian", sigma=50.0, lam=1e-6), "U0_atomization")
    gauss.fit(data.subset(tr[:30]))
    lap = MolecularModel(CoulombMatrix(size=23), KernelRidge("laplacian", sigma=500.0, lam=1e-6), "U0_atomization")
    lap.fit(data.subset(tr[:30]))
    rff_path, g_path, l_path = rff.save(tmp / "rff.npz"), gauss.save(tmp / "g.npz"), lap.save(tmp / "l.npz")
    # in threads of this process over real TCP (the CLI's `secureml serve` process is exercised
    # by tests/protocols/krr/test_service_e2e.py and the acceptance check); client-side patches
    # below act on the client's thread only
    srv = {"weak": InProcessServer(g_path, "semi-honest"),
           "rff": InProcessServer(rff_path, "client-malicious"), "strong": InProcessServer(g_path, "client-malicious"),
           "laplace": InProcessServer(l_path, "client-malicious")}
    try:
        for s_ in srv.values():
            s_.wait()
        yield {"rff_model": rff, "gauss": gauss, "mols": data.subset(te[:3]), **srv}
    finally:
        for s_ in srv.values():
            s_.stop()
        print("randomised deviation outcomes:", OUTCOMES)


@pytest.fixture(scope="module")
def rff(servers):
    return servers["rff_model"], servers["rff"], servers["mols"]


def _phi(mm, pp: PublicParams, mols) -> np.ndarray:
    _, _, public = lin.linear_parts(mm)
    return lin.client_features(public, mols)


def _ideal(mm, pp: PublicParams, enc: np.ndarray, out_bits: int) -> np.ndarray:
    """f(phi') of the fixed-point functionality for encoded choice values enc (k, F) -- the one
    output a client with these choice bits may get."""
    w, offset, _ = lin.linear_parts(mm)
    w_enc = np.rint(w * float(1 << pp.weight_frac_bits)).astype(np.int64)
    lo_int = int(round(pp.feature_lo * (1 << pp.frac_bits)))
    off = int(round(offset * 2.0 ** (pp.frac_bits + pp.weight_frac_bits)))
    out = []
    for row in np.atleast_2d(enc):
        y = (sum(int(a) * int(b) for a, b in zip(w_enc, row)) + lo_int * int(w_enc.sum()) + off) % (1 << out_bits)
        if y >= 1 << (out_bits - 1):
            y -= 1 << out_bits
        out.append(y / 2.0 ** (pp.frac_bits + pp.weight_frac_bits))
    return np.array(out)


def _public(srv, mm, mols, resume_ot: bool = True, keep_alive: bool = True):
    """An honest run: the predictions and the public parameters the server announced
    (``keep_alive=False``: on a new connection, through ``open_session``, where tests wrap it)."""
    seen = {}

    def featurize(pp, public_model):
        seen["pp"] = pp
        return lin.client_features(public_model, mols)

    preds, cost = predict(srv.address, featurize=Featurizer(n_queries=len(mols), fn=featurize), resume_ot=resume_ot,
                          keep_alive=keep_alive)
    return preds, seen["pp"], cost


def _honest_still_served(srv, mm, mols) -> None:
    preds, _, _ = _public(srv, mm, mols)
    np.testing.assert_allclose(preds, mm.predict(mols), atol=1e-2)


# ------------------------------------------------------------------------------------------------
# compact models: the client's only input is its choice bits
# ------------------------------------------------------------------------------------------------

def test_malicious_chosen_choice_bits_give_exactly_the_ideal_output(rff, monkeypatch):
    """The issue's 'weights and offset in one session' client, on a compact model: it bypasses its
    own bound checks and sends any encoded vectors it likes (zero, single large entries). It gets
    f(phi') for the phi' its bits encode -- bit-exact -- and nothing else (F + 1 such queries
    reveal w through any prediction interface: the ideal functionality, docs/malicious.md)."""
    mm, srv, mols = rff
    _, pp, _ = _public(srv, mm, mols)
    F = pp.n_features
    top = (1 << pp.x_bits) - 1
    chosen = np.zeros((4, F), dtype=U64)
    chosen[1, 0] = top  # one feature at its maximum: isolates w_0 ... as f(phi') does
    chosen[2, 5] = 1 << (pp.x_bits - 1)
    chosen[3] = np.random.default_rng(0).integers(0, top, F).astype(U64)
    seen = {}

    def evil_online(party, pp_, k, out_bits=64, **kw):
        if kw.get("phi") is not None:  # the client's side only (the server shares this module)
            # replace its honest encoding with chosen values (no bound check on the client: the
            # server must not rely on one)
            monkeypatch.setattr(PublicParams, "encode_features", lambda self, X, who="": chosen.copy())
            seen["out_bits"] = out_bits
        return real_online(party, pp_, k, out_bits, **kw)

    real_online = lin.online
    monkeypatch.setattr(lin, "online", evil_online)
    preds, _ = predict(srv.address, np.zeros((4, F)))
    np.testing.assert_array_equal(preds, _ideal(mm, pp, chosen, seen["out_bits"]))
    monkeypatch.undo()
    _honest_still_served(srv, mm, mols)


def _evil_receiver(monkeypatch, tamper):
    """Install a SoftSpoken receiver that tampers with its extension messages / proofs."""

    class Evil(SoftSpokenReceiver):
        def _extend(self, c):
            send = self.ch.send_array

            def patched(a, owned=False):
                self.ch.send_array = send
                return send(tamper("u", np.array(a, copy=True)), owned=owned)

            self.ch.send_array = patched
            try:
                return super()._extend(c)
            finally:
                self.ch.send_array = send

        def _prove_piece(self, message, rows, c):
            key = self._check_key(message)
            from protocols.ot import consistency
            self.ch.send_array(tamper("proof", consistency.receiver_proof(key, rows, c)), owned=True)

    monkeypatch.setattr(ot_session, "SoftSpokenReceiver", Evil)


def test_malicious_inconsistent_ot_columns_abort(rff, monkeypatch):
    """A client whose OT-extension columns disagree (d blocks flipped) is caught by the
    consistency check before any OT of the piece is used; the resumed session's Delta is then
    dropped, so the client cannot retry its guesses against the same Delta."""
    mm, srv, mols = rff
    _public(srv, mm, mols)  # an honest session: the client now holds a ticket
    assert _public(srv, mm, mols)[2].extra["resumed"]

    def tamper(kind, a):
        if kind == "u":
            a[:, 0] ^= U64(0xFFFF)  # every block: Delta_b = 0 for all 32 blocks is ~2^-128
        return a

    _evil_receiver(monkeypatch, tamper)
    # a resumed session spends the pool checked at the end of the last one (protocols.ot.pool), so
    # its only extension is the refill after its reply: the server's check fails there, before
    # any of those OTs is used; the client keeps the prediction of a query its checked pool bound
    try:
        np.testing.assert_allclose(_public(srv, mm, mols)[0], mm.predict(mols), atol=1e-2)
    except SecureMLError:
        pass
    monkeypatch.undo()
    assert _eventually(lambda: "ConsistencyError" in srv.text())
    # the attack ran on the resumed session (same ticket): the server forgot that Delta
    again = _public(srv, mm, mols)
    np.testing.assert_allclose(again[0], mm.predict(mols), atol=1e-2)
    assert again[2].extra["resumed"] is False


def test_malicious_forged_consistency_proof_aborts(rff, monkeypatch):
    mm, srv, mols = rff

    def tamper(kind, a):
        if kind == "proof":
            a[0] ^= np.uint8(1)
        return a

    _evil_receiver(monkeypatch, tamper)
    with pytest.raises(SecureMLError):  # a session without a ticket extends inline, in the online phase
        _public(srv, mm, mols, resume_ot=False)
    monkeypatch.undo()
    _honest_still_served(srv, mm, mols)


def _bit_flipping_open(real_open, rng: np.random.Generator, target: int, state: dict):
    """A client ``open_session`` whose channel flips one random bit of its ``target``-th frame
    after the handshake (this client's channel only: the server runs in this process);
    ``state["hit"]`` tells whether the session sent that many frames."""
    def flipping_open(*a, **kw):
        ch, reply = real_open(*a, **kw)
        ch._send_frame = bit_flipping_send(ch._send_frame, rng, target, state)
        return ch, reply

    return flipping_open


def _consistent_pool_client(monkeypatch, cur: dict) -> None:
    """The client's pooled-COT step (:func:`protocols.ot.pool.cot_recv_pooled`, as the Gilboa core
    calls it) made consistent with a bit its channel flips in the derandomisation message d: the
    server then used b'' = d' xor r, so this client derandomises with b'' too -- what a client that
    flips a bit of d on purpose would do. ``cur``: {"state": the flipping channel's state,
    "target": the frame it flips}; sets cur["flipped"] = the encoded query b'' selects (k, F), or
    None if the flip missed d's bits (the array header, or the padding past the OTs)."""
    from protocols.mpc import gilboa
    from protocols.ot import pool as ot_pool
    from protocols.ot.iknp import _check_bits

    real = gilboa.cot_recv_pooled

    def pooled(ch, pool, choices, bits):
        ch.flush()  # frames queued before d are counted before it (same bytes, sent a moment earlier)
        st = cur["state"]
        if st["n"] != cur["target"]:  # d is not this session's flipped frame
            return real(ch, pool, choices, bits)
        b = np.concatenate([np.asarray(c, dtype=np.uint8).ravel() for c in choices])
        m = b.shape[0]
        h = pool.h[:m].copy()
        seen = {}
        real_recv = ch.recv_array

        def recv(*a, **kw):
            seen["raw"] = real_recv(*a, **kw)
            return seen["raw"]

        ch.recv_array = recv
        try:
            real(ch, pool, choices, bits)  # the channel flips one bit of d on its way out
        finally:
            del ch.recv_array
        j = st["bit"] - 8 * (st["frame_len"] - (m + 7) // 8)  # the flipped bit's OT (d starts after the header)
        cur["flipped"] = None
        if 0 <= j < m:
            b = b.copy()
            b[j] ^= 1
            # decode b'' (bit-major per bit group, then row, then feature: gilboa.inner_products_pipelined)
            k, n = cur["shape"]
            enc, at = np.zeros(k * n, dtype=U64), 0
            for i0, i1, _ in gilboa.bit_groups(cur["x_bits"], bits[0]):
                for i in range(i0, i1):
                    enc |= b[at:at + k * n].astype(U64) << U64(i)
                    at += k * n
            cur["flipped"] = enc.reshape(k, n)
        return ot_pool.derandomise(h, b, seen["raw"], ot_pool._segments([len(c) for c in choices]),
                                   [_check_bits(x) for x in bits])

    monkeypatch.setattr(gilboa, "cot_recv_pooled", pooled)


def _record_out_bits(monkeypatch) -> dict:
    """Wrap linear.online so a test can read the output width its session used (key "v")."""
    out_bits = {}
    real_online = lin.online

    def online(party, pp_, k, out_bits_=64, **kw):
        out_bits["v"] = out_bits_
        return real_online(party, pp_, k, out_bits_, **kw)

    monkeypatch.setattr(lin, "online", online)
    return out_bits


@pytest.mark.parametrize("resume", ["1", "0"])
def test_malicious_randomised_deviation_every_client_message(rff, monkeypatch, resume):
    """Perturb every message the client sends after the handshake (OT-session request, base OTs
    and GGM trees when fresh, parameter echo, extension pieces, proofs, a pooled session's d),
    one per session, at a random bit: each session aborts or returns exactly the ideal output --
    the honest prediction, or, for a bit flipped inside a pool's d = b xor r (which the server
    cannot tell from a choice), f(q'') for the q'' that b'' = d' xor r encodes, computed here."""
    mm, srv, mols = rff
    honest, pp, _ = _public(srv, mm, mols, resume_ot=resume == "1")
    from protocols.krr import client as client_mod

    real_open = client_mod.open_session
    rng = np.random.default_rng(12)
    outcomes = []
    cur = {"shape": (len(mols), pp.n_features), "x_bits": pp.x_bits}
    _consistent_pool_client(monkeypatch, cur)
    out_bits = _record_out_bits(monkeypatch)
    # the hello travels inside open_session (before the wrap); frame 0 after it is "ready", the end
    # of the handshake; then every later frame in turn
    target = 1
    while True:
        state = {"n": 0, "hit": False}
        cur.update(state=state, target=target, flipped=False)
        monkeypatch.setattr(client_mod, "open_session", _bit_flipping_open(real_open, rng, target, state))
        try:
            # a new connection per session: the wrapped open_session carries every perturbed session
            preds, _, _ = _public(srv, mm, mols, resume_ot=resume == "1", keep_alive=False)
            if cur["flipped"] is False or cur["flipped"] is None:
                outcomes.append("ideal")
                np.testing.assert_array_equal(preds, honest)
            else:  # the flip chose another query: exactly its ideal output, not the honest one
                outcomes.append("other query")
                np.testing.assert_array_equal(preds, _ideal(mm, pp, cur["flipped"], out_bits["v"]))
                assert not np.array_equal(preds, honest)
        except SecureMLError:
            outcomes.append("abort")
        finally:
            monkeypatch.setattr(client_mod, "open_session", real_open)
        if not state["hit"]:
            outcomes.pop()  # the client sent fewer frames: that session was not perturbed
            break
        target += 1
    OUTCOMES.append(f"resume={resume}: {outcomes}")
    assert len(outcomes) >= (4 if resume == "1" else 6) and "abort" in outcomes
    monkeypatch.undo()
    _honest_still_served(srv, mm, mols)


def test_malicious_flipped_pool_bit_is_another_query(rff, monkeypatch):
    """A resumed session's d = b xor r with one bit flipped (bit 3 of d's bytes, on the wire):
    the server derandomises with b'' = d' xor r, so the client gets exactly f(q'') for the q'' whose
    encoding differs from its own in that one choice bit -- an ordinary query it could have asked --
    and nothing of the honest one's pads."""
    mm, srv, mols = rff
    honest, pp, _ = _public(srv, mm, mols)  # leaves a pool with the ticket
    from protocols.krr import client as client_mod

    cur = {"shape": (len(mols), pp.n_features), "x_bits": pp.x_bits, "flipped": False}
    _consistent_pool_client(monkeypatch, cur)
    out_bits = _record_out_bits(monkeypatch)
    from protocols.mpc import gilboa

    inner = gilboa.cot_recv_pooled

    def flip_d(ch, pool, choices, bits):  # flip one bit of d's payload, past the array header
        state = {"n": 0, "hit": False}
        cur.update(state=state, target=0)
        real_send = ch._send_frame

        def send(parts, wait=True):
            raw = bytearray(b"".join(bytes(memoryview(x).cast("B")) for x in parts))
            bit = 8 * (len(raw) - (sum(len(c) for c in choices) + 7) // 8) + 3  # bit 3 of d: OT 3
            raw[bit // 8] ^= 1 << (bit % 8)
            state.update(bit=bit, frame_len=len(raw), hit=True)
            ch._send_frame = real_send
            return real_send([bytes(raw)], wait)

        ch._send_frame = send
        return inner(ch, pool, choices, bits)

    monkeypatch.setattr(gilboa, "cot_recv_pooled", flip_d)
    preds, _, cost = _public(srv, mm, mols)
    assert isinstance(cur["flipped"], np.ndarray), "the session did not spend the pool"
    np.testing.assert_array_equal(preds, _ideal(mm, pp, cur["flipped"], out_bits["v"]))
    assert not np.array_equal(preds, honest)
    monkeypatch.undo()
    _honest_still_served(srv, mm, mols)


# ------------------------------------------------------------------------------------------------
# exact kernels: the Gaussian kernel is client-malicious (protocols.krr.gaussian_malicious), and
# the Laplacian kernel (protocols.krr.laplacian_malicious, up to one bit per aborted session)
# ------------------------------------------------------------------------------------------------

def _zero_output_inputs(monkeypatch):
    """The issue's attack 1: the client's inputs to the two step-9 Gilboa products set to zero."""
    from protocols.krr import expsum

    real, real_mul = expsum.inner_products128, expsum.u128.mul_small
    client = threading.current_thread()  # the server runs in other threads of this process

    # w_i = (G_i + r_i) v_i := 0 (the client's OT-sender values, and its local correction sum w) ...
    def zero_mul(a, b):
        if threading.current_thread() is client:
            return np.zeros_like(a[0]), np.zeros_like(a[1])
        return real_mul(a, b)

    monkeypatch.setattr(expsum.u128, "mul_small", zero_mul)

    # ... and v_i := 0 (its choice bits in the second product): the output is the offset alone
    def zero_bits(party, chooser, *, bits=None, **kw):
        if bits is not None and party.role == 1 and threading.current_thread() is client:
            bits = bits * 0
        return real(party, chooser, bits=bits, **kw)

    monkeypatch.setattr(expsum, "inner_products128", zero_bits)


def _eventually(cond, timeout: float = 10.0) -> bool:
    """Poll ``cond`` every 20 ms until it holds or ``timeout`` s passed (the server's log line
    is written by its thread after the client saw the abort); returns its last value."""
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            return bool(cond())
        time.sleep(0.02)
    return True


def test_malicious_gaussian_honest_over_tcp_is_the_plaintext_prediction(servers):
    """An honest client against the client-malicious Gaussian server over TCP (masked public-factor
    chain of protocol 23, one session of three queries): the semi-honest server's answers on the
    same fixed-point encoding to the flood's 2^-17 (protocol 36: the output scale keeps 17 bits
    below the flood e_T; 1e-6 and measured 2-3e-9 at protocol 34's scale 2^-96; measured 5.7e-6 at
    protocol 36), the float plaintext predictions to the
    encoding's own error (measured 0.6-1.2e-4, the same for both modes: the Coulomb-matrix entries
    are rounded to the model's frac_bits; in process, on grid-exact data, 1e-4 holds:
    test_gaussian_malicious.py)."""
    mm, mols, strong = servers["gauss"], servers["mols"], servers["strong"]
    Q = mm.representation.transform(mols)
    preds, _ = predict(strong.address, Q)
    weak, _ = predict(servers["weak"].address, Q)
    # the flood e_T is below 2^-OUTPUT_NOISE_BITS of a unit; both answers also carry their own
    # rounding, which once took the difference just past 2^-20 + 1e-8 (9.86e-7, unseeded flood: a
    # flaky bound), so one more 2^-20 of room -- a deviation moves the output by far more
    assert np.abs(preds - weak).max() < 2.0 ** (1 - gaussian_malicious.OUTPUT_NOISE_BITS)
    assert np.abs(preds - mm.predict(mols)).max() < 5e-4


def test_malicious_offset_attack_works_only_against_semi_honest(servers, monkeypatch):
    """Against `--security semi-honest` the step-9 attack returns the secret offset exactly (the
    finding). Against the client-malicious Gaussian server the same patch (it zeroes every
    128-bit product the client computes) aborts (it breaks the client's MACs of step 9); its
    analogues in the masked chain of steps 10-14 -- the client's chain values zeroed, or zero
    inputs to its final sum -- return a uniformly masked number; the server keeps serving."""
    from protocols.krr import gaussian_malicious as gm

    mm, mols = servers["gauss"], servers["mols"]
    offset = float(mm.estimator.y_offset_)
    Q = mm.representation.transform(mols.subset([0]))
    want = mm.predict(mols.subset([0]))[0]
    _zero_output_inputs(monkeypatch)
    preds, _ = predict(servers["weak"].address, Q)
    assert abs(preds[0] - offset) < 1e-6  # the attack works where the protocol is semi-honest
    assert abs(preds[0] - want) > 1e-3
    strong = servers["strong"]
    # the patch zeroes every 128-bit product the client computes (u128.mul_small is shared): in
    # the client-malicious protocol that breaks its MACs, so the session aborts -- no offset
    with pytest.raises(SecureMLError):
        predict(strong.address, Q)
    monkeypatch.undo()

    # one session of four queries (fewer sessions: the test's cost is per session): the client's
    # whole chain zeroed, then only its final sum (all points, or all but one: the offset, or
    # one weighted kernel term), then honest -- after the abort above, so it also shows the
    # server serving the next session. Steps 10-14 send everything masked by fresh full-ring
    # masks, so each edit returns a masked number, never the offset or a term.
    query = [0]  # which query of the session the client is in

    def chain_step(orig, p, g, z):
        return np.zeros_like(p) if query[0] == 0 else orig(p, g, z)

    def output(orig, p, y_s, ring_bits):
        which, query[0] = query[0], query[0] + 1
        if which in (1, 2):
            p2 = np.zeros_like(p)
            if which == 2:
                p2[7] = p[7]
            p = p2
        return orig(p, y_s, ring_bits)

    _client_patch(monkeypatch, gm, "client_chain_step", chain_step)
    _client_patch(monkeypatch, gm, "client_output", output)
    preds, _ = predict(strong.address, np.repeat(Q, 4, axis=0))
    monkeypatch.undo()
    assert query[0] == 4
    assert (np.abs(preds[:3]) > 1e6).all()  # masked by the fresh s_K: neither the offset nor a term
    assert abs(preds[3] - want) < 1e-2 and strong.alive()
    assert "reason=MacCheckError" in strong.text()


def test_malicious_gaussian_findings_2_and_3_abort(servers, monkeypatch):
    """Finding 3 (delta_i added to the client's share of D_i) and finding 2's mechanism (every
    distance but one pushed past the kernel's cut, isolating one term) abort at the binding
    check; the server logs the error class and serves the next client."""
    from protocols.krr import binding

    mm, mols, strong = servers["gauss"], servers["mols"], servers["strong"]
    Q = mm.representation.transform(mols.subset([1]))

    def shift_one(orig, norm, s_c, c, ring_bits):
        s_c = s_c.copy()
        s_c[3] += U64(1 << 20)
        return orig(norm, s_c, c, ring_bits)

    def all_but_one(orig, norm, s_c, c, ring_bits):
        u = orig(norm, s_c, c, ring_bits)
        keep = u[9]
        u = binding._mod(u + U64(1 << (ring_bits - 1)), ring_bits)
        u[9] = keep
        return u

    for fn in (shift_one, all_but_one):
        _client_patch(monkeypatch, binding, "client_masked", fn)
        with pytest.raises(SecureMLError):
            predict(strong.address, Q)
        monkeypatch.undo()
    preds, _ = predict(strong.address, Q)
    assert abs(preds[0] - mm.predict(mols.subset([1]))[0]) < 1e-2


@pytest.mark.slow  # its claims run fast elsewhere: y = F + fresh noise through a whole served session
# (test_defense.py::test_noise_spread_in_the_checked_gaussian_protocol, run_krr_session), a
# deviation with noise aborting (test_gaussian_malicious.py::test_noise_deviating_client_still_aborts),
# serving on after aborts over TCP (the other tests here); this one is their TCP combination
def test_malicious_gaussian_noise_over_tcp(servers, monkeypatch, tmp_path):
    """`serve --noise` on the client-malicious Gaussian over real TCP: an honest client gets the
    prediction plus fresh noise (4 answers to one molecule: all different, none the bare
    prediction, each within 6 sd of it -- a correct server misses that with probability < 1e-8;
    the spread itself is tested on seeded runs in test_defense.py); a client shifting one
    distance share (finding 3) still aborts and the server serves the next client."""
    from protocols.krr import binding

    mm, mols = servers["gauss"], servers["mols"]
    srv = InProcessServer(mm.save(tmp_path / "g.npz"), "client-malicious", noise=2.0).wait()
    try:
        Q = np.repeat(mm.representation.transform(mols.subset([1])), 4, axis=0)
        want = mm.predict(mols.subset([1]))[0]

        def shift_one(orig, norm, s_c, c, ring_bits):
            s_c = s_c.copy()
            s_c[3] += U64(1 << 20)
            return orig(norm, s_c, c, ring_bits)

        # the deviation first, then the honest session (which so also shows the server serving
        # the next client: one session fewer than honest / deviating / honest)
        _client_patch(monkeypatch, binding, "client_masked", shift_one)
        with pytest.raises(SecureMLError):
            predict(srv.address, Q[:1])
        monkeypatch.undo()
        preds, _ = predict(srv.address, Q)
        err = np.abs(preds - want)
        assert len(np.unique(preds)) == 4 and (err < 12).all() and (err > 1e-2).any()
        assert srv.alive() and "reason=MacCheckError" in srv.text()
    finally:
        srv.stop()


def test_malicious_gaussian_ill_formed_lattice_messages_abort(servers, monkeypatch):
    """Protocol 13's lattice cross term against a real client over TCP: a ciphertext with huge
    noise, ciphertexts under c1 = 0 instead of the server's seed (c0 = m + t e). Each aborts in the
    well-formedness proof
    -- the server's reply step (armed to fail the test) is never reached -- and the server logs the
    error class and serves the next client."""
    from protocols.mpc import bfv_proof
    from protocols.mpc import he_matvec_checked as hc

    mm, mols, strong = servers["gauss"], servers["mols"], servers["strong"]
    Q = mm.representation.transform(mols.subset([0]))

    def shift(ring, a, coeff, amount):
        a = a.copy()
        a[..., coeff] = (a[..., coeff] + ring.scalar(amount)[:, 0]) % ring.p[:, 0]
        return a

    def enc(orig, ring, rng, seed, msgs, t_bits):
        which = state["which"]
        if which == "other-query":
            msgs = msgs.copy()
            msgs[0, 2] ^= 1
            return orig(ring, rng, seed, msgs, t_bits)
        pk0, c0, w = orig(ring, rng, seed, msgs, t_bits)
        if which == "noise":
            c0 = shift(ring, c0, 11, 1 << (t_bits + 40))
        elif which == "pk":
            pk0 = shift(ring, pk0, 0, 1000 << t_bits)
        else:
            m = np.zeros((msgs.shape[0], ring.n), np.int64)
            m[:, :msgs.shape[1]] = msgs
            c0 = ring.add(ring.from_signed(m), ring.mul(ring.from_signed(w.e), ring.scalar(1 << t_bits)))
        return pk0, c0, w

    def never(*a, **k):
        raise AssertionError("the server answered an ill-formed ciphertext")

    state = {}
    before = strong.text().count("reason=MacCheckError")
    # one session each (sessions are slow; the public key's noise and another query are tested in
    # process: tests/protocols/mpc/test_bfv_proof.py, test_gaussian_malicious.py)
    for which in ("noise", "c1"):
        state["which"] = which
        _client_patch(monkeypatch, bfv_proof, "client_encrypt", enc)
        monkeypatch.setattr(hc, "_flood_residues", never)  # the server's reply step (server thread)
        with pytest.raises(SecureMLError):
            predict(strong.address, Q)
        monkeypatch.undo()
        OUTCOMES.append(f"gaussian lattice {which}: abort")
    preds, _ = predict(strong.address, Q)
    assert abs(preds[0] - mm.predict(mols.subset([0]))[0]) < 1e-2 and strong.alive()
    assert strong.text().count("reason=MacCheckError") == before + 2 and "AssertionError" not in strong.text()


@pytest.mark.parametrize("which", ["norm", "u", "query", "share"])
def test_malicious_gaussian_randomised_deviation(servers, monkeypatch, which):
    """One client-computed protocol value perturbed (random index and bit, seeded): the session
    aborts. (Steps 10-14 take no client message: the client-local edits there -- its received
    h_i and z_k, its chain values, its final sum -- give F(q') moved by what the client added, or
    a masked number: tests/protocols/krr/test_gaussian_malicious.py checks those bit-exactly.)"""
    from protocols.krr import binding

    mm, mols, strong = servers["gauss"], servers["mols"], servers["strong"]
    Q = mm.representation.transform(mols.subset([2]))
    rng = np.random.default_rng(zlib.crc32(which.encode()))  # stable across runs (str hash is salted)
    i, bit = int(rng.integers(0, len(mm.estimator.dual_coef_))), int(rng.integers(0, 40))
    err = U64(1) << U64(bit)
    if which in ("norm", "share", "u"):
        _client_patch(monkeypatch, binding, "client_masked", perturbed_mask_reveal(which, i, err, xor=True))
    elif which.startswith("query"):
        def commit_q(orig, q, step):  # OT bits of another query than its norm term's
            q = orig(q, step).copy()
            q[i % len(q)] ^= U64(1)
            return q
        _client_patch(monkeypatch, binding, "client_commit_query", commit_q)
    with pytest.raises(SecureMLError):
        predict(strong.address, Q)
    monkeypatch.undo()
    OUTCOMES.append(f"gaussian {which}: abort")


def test_malicious_gaussian_flipped_bits_in_client_messages(servers, monkeypatch):
    """One random bit of one client message after the handshake flipped (OT-extension columns and
    their consistency proofs, the cross term's and the commitments' extension pieces, the opened
    check values), one message per session at seeded positions over the whole session: each
    session aborts or returns the honest prediction (the client is never an OT sender, so no
    message of its own can select what the server reveals)."""
    from protocols.krr import client as client_mod

    mm, mols, strong = servers["gauss"], servers["mols"], servers["strong"]
    Q = mm.representation.transform(mols.subset([0]))
    real_open = client_mod.open_session
    rng = np.random.default_rng(21)
    outcomes, answered = [], []
    for target in (1, 3, 6, 12, 17):  # 19 client frames per session since protocol 23 (no chain commitments)
        state = {"n": 0, "hit": False}
        monkeypatch.setattr(client_mod, "open_session", _bit_flipping_open(real_open, rng, target, state))
        try:
            preds, _ = predict(strong.address, Q, keep_alive=False)  # through the wrapped open_session
            outcomes.append("honest")
            answered.append(preds[0])
        except SecureMLError:
            outcomes.append("abort")
        finally:
            monkeypatch.setattr(client_mod, "open_session", real_open)
        if not state["hit"]:
            outcomes.pop()
            if answered and outcomes.count("honest") < len(answered):
                answered.pop()
            break
    OUTCOMES.append(f"gaussian flipped bits: {outcomes}")
    # the honest answer last (one session: it is also the server serving after the flips); every
    # session that answered gave it -- the same query: F(q) up to the 2^-40 roundings of G and
    # each session's own flood e_T (protocol 36: below 2^-17 of a unit each; 1e-6 held at 2^-37)
    honest = predict(strong.address, Q)[0][0]
    assert abs(honest - mm.predict(mols.subset([0]))[0]) < 1e-2
    assert all(abs(a - honest) < 2 * 2.0 ** -gaussian_malicious.OUTPUT_NOISE_BITS + 1e-8 for a in answered), (answered, honest)
    # every session ended in one of the two allowed ways; whether a flipped extension column
    # aborts depends on the server's random secret bit there (KOS), so the mix is not asserted
    # (a forged opened check value always aborts: test_authenticated.py)
    assert len(outcomes) >= 5


@pytest.mark.parametrize("chain", ["bound", "unbound"])
def test_malicious_laplacian_findings_abort_or_give_a_masked_value(monkeypatch, chain):
    """The Laplacian kernel is client-malicious since protocol 17 (protocols.krr.laplacian_malicious;
    its bound chain, protocols.krr.laplacian_strict, since protocol 42 -- both run here).
    Against `--security semi-honest` the step-9 attack returns the secret offset exactly (the
    finding, for this kernel too); against the client-malicious protocol the same patch finds no
    such products (the prediction comes back, not the offset),
    a shifted distance share (finding 3) aborts at the chain check, and zero inputs to the
    client's final local product return a uniformly masked number -- neither the offset nor a
    term."""
    from protocols.common import KernelModelParams
    from protocols.krr import ServedModel
    from protocols.krr import gaussian_malicious as gm
    from protocols.krr import laplacian_malicious, laplacian_strict
    from protocols.testing import run_krr_session

    rng = np.random.default_rng(0)
    X = np.round(rng.uniform(0, 20, (10, 4)) * 4) / 4
    params = KernelModelParams(X, rng.normal(0, 5, 10), 1.5, "laplacian", 20.0)
    weak = ServedModel(params, frac_bits=2, security="semi-honest")
    strong = ServedModel(params, frac_bits=2)  # the API's default: client-malicious
    assert strong.public.security == "client-malicious" and strong.public.laplacian_chain == "bound"
    strong.public.laplacian_chain = chain
    lm = laplacian_strict if chain == "bound" else laplacian_malicious
    q = X[:1] + 0.25
    want = params.predict(q)[0]
    _zero_output_inputs(monkeypatch)
    preds, *_ = run_krr_session(weak, q, timeout=20, seed=1)
    assert abs(preds[0] - 1.5) < 1e-6 and abs(want - 1.5) > 1e-3  # the offset, exactly
    # the client-malicious protocol has no step-9 Gilboa products (its tail is the masked public-factor
    # chain): the patched client gets the prediction, not the offset. (Until protocol 31 the patch also
    # zeroed the client's own step-6 sum, done in u128 then, and the session aborted instead.)
    # (the bound chain's client also uses u128 products in its lattice proof, which the patch zeroes
    # too: that session aborts at the proof -- also not the offset)
    try:
        preds, *_ = run_krr_session(strong, q, timeout=20, seed=1)
        assert abs(preds[0] - want) < 1e-3
    except SecureMLError:
        assert chain == "bound"
    monkeypatch.undo()

    def shift_one(orig, b, c):
        u = orig(b, c)
        u[3] += U64(1 << 10)
        return u

    _client_patch(monkeypatch, lm, "client_masked", shift_one)
    with pytest.raises(SecureMLError):
        run_krr_session(strong, q, timeout=20, seed=1)
    monkeypatch.undo()

    def zero_local(orig, p, y_s, ring_bits):
        return orig(np.zeros_like(p), y_s, ring_bits)

    _client_patch(monkeypatch, gm, "client_output", zero_local)
    preds, *_ = run_krr_session(strong, q, timeout=20, seed=1)
    monkeypatch.undo()
    assert abs(preds[0]) > 1e6  # masked by the fresh s_K
    preds, *_ = run_krr_session(strong, q, timeout=20, seed=1)
    assert abs(preds[0] - want) < 1e-3


# ------------------------------------------------------------------------------------------------
# an honest client's rejected query never reaches the server
# ------------------------------------------------------------------------------------------------

class Recorder:
    """A TCP relay that records every byte the client sends to the server."""

    def __init__(self, port: int) -> None:
        self.upstream = port
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.received = bytearray()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            s = socket.create_connection(("127.0.0.1", self.upstream))
            threading.Thread(target=self._pipe, args=(c, s, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(s, c, False), daemon=True).start()

    def _pipe(self, a, b, record) -> None:
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                if record:
                    self.received += data
                b.sendall(data)
        except OSError:
            pass
        finally:
            for x in (a, b):
                try:
                    x.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@pytest.mark.parametrize("which", ["weak", "strong", "rff", "laplace"])
def test_malicious_server_never_sees_a_rejected_query(servers, which):
    """An honest client rejects its own query (a molecule larger than the model's Coulomb matrix)
    after the handshake: it sends the fixed code, so neither the server's log nor any byte the
    server received names the molecule (its SMILES, its file name -- here with a newline and a
    forged log line in it). The reason stays in the client's own exception."""
    from protocols.krr import molecules_featurizer

    srv = servers[which]
    if which == "laplace":  # the strict protocol (bound chain), the client-malicious Laplacian default
        assert srv.public.kind == "krr-laplacian" and srv.public.laplacian_chain == "bound"
    # in-process servers share the "secureml.serve" logger: count this test's lines only
    before = srv.text().count("reason=QueryRejected")
    rec = Recorder(srv.port)
    secrets = ["CCCCCCCCCCCCCCO", "secret-patient-molecule\nFORGED session peer=x queries=999.xyz"]
    try:
        for name in secrets:
            big = load_embedded().subset(np.arange(1))
            big.charges[0] = np.array([6] * 30)
            big.coordinates[0] = np.arange(90, dtype=float).reshape(30, 3) * 1.5
            big.names[0] = name
            with pytest.raises(SecureMLError) as err:
                predict(f"127.0.0.1:{rec.port}", featurize=molecules_featurizer(big))
            assert name in str(err.value)  # the client itself knows why (the old code sent this text)
        code = f'"{ABORT_CODE}"'.encode()
        # until the server has received both codes and logged both (instead of a fixed 0.5 s); rff
        # may abort before sending a code, so there the fixed wait stays
        if which == "rff":
            time.sleep(0.5)
        _eventually(lambda: srv.text().count("reason=QueryRejected") - before >= bytes(rec.received).count(code)
                    and (which == "rff" or bytes(rec.received).count(code) == 2))
        log = srv.text()
        blob = bytes(rec.received)
        for secret in (secrets[0], "secret-patient-molecule", "FORGED", "queries=999"):
            assert secret not in log
            assert secret.encode() not in blob
        assert blob.count(code) == 2 or which == "rff"  # rff: may abort after the model download
        assert log.count("reason=QueryRejected") - before == blob.count(code)
    finally:
        rec.sock.close()


def test_malicious_log_safe_keeps_only_the_error_class():
    """Exception messages may quote a client's bytes (a newline forges a log line): never logged."""
    from protocols.krr.handshake import CLIENT_REJECTED
    from protocols.krr.server import log_safe
    from protocols.net.transport import MalformedMessage

    forged = MalformedMessage("bad reply 'CCO\nsession peer=1.2.3.4 queries=999'")
    assert log_safe(forged) == "MalformedMessage"
    assert log_safe(SecureMLError(CLIENT_REJECTED)) == f"SecureMLError: {CLIENT_REJECTED}"
    assert "\n" not in log_safe(ValueError("x\ny"))
