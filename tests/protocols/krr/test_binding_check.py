"""Step 9 of protocols.krr.binding (protocol 35): lam relations opened one by one, their MACs
checked through ONE gamma-combined word (``binding._check_combined``). Real deviating clients:
a wrong committed value (any bit, the top one included), an edited opened value, an edited MAC."""
from __future__ import annotations

import numpy as np
import pytest

from protocols.krr import binding
from protocols.mpc import authenticated as au, u128
from protocols.testing import checked_ot, run_two_party

U64 = np.uint64
CLIENT = 1
K, LAM = 40, au.STAT_BITS
R = K + binding.CHECK_RING_MARGIN


def _session(x_client, c_server, seed, tamper=None, opened=None):
    """The client commits x (64-bit values, MACs mod 2^R); the server expects chi_l . x = chi_l . c
    (mod 2^K) for LAM binary chi_l. ``tamper(kind, array)`` edits the client's Y ("Y") or MY ("MY")
    message in flight; ``opened``: values whose combinations the client opens instead of its
    committed ones (a client that claims the relations hold)."""
    n = len(x_client)

    def server(p):
        delta = au.new_delta(p)
        keys = au.commit(p, CLIENT, n=n, bits=64, delta=delta, mac_bits=R)
        chi = p.rng.random_bits((LAM, n)).astype(np.uint8)
        gamma = p.rng.random_u64(LAM)
        p.ch.send_array(chi)
        KZ = au.combine(chi, keys.key)
        C = au.combine(chi, (np.zeros(n, U64), np.asarray(c_server, U64)))
        binding._check_combined(p, K, R, delta=delta, C=C, gamma=gamma,
                                key_of=lambda g: binding._vec(u128.total(u128.mul_small(KZ, g), axis=0)))
        return True

    def client(p):
        com = au.commit(p, CLIENT, n=n, bits=64, values=np.asarray(x_client, U64), mac_bits=R)
        chi = p.ch.recv_array(np.uint8, (LAM, n))
        Z = au.combine(chi, (np.zeros(n, U64), com.values if opened is None else np.asarray(opened, U64)))
        MZ = au.combine(chi, com.mac)
        if tamper is not None:
            orig = p.ch.send_array

            def send(a, *args, **kw):
                a = np.asarray(a)
                kind = "Y" if a.shape == (LAM, 16) else "MY" if a.shape == (1, 16) else None
                return orig(tamper(kind, a.copy()) if kind else a, *args, **kw)
            p.ch.send_array = send
        binding._check_combined(p, K, R, Z=Z,
                                mac_of=lambda g: binding._vec(u128.total(u128.mul_small(MZ, g), axis=0)))
        return True

    return run_two_party(server, client, seed=seed, setup=checked_ot, timeout=20)


def test_honest_values_pass():
    rng = np.random.default_rng(1)
    c = rng.integers(0, 2 ** K, 24, dtype=U64)
    x = c + (rng.integers(0, 2 ** 20, 24, dtype=U64) << U64(K))  # bits above K are the client's own
    assert _session(x, c, seed=2) == (True, True)


@pytest.mark.parametrize("bit", [0, 17, K - 1])
def test_a_wrong_committed_value_aborts(bit):
    c = np.arange(24, dtype=U64)
    x = c.copy()
    x[7] += U64(1) << U64(bit)  # the top bit (K - 1) survives one binary repetition half the time
    with pytest.raises(au.MacCheckError):
        _session(x, c, seed=3)


@pytest.mark.parametrize("what", ["Y-low", "Y-top", "Y-high", "MY"])
def test_edited_openings_abort(what):
    """The client is honest in its values but edits what it opens: a value whose low K bits now
    match another relation, a top-bit flip, a change above K only (its MAC no longer matches),
    or the MAC word: none passes without Delta."""
    c = np.arange(24, dtype=U64)

    def tamper(kind, a):
        words = a.view(U64).reshape(-1, 2)  # (lo, hi) per word
        if what == "MY" and kind == "MY":
            words[0, 0] ^= U64(1)
        elif kind == "Y" and what != "MY":
            words[5, 0] ^= {"Y-low": U64(1), "Y-top": U64(1) << U64(K - 1), "Y-high": U64(1) << U64(K + 3)}[what]
        return a
    with pytest.raises(au.MacCheckError):
        _session(c.copy(), c, seed=4, tamper=tamper)


def test_soundness_bound_of_the_combined_check():
    # 2^-(R - v0) (1 + (R - v0) / 2) at the worst valuation v0 = K - 1 stays below 2^-40
    m = binding.CHECK_RING_MARGIN + 1
    assert (1 + m / 2) * 2.0 ** -m < 2.0 ** -40


@pytest.mark.parametrize("bit", [0, K - 1])
def test_opening_the_expected_values_over_wrong_commitments_aborts(bit):
    """The client committed a wrong value but opens the combinations the server expects (they pass
    the mod 2^K comparison): the gamma-combined MAC catches it."""
    c = np.arange(24, dtype=U64)
    x = c.copy()
    x[11] += U64(1) << U64(bit)
    with pytest.raises(au.MacCheckError):
        _session(x, c, seed=5, opened=c)
