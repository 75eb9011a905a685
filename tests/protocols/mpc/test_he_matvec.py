"""Lattice (BFV) matrix-vector product: shares of X q within the public error bound, plan, privacy checks."""
from __future__ import annotations

import numpy as np
import pytest

from protocols.mpc import bfv, he_matvec
from protocols.testing import run_two_party
from secureml.errors import ProtocolError

U64 = np.uint64


def _run(X: np.ndarray, q: np.ndarray, x_bits: int, M: int, record: bool = False):
    prepared = he_matvec.prepare(X, x_bits, M)
    res = run_two_party(lambda p: he_matvec.matvec_sender(p, prepared),
                        lambda p: he_matvec.matvec_receiver(p, q, x_bits, X.shape[0], M),
                        timeout=120, record=record)
    return prepared.plan, res


@pytest.mark.parametrize("n_rows,d,x_bits", [(300, 351, 23), (1000, 40, 12), (5, 3, 4)])
def test_shares_are_xq_minus_a_small_bounded_delta(n_rows: int, d: int, x_bits: int) -> None:
    rng = np.random.default_rng(n_rows)
    M = int(np.ceil(np.log2(d))) + 2 * x_bits + 1
    X = rng.integers(0, 1 << x_bits, (n_rows, d), dtype=U64)
    q = rng.integers(0, 1 << x_bits, d, dtype=U64)
    X[0] = 0  # an exact zero product: the shares must not wrap below it
    plan, (s_srv, s_cli) = _run(X, q, x_bits, M)
    mask = U64((1 << M) - 1)
    got = (s_srv + s_cli) & mask
    want = (X @ q) & mask  # uint64 arithmetic wraps mod 2^64, fine mod 2^M
    delta = (want - got) & mask  # X q - (share sum), must be in [0, 2E]
    assert int(delta.max()) <= 2 * plan.error_bound
    assert plan.error_bound < 1024
    # the server's share alone is uniform-looking (masked): no relation to X q
    if n_rows >= 100:
        assert abs(np.corrcoef(s_srv.astype(float), want.astype(float))[0, 1]) < 0.2


@pytest.mark.parametrize("zero_cols", ["tail", "all"])
def test_all_zero_blocks_of_x_are_served(zero_cols: str) -> None:
    """Columns no training point fills (a size-29 Coulomb matrix on molecules of at most 23 atoms)
    make whole plaintext blocks zero, which SEAL refuses to multiply ("result ciphertext is
    transparent"): `secureml serve` crashed on every query to the README's first model."""
    rng = np.random.default_rng(7)
    n_rows, d, x_bits = 300, 435, 20  # 4 blocks of 109 columns: the last one all zero
    M = int(np.ceil(np.log2(d))) + 2 * x_bits + 1
    X = rng.integers(0, 1 << x_bits, (n_rows, d), dtype=U64)
    X[:, 276:] = 0
    if zero_cols == "all":
        X[:] = 0
    q = rng.integers(0, 1 << x_bits, d, dtype=U64)
    plan, (s_srv, s_cli) = _run(X, q, x_bits, M)
    mask = U64((1 << M) - 1)
    delta = ((X @ q) - (s_srv + s_cli)) & mask
    assert int(delta.max()) <= 2 * plan.error_bound


def test_plan_is_compact_for_the_benchmark_size() -> None:
    plan = he_matvec.make_plan(16384, 351, 23, 56)
    assert plan.blocks * plan.n_i >= 351 and plan.outputs * plan.n_o >= 16384
    assert plan.n_o * plan.n_i <= bfv.POLY_DEGREE
    assert plan.blocks + plan.outputs < 80  # ~60 ciphertexts of ~0.15 MB: ~9 MB, not 850
    with pytest.raises(ProtocolError):
        he_matvec.make_plan(16384, 351, 30, 64)  # ring too wide for the 60-bit final prime


def test_client_view_hides_the_training_matrix() -> None:
    """What the client decrypts at non-target coefficients, and at targets before removing its
    share, is masked: two different matrices give the same distribution (here: no correlation
    with the products, every coefficient looks uniform mod 2^M)."""
    rng = np.random.default_rng(7)
    x_bits, d, n_rows = 10, 20, 400
    M = int(np.ceil(np.log2(d))) + 2 * x_bits + 1
    X = rng.integers(0, 1 << x_bits, (n_rows, d), dtype=U64)
    q = rng.integers(0, 1 << x_bits, d, dtype=U64)
    _, (s_srv, s_cli) = _run(X, q, x_bits, M)
    top = s_cli >> U64(M - 4)  # top 4 bits of the client's share: uniform over 16 values
    counts = np.bincount(top.astype(np.int64), minlength=16)
    assert counts.min() > n_rows / 16 * 0.4


def test_malformed_ciphertext_is_refused_with_a_clear_error() -> None:
    x_bits, d, n_rows, M = 8, 10, 20, 21
    rng = np.random.default_rng(3)
    X = rng.integers(0, 1 << x_bits, (n_rows, d), dtype=U64)
    prepared = he_matvec.prepare(X, x_bits, M)

    def bad_client(p):
        he_matvec._agree(p, prepared.plan, sender=True)
        p.ch.send(b"\x5e\xa1 not a key")
        p.ch.recv()  # the server hangs up

    with pytest.raises(ProtocolError, match="malformed lattice"):
        run_two_party(lambda p: he_matvec.matvec_sender(p, prepared), bad_client, timeout=30)


def test_ciphertext_at_the_wrong_level_is_refused() -> None:
    """A deviating client that sends a well-formed ciphertext at another level (e.g. switched down
    to shrink the server's noise budget) is refused before any product is computed."""
    x_bits, d, n_rows, M = 8, 10, 20, 21
    rng = np.random.default_rng(4)
    X = rng.integers(0, 1 << x_bits, (n_rows, d), dtype=U64)
    prepared = he_matvec.prepare(X, x_bits, M)
    ctx = bfv.context(M)

    def deviating_client(p):
        s = ctx.s
        he_matvec._agree(p, prepared.plan, sender=True)
        kg = s.KeyGenerator(ctx.ctx)
        pk = s.PublicKey()
        kg.create_public_key(pk)
        p.ch.send(ctx.to_bytes(pk))
        ct = s.Ciphertext(ctx.ctx)
        s.Encryptor(ctx.ctx, kg.secret_key()).encrypt_symmetric(ctx.plaintext(np.zeros(ctx.n, dtype=U64)), ct)
        ctx.evaluator.mod_switch_to_next_inplace(ct)
        p.ch.send(ctx.to_bytes(ct))
        p.ch.recv()  # the server hangs up

    with pytest.raises(ProtocolError, match="wrong level"):
        run_two_party(lambda p: he_matvec.matvec_sender(p, prepared), deviating_client, timeout=30)
