"""Semi-honest compact models: the lattice inner product (protocols/krr/linear_he.py), real TCP."""
from __future__ import annotations

import multiprocessing as mp
import re
import threading

import numpy as np
import pytest

from protocols.krr import ServedModel, linear_he, molecules_featurizer, predict, predict_features, serve_one
from protocols.net.transport import local_channel_pair
from protocols.testing import serve_one_in_thread
from tests.protocols.krr.compact import ERROR_BUDGET, rff_model_and_queries
from secureml.errors import ProtocolError, SecureMLError



@pytest.fixture(scope="module")
def rff_model():
    return rff_model_and_queries(4)


def _serve_file(path, q, n):
    from protocols.krr import ServedModel, serve

    serve(ServedModel.from_file(path, security="semi-honest"), "127.0.0.1", 0, max_sessions=n, on_ready=q.put)


def test_semi_honest_compact_model_uses_the_lattice_path(rff_model):
    mm, _ = rff_model
    weak = ServedModel.from_molecular_model(mm, security="semi-honest")
    strong = ServedModel.from_molecular_model(mm)
    assert weak.public.lattice_linear and weak.public.cross_term == "he"
    assert not strong.public.lattice_linear and strong.public.security == "client-malicious"
    assert weak.public.output_bits == weak.compact.out_bits
    assert linear_he.prepared(weak).max_error < 1e-3
    weak.set_defense(round_to=0.5)  # output defenses run on shares: the OT path
    assert not weak.public.lattice_linear


def test_lattice_sessions_over_tcp_and_a_garbage_client(rff_model, tmp_path, monkeypatch):
    """Two processes on TCP: predictions equal plaintext; the key is sent once, then remembered,
    and the next session sends its ciphertext with the hello (2 rounds); a client sending a
    wrong-size ciphertext fails alone (its early try and its ordinary retry) and the server keeps
    serving."""
    monkeypatch.setenv("SECUREML_CACHE", str(tmp_path))
    monkeypatch.setattr(linear_he, "PREPARE_NEXT", True)  # the between-sessions work, used in session 2
    mm, test = rff_model
    path = mm.save(tmp_path / "rff.npz")
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=_serve_file, args=(str(path), q, 5), daemon=True)
    proc.start()
    try:
        addr = f"127.0.0.1:{q.get(timeout=120)}"
        p1, c1 = predict(addr, featurize=molecules_featurizer(test.subset([0])))
        p2, c2 = predict(addr, featurize=molecules_featurizer(test.subset([1, 2])))
        real = linear_he._request
        monkeypatch.setattr(linear_he, "_request", lambda key, with_pk, cts, nxt=None: real(key, with_pk, cts, nxt)[:-1]
                            + [b"junk"])
        with pytest.raises(SecureMLError):
            predict(addr, featurize=molecules_featurizer(test.subset([3])), retries=0)
        monkeypatch.setattr(linear_he, "_request", real)
        p4, c4 = predict(addr, featurize=molecules_featurizer(test.subset([3])))
    finally:
        proc.join(60)
        if proc.is_alive():
            proc.kill()
    np.testing.assert_allclose(np.r_[p1, p2, p4], mm.predict(test), atol=ERROR_BUDGET)
    assert c1.extra["engine"] == "lattice" and c2.extra["resumed"] and c4.extra["resumed"]
    # the seed announced in session 1 was prepared between sessions on both sides and used once
    assert not c1.extra["prepared"] and c2.extra["prepared"]
    # the first session with this server carries the public key (one polynomial); later ones do not
    assert abs(c1.bytes_sent - c4.bytes_sent - 57_344) < 200
    # after the handshake one message each way (4 rounds, public model cached); with the cached
    # parameters the hello, ready and ciphertext travel together (2 rounds)
    assert c2.extra.get("early_data") and c2.rounds == 2
    assert not c4.extra.get("early_data") and c4.rounds == 4  # the failed early try dropped the cache


def _serve_tcp(served, max_sessions: int) -> tuple[threading.Thread, str]:
    """`protocols.krr.serve` on a free loopback port in a daemon thread, for ``max_sessions``
    sessions: (thread, "host:port") once it listens."""
    from protocols.krr import serve

    ports: list[int] = []
    th = threading.Thread(target=serve, args=(served, "127.0.0.1", 0),
                          kwargs=dict(max_sessions=max_sessions, on_ready=ports.append), daemon=True)
    th.start()
    while not ports:
        threading.Event().wait(0.01)
    return th, f"127.0.0.1:{ports[0]}"


def _in_process(served, featurize, **kw):
    c0, c1 = local_channel_pair(timeout=30)
    t, box = serve_one_in_thread(served, c0)
    try:
        out = predict_features(c1, featurize=featurize, **kw)
    except SecureMLError as exc:
        out = exc
    t.join(30)
    return out, box.get("error")


def test_server_errors_are_one_line_and_name_no_query(rff_model, tmp_path, monkeypatch):
    monkeypatch.setenv("SECUREML_CACHE", str(tmp_path))
    mm, test = rff_model
    served = ServedModel.from_molecular_model(mm, security="semi-honest")
    feat = molecules_featurizer(test.subset([0]))
    real = linear_he._request
    cases = {
        "wrong size": (lambda key, pk, cts, nxt=None: real(key, pk, cts)[:-1] + [b"\0" * 100],
                       r"expected \d+ bytes, got \d+"),
        "bad key id": (lambda key, pk, cts, nxt=None: [real(key, True, cts)[0], b"\1" * 16] + real(key, True, cts)[2:],
                       "key id does not match"),
        "out of range": (lambda key, pk, cts, nxt=None: real(key, pk, cts)[:-1] + [b"\xff" * len(cts[-1][1])],
                         "out of range"),
    }
    for name, (fake, message) in cases.items():
        monkeypatch.setattr(linear_he, "_request", fake)
        client_out, server_err = _in_process(served, feat)
        assert isinstance(client_out, SecureMLError), name
        assert isinstance(server_err, ProtocolError) and "\n" not in str(server_err), name
        assert re.search(message, str(server_err)), (name, server_err)
    monkeypatch.setattr(linear_he, "_request", real)
    (preds, cost, _), err = _in_process(served, feat)
    assert err is None and abs(preds[0] - mm.predict(test.subset([0]))[0]) < ERROR_BUDGET


def test_server_that_forgot_the_key_asks_again(rff_model, tmp_path, monkeypatch):
    monkeypatch.setenv("SECUREML_CACHE", str(tmp_path))
    mm, test = rff_model
    served = ServedModel.from_molecular_model(mm, security="semi-honest")
    feat = molecules_featurizer(test.subset([0]))
    linear_he._KEY_SENT.clear()
    (_, first, _), _ = _in_process(served, feat)  # key sent (and the public model fetched)
    (_, second, _), _ = _in_process(served, feat)  # key remembered
    linear_he.KEYS.clear()  # a restarted server
    (preds, again, _), err = _in_process(served, feat)
    assert err is None and abs(preds[0] - mm.predict(test.subset([0]))[0]) < ERROR_BUDGET
    assert first.extra["key_sent"] and not second.extra["key_sent"] and again.extra["key_sent"]
    assert again.rounds == second.rounds + 2  # "need-key", then the queries again with the key
    # unlinkable sessions: a fresh key every time, always sent
    (_, fresh, _), _ = _in_process(served, feat, resume_ot=False)
    assert fresh.extra["key_sent"] and fresh.extra["keygen_s"] > 0


@pytest.mark.slow
def test_cli_serves_a_compact_model_semi_honest_with_the_lattice_path(rff_model, tmp_path):
    """`secureml serve --security semi-honest` + `secureml predict` (two subprocesses)."""
    import json
    import subprocess
    import sys

    from protocols.krr.runner import start_serve_process
    from secureml.data import write_extxyz

    mm, test = rff_model
    path = mm.save(tmp_path / "rff.npz")
    write_extxyz(test.subset([0, 1]), tmp_path / "q.xyz")
    head: list[str] = []
    proc, port = start_serve_process([sys.executable, "-m", "secureml.cli", "serve", "--model", str(path), "--port",
                                      "0", "--max-sessions", "1", "--security", "semi-honest"], head=head)
    try:
        out = subprocess.run([sys.executable, "-m", "secureml.cli", "predict", "--server", f"127.0.0.1:{port}",
                              "--xyz", str(tmp_path / "q.xyz"), "--json", str(tmp_path / "out.json")],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        got = [r["prediction"] for r in json.loads((tmp_path / "out.json").read_text())["predictions"]]
        np.testing.assert_allclose(got, mm.predict(test.subset([0, 1])), atol=ERROR_BUDGET)
        assert "security=semi-honest" in "".join(head)
    finally:
        proc.kill()


def test_stale_cached_parameters_are_refused_and_the_client_starts_over(rff_model, tmp_path, monkeypatch):
    """Early data made for other parameters: the server refuses before reading it (one line), the
    client repeats the session the ordinary way."""
    from protocols.krr import client as client_mod

    monkeypatch.setenv("SECUREML_CACHE", str(tmp_path))
    mm, test = rff_model
    served = ServedModel.from_molecular_model(mm, security="semi-honest")
    th, addr = _serve_tcp(served, max_sessions=3)
    predict(addr, featurize=molecules_featurizer(test.subset([0])))
    key = addr
    stale = dict(client_mod._EARLY_PARAMS[key], frac_bits=served.public.frac_bits - 1)
    client_mod._EARLY_PARAMS[key] = stale
    p, c = predict(addr, featurize=molecules_featurizer(test.subset([1])))
    th.join(60)
    assert abs(p[0] - mm.predict(test.subset([1]))[0]) < ERROR_BUDGET
    assert not c.extra.get("early_data") and c.rounds == 4
    assert client_mod._EARLY_PARAMS[key] != stale  # replaced by the server's current parameters


def test_precomputed_masks_and_rerandomisations_are_single_use(rff_model):
    """The client's mask (-a s + e) and the server's re-randomisation (u, e1) are made before the
    query; each serves one query: a second use is refused, and a server asked twice for the
    announced seed answers the second query with a fresh u."""
    from protocols.mpc import rlwe_ip
    from protocols.mpc.party import Party

    mm, _ = rff_model
    served = ServedModel.from_molecular_model(mm, security="semi-honest")
    pm = linear_he.prepared(served)
    key, _ = linear_he.client_key(pm.rp)
    rng = rlwe_ip.SecureRandom(b"\0" * 16)
    phi = np.zeros(pm.weights.w.shape[0], dtype=np.int64)
    mask = key.mask(b"\1" * 16, rng)
    key.encrypt_with(mask, phi, pm.delta_bits)
    with pytest.raises(ProtocolError, match="one query only"):
        key.encrypt_with(mask, phi, pm.delta_bits)
    seed, c0 = key.encrypt(phi, pm.delta_bits, rng)
    prep = rlwe_ip.server_prepare(pm.weights, seed, rng)
    c0_limbs = pm.weights.ring.from_bytes(c0, "c0")
    rlwe_ip.server_finish(pm.weights, prep, key.pk0, c0_limbs, pm.const, pm.delta_bits, rng)
    with pytest.raises(ProtocolError, match="one query only"):
        rlwe_ip.server_finish(pm.weights, prep, key.pk0, c0_limbs, pm.const, pm.delta_bits, rng)
    # protocol level: the hello announced `seed`; a (deviating) client sends it for both queries
    early = linear_he.server_early(served, {"lattice_seed": seed.hex()})["lattice_early"]
    s_ch, c_ch = local_channel_pair(timeout=30)
    box = {}
    t = threading.Thread(target=lambda: box.update(linear_he.server_online(Party(s_ch, role=0), served, 2,
                                                                           keep_keys=False, early=early)))
    t.start()
    c_ch.send(b"".join(linear_he._request(key, True, [(seed, c0), (seed, c0)])))
    reply = c_ch.recv()
    t.join(30)
    n = pm.rp.n
    tops = [reply[1 + i * (16 + 8 * n) + 16:1 + (i + 1) * (16 + 8 * n)] for i in range(2)]
    assert box["prepared"] == 1 and early.spent and tops[0] != tops[1]


def test_announced_seeds_are_used_once_over_tcp(rff_model, tmp_path, monkeypatch):
    """Resumed sessions announce their first ciphertext's seed in the hello (the server
    re-randomises while the client featurises, or takes what it made after the last reply);
    across sessions -- masks made between them, inline ones, and an early try refused as stale --
    no seed of a is ever sent twice, and every announced seed is the one the session's first
    ciphertext uses."""
    from protocols.krr import client as client_mod

    monkeypatch.setenv("SECUREML_CACHE", str(tmp_path))
    mm, test = rff_model
    served = ServedModel.from_molecular_model(mm, security="semi-honest")
    sent, nexts, announced = [], [], []
    real_request, real_hello = linear_he._request, linear_he.hello_seed

    def spy_request(key, with_pk, cts, next_seed=None):
        sent.append([seed for seed, _ in cts])
        nexts.append(next_seed)
        return real_request(key, with_pk, cts, next_seed)

    def spy_hello(pp, server_key):
        out = real_hello(pp, server_key)
        announced.append((len(sent), out.hex()))
        return out

    monkeypatch.setattr(linear_he, "_request", spy_request)
    monkeypatch.setattr(linear_he, "hello_seed", spy_hello)
    th, addr = _serve_tcp(served, max_sessions=6)
    preds = []
    for i, prepare in enumerate([True, True, False, True]):
        monkeypatch.setattr(linear_he, "PREPARE_NEXT", prepare)
        preds.append(predict(addr, featurize=molecules_featurizer(test.subset([i])))[0][0])
    key = addr
    client_mod._EARLY_PARAMS[key] = dict(client_mod._EARLY_PARAMS[key], frac_bits=served.public.frac_bits - 1)
    preds.append(predict(addr, featurize=molecules_featurizer(test.subset([0])))[0][0])  # refused early try, then again
    th.join(60)
    np.testing.assert_allclose(preds, mm.predict(test.subset([0, 1, 2, 3, 0])), atol=ERROR_BUDGET)
    seeds = [s for msg in sent for s in msg]
    assert len(seeds) == len(set(seeds)) == 6  # 5 sessions, one of them tried early and repeated
    assert len(announced) == 6  # every TCP session's hello (first sessions too), the stale early try included
    for n_before, seed_hex in announced:  # the announced seed is that session's first ciphertext's
        assert sent[n_before][0].hex() == seed_hex
    # sessions 1, 2 and 4 announced their successor's seed (made between sessions), session 3 did not
    assert [x is not None for x in nexts[:4]] == [True, True, False, True]
    assert sent[1][0] == nexts[0] and sent[2][0] == nexts[1] and sent[4][0] == nexts[3]


def test_a_bad_announced_seed_fails_that_session_in_one_line(rff_model, tmp_path, monkeypatch):
    """A hello whose lattice_seed is not 16 bytes in hex: that session fails with one fixed line
    (nothing quoted from the client); the next session is served."""
    monkeypatch.setenv("SECUREML_CACHE", str(tmp_path))
    mm, test = rff_model
    served = ServedModel.from_molecular_model(mm, security="semi-honest")
    from protocols.krr.handshake import client_hello_message

    for bad in ["zz" * 16, "00" * 15, 7]:
        c0, _c1 = local_channel_pair(timeout=30)
        with pytest.raises(ProtocolError) as err:
            serve_one(served, c0, hello={**client_hello_message(1), "lattice_seed": bad})
        assert str(err.value) == "hello: lattice_seed must be 32 hex digits"
    (preds, _, _), e = _in_process(served, molecules_featurizer(test.subset([0])))  # the next one is served
    assert e is None and abs(preds[0] - mm.predict(test.subset([0]))[0]) < ERROR_BUDGET


def test_lattice_client_builds_no_ot_party_and_draws_fresh_randomness_per_session(rff_model, monkeypatch):
    """The client's lattice path runs on a light party (no OT provider: the path has no OT), and
    each session's private randomness is its own: a new SecureRandom per session, made only when
    that session encrypts inline (PREPARE_NEXT off and no seed announced here, so each does)."""
    from protocols.krr import client as client_mod

    mm, test = rff_model
    served = ServedModel.from_molecular_model(mm, security="semi-honest")
    monkeypatch.setattr(client_mod, "Party", lambda *a, **kw: pytest.fail("an OT party on the lattice path"))
    monkeypatch.setattr(linear_he, "PREPARE_NEXT", False)
    monkeypatch.setattr(linear_he, "_NEXT_MASKS", {})  # none left by earlier tests: each session encrypts inline
    parties = []

    class Recorded(client_mod._LatticeParty):
        def __init__(self, ch):
            super().__init__(ch)
            parties.append(self)

    monkeypatch.setattr(client_mod, "_LatticeParty", Recorded)
    preds = []
    for i in range(2):
        out, err = _in_process(served, molecules_featurizer(test.subset([i])))
        assert err is None and not isinstance(out, Exception)
        preds.append(out[0][0])
    np.testing.assert_allclose(preds, mm.predict(test.subset([0, 1])), atol=ERROR_BUDGET)
    assert len(parties) == 2 and all(p._rng is not None for p in parties)  # each session drew its own
    assert parties[0]._rng is not parties[1]._rng
    fresh = client_mod._LatticeParty(None)
    key, _ = linear_he.client_key(linear_he.ring_params(served.public))
    linear_he._NEXT_MASKS[("srv", key.key_id)] = key.mask(b"s" * 16, linear_he.rlwe_ip.SecureRandom())
    mask, premade = linear_he._first_mask("srv", key, fresh, True, b"s" * 16)
    assert premade and mask.seed == b"s" * 16
    assert fresh._rng is None  # a session whose mask was made last session draws nothing
    assert fresh.rng is fresh.rng and fresh.rng.random_bytes(16) != parties[1].rng.random_bytes(16)


def test_the_next_sessions_mask_is_made_on_a_thread_and_its_errors_reach_the_taking_session(monkeypatch):
    """The next session's mask is made off the session's thread (it ran past the answer's arrival
    on fast links): its seed is known at once, the taking session waits for it, and a failure in the
    thread is raised there -- never a session without its mask."""
    from protocols.mpc import rlwe_ip

    key = rlwe_ip.ClientKey(rlwe_ip.ring_for(64))
    seed = bytes(range(16))
    pending = linear_he._PendingMask(key, seed)
    mask = pending.result()
    assert pending.seed == seed and isinstance(mask, rlwe_ip.Mask) and mask.seed == seed

    def broken(self, s, rng):
        raise RuntimeError("mask failed")
    monkeypatch.setattr(rlwe_ip.ClientKey, "mask", broken)
    with pytest.raises(RuntimeError, match="mask failed"):
        linear_he._PendingMask(key, seed).result()


def test_resumed_sessions_answer_with_the_key_part_bound_after_the_last_reply(rff_model, tmp_path, monkeypatch):
    """Over TCP, a resumed client's sessions are answered from the re-randomisation the server made
    after its last reply, bound to its key (rlwe_ip.server_bind): no copy of pk0 and no randomness
    between the query and the answer; the first session (no seed announced before) and a client
    with a fresh key (a session under another key) are answered the ordinary way; every prediction
    is right."""
    from protocols.mpc import rlwe_ip

    monkeypatch.setenv("SECUREML_CACHE", str(tmp_path))
    monkeypatch.setattr(linear_he, "PREPARE_NEXT", True)
    mm, test = rff_model
    served = ServedModel.from_molecular_model(mm, security="semi-honest")
    answers = []
    real_finish = rlwe_ip.server_finish

    def spy(pw, prep, pk0, c0, const, delta_bits, rng, key_id=None):
        answers.append((prep.bound_key == key_id, pk0 is None, rng is None))
        return real_finish(pw, prep, pk0, c0, const, delta_bits, rng, key_id=key_id)

    monkeypatch.setattr(rlwe_ip, "server_finish", spy)
    th, addr = _serve_tcp(served, max_sessions=5)
    preds = [predict(addr, featurize=molecules_featurizer(test.subset([i])))[0][0] for i in range(3)]
    # a new key for this process (another client): the server's re-randomisation is bound to the old one
    monkeypatch.setattr(linear_he, "_CLIENT_KEYS", {})
    preds += [predict(addr, featurize=molecules_featurizer(test.subset([i])))[0][0] for i in (3, 0)]
    th.join(60)
    np.testing.assert_allclose(preds, mm.predict(test.subset([0, 1, 2, 3, 0])), atol=ERROR_BUDGET)
    assert answers[0] == (False, False, False)  # first session: nothing prepared for this key
    assert answers[1] == answers[2] == (True, True, True)  # bound: no pk0 copy, nothing drawn
    assert answers[3] == (False, False, False)  # the new key: made afresh from its pk0
    assert answers[4] == (True, True, True)


def test_the_next_mask_worker_never_makes_a_mask_twice_and_never_leaves_a_session_waiting(monkeypatch):
    """The next sessions' masks are made by one worker thread, handed over by a queue. A session
    that takes its mask while the worker makes it waits for that mask; one the worker has not
    started (queued behind another) is made by the session itself, without waiting, and the worker
    skips it: every mask is made once."""
    from protocols.mpc import rlwe_ip

    key = rlwe_ip.ClientKey(rlwe_ip.ring_for(64))
    real_mask = rlwe_ip.ClientKey.mask
    entered, release = threading.Event(), threading.Event()
    made = []  # (seed, made on the worker, the mask)

    def slow_mask(self, s, rng):
        on_worker = threading.current_thread().name == "secureml-next-mask"
        if on_worker and s.startswith(b"slow"):
            entered.set()
            assert release.wait(10)
        out = real_mask(self, s, rng)
        made.append((s, on_worker, out))
        return out

    monkeypatch.setattr(rlwe_ip.ClientKey, "mask", slow_mask)
    slow, queued = b"slow".ljust(16, b"."), b"q" * 16
    pending = linear_he._PendingMask(key, slow)
    assert entered.wait(10)  # the worker is making it
    behind = linear_he._PendingMask(key, queued)
    other = behind.result()  # not started: made here, at once
    assert other.seed == queued and [(s, on) for s, on, _ in made] == [(queued, False)]
    threading.Timer(0.05, release.set).start()
    mask = pending.result()  # waits for the worker's
    assert mask.seed == slow and made[-1] == (slow, True, mask)
    done = linear_he._PendingMask(key, b"d" * 16)  # the worker goes on (and skipped the queued one)
    assert done._done.wait(10) and done.result().seed == b"d" * 16
    assert [(s, on) for s, on, _ in made] == [(queued, False), (slow, True), (b"d" * 16, True)]
    assert behind.result() is other and pending.result() is mask
    # settled before the features: a mask still at work is finished (or made) then, and the
    # session's result() returns that same mask
    entered.clear()
    release.clear()
    late = linear_he._PendingMask(key, b"slow-late".ljust(16, b"."))
    assert entered.wait(10)
    monkeypatch.setitem(linear_he._NEXT_MASKS, ("srv", key.key_id), late)
    monkeypatch.setattr(linear_he, "client_key", lambda rp, fresh=False: (key, False))
    monkeypatch.setattr(linear_he, "ring_params", lambda pp: None)
    threading.Timer(0.05, release.set).start()
    linear_he.settle_next_mask(None, "srv")
    assert late._done.is_set() and late.result() is made[-1][2] and made[-1][1]


def test_prepared_re_randomisations_are_keyed_by_the_models_own_name_not_its_id():
    """NEXT is keyed by PreparedModel.uid (process-unique), not id(): a later model that reuses a freed
    model's id must not take the freed model's re-randomisation for the same announced seed."""
    from types import SimpleNamespace

    from protocols.krr import linear_he

    a, b = SimpleNamespace(uid=next(linear_he._PREPARED_UIDS)), SimpleNamespace(uid=next(linear_he._PREPARED_UIDS))
    prep = SimpleNamespace(seed=b"s" * 16)
    linear_he._store_prepared(a, prep, "ip:10.0.0.1")
    assert linear_he._take_prepared(b, prep.seed, "ip:10.0.0.1") is None
    assert linear_he._take_prepared(a, prep.seed, "ip:10.0.0.1") is prep
    assert linear_he._take_prepared(a, prep.seed, "ip:10.0.0.1") is None  # taken by its one use
