"""Double-blind exact Laplacian-kernel KRR over OT: correctness, shares, privacy, bad input."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from protocols.common import KernelModelParams
from protocols.krr.laplacian import client_l1_shares, digit_levels, server_l1_shares
from protocols.krr.params import PublicParams
from protocols.krr import ServedModel
from protocols.testing import run_krr_session, run_two_party, secrets_in_transcript, view_independence_pvalue
from secureml.errors import ModelError, ProtocolError

GRID = 8


def _grid(a):
    return np.round(np.asarray(a) * (1 << GRID)) / (1 << GRID)


def _model(N=40, d=12, sigma=60.0, seed=0, offset=-321.0):
    rng = np.random.default_rng(seed)
    X = _grid(rng.uniform(0, 50, (N, d)) * (rng.random((N, d)) < 0.6))
    alpha = rng.normal(0, 500, N)
    return KernelModelParams(X, alpha, offset, "laplacian", sigma)


def _session(served: ServedModel, Q, record: bool = False, seed: int | None = None):
    return run_krr_session(served, Q, record=record, seed=seed)


def _pair(fn0, fn1):
    """fn0(server party), fn1(client party) over an in-process channel pair, OT set up."""
    return run_two_party(fn0, fn1, setup=lambda p: p.setup_ot())


def test_digit_levels_cover_the_bits_and_stay_small():
    for b in range(1, 21):
        lv = digit_levels(b)
        assert lv[0][0] == 0 and lv[-1][1] == b
        assert all(x[1] == y[0] for x, y in zip(lv, lv[1:]))
        assert all(1 <= hi - lo <= 10 for lo, hi in lv)
    # CM entries on the 2^-8 grid: silent OT's cheap random OTs buy narrower digits (fewer table bits)
    assert digit_levels(15) == ((0, 3), (3, 6), (6, 9), (9, 12), (12, 15))
    assert digit_levels(15, "softspoken") == ((0, 5), (5, 10), (10, 15))


@pytest.mark.parametrize("N,d,frac", [(70, 9, 8), (64, 5, 3), (33, 4, 12)])
def test_l1_shares_sum_to_the_l1_distance_and_look_uniform(N, d, frac):
    rng = np.random.default_rng(N)
    X = rng.uniform(0, 60, (N, d)) * (rng.random((N, d)) < 0.7)
    q = rng.uniform(0, 60, d)
    X[0] = q  # equal entries: the comparison's tie
    pp = PublicParams(kind="krr-laplacian", n_train=N, n_features=d, frac_bits=frac,
                      feature_lo=0.0, feature_hi=64.0, sigma=100.0, weight_bits=20)
    Xe, qe = pp.encode_features(X), pp.encode_features(q[None])[0]
    L_S, L_C = _pair(lambda p: server_l1_shares(p, np.ascontiguousarray(Xe.T), pp),
                     lambda p: client_l1_shares(p, qe, N, pp))
    M = pp.ring_bits
    exact = np.abs(Xe.astype(np.int64) - qe.astype(np.int64)).sum(axis=1)
    np.testing.assert_array_equal((L_S + L_C) & np.uint64((1 << M) - 1), exact.astype(np.uint64))
    assert exact[0] == 0
    # each share alone is uniform mod 2^M: its top bit is a fair coin whatever L is
    top = (L_C >> np.uint64(M - 1)) & np.uint64(1)
    assert 0.2 < top.mean() < 0.8


def test_predictions_match_plaintext():
    model = _model()
    rng = np.random.default_rng(5)
    Q = np.vstack([
        model.X_train[3],  # distance exactly 0: kernel 1
        _grid(np.clip(model.X_train[7] + rng.normal(0, 2, 12), 0, None)),  # near a training point
        np.full(12, 49.0),  # far from everything
    ])
    preds, cost, pp, _, box = _session(ServedModel(model, security="semi-honest"), Q)
    assert "error" not in box and pp.kind == "krr-laplacian" and pp.x_bits == 20  # finest grid that fits
    np.testing.assert_allclose(preds, model.predict(Q), atol=1e-3)
    assert cost.rounds > 0 and box["cost"].bytes_sent > 0


@pytest.mark.parametrize("sigma", [2.0, 5000.0])
def test_kernel_width_extremes(sigma):
    """Tiny sigma: most kernels vanish; huge sigma: all near 1."""
    model = _model(N=24, d=6, sigma=sigma, seed=2)
    Q = _grid(np.clip(model.X_train[:2] + 0.5, 0, 49.9))
    preds, *_ = _session(ServedModel(model, frac_bits=GRID, security="semi-honest"), Q)
    np.testing.assert_allclose(preds, model.predict(Q), atol=1e-3)


def test_off_grid_model_stays_within_the_rounding_budget():
    """Entries finer than the protocol's grid are rounded: |dL| <= d 2^-(F+1) per kernel."""
    rng = np.random.default_rng(9)
    N, d, sigma = 30, 10, 200.0
    X = rng.uniform(0, 50, (N, d))
    model = KernelModelParams(X, rng.normal(0, 50, N), 0.0, "laplacian", sigma)
    served = ServedModel(model, frac_bits=GRID, security="semi-honest")
    Q = rng.uniform(0, 50, (2, d))
    preds, *_ = _session(served, Q)
    K = np.exp(-np.abs(Q[:, None] - X[None]).sum(-1) / sigma)
    budget = (np.abs(model.dual_coef) * K).sum(axis=1) * (np.exp(d * 2.0 ** -GRID / sigma) - 1) + 1e-3
    assert np.all(np.abs(preds - model.predict(Q)) <= budget)


def test_no_comparison_bit_or_distance_in_transcript():
    model = _model(N=64, d=8, seed=3)
    served = ServedModel(model, security="semi-honest")
    Q = _grid(model.X_train[:1] + np.random.default_rng(0).uniform(0.1, 0.4, (1, 8)))
    preds, cost, pp, client_ch, box = _session(served, Q, record=True)
    X = pp.encode_features(model.X_train)
    q = pp.encode_features(Q)[0]
    L = np.abs(X.astype(np.int64) - q.astype(np.int64)).sum(axis=1)
    K = np.exp(-np.abs(model.X_train - Q).sum(1) / model.sigma)
    secrets = {int(v) for v in L} | {int(round(k * (1 << pp.g_frac_bits))) for k in K}
    secrets = {s for s in secrets if s >= 1 << 24}
    # the column of comparison bits [x_ij < q_j] as the packed words a leak would carry
    B = np.ascontiguousarray((X < q[None, :]).T.astype(np.uint8))  # (d, N), N = 64: one word
    words = np.ascontiguousarray(np.packbits(B, axis=1, bitorder="little")).view(np.uint64)
    secrets |= {int(w) for w in words.ravel() if 8 < bin(int(w)).count("1") < 56}
    assert len(secrets) > 32
    assert secrets_in_transcript(client_ch.transcript, secrets) == []


def test_client_view_independent_of_query():
    model = _model(N=64, d=8, seed=4)
    served = ServedModel(model, security="semi-honest")
    # seeded (other masks per session) so the chi-square test cannot fail by chance
    transcripts = [_session(served, Q, record=True, seed=seed)[3].transcript
                   for seed, Q in ((101, model.X_train[:1]), (202, np.full((1, 8), 49.0)))]
    assert view_independence_pvalue(transcripts) > 1e-4


def test_bad_queries_and_plans_are_refused():
    served = ServedModel(_model(N=16, d=5, seed=6), security="semi-honest")
    for Q, msg in ((np.full((1, 5), np.nan), "NaN"), (np.full((1, 5), 1e6), "outside")):
        with pytest.raises(ModelError, match=msg):
            _session(served, Q)
    wide = {**served.public.to_dict(), "frac_bits": 20}
    with pytest.raises(ProtocolError, match="Laplacian"):
        PublicParams.from_dict(wide)


def test_molecular_model_served_exactly():
    """A CM + Laplacian model trained on the 2^-8 grid: double-blind equals plaintext."""
    from secureml.data import embedded_split, load_embedded
    from secureml.models.krr import KernelRidge
    from secureml.models.pipeline import MolecularModel
    from secureml.representations import CoulombMatrix

    data = load_embedded()
    tr, te = embedded_split(0)
    mm = MolecularModel(CoulombMatrix(size=23, grid_bits=GRID),
                        KernelRidge("laplacian", sigma=1000.0, lam=1e-10), "U0_atomization").fit(data.subset(tr[:300]))
    test = data.subset(te[:2])
    served = ServedModel.from_molecular_model(mm, security="semi-honest")
    assert served.public.frac_bits == GRID and served.public.kind == "krr-laplacian"
    preds, *_ = _session(served, mm.features(test))
    np.testing.assert_allclose(preds, mm.predict(test), atol=1e-3)


def test_concurrent_sessions_on_one_server():
    """Sessions run in server threads at the same time (shared AES contexts would collide)."""
    from protocols.krr import predict, serve

    model = _model(N=96, d=10, seed=8)
    served = ServedModel(model, frac_bits=GRID, security="semi-honest")
    ready, stop, port = threading.Event(), threading.Event(), []
    th = threading.Thread(target=serve, args=(served, "127.0.0.1", 0),
                          kwargs=dict(on_ready=lambda p: (port.append(p), ready.set()), stop=stop, concurrency=3))
    th.start()
    assert ready.wait(30)
    Qs = [_grid(np.clip(model.X_train[i:i + 2] + 0.3, 0, 49.9)) for i in range(3)]
    out: dict = {}

    def client(i):
        try:
            out[i] = predict(f"127.0.0.1:{port[0]}", Qs[i])[0]
        except Exception as exc:  # surfaced below
            out[i] = exc

    clients = [threading.Thread(target=client, args=(i,)) for i in range(3)]
    for c in clients:
        c.start()
    for c in clients:
        c.join(120)
    stop.set()
    th.join(30)
    for i in range(3):
        assert not isinstance(out[i], Exception), out[i]
        np.testing.assert_allclose(out[i], model.predict(Qs[i]), atol=1e-3)


def test_server_survives_a_client_leaving_mid_protocol(caplog):
    """A client that vanishes after the OT set-up, in the middle of the column OTs: the server logs
    the failed session and the next client is served normally."""
    from protocols.krr import predict, serve
    from protocols.krr.params import PROTOCOL_NAME, PROTOCOL_VERSION
    from protocols.common import send_hello
    from protocols.mpc.party import Party
    from protocols.net.transport import connect

    model = _model(N=200, d=10, seed=11)  # 2,000 entries: SoftSpoken (below SILENT_OT_MIN_ELEMENTS)
    served = ServedModel(model, frac_bits=GRID, security="semi-honest")
    ready, stop, port = threading.Event(), threading.Event(), []
    th = threading.Thread(target=serve, args=(served, "127.0.0.1", 0),
                          kwargs=dict(on_ready=lambda p: (port.append(p), ready.set()), stop=stop,
                                      session_timeout=10))
    th.start()
    assert ready.wait(30)
    try:
        ch = connect("127.0.0.1", port[0], channel_timeout=10)
        send_hello(ch, PROTOCOL_NAME, PROTOCOL_VERSION, 1)
        ch.send_json({"ready": True, "need_public_model": False})
        Party(ch, role=1).setup_ot(softspoken_k=4)  # base OTs done; the server starts its column OTs
        ch.close()  # ... and the client is gone
        Q = _grid(np.clip(model.X_train[:1] + 0.3, 0, 49.9))
        preds, _ = predict(f"127.0.0.1:{port[0]}", Q)
        np.testing.assert_allclose(preds, model.predict(Q), atol=1e-3)
    finally:
        stop.set()
        th.join(30)
    failed = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert len(failed) == 1, failed  # the abandoned session, logged; the other one served


def test_digit_step_tables_stay_masked_when_every_digit_ties(monkeypatch):
    """A curious client records its (A', B') strings of every digit above the first. With every
    training row equal to the query, [x^(k) = v] is 1 everywhere, so A ^ B would spell it out if
    the random-OT correlation delta did not mask B: both A' and A' ^ B' must look like coin flips."""
    from protocols.krr import laplacian

    N, d = 256, 8
    pp = PublicParams(kind="krr-laplacian", n_train=N, n_features=d, frac_bits=8, feature_lo=0.0,
                      feature_hi=128.0, sigma=100.0, weight_bits=20)
    q = _grid(np.random.default_rng(3).uniform(0, 120, d))
    Xe, qe = pp.encode_features(np.tile(q, (N, 1))), pp.encode_features(q[None])[0]
    seen: list[np.ndarray] = []
    real = laplacian.column_ot

    def spy(party, chooser, **kw):
        out = real(party, chooser, **kw)
        if party.role == 1 and kw.get("w", 0) == 2 * ((N + 63) // 64):  # a higher digit's (A', B')
            seen.append(out)
        return out

    monkeypatch.setattr(laplacian, "column_ot", spy)
    L_S, L_C = run_two_party(lambda p: server_l1_shares(p, np.ascontiguousarray(Xe.T), pp),
                             lambda p: client_l1_shares(p, qe, N, pp), setup=lambda p: p.setup_ot(4), seed=7)
    assert not ((L_S + L_C) & np.uint64((1 << pp.ring_bits) - 1)).any()  # every distance is 0
    assert len(seen) == len(digit_levels(pp.x_bits)) - 1
    W = (N + 63) // 64
    for got in seen:
        A, B = got[:, :W], got[:, W:]
        for bits in (A, A ^ B):
            frac = np.unpackbits(np.ascontiguousarray(bits).view(np.uint8)).mean()
            assert 0.45 < frac < 0.55


def test_silent_ot_engine_gives_the_plaintext_predictions_and_less_traffic():
    """The same model served on silent OT (protocols.ot.ferret) and on SoftSpoken: both predict the
    plaintext value; silent OT sends fewer bytes per element once its set-up is paid."""
    model = _model(N=600, d=12, seed=3)
    served = ServedModel(model, frac_bits=GRID, security="semi-honest")
    assert served.public.ot_engine == "softspoken"  # 7,200 entries: below SILENT_OT_MIN_ELEMENTS
    Q = np.vstack([model.X_train[5], _grid(np.clip(model.X_train[9] + 0.7, 0, 49.9))])
    p_ss, cost_ss, pp_ss, _, box = _session(served, Q, seed=5)
    assert "error" not in box and pp_ss.ot_engine == "softspoken"
    served.public.ot_engine = "silent"
    p_si, cost_si, pp_si, _, box = _session(served, Q, seed=5)
    assert "error" not in box and pp_si.ot_engine == "silent"
    np.testing.assert_allclose(p_si, model.predict(Q), atol=1e-3)
    np.testing.assert_allclose(p_si, p_ss, atol=1e-6)
    # traffic: silent's fixed set-up (~0.6 MB both directions) against 15 bytes per element saved
    elements = 2 * 600 * 12
    ss_mb = (cost_ss.bytes_sent + cost_ss.bytes_received) / 1e6
    si_mb = (cost_si.bytes_sent + cost_si.bytes_received) / 1e6
    assert si_mb - ss_mb < 0.8 - 12e-6 * elements


def _silent_case(row: int, N: int = 300, d: int = 7):
    """A sparse model on the 2^-8 grid large enough for silent OT, queried at training row ``row``:
    (N, pp, encoded X, encoded q)."""
    rng = np.random.default_rng(8)
    X = _grid(rng.uniform(0, 60, (N, d)) * (rng.random((N, d)) < 0.7))
    pp = PublicParams(kind="krr-laplacian", n_train=N, n_features=d, frac_bits=8,
                      feature_lo=0.0, feature_hi=64.0, sigma=100.0, weight_bits=20)
    return N, pp, pp.encode_features(X), pp.encode_features(X[row][None])[0]


def test_l1_shares_exact_on_silent_ot():
    from protocols.ot.ferret import setup_pair

    N, pp, Xe, qe = _silent_case(4)
    assert pp.ot_engine == "silent"

    def silent(p):
        p.install_ot(*setup_pair(p.ch, p.role))

    L_S, L_C = run_two_party(lambda p: server_l1_shares(p, np.ascontiguousarray(Xe.T), pp),
                             lambda p: client_l1_shares(p, qe, N, pp), setup=silent, seed=3)
    exact = np.abs(Xe.astype(np.int64) - qe.astype(np.int64)).sum(axis=1)
    np.testing.assert_array_equal((L_S + L_C) & np.uint64((1 << pp.ring_bits) - 1), exact.astype(np.uint64))
    assert exact[4] == 0


def test_prepare_server_encodes_once_per_model_and_encoding():
    """Step 1's server-side cache: the same integers every query, a new entry per encoding."""
    from protocols.common import KernelModelParams
    from protocols.krr import laplacian_malicious
    from protocols.krr.laplacian import prepare_server

    rng = np.random.default_rng(3)
    model = KernelModelParams(rng.uniform(0, 60, (40, 6)), rng.normal(size=40), 0.0, "laplacian", 100.0)
    pp = PublicParams(kind="krr-laplacian", n_train=40, n_features=6, frac_bits=4,
                      feature_lo=0.0, feature_hi=64.0, sigma=100.0, weight_bits=20)
    XT = prepare_server(model, pp)
    np.testing.assert_array_equal(XT, pp.encode_features(model.X_train).T)
    assert prepare_server(model, pp) is XT and not XT.flags.writeable
    assert laplacian_malicious.prepare_server(model, pp) is XT  # one cache for both protocols
    pp2 = PublicParams(kind="krr-laplacian", n_train=40, n_features=6, frac_bits=6,
                       feature_lo=0.0, feature_hi=64.0, sigma=100.0, weight_bits=20)
    XT2 = prepare_server(model, pp2)
    assert XT2 is not XT
    np.testing.assert_array_equal(XT2, pp2.encode_features(model.X_train).T)


def test_digit_plan_search_keeps_the_product_order():
    import itertools

    from protocols.krr.laplacian import _compositions

    for total in (1, 7, 15, 40):
        for count in range(1, 6):
            ref = [t for t in itertools.product(range(1, 11), repeat=count) if sum(t) == total]
            assert _compositions(total, count) == ref


def test_silent_product_i_takes_the_reserved_choices_and_sends_no_bit():
    """Product (i) on silent OT: the server's share of b is its reserved COTs' choice bits (no
    derandomisation message), and the shares stay exact."""
    from protocols.ot.ferret import setup_pair

    N, d = 200, 6
    rng = np.random.default_rng(11)
    X = _grid(rng.uniform(0, 60, (N, d)))
    q = _grid(rng.uniform(0, 60, d))
    pp = PublicParams(kind="krr-laplacian", n_train=N, n_features=d, frac_bits=8,
                      feature_lo=0.0, feature_hi=64.0, sigma=100.0, weight_bits=20)
    Xe, qe = pp.encode_features(X), pp.encode_features(q[None])[0]
    seen = {}

    def silent_server(p):
        p.install_ot(*setup_pair(p.ch, p.role))
        rcv = p.ot_receiver
        reserve, recv = rcv.reserve_cots, rcv.cot_recv_reserved

        def reserve_spy(n):
            c, handle = reserve(n)
            seen["choices"] = c.copy()
            return c, handle

        def recv_spy(handle, bits=64):
            b0 = p.ch.bytes_sent
            out = recv(handle, bits=bits)
            seen["sent_in_cot_i"] = p.ch.bytes_sent - b0
            return out

        rcv.reserve_cots, rcv.cot_recv_reserved = reserve_spy, recv_spy

    def silent(p):
        if p.role == 0:
            silent_server(p)
        else:
            p.install_ot(*setup_pair(p.ch, p.role))

    def server(p):
        from protocols.krr import laplacian

        unpack = laplacian._unpack
        me = threading.get_ident()  # the module is shared with the client's thread

        def spy(packed, n):  # the server unpacks once: its last share, the products' bits
            bits = unpack(packed, n)
            if threading.get_ident() == me:
                seen.setdefault("b_s", bits.ravel().copy())
            return bits

        laplacian._unpack = spy
        try:
            return server_l1_shares(p, np.ascontiguousarray(Xe.T), pp)
        finally:
            laplacian._unpack = unpack

    L_S, L_C = run_two_party(server, lambda p: client_l1_shares(p, qe, N, pp), setup=silent, seed=4)
    exact = np.abs(Xe.astype(np.int64) - qe.astype(np.int64)).sum(axis=1)
    np.testing.assert_array_equal((L_S + L_C) & np.uint64((1 << pp.ring_bits) - 1), exact.astype(np.uint64))
    assert seen["sent_in_cot_i"] == 0  # no d = c ^ r for product (i)
    np.testing.assert_array_equal(seen["b_s"], seen["choices"])  # b_S is the reserved choices
    assert 0.35 < seen["choices"].mean() < 0.65


@pytest.mark.parametrize("security", ["semi-honest", "client-malicious"])
def test_a_tiny_model_gets_a_ring_of_at_least_8_bits(security):
    """One feature on the integer grid: d 2^x_bits + a margin bit is 4 bits, and the plan's
    shift_bits <= M - 8 went negative (ValueError: negative shift count at load). The ring is now
    at least 8 bits, and the session gives the plaintext prediction."""
    rng = np.random.default_rng(1)
    model = KernelModelParams(rng.integers(0, 4, (6, 1)).astype(float), rng.normal(0, 5, 6), 1.5, "laplacian", 2.0)
    served = ServedModel(model, frac_bits=0, security=security)
    assert served.public.ring_bits == 8 and served.public.shift_bits == 0
    Q = np.array([[1.0], [3.0]])
    preds, *_ = _session(served, Q)
    np.testing.assert_allclose(preds, model.predict(Q), atol=1e-4)


def test_cached_digit_tables_give_the_same_shares_and_live_with_the_model(monkeypatch):
    """The server's digit tables are query-independent: built once per encoded model (prepare_server)
    and reused by every session -- the shares are bit for bit those of per-session tables (same seeds),
    the cache is read-only, and its entry goes when the encoded data does."""
    import gc

    from protocols.krr import laplacian
    from protocols.ot.ferret import setup_pair

    N, pp, Xe, qe = _silent_case(11)
    XT = np.ascontiguousarray(Xe.T)
    levels, W = digit_levels(pp.x_bits, pp.ot_engine), (N + 63) // 64
    assert laplacian._server_tables(XT, levels, W) is None  # writeable: could change under a cache
    XT.flags.writeable = False  # as prepare_server's

    def silent(p):
        p.install_ot(*setup_pair(p.ch, p.role, seeds=(p.role * 2 + 1, p.role * 2 + 2)))

    def shares():
        return run_two_party(lambda p: server_l1_shares(p, XT, pp), lambda p: client_l1_shares(p, qe, N, pp),
                             setup=silent, seed=5)

    monkeypatch.setattr(laplacian, "_TABLES_MAX_BYTES", 0)  # over the cap: per-session tables, as before
    ref = shares()
    assert laplacian._server_tables(XT, levels, W) is None and id(XT) not in laplacian._TABLES
    monkeypatch.setattr(laplacian, "_TABLES_MAX_BYTES", 96 << 20)
    got = shares()
    for a, b in zip(ref, got):
        np.testing.assert_array_equal(a, b)
    cached = laplacian._server_tables(XT, levels, W)
    assert cached is laplacian._server_tables(XT, levels, W)  # built once, by the first session
    assert not cached[0][0][0].flags.writeable
    again = shares()  # a second session on the cached tables
    for a, b in zip(ref, again):
        np.testing.assert_array_equal(a, b)
    key = id(XT)
    del XT, cached
    gc.collect()
    assert key not in laplacian._TABLES


@pytest.mark.parametrize("n", [64, 128, 100])
def test_pack_with_and_without_padding_matches_packbits(n):
    """_pack skips its zero-padded copy when the row length is whole words (N = 16,384): same words."""
    from protocols.krr.laplacian import _pack, _unpack

    bits = np.random.default_rng(n).integers(0, 2, (5, n), dtype=np.uint8)
    words = (n + 63) // 64
    padded = np.zeros((5, words * 64), dtype=np.uint8)
    padded[:, :n] = bits
    np.testing.assert_array_equal(_pack(bits, words), np.packbits(padded, axis=1, bitorder="little").view(np.uint64))
    np.testing.assert_array_equal(_unpack(_pack(bits, words), n), bits)
