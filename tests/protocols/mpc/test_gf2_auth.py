"""protocols.mpc.gf2_auth: binary IT-MACs from raw COTs, the authenticated random OT and the batched
QuickSilver check, as real two-party runs on the client-malicious engines (the checked IKNP extension
of protocols.testing.checked_ot, the checked SoftSpoken extension of an exact-kernel session, and the
silent engine of a client-malicious Laplacian session), with real deviating clients."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from protocols.krr.chain import CLIENT, SERVER
from protocols.krr.registry import _setup_exact_ot
from protocols.mpc import gf2_auth as g
from protocols.mpc.authenticated import MacCheckError
from protocols.testing import checked_ot, run_two_party

U16 = np.uint16
ENGINES = ("iknp", "softspoken", "silent")


def _setup(engine: str):
    """The OT set-up of a client-malicious session on ``engine`` (the client chooses in a checked engine)."""
    if engine == "iknp":
        return checked_ot
    pp = SimpleNamespace(ot_engine=engine, checked_ot=True)

    def setup(p):
        _setup_exact_ot(p, pp, "laplacian")  # silent: the checked Ferret pair; else SoftSpoken k = 4
        if engine != "silent":  # as registry's exact-kernel set-up does after it
            if p.role == SERVER:
                p.ot_sender.checked = True
            else:
                p.ot_receiver.checked = True
    return setup


def _run(server, client, engine, seed=7):
    return run_two_party(server, client, seed=seed, setup=_setup(engine), timeout=30)


def _times(bits, delta):
    """bits (n,) times Delta's slots: (n, SLOTS) uint16."""
    return (U16(0) - bits.astype(U16))[:, None] & np.asarray(delta, dtype=U16)[None, :]


# ------------------------------------------------------------------------------------------ GF(2^16)

def test_gf_mul_matches_the_carry_less_reference():
    rng = np.random.default_rng(11)
    a = rng.integers(0, 65536, 3000, dtype=U16)
    b = rng.integers(0, 65536, 3000, dtype=U16)
    a[:4], b[:4] = [0, 1, 0xFFFF, 2], [5, 0, 1, 0x8000]  # zero, one, and X * X^15 (a reduction)
    got = g.gf_mul(a, b)
    assert got.dtype == U16
    assert [int(v) for v in got] == [g.gf_mul_slow(int(x), int(y)) for x, y in zip(a, b)]
    assert g.gf_mul_slow(2, 0x8000) == 0x100B  # X^16 = X^12 + X^3 + X + 1


def test_weighted_and_expand_chi():
    rng = np.random.default_rng(12)
    chi = g.expand_chi(bytes(range(32)), 2000)
    assert chi.shape == (2000, g.SLOTS) and chi.dtype == U16
    assert np.array_equal(chi, g.expand_chi(bytes(range(32)), 2000))
    assert not np.array_equal(chi, g.expand_chi(bytes(31) + b"\x01", 2000))
    mac = rng.integers(0, 65536, (2000, g.SLOTS), dtype=U16)
    want = np.bitwise_xor.reduce(g.gf_mul(chi, mac), axis=0)
    assert np.array_equal(g.weighted(chi, mac), want)
    big = g.expand_chi(bytes(32), 70001)  # several blocks and a ragged tail through _xorsum
    m2 = rng.integers(0, 65536, (70001, g.SLOTS), dtype=U16)
    assert np.array_equal(g.weighted(big, m2), np.bitwise_xor.reduce(g.gf_mul(big, m2), axis=0))


def test_expand_chi_pieces_are_the_one_stream():
    """A piece drawn from ``start`` (into a reused buffer) is that slice of the one AES-CTR stream
    (SecureRandom's, counter from 0), also where the piece starts mid-block and crosses the 1 MB
    pieces the stream is written in."""
    from protocols.mpc.randomness import SecureRandom
    from protocols.ot.crypto import derive_key

    seed = bytes(range(32))
    n = 400_000  # 2.4 MB: three write pieces
    raw = SecureRandom(derive_key(b"secureml/gf2chi", seed)).random_bytes(6 * n)
    ref = np.frombuffer(raw, dtype="<u2").reshape(n, g.SLOTS)
    assert np.array_equal(g.expand_chi(seed, n), ref)
    buf = np.empty((200_001, g.SLOTS), dtype=U16)
    for start in (0, 1, 3, 174_763, 199_999):  # block-aligned and not (6 bytes per element, 16 per block)
        got = g.expand_chi(seed, 200_001, start=start, out=buf)
        assert got is buf and np.array_equal(got, ref[start:start + 200_001])
    assert np.array_equal(g.expand_chi(seed, 1, start=n - 1)[0], ref[n - 1])
    with pytest.raises(ValueError):
        g.expand_chi(seed, 10, out=np.empty((9, g.SLOTS), dtype=U16))


# ------------------------------------------------------------------- committed bits, random OT

def test_pad_hash_is_the_tccr_hash():
    from protocols.ot.crypto import FixedKeyAES
    aes = FixedKeyAES(bytes(range(16)))
    x = np.random.default_rng(8).integers(0, 2**63, (40000, 2), dtype=np.uint64)
    d = np.array([12345, 678], dtype=np.uint64)
    out = np.empty_like(x)
    aes.tccr_block(x, 99, g._HASH_TAG, out=out)
    assert np.array_equal(out, aes.tccr(x, 99, 1, g._HASH_TAG))
    aes.tccr_block(x, 99, g._HASH_TAG, xor=d, out=out)
    assert np.array_equal(out, aes.tccr(x ^ d, 99, 1, g._HASH_TAG))


@pytest.mark.parametrize("engine", ENGINES)
def test_raw_cots_are_the_engines_correlation(engine):
    c = np.random.default_rng(1).integers(0, 2, 777, dtype=np.uint8)
    (q, delta, i0), (t, i1) = _run(lambda p: p.ot_sender.raw_cots(777), lambda p: p.ot_receiver.raw_cots(c), engine)
    assert i0 == i1
    assert np.array_equal(q, t ^ (np.uint64(0) - c.astype(np.uint64))[:, None] & delta[None, :])


@pytest.mark.parametrize("engine", ENGINES)
def test_commit_bits_macs_and_pads(engine):
    n = 3000
    bits = np.random.default_rng(2).integers(0, 2, n, dtype=np.uint8)
    s, c = _run(lambda p: g.commit_bits(p, CLIENT, n=n), lambda p: g.commit_bits(p, CLIENT, n=n, bits=bits), engine)
    assert c.mac.shape == s.key.shape == (n, g.SLOTS) and s.delta.shape == (g.SLOTS,)
    assert np.all(s.delta != 0)
    assert np.array_equal(c.mac, s.key ^ _times(bits, s.delta))
    assert np.array_equal(c.bits, bits)
    chosen = np.where(bits[:, None] == 1, s.pads[1], s.pads[0])
    other = np.where(bits[:, None] == 1, s.pads[0], s.pads[1])
    assert np.array_equal(c.pad, chosen)
    assert not np.any(np.all(c.pad == other, axis=1))
    # the pads are hashes, not the raw rows: no MAC word appears in them
    assert not np.array_equal(c.pad.view(U16).reshape(n, 8)[:, 1:4], c.mac)


def test_commit_bits_without_pads():
    bits = np.random.default_rng(4).integers(0, 2, 999, dtype=np.uint8)
    s, c = _run(lambda p: g.commit_bits(p, CLIENT, n=999, pads=False),
                lambda p: g.commit_bits(p, CLIENT, n=999, bits=bits, pads=False), "silent")
    assert c.pad is None and s.pads is None
    assert np.array_equal(c.mac, s.key ^ _times(bits, s.delta))


def test_commit_bits_in_several_raw_cot_calls(monkeypatch):
    """commit_bits splits large n into raw_cots calls of _COMMIT_CHUNK; the pieces line up."""
    monkeypatch.setattr(g, "_COMMIT_CHUNK", 1000)
    bits = np.random.default_rng(6).integers(0, 2, 2500, dtype=np.uint8)
    s, c = _run(lambda p: g.commit_bits(p, CLIENT, n=2500), lambda p: g.commit_bits(p, CLIENT, n=2500, bits=bits),
                "iknp")
    assert np.array_equal(c.mac, s.key ^ _times(bits, s.delta))
    assert np.array_equal(c.pad, np.where(bits[:, None] == 1, s.pads[1], s.pads[0]))


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("n", [2000, 2 * g._PARTS_ROWS + 77])  # one piece, and three
def test_auth_random_ot(engine, n):
    z = np.random.default_rng(3).integers(0, 2, n, dtype=np.uint8)

    def server(p):
        sb = g.commit_bits(p, CLIENT, n=n)
        return sb, g.auth_random_ot(p, CLIENT, sb)

    def client(p):
        return g.auth_random_ot(p, CLIENT, g.commit_bits(p, CLIENT, n=n, bits=z))

    (sb, (m0, m1, key_w)), (w, mac_w) = _run(server, client, engine)
    assert np.array_equal(w, np.where(z == 1, m1, m0))
    assert np.array_equal(mac_w, key_w ^ _times(w, sb.delta))
    assert 0.4 < m0.mean() < 0.6 and 0.4 < (m0 ^ m1).mean() < 0.6
    for m, pad in zip((m0, m1), sb.pads):  # m_b is bit 0 of pad_b; key_w's slots are bits 1..48 of pad_0
        assert np.array_equal(m, pad[:, 0] & 1)
    low = sb.pads[0].view(np.uint64)[:, 0] >> np.uint64(1)
    assert np.array_equal(key_w ^ _times(m0, sb.delta), low.view(U16).reshape(n, 4)[:, :3])


# --------------------------------------------------------------------------- QuickSilver

N_PROD, N_LIN = 1500, 700


def _proof(engine, cheat=None, prover_cls=g.Prover, seed=7):
    """One batch: n products x y + z + w = 0 (x, y, z committed, w the authenticated random-OT output
    on y's COT) and m linear relations a + b + e = 0. ``cheat`` makes the client deviate:
    'product' -- one wrong product bit z; 'linear' -- one wrong e; 'flip_w' -- it claims the other
    random-OT output at one element (and commits z to match: what the attack on the chain needs),
    keeping the MAC it has (the best it can do without Delta); 'flip_w_guess' -- the same with a
    guessed MAC correction. Returns the verifier's outcome (True, or the exception)."""
    rng = np.random.default_rng(seed)
    x, y = (rng.integers(0, 2, N_PROD, dtype=np.uint8) for _ in range(2))
    a, b = (rng.integers(0, 2, N_LIN, dtype=np.uint8) for _ in range(2))

    def server(p):
        sx, sy = g.commit_bits(p, CLIENT, n=N_PROD), g.commit_bits(p, CLIENT, n=N_PROD)
        _, _, kw = g.auth_random_ot(p, CLIENT, sy)
        sz = g.commit_bits(p, CLIENT, n=N_PROD)
        sa, sb_, se = (g.commit_bits(p, CLIENT, n=N_LIN) for _ in range(3))
        chi = g.expand_chi(g.chi_seed(p, CLIENT), N_PROD + N_LIN)
        v = g.Verifier(sx.delta)
        v.add_products(chi[:N_PROD], sx.key, sy.key)
        v.add_linear(g.weighted(chi[:N_PROD], sz.key ^ kw))
        v.add_linear(g.weighted(chi[N_PROD:], sa.key ^ sb_.key ^ se.key))
        try:
            v.finish(p, CLIENT)
        except MacCheckError as exc:
            return exc
        return True

    def client(p):
        cx, cy = g.commit_bits(p, CLIENT, n=N_PROD, bits=x), g.commit_bits(p, CLIENT, n=N_PROD, bits=y)
        w, mw = g.auth_random_ot(p, CLIENT, cy)
        if cheat in ("flip_w", "flip_w_guess"):
            w = w.copy()
            w[17] ^= 1  # the lie about its random-OT output
            if cheat == "flip_w_guess":
                mw = mw.copy()
                mw[17] ^= np.array([0x1234, 0x0F0F, 0xBEEF], dtype=U16)
        z = (x & y) ^ w
        if cheat == "product":
            z[1234] ^= 1
        e = a ^ b
        if cheat == "linear":
            e[5] ^= 1
        cz = g.commit_bits(p, CLIENT, n=N_PROD, bits=z)
        ca, cb, ce = (g.commit_bits(p, CLIENT, n=N_LIN, bits=v) for v in (a, b, e))
        chi = g.expand_chi(g.chi_seed(p, CLIENT), N_PROD + N_LIN)
        pr = prover_cls()
        pr.add_products(chi[:N_PROD], cx.bits, cx.mac, cy.bits, cy.mac)
        pr.add_linear(g.weighted(chi[:N_PROD], cz.mac ^ mw))
        pr.add_linear(g.weighted(chi[N_PROD:], ca.mac ^ cb.mac ^ ce.mac))
        pr.finish(p, CLIENT)

    return _run(server, client, engine, seed=seed)[0]


@pytest.mark.parametrize("engine", ENGINES)
def test_quicksilver_honest_passes(engine):
    assert _proof(engine) is True


@pytest.mark.parametrize("engine", ("iknp", "silent"))
@pytest.mark.parametrize("cheat", ["product", "linear", "flip_w", "flip_w_guess"])
def test_quicksilver_catches_a_false_relation(engine, cheat):
    out = _proof(engine, cheat)
    assert isinstance(out, g.QuickSilverCheckError), out


class _TamperingProver(g.Prover):
    """A client that sends a modified (U, V): bit ``bit`` of word ``word`` (0..2: U, 3..5: V) flipped."""

    word, bit = 0, 0

    def finish(self, party, chooser):
        send = party.ch.send_array

        def tampered(arr, **kw):
            arr = np.array(arr)
            if arr.shape == (2 * g.SLOTS,) and arr.dtype == np.dtype("<u2"):  # (U, V), not an OT message
                arr[self.word] ^= 1 << self.bit
                type(self).sent = True
            return send(arr, **kw)
        party.ch.send_array = tampered
        try:
            super().finish(party, chooser)
        finally:
            party.ch.send_array = send


@pytest.mark.parametrize("engine", ("iknp", "silent"))
@pytest.mark.parametrize("word,bit", [(0, 0), (2, 15), (3, 3), (5, 9)])
def test_quicksilver_catches_a_tampered_proof(engine, word, bit):
    cls = type("P", (_TamperingProver,), {"word": word, "bit": bit, "sent": False})
    assert isinstance(_proof(engine, prover_cls=cls), g.QuickSilverCheckError)
    assert cls.sent


def test_a_false_relation_fails_in_every_slot():
    """A false relation shows in every slot on its own: B != A0 + A1 Delta slot by slot (B - A0 - A1
    Delta = e Delta^2, e = chi_3 in each slot), so each slot is an independent check."""
    rng = np.random.default_rng(5)
    n = 500
    delta = np.array([0x1111, 0x2222, 0x3333], dtype=U16)
    x, y = rng.integers(0, 2, n, dtype=np.uint8), rng.integers(0, 2, n, dtype=np.uint8)
    kx, ky, kz = (rng.integers(0, 65536, (n, g.SLOTS), dtype=U16) for _ in range(3))
    z = x & y
    z[3] ^= 1
    mx, my, mz = kx ^ _times(x, delta), ky ^ _times(y, delta), kz ^ _times(z, delta)
    chi = g.expand_chi(bytes(32), n)
    pr, v = g.Prover(), g.Verifier(delta)
    pr.add_products(chi, x, mx, y, my)
    pr.add_linear(g.weighted(chi, mz))
    v.add_products(chi, kx, ky)
    v.add_linear(g.weighted(chi, kz))
    lhs, rhs = v.B, pr.A0 ^ g.gf_mul(pr.A1, delta)
    assert np.all(lhs != rhs)  # e * Delta^2 != 0 in each slot (chi_3 != 0 in every slot here)
    assert np.all(chi[3] != 0)


def test_commit_bits_rejects_non_bits():
    with pytest.raises(Exception):
        run_two_party(lambda p: g.commit_bits(p, CLIENT, n=3),
                      lambda p: g.commit_bits(p, CLIENT, n=3, bits=np.array([0, 2, 1])), seed=1, setup=checked_ot,
                      timeout=5)


def test_the_proof_is_masked():
    """What the server sees of the proof is (U, V) = (A0 + M_r, A1 + r) with r the committed random mask:
    not the prover's A0, A1 (an unmasked V would leak sum chi (x M_y + y M_x + M_l))."""
    seen = {}

    class Recording(g.Prover):
        def finish(self, party, chooser):
            send = party.ch.send_array

            def record(arr, **kw):
                if np.shape(arr) == (2 * g.SLOTS,) and np.asarray(arr).dtype == np.dtype("<u2"):
                    seen["msg"] = np.array(arr, dtype=U16)
                return send(arr, **kw)
            party.ch.send_array = record
            try:
                super().finish(party, chooser)
            finally:
                party.ch.send_array = send
            seen["A"] = (self.A0.copy(), self.A1.copy())

    assert _proof("silent", prover_cls=Recording) is True
    U, V = seen["msg"][: g.SLOTS], seen["msg"][g.SLOTS :]
    assert np.all(U != seen["A"][0]) and np.all(V != seen["A"][1])


def test_fused_linear_terms_are_the_separate_ones():
    """add_products(..., lin=, y_coef=) leaves the prover's (A0, A1) and the verifier's B where
    add_products + add_linear(weighted(chi, lin) ^ c weighted(chi, M_y)) leave them (several blocks)."""
    rng = np.random.default_rng(17)
    n = 2 * g._BLOCK + 999
    chi, mx, my, ml = (rng.integers(0, 65536, (n, g.SLOTS), dtype=U16) for _ in range(4))
    x, y = (rng.integers(0, 2, n, dtype=np.uint8) for _ in range(2))
    c = rng.integers(1, 65536, g.SLOTS, dtype=U16)
    fused, apart = g.Prover(), g.Prover()
    fused.add_products(chi, x, mx, y, my, lin=ml, y_coef=c)
    apart.add_products(chi, x, mx, y, my)
    apart.add_linear(g.weighted(chi, ml) ^ g.gf_mul(c, g.weighted(chi, my)))
    assert np.array_equal(fused.A0, apart.A0) and np.array_equal(fused.A1, apart.A1)
    assert not np.array_equal(fused.A1, g.Prover().A1)
    delta = rng.integers(1, 65536, g.SLOTS, dtype=U16)
    vf, va = g.Verifier(delta), g.Verifier(delta)
    vf.add_products(chi, mx, my, lin=ml, y_coef=c)
    va.add_products(chi, mx, my)
    va.add_linear(g.weighted(chi, ml) ^ g.gf_mul(c, g.weighted(chi, my)))
    assert np.array_equal(vf.B, va.B)
