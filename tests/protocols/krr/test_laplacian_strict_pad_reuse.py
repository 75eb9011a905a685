"""Review of protocol 42 (the bound chain, protocols.krr.laplacian_strict): no pad is used twice.

A table OT or COT on keys the client holds one of is safe only if no pad (the hash of a key, under a
tweak and domain) masks two different messages: two tables padded alike give the client the XOR of
their entries at every index it cannot open. The strict protocol hashes the same random OTs many
times -- step 1's query OTs (the chain's tables and check words, re-keyed 0x40 + k / 0x60 + k;
step 6's MAC words, raw; the lattice proof's MACs, domain 8), the chain's final commitment (the
products' vector COT, domain 7), step 5's OTs (bit MACs 0x51 / 0x52, the tail's tables). This test
records, on the server's thread of one honest session, every pad word the server derives through
the shared hash entry points (:func:`protocols.mpc.authenticated._sender_pad_words` -- every bound
table's entry pads --, ``_expand`` -- COT / MAC pads and the chain's re-keying -- and ``_stream``
-- the vector COTs) and asserts that no 64-bit pad word occurs in two different calls (random
words: a chance collision among the ~10^6 words has probability ~2^-26)."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from protocols.krr import laplacian_strict as ls
from protocols.mpc import authenticated as au
from protocols.mpc import commit_fp48
from protocols.testing import run_two_party
from tests.protocols.krr.test_laplacian_strict import _case, _ideal, _setup_for


@pytest.mark.parametrize("engine", ["softspoken", "silent"])
def test_no_pad_word_is_used_by_two_calls_in_a_strict_session(engine, monkeypatch):
    model, pp, XT, q = _case(N=12, d=4, seed=2, engine=engine)
    mark = threading.local()
    calls: list[tuple[str, np.ndarray]] = []

    def recording(name, orig):
        def wrapped(*a, **kw):
            out = orig(*a, **kw)
            if getattr(mark, "server", False):
                parts = out if isinstance(out, tuple) else (out,)
                calls.append((name, np.concatenate([np.ascontiguousarray(p).view(np.uint64).ravel() for p in parts])))
            return out
        return wrapped

    monkeypatch.setattr(au, "_sender_pad_words", recording("lut", au._sender_pad_words))
    monkeypatch.setattr(au, "_expand", recording("expand", au._expand))
    monkeypatch.setattr(commit_fp48, "_expand", recording("expand_fp48", commit_fp48._expand))
    monkeypatch.setattr(au, "_stream", recording("stream", au._stream))

    def server(p):
        mark.server = True
        return ls.online(p, pp, model=model, XT=XT)

    rec, y = run_two_party(server, lambda p: ls.online(p, pp, q=q), seed=3, setup=_setup_for(pp), timeout=60)
    assert _ideal(model, pp, XT, q, rec, y)
    names = {n for n, _ in calls}
    assert {"lut", "expand", "expand_fp48", "stream"} <= names, names
    words = np.concatenate([w for _, w in calls])
    owner = np.concatenate([np.full(w.size, i) for i, (_, w) in enumerate(calls)])
    order = np.argsort(words, kind="stable")
    ws, os_ = words[order], owner[order]
    dup = (ws[1:] == ws[:-1]) & (os_[1:] != os_[:-1])
    clashes = sorted({(calls[os_[k]][0], int(os_[k]), calls[os_[k + 1]][0], int(os_[k + 1])) for k in np.nonzero(dup)[0]})
    assert not clashes, f"pad words shared by two calls: {clashes[:10]}"
    assert words.size > 10_000


def test_the_recorder_sees_a_reused_pad(monkeypatch):
    """Control: with the chain's check words re-keyed in the tables' domain (0x60 -> 0x40), the check
    tables of digit k are padded like the column tables of digit k: the same test must fail."""
    from protocols.krr import bound_chain

    monkeypatch.setattr(bound_chain, "_CHECK_DOMAIN", bound_chain._COLUMN_DOMAIN)
    with pytest.raises(AssertionError, match="pad words shared by two calls"):
        test_no_pad_word_is_used_by_two_calls_in_a_strict_session("softspoken", monkeypatch)
