"""One-sided authenticated values (protocols.mpc.authenticated): COT over Z_2^128, commitments
with MACs and extra correlations, and the batched congruence check -- honest clients pass,
clients whose committed values break a relation (in any bit, the top one included) abort."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.mpc import authenticated as au
from protocols.mpc import u128
from protocols.testing import checked_ot, run_two_party

U64 = np.uint64
SERVER, CLIENT = 0, 1




def _ints(a):
    return np.array(u128.to_int(a), dtype=object)


def test_cot128_gives_pad_plus_choice_times_correlation():
    rng = np.random.default_rng(3)
    n, w = 300, 3
    c = rng.integers(0, 2, n).astype(np.uint8)
    corr = (rng.integers(0, 2**64, (n, w), dtype=U64), rng.integers(0, 2**64, (n, w), dtype=U64))

    def server(p):
        return au.cot128(p, CLIENT, n=n, words=w, corr=corr)

    def client(p):
        return au.cot128(p, CLIENT, n=n, words=w, choices=c)

    k, m = run_two_party(server, client, seed=11, setup=checked_ot)
    want = (_ints(k) + np.repeat(c.astype(object), w) * _ints(corr)) % u128.MOD
    assert (_ints(m) == want).all()


def test_commit_macs_and_extra_products():
    rng = np.random.default_rng(4)
    n, bits = 50, 23
    x = rng.integers(0, 2**bits, n, dtype=U64)
    extra = (np.zeros((n, 2), U64), rng.integers(0, 2**64, (n, 2), dtype=U64))
    res = run_two_party(
        lambda p: (au.commit(p, CLIENT, n=n, bits=bits, delta=U64(0xDEADBEEF12345), extra=extra)),
        lambda p: au.commit(p, CLIENT, n=n, bits=bits, values=x, n_extra=2), seed=5, setup=checked_ot)
    keys, com = res
    xo = x.astype(object)
    assert ((_ints(com.mac) - _ints(keys.key)) % u128.MOD == (xo * 0xDEADBEEF12345) % u128.MOD).all()
    diff = (_ints(com.extra) - _ints(keys.extra)) % u128.MOD
    assert (diff == (np.repeat(xo, 2) * _ints(extra)) % u128.MOD).all()


def _relation_session(x_client, c_server, k_bits, seed, lam=au.STAT_BITS, tamper=None, mac_bits=128, ring_bits=None):
    """The client commits x (bits 64), the server expects x = c (mod 2^k); lam binary
    combinations are checked. ``tamper`` edits the client's (Y, MY) message in flight."""
    n = len(x_client)

    def server(p):
        delta = au.new_delta(p)
        keys = au.commit(p, CLIENT, n=n, bits=64, delta=delta, mac_bits=mac_bits)
        chi = p.rng.random_bits((lam, n)).astype(np.uint8)
        p.ch.send_array(chi)
        C = au.combine(chi, (np.zeros(n, U64), np.asarray(c_server, U64)))
        au.check_congruent(p, CLIENT, k_bits, delta=delta, KZ=au.combine(chi, keys.key), C=C, n=lam,
                           ring_bits=ring_bits)
        return True

    def client(p):
        com = au.commit(p, CLIENT, n=n, bits=64, values=np.asarray(x_client, U64), mac_bits=mac_bits)
        chi = p.ch.recv_array(np.uint8, (lam, n))
        Z = au.combine(chi, (np.zeros(n, U64), com.values))
        MZ = au.combine(chi, com.mac)
        if tamper is not None:  # edit the check's opened message (shape (2, lam, 16)) in flight
            orig = p.ch.send_array

            def send(a, *args, **kw):
                a = np.asarray(a)
                return orig(tamper(a.copy()) if a.shape == (2, lam, 16) else a, *args, **kw)
            p.ch.send_array = send
        au.check_congruent(p, CLIENT, k_bits, Z=Z, MZ=MZ, n=lam, ring_bits=ring_bits)
        return True

    return run_two_party(server, client, seed=seed, setup=checked_ot, timeout=20)


def test_honest_values_pass_even_with_free_high_bits():
    rng = np.random.default_rng(6)
    k = 40
    c = rng.integers(0, 2**k, 64, dtype=U64)
    # the client's values agree with c modulo 2^k only: its bits above k are its own business
    x = c + (rng.integers(0, 2**20, 64, dtype=U64) << U64(k))
    assert _relation_session(x, c, k, seed=7) == (True, True)


@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(j=st.integers(0, 31), val=st.integers(0, 39), odd=st.integers(0, 2**20), seed=st.integers(0, 1000))
def test_any_wrong_value_aborts(j, val, odd, seed):
    """An error of any 2-adic valuation below k in any one value aborts (binary coefficients:
    each repetition catches it with probability 1/2; 40 repetitions)."""
    k = 40
    rng = np.random.default_rng(seed)
    c = rng.integers(0, 2**k, 32, dtype=U64)
    x = c.copy()
    x[j] = x[j] + (U64(2 * odd + 1) << U64(val))
    with pytest.raises(au.MacCheckError):
        _relation_session(x, c, k, seed=seed)


def test_top_bit_error_aborts_with_40_repetitions_but_can_pass_one():
    """The error that zeroes a kernel term (top bit of the ring) survives one binary repetition
    half the time: why the check repeats lambda = 40 times."""
    k = 40
    c = np.arange(16, dtype=U64)
    x = c.copy()
    x[3] += U64(1) << U64(k - 1)
    with pytest.raises(au.MacCheckError):
        _relation_session(x, c, k, seed=1)
    passed = 0
    for seed in range(12):
        try:
            _relation_session(x, c, k, seed=seed, lam=1)
            passed += 1
        except au.MacCheckError:
            pass
    assert 0 < passed < 12  # one repetition alone is a coin flip (seeded: deterministic)


@pytest.mark.parametrize("what", ["value-low", "value-high", "mac"])
def test_forged_check_message_aborts(what):
    """The client edits its opened (Y, MY) in flight: without Delta no edit passes."""
    k = 40
    c = np.arange(8, dtype=U64)

    def tamper(msg):
        words = msg.view(U64).reshape(2, -1, 2).copy()  # [Y|MY, l, (lo, hi)]
        if what == "value-low":
            words[0, 0, 0] ^= U64(1 << 5)
        elif what == "value-high":
            words[0, 0, 0] ^= U64(1 << 45)  # above k: Y still = C mod 2^k, the MAC no longer fits
        else:
            words[1, 0, 0] ^= U64(1)
        return words.view(np.uint8).reshape(msg.shape)

    with pytest.raises(au.MacCheckError):
        _relation_session(c, c, k, seed=2, tamper=tamper)


def test_bound_table_ot_opens_exactly_the_committed_digit():
    """The table OT's index bits are the committed bits: the client opens the entry at its
    committed digit; any other entry, opened with the keys it holds, is pseudorandom."""
    rng = np.random.default_rng(8)
    n, bits, digit = 40, 12, (4, 8)
    x = rng.integers(0, 2**bits, n, dtype=U64)
    tables = rng.integers(0, 2**64, (n, 16, 3), dtype=U64)
    seen = {}

    def server(p):
        keys = au.commit(p, CLIENT, n=n, bits=bits, delta=U64(77), keep_pads=True)
        au.bound_lut(p, CLIENT, digit, pads=keys.pads, tables=tables)
        return keys

    def client(p):
        com = au.commit(p, CLIENT, n=n, bits=bits, values=x, keep_pads=True)
        orig = p.ch.recv_array

        def recv(*a, **kw):
            out = orig(*a, **kw)
            seen["ct"] = out.copy()
            return out
        p.ch.recv_array = recv
        got = au.bound_lut(p, CLIENT, digit, pads=com.pads, values=x, w=3)
        return com, got

    keys, (com, got) = run_two_party(server, client, seed=9, setup=checked_ot)
    d = (x >> U64(4)) & U64(15)
    assert np.array_equal(got, tables[np.arange(n), d.astype(np.intp)])
    # the MACs of the committed value are still MACs (the pads were reused, not the MAC words)
    assert ((_ints(com.mac) - _ints(keys.key)) % u128.MOD == (x.astype(object) * 77) % u128.MOD).all()
    # a deviating client that asks for digit d ^ 1 with its keys gets garbage, not the entry
    other = d ^ U64(1)
    aes = au._lut_aes()
    pk = aes.permute(np.ascontiguousarray(com.pads[:, 4:8]).view(U64).reshape(n, 4, 2))
    pad = aes.lut_pads(pk, None, 0, 4, 2, entries=other)[:, 0, :3]
    wrong = seen["ct"][np.arange(n), other.astype(np.intp)] ^ pad
    assert not (wrong == tables[np.arange(n), other.astype(np.intp)]).any()


@pytest.mark.parametrize("first_free", [False, True])
def test_bound_table_ot_narrow_parts_and_free_first_entry(first_free):
    """Protocol 29: parts of an entry travel as their low bytes (the client gets each part mod
    2^(8 width)), and with ``first_free`` entry 0 is not sent: the sender builds its table from the
    client's entry-0 pad, and a client at digit 0 gets that pad -- the bytes shrink accordingly."""
    rng = np.random.default_rng(11)
    n, bits, digit, widths = 64, 10, (3, 5), (5, 13)
    x = rng.integers(0, 2**bits, n, dtype=U64)
    x[:8] &= ~U64(3 << 3)  # some clients at digit 0
    tables = rng.integers(0, 2**64, (n, 4, 4), dtype=U64)
    seen = {}

    def server(p):
        keys = au.commit(p, CLIENT, n=n, bits=bits, delta=U64(5), keep_pads=True)
        start = p.ch.bytes_sent

        def build(pad0):
            seen["pad0"] = pad0.copy()
            t = tables.copy()
            t[:, 0] = pad0  # entry 0 is the pad itself (in the bytes that travel)
            return t
        au.bound_lut(p, CLIENT, digit, pads=keys.pads, tables=build if first_free else tables, w=4,
                     widths=widths, first_free=first_free)
        seen["bytes"] = p.ch.bytes_sent - start

    def client(p):
        com = au.commit(p, CLIENT, n=n, bits=bits, values=x, keep_pads=True)
        seen["keys"] = com.pads
        return au.bound_lut(p, CLIENT, digit, pads=com.pads, values=x, w=4, widths=widths, first_free=first_free)

    _, got = run_two_party(server, client, seed=12, setup=checked_ot)
    if first_free:
        # the free entry is no back door: a client whose committed digit is not 0 that hashes its own
        # keys at entry 0 gets a pseudorandom string, not the pad that fixed the server's mask
        aes = au._lut_aes()
        pk = aes.permute(np.ascontiguousarray(seen["keys"][:, 3:5]).view(U64).reshape(n, 2, 2))
        raw = aes.tree_pads(pk, None, au._lut_lows(n, 3), 2, 2, entries=np.zeros(n, dtype=U64))  # 2 blocks >= 18 bytes
        try0 = au._unpack_parts(au._pad_bytes(raw, widths)[:, 0], widths, 4)
        dd = ((x >> U64(3)) & U64(3)) != 0
        assert np.array_equal(try0[~dd], seen["pad0"][~dd])  # at digit 0 its keys give exactly the pad
        assert not (try0[dd][:, 0] == seen["pad0"][dd][:, 0]).any()
    d = ((x >> U64(3)) & U64(3)).astype(np.intp)
    want = tables[np.arange(n), d].copy()
    if first_free:
        want[d == 0] = seen["pad0"][d == 0]
    mask = [_low_bytes_mask(widths[0]), _low_bytes_mask(widths[1])]
    for j in range(2):
        for k in range(2):
            assert np.array_equal(got[:, 2 * j + k], want[:, 2 * j + k] & mask[j][k])
    if first_free:  # the pad is already reduced to the widths: its high bytes are zero
        assert not (seen["pad0"][:, 0:2] & ~np.array(mask[0], dtype=U64)).any()
        assert (d == 0).any() and (d != 0).any()
    entries = 4 - int(first_free)
    assert seen["bytes"] - n * entries * sum(widths) in range(0, 64)  # entries x widths, plus a frame header


def _low_bytes_mask(nbytes):
    """The two 64-bit words of a part whose low ``nbytes`` bytes travel."""
    full = (1 << (8 * nbytes)) - 1
    return [U64(full & (2**64 - 1)), U64(full >> 64)]


@pytest.mark.parametrize("what", ["honest", "value-low", "value-high", "mac"])
def test_commit_with_trimmed_corrections_still_binds(what):
    """Protocol 29: a commitment whose bit-b corrections travel in k + 64 - b bits (mac_bits = the
    check ring) checks honest values and catches a wrong value or MAC as before: the check only
    ever uses the MACs mod 2^(k + 64)."""
    rng = np.random.default_rng(21)
    k = 40
    c = rng.integers(0, 2**k, 48, dtype=U64)
    if what == "honest":
        assert _relation_session(c, c, k, seed=5, mac_bits=k + 64) == (True, True)
        return

    def tamper(msg):
        words = msg.view(U64).reshape(2, -1, 2).copy()
        if what == "value-low":
            words[0, 0, 0] ^= U64(1 << 5)
        elif what == "value-high":
            words[0, 0, 0] ^= U64(1 << 45)
        else:
            words[1, 0, 1] ^= U64(1 << 30)  # the MAC's bit 94, below the check ring's 2^104
        return words.view(np.uint8).reshape(msg.shape)

    with pytest.raises(au.MacCheckError):
        _relation_session(c, c, k, seed=5, tamper=tamper, mac_bits=k + 64)


def test_commit_trimmed_corrections_bytes():
    """The bytes of a trimmed commitment: sum over the bits of ceil((mac_bits - b) / 8) per value,
    against 16 per bit (plus the OT extension's own, the same in both)."""
    n, bits = 32, 56

    def run(mac_bits):
        def server(p):
            start = p.ch.bytes_sent
            au.commit(p, CLIENT, n=n, bits=bits, delta=U64(3), mac_bits=mac_bits)
            return p.ch.bytes_sent - start

        def client(p):
            au.commit(p, CLIENT, n=n, bits=bits, values=np.arange(n, dtype=U64), mac_bits=mac_bits)
        return run_two_party(server, client, seed=4, setup=checked_ot)[0]

    full, trimmed = run(128), run(120)
    saved = n * sum(16 - -(-(120 - b) // 8) for b in range(bits))
    assert saved <= full - trimmed <= saved + 32  # the array header's shape words differ (3 dims vs 1)


@pytest.mark.parametrize("bad", [False, True])
def test_check_ring_of_k_plus_40_bits_with_trimmed_macs(bad):
    """Protocol 35 (binding's step 9): MACs right mod 2^(k + 40) only (trimmed corrections) and the
    check ring 2^(k + 40): honest values pass, a top-bit error still aborts."""
    k = 40
    c = np.arange(16, dtype=U64)
    x = c.copy()
    if bad:
        x[5] += U64(1) << U64(k - 1)
        with pytest.raises(au.MacCheckError):
            _relation_session(x, c, k, seed=3, mac_bits=k + 40, ring_bits=k + 40)
    else:
        assert _relation_session(x, c, k, seed=3, mac_bits=k + 40, ring_bits=k + 40) == (True, True)


def test_check_ring_outside_its_range_is_refused():
    with pytest.raises(ValueError):
        au.check_congruent(None, CLIENT, 40, n=1, ring_bits=40)
    with pytest.raises(ValueError):
        au.check_congruent(None, CLIENT, 40, n=1, ring_bits=105)


@pytest.mark.parametrize("case", ["commit", "constant", "words", "aperiodic", "short"])
def test_kept_bytes_packed_by_period_are_the_masked_bytes(case):
    """_pack_kept / _recv_kept (a gather per period of keep) = the (n, words, 16) boolean mask's
    bytes and their zero-filled inverse: the wire is unchanged, for commit's per-bit pattern, a
    constant, several words, a keep with no period (the mask path) and one COT."""
    rng = np.random.default_rng(len(case))
    keep, words = {
        "commit": (np.tile(np.minimum(-(-(120 - np.arange(56)) // 8), 16), 300), 1),
        "constant": (np.full(4096, 14), 1),
        "words": (np.tile(rng.integers(1, 17, 7), 40), 3),
        "aperiodic": (rng.integers(1, 17, 997), 2),
        "short": (np.array([16]), 1),
    }[case]
    n = keep.shape[0]
    raw = rng.integers(0, 256, (n, words, 16), dtype=np.uint8)
    sel = au._kept_bytes(keep, n, words)
    want = raw[sel]
    got = au._pack_kept(raw, keep)
    assert got.dtype == np.uint8 and np.array_equal(got, want)

    class _Ch:
        def recv_array(self, dtype, shape):
            assert int(np.prod(shape)) == want.size
            return want.reshape(shape)

    class _Party:
        ch = _Ch()

    back = au._recv_kept(_Party(), keep, n, words)
    ref = np.zeros_like(raw)
    ref[sel] = want
    assert np.array_equal(back, ref)


@pytest.mark.parametrize("width", [6, 8, 3])
def test_bound_lut_one_word_tables_send_the_general_paths_bytes(width):
    """A sender table of one word per entry sent in ``width`` bytes (the client-malicious Laplacian's
    step 5) is XORed as words and cut once: the bytes on the wire equal the general path's (the pads
    and the table packed to bytes first, taken when ``sender_pads`` is given)."""
    from protocols.mpc.party import Party
    from protocols.net.transport import local_channel_pair

    c0, c1 = local_channel_pair(timeout=10)
    sender = Party(c0, SERVER)
    rng = np.random.default_rng(width)
    n, digit = 5, (2, 6)
    pads = (rng.integers(0, 256, (n, 8, 16), dtype=np.uint8), rng.integers(0, 256, (n, 8, 16), dtype=np.uint8))
    tables = rng.integers(0, 1 << 63, (n, 16, 1), dtype=np.uint64)
    au.bound_lut(sender, CLIENT, digit, pads=pads, tables=tables, widths=(width,))
    au.bound_lut(sender, CLIENT, digit, pads=pads, tables=tables, widths=(width,),
                 sender_pads=au.lut_sender_pads(pads, digit, w=1, widths=(width,)))
    fast = c1.recv_array(np.uint8, (n, 16, width))
    general = c1.recv_array(np.uint8, (n, 16, width))
    assert np.array_equal(fast, general)
    assert not np.array_equal(fast.reshape(n, -1)[:, :width], np.ascontiguousarray(tables[:, 0, 0]).view(np.uint8).reshape(n, 8)[:, :width])


def test_vole_on_pads_in_pieces_with_mixed_widths():
    """Rows of two byte widths, more rows than one piece (_VOLE_ROWS): the chooser gets
    P_c + c corr mod 2^bits[r] with P hashed per width group at the row's position in its group
    (what one message per width carries); the sender keeps P_0; bytes are ceil(bits / 8) per word."""
    rng = np.random.default_rng(21)
    n, W = 2 * au._VOLE_ROWS + 1234, 3
    bits = np.where(rng.random(n) < 0.5, 24, 61)
    choices = rng.integers(0, 2, n, dtype=np.uint8)
    corr = rng.integers(0, 2**63, (n, W), dtype=np.uint64)

    def server(p):
        m0, m1 = au.random_choices(p, 1, n=n)
        b0 = p.ch.bytes_sent
        T = au.vole_on_pads(p, 1, (m0, m1), 5, bits=bits, ring_bits=64, corr=corr)
        return T, m0, m1, p.ch.bytes_sent - b0

    def client(p):
        mc = au.random_choices(p, 1, n=n, choices=choices)
        return au.vole_on_pads(p, 1, mc, 5, bits=bits, ring_bits=64, choices=choices, n_words=W)

    (T, m0, m1, sent), Y = run_two_party(server, client, seed=4, setup=checked_ot, timeout=60)
    mask = ((np.uint64(1) << bits.astype(np.uint64)) - np.uint64(1))[:, None]
    assert np.array_equal(Y, (T + choices.astype(np.uint64)[:, None] * corr) & mask)
    framing = sent - W * int(((bits + 7) // 8).sum())  # two messages (one per width): their headers
    assert framing % 2 == 0 and 0 < framing // 2 <= 64
    for nb in (3, 8):  # the sender's P_0 of the i-th row of a width group: tweak i of that group
        sel = np.nonzero((bits + 7) // 8 == nb)[0]
        P0 = au._stream(m0[sel], W, 5)
        assert np.array_equal(T[sel], P0 & mask[sel])
