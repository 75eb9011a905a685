"""Base OT (Chou-Orlandi over the Ed25519 prime-order subgroup): correctness, privacy, bad peers."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from nacl import bindings as nb
from scipy import stats

from protocols.ot.base_ot import base_ot_recv, base_ot_send
from protocols.net.transport import MalformedMessage, PeerDisconnected, local_channel_pair


def run2(f0, f1, timeout: float = 30.0):
    """Run f0(ch0) and f1(ch1) in two threads over a local pair; return both results."""
    c0, c1 = local_channel_pair(timeout=timeout)
    out: list = [None, None]
    err: list = [None, None]

    def body(i, f, ch):
        try:
            out[i] = f(ch)
        except BaseException as e:  # noqa: BLE001
            err[i] = e
            ch.close()

    ts = [threading.Thread(target=body, args=(i, f, c)) for i, (f, c) in enumerate(((f0, c0), (f1, c1)))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout + 5)
    for e in err:
        if e is not None and not isinstance(e, PeerDisconnected):
            raise e
    for e in err:
        if e is not None:
            raise e
    return out, (c0, c1)


def test_receiver_gets_chosen_keys_only():
    rng = np.random.default_rng(0)
    c = rng.integers(0, 2, 128)
    ((k0, k1), kc), _ = run2(lambda ch: base_ot_send(ch, 128), lambda ch: base_ot_recv(ch, c))
    assert k0.shape == k1.shape == kc.shape == (128, 16) and kc.dtype == np.uint8
    assert np.array_equal(kc, np.where(c[:, None] == 1, k1, k0))
    other = np.where(c[:, None] == 1, k0, k1)
    assert not np.any(np.all(other == kc, axis=1))
    assert len({bytes(r) for r in np.vstack([k0, k1])}) == 256  # all keys distinct


def test_seeded_runs_reproduce_and_fresh_runs_differ():
    c = np.array([0, 1, 1, 0])
    a, _ = run2(lambda ch: base_ot_send(ch, 4, np.random.default_rng(1)),
                lambda ch: base_ot_recv(ch, c, np.random.default_rng(2)))
    b, _ = run2(lambda ch: base_ot_send(ch, 4, np.random.default_rng(1)),
                lambda ch: base_ot_recv(ch, c, np.random.default_rng(2)))
    d, _ = run2(lambda ch: base_ot_send(ch, 4), lambda ch: base_ot_recv(ch, c))
    assert np.array_equal(a[0][0], b[0][0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0][0], d[0][0])


def test_sender_view_independent_of_choices():
    """The B_i the sender sees for c = 0 and c = 1 have the same byte distribution."""
    views = []
    for bit in (0, 1):
        c = np.full(256, bit)
        c0, c1 = local_channel_pair(timeout=30.0)
        tr = c0.record()
        # seeded scalars: the chi-square tests below cannot fail by chance
        t = threading.Thread(target=lambda: base_ot_recv(c1, c, np.random.default_rng(2 * bit + 1)))
        t.start()
        base_ot_send(c0, 256, np.random.default_rng(2 * bit))
        t.join()
        # the receiver's points (every frame after the sender's A), in their chunks
        pts = np.frombuffer(b"".join(f for d, f in tr[1:] if d == "recv"), dtype=np.uint8).reshape(256, 32)
        views.append(pts[:, :31].ravel())  # last byte carries the sign bit: skip it
    table = np.stack([np.bincount(v, minlength=256) for v in views])
    p = stats.chi2_contingency(table)[1]
    assert p > 1e-4
    # And each is itself close to uniform bytes.
    for v in views:
        assert stats.chisquare(np.bincount(v, minlength=256))[1] > 1e-4


def _fake_sender_point(point: bytes):
    def f(ch):
        ch.send(point)
        return ch.recv()
    return f


@pytest.mark.parametrize(
    "point",
    [
        b"\x01" + bytes(31),  # identity (small order)
        bytes(32),  # small-order point (0, ...) encoding
        b"\xff" * 32,  # non-canonical / not on curve
        b"\x05" * 31,  # wrong length
    ],
)
def test_receiver_rejects_bad_sender_point(point):
    with pytest.raises(MalformedMessage):
        run2(_fake_sender_point(point), lambda ch: base_ot_recv(ch, np.zeros(8, dtype=np.uint8)))


def test_sender_rejects_bad_receiver_points():
    def bad_receiver(ch):
        a = ch.recv()
        good = nb.crypto_scalarmult_ed25519_base_noclamp(nb.crypto_core_ed25519_scalar_reduce(bytes(range(64))))
        ch.send(good + b"\x01" + bytes(31))  # second point is the identity
        return a

    with pytest.raises(MalformedMessage, match="point 1"):
        run2(lambda ch: base_ot_send(ch, 2), bad_receiver)

    def short_receiver(ch):
        ch.recv()
        ch.send(bytes(40))

    with pytest.raises(MalformedMessage):
        run2(lambda ch: base_ot_send(ch, 2), short_receiver)


def test_peer_disconnects():
    def quitter(ch):
        ch.recv()
        ch.close()

    with pytest.raises(PeerDisconnected):
        run2(lambda ch: base_ot_send(ch, 4), quitter)


def test_argument_checks():
    c0, _ = local_channel_pair()
    with pytest.raises(ValueError):
        base_ot_send(c0, 0)
    with pytest.raises(ValueError):
        base_ot_recv(c0, np.array([0, 2]))
