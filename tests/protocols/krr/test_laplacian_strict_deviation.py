"""Randomised deviations against the strict (bound-chain) client-malicious Laplacian protocol
(protocols.krr.laplacian_strict), in process (issue 12: "a randomised deviation test that perturbs
every client-computed protocol value in turn").

Two families, each run on both client-malicious engines (checked SoftSpoken, silent):
  * one random bit of one client frame flipped (a seeded sample of every frame the client sends,
    the OT set-up's included: OT-extension columns and proofs or derandomisation bits, the chain's
    QuickSilver U, V and mask, the lattice key / ciphertexts / proof, step 5's OTs, the check word);
  * one entry of one client-computed value perturbed (a patched client step, on the client's
    thread only: the chain's committed s, next share and b_C, its received table entries and
    random-OT bits and their MACs, the products' choices / words / lattice query / lattice share,
    step 4's v and step 5's b, their committed bits and MACs, the QuickSilver message).
Every session ends in an abort -- raised on the server before the shared tail
(gaussian_malicious.kernel_output, steps 7-11) is entered -- or in F(q') bit-exact (the ideal output
for the committed query). And the claim the strict protocol adds: the SAME deviation (same frame or
step, same entry and bit, same seeds) against three models that differ only in the training data X
has the same outcome, aborting with the same error or not aborting at all -- whether a session
aborts does not depend on X, so an abort tells the client nothing about the training data.

Also here: pairs of perturbed values at once; a targeted deviation (a b_C bit flipped where
x_ij = q'_j, which step 6 alone would let through for that X only); the client as a corrupted Ferret
sender (silent OT's other direction: unused, so F(q') bit-exact); completeness at the comparisons'
edges; an exhaustive slow variant; and a control -- the one-bit protocol's known deviation in the
same harness gives X-dependent outcomes, so the harness can see one."""
from __future__ import annotations

import traceback
import zlib
from collections.abc import Callable

import numpy as np
import pytest

from protocols.krr import bound_chain, gaussian_malicious, strict_products
from protocols.krr import laplacian_strict as ls
from protocols.mpc import authenticated as au
from protocols.mpc import commit_fp48, fp48, gf2_auth, he_matvec_checked
from protocols.testing import run_two_party
from tests.protocols.krr.deviations import PartyPatch, bit_flipping_send
from tests.protocols.krr.test_laplacian_strict import _case, _ideal, _setup_for

U64 = np.uint64
#: models that differ only in X (the same public bounds, encodings, query and seeds)
DATA_SEEDS = (0, 1, 2)
N, D = 12, 4


def _models(engine: str):
    cases = [_case(N=N, d=D, seed=2, engine=engine, data_seed=s) for s in DATA_SEEDS]
    q0 = cases[0][3]
    for model, pp, XT, q in cases[1:]:  # only X differs
        assert np.array_equal(q, q0) and pp.x_bits == cases[0][1].x_bits and pp.ring_bits == cases[0][1].ring_bits
        assert not np.array_equal(XT, cases[0][2])
    return cases


def _session(case, *, patches=(), client_wrap: Callable | None = None, seed: int = 5, protocol=ls) -> str:
    """One session of ``protocol`` (the strict one; the one-bit protocol for the control test);
    returns "ideal" (after asserting F(q') bit-exact) or "abort:<the server's error class>" (after
    asserting the tail was never entered on the server)."""
    model, pp, XT, q = case
    box: dict = {}
    tail = {"entered": False}

    def watch(orig, *a, **kw):
        tail["entered"] = True
        return orig(*a, **kw)

    def server(p):
        try:
            return protocol.online(p, pp, model=model, XT=XT)
        except BaseException as exc:
            box["server"] = exc
            raise

    def setup(p):
        if p.role == 1 and client_wrap is not None:
            client_wrap(p)  # before the OT set-up: its frames are the client's too
        _setup_for(pp)(p)

    every = []
    for pt in patches:  # (a PartyPatch wraps what is there when it is made: make the watch last)
        every.append(pt.__enter__() or pt)
    every.append(PartyPatch(gaussian_malicious, "kernel_output", watch, server=True).__enter__())
    try:
        rec, y = run_two_party(server, lambda p: protocol.online(p, pp, q=q), seed=seed, setup=setup, timeout=30)
    except TimeoutError:
        raise
    except Exception as exc:  # noqa: BLE001 - any abort; classified by the server's own error
        assert not tail["entered"], f"the tail was entered before the abort ({exc!r})"
        return f"abort:{type(box.get('server', exc)).__name__}"
    finally:
        for pt in reversed(every):
            pt.__exit__()
    assert tail["entered"] and _ideal(model, pp, XT, q, rec, y), "neither an abort nor F(q') bit-exact"
    return "ideal"


def _same_outcome_for_every_x(cases, **kw) -> str:
    outcomes = [_session(c, **kw) for c in cases]
    assert len(set(outcomes)) == 1, f"the outcome depends on the training data: {outcomes}"
    return outcomes[0]


# ------------------------------------------------------------------------------------------------
# one bit of one client frame
# ------------------------------------------------------------------------------------------------

def _label() -> str:
    """Where the client sends from: the innermost protocol functions on the stack."""
    fr = [f for f in traceback.extract_stack()[:-3] if "/protocols/" in f.filename
          and not f.filename.endswith(("transport.py", "testing.py"))]
    return " > ".join(f"{f.filename.rsplit('/', 1)[-1][:-3]}.{f.name}" for f in fr[-3:])


def _frames(case) -> list[tuple[int, str]]:
    """(size, sender) of every frame the honest client sends, set-up included."""
    out: list[tuple[int, str]] = []

    def wrap(p):
        real = p.ch._send_frame

        def rec(parts, wait=True):
            out.append((sum(memoryview(x).nbytes for x in parts), _label()))
            return real(parts, wait)
        p.ch._send_frame = rec
    assert _session(case, client_wrap=wrap) == "ideal"
    return out


def _flip(target: int, bit_seed: int, state: dict) -> Callable:
    def wrap(p):
        # a fresh generator per session: the same frame gets the same bit against every model; in
        # the payload (a flip in an array's header fails to parse: a trivial abort)
        p.ch._send_frame = bit_flipping_send(p.ch._send_frame, np.random.default_rng(bit_seed), target, state,
                                             payload_only=True)
    return wrap


@pytest.mark.parametrize("which", ["own", "extension"])
@pytest.mark.parametrize("engine", ["softspoken", "silent"])
def test_one_flipped_bit_in_any_client_frame_aborts_or_gives_f_whatever_x(engine, which):
    """The client's frames -- ``own``: all of its non-extension frames (the QuickSilver message, the
    lattice's agreement, key / ciphertexts and proof, the check word); ``extension``: a seeded sample
    of five of the OT engines' (set-up, extension columns and proofs, derandomisation bits) -- one
    random payload bit flipped per session, the same bit against three models: abort before the
    tail or F(q') bit-exact, with the same outcome for every X."""
    cases = _models(engine)
    frames = _frames(cases[0])
    if which == "own":
        assert frames == _frames(cases[1])  # the same frames (sizes, senders) whatever X
    rng = np.random.default_rng(11)
    ext = [i for i, (_, who) in enumerate(frames) if "iknp" in who or "ferret" in who]
    own = [i for i in range(len(frames)) if i not in ext]
    assert any("finish" in frames[i][1] for i in own)  # the QuickSilver message
    assert any("check_wellformed" in frames[i][1] for i in own)  # the lattice proof
    assert own[-1] == len(frames) - 1  # the check word
    targets = own if which == "own" else sorted(rng.choice(ext, size=min(5, len(ext)), replace=False).tolist())
    outcomes = {}
    for t in targets:
        states = [{"n": 0, "hit": False} for _ in cases]
        got = [_session(c, client_wrap=_flip(t, 100 + t, st)) for c, st in zip(cases, states)]
        assert all(st["hit"] for st in states)
        assert len({st["bit"] for st in states}) == 1  # the same bit flipped against every model
        assert len(set(got)) == 1, f"frame {t} ({frames[t][1]}): the outcome depends on X: {got}"
        outcomes[(t, frames[t][1], states[0]["bit"])] = got[0]
    # the protocol's own messages: a flipped value there always aborts (an OT-extension message's
    # flip may be harmless -- a column bit the server's Delta ignores (KOS), the engine this
    # protocol does not use (the silent engine's other direction) -- never because of X)
    assert all(v.startswith("abort") for (t, _, _), v in outcomes.items() if t in own), outcomes


# ------------------------------------------------------------------------------------------------
# one entry of one client-computed value
# ------------------------------------------------------------------------------------------------

def _flip_bit(a: np.ndarray, rng: np.random.Generator, width: int) -> np.ndarray:
    """a copy of ``a`` with one random bit below ``width`` of one random entry flipped."""
    a = np.array(a, copy=True)
    flat = a.reshape(-1)
    i = int(rng.integers(0, flat.size))
    flat[i] ^= flat.dtype.type(1) << flat.dtype.type(int(rng.integers(0, width)))
    return a


def _plus_one_mod_q(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    a = np.array(a, copy=True)
    flat = a.reshape(-1)
    i = int(rng.integers(0, flat.size))
    flat[i] = fp48.add(flat[i:i + 1], np.array([1], dtype=U64))[0]
    return a


class _Nth:
    """Perturb the client's ``k``-th call (counted on the client's thread, before it enters the tail)
    of ``module.name`` (of those whose keyword arguments pass ``when``): ``edit(orig, args, kwargs,
    rng)`` returns the result the client goes on with.
    (The tail, steps 7-11, sends nothing from the client: what it computes there changes only its
    own output, never a message -- test_gaussian_malicious covers that tail.)"""

    def __init__(self, module, name: str, edit: Callable, k: int, seed: int, when: Callable | None = None) -> None:
        self.calls = 0
        self.hit = False
        self.tail = False

        def fn(orig, *a, **kw):
            if self.tail or (when is not None and not when(kw)):
                return orig(*a, **kw)
            i = self.calls
            self.calls += 1
            if i != k:
                return orig(*a, **kw)
            self.hit = True
            return edit(orig, a, kw, np.random.default_rng(seed))

        def enter_tail(orig, *a, **kw):
            self.tail = True
            return orig(*a, **kw)
        # made on entry: a PartyPatch wraps what is there when it is made (so several nest)
        self.make = lambda: (PartyPatch(module, name, fn), PartyPatch(gaussian_malicious, "kernel_output", enter_tail))
        self.patches = ()

    def __enter__(self):
        self.calls, self.tail = 0, False  # per session (one _Nth may serve several)
        self.patches = []
        for p in self.make():
            self.patches.append(p.__enter__())
        return self

    def __exit__(self, *exc):
        for p in reversed(self.patches):
            p.__exit__(*exc)


def _out(width: int, pick: Callable | None = None, put: Callable | None = None) -> Callable:
    """An edit that flips one bit (below ``width``) of the call's result (or of ``pick(result)``,
    written back with ``put(result, new)``)."""
    def edit(orig, a, kw, rng):
        res = orig(*a, **kw)
        if pick is None:
            return _flip_bit(res, rng, width)
        return put(res, _flip_bit(pick(res), rng, width))
    return edit


def _arg(name: str, width: int) -> Callable:
    """An edit that flips one bit of the keyword argument ``name`` (the client commits / chooses
    other bits than the ones it goes on computing with)."""
    def edit(orig, a, kw, rng):
        kw = dict(kw)
        kw[name] = _flip_bit(np.asarray(kw[name]), rng, width)
        return orig(*a, **kw)
    return edit


def _first_arg(width: int) -> Callable:
    def edit(orig, a, kw, rng):
        return orig(_flip_bit(a[0], rng, width), *a[1:], **kw)
    return edit


def _client_bits(field: str, width: int) -> Callable:
    def edit(orig, a, kw, rng):
        res = orig(*a, **kw)
        setattr(res, field, _flip_bit(getattr(res, field), rng, width))
        return res
    return edit


def _mac_entry(orig, a, kw, rng):
    """One committed bit's whole 48-bit MAC changed (one random bit in each of its three slots: the
    QuickSilver mask's MACs are read in one slot each)."""
    res = orig(*a, **kw)
    mac = res.mac.copy()
    i = int(rng.integers(0, mac.shape[0]))
    mac[i] ^= (np.uint16(1) << rng.integers(0, 16, size=mac.shape[1]).astype(np.uint16))
    res.mac = mac
    return res


def _fp48_out(field: str | None = None) -> Callable:
    def edit(orig, a, kw, rng):
        res = orig(*a, **kw)
        if field is None:
            return _plus_one_mod_q(res, rng)
        setattr(res, field, _plus_one_mod_q(getattr(res, field), rng))
        return res
    return edit


def _quicksilver(which: str) -> Callable:
    def edit(orig, a, kw, rng):
        prover = a[0]
        acc = getattr(prover, which)
        acc[int(rng.integers(0, acc.size))] ^= np.uint16(1 << int(rng.integers(0, 16)))
        return orig(*a, **kw)
    return edit


def _sites(M: int, B: int) -> dict[str, tuple]:
    """Every client-computed value: (module, function, edit[, which calls]). Widths: bits 1, the ring M (v: M + 1),
    the query B, MAC slots 16, packed words / table entries 64, pads 8 (bytes)."""
    return {
        # the chain (bound_chain): committed s, next share, b_C; its received entries and random-OT bits
        "chain s": (bound_chain, "client_s", _out(1)),
        "chain next share": (bound_chain, "client_next_share", _out(N)),
        "chain b_C": (bound_chain, "client_final", _out(1)),
        "table entry received": (au, "bound_lut", _out(64)),
        "random-OT bit w": (gf2_auth, "auth_random_ot", _out(1, lambda r: r[0], lambda r, x: (x, r[1]))),
        "random-OT bit's MAC": (gf2_auth, "auth_random_ot", _out(16, lambda r: r[1], lambda r, x: (r[0], x))),
        "committed bit (believed)": (gf2_auth, "commit_bits", _client_bits("bits", 1)),
        "committed bit's MAC": (gf2_auth, "commit_bits", _mac_entry),
        "committed bit (chosen)": (gf2_auth, "commit_bits", _arg("bits", 1)),
        "random-OT pad of a committed bit": (gf2_auth, "commit_bits", _client_bits("pad", 8),
                                             lambda kw: kw.get("pads", True)),
        "QuickSilver U": (gf2_auth.Prover, "finish", _quicksilver("A0")),
        "QuickSilver V": (gf2_auth.Prover, "finish", _quicksilver("A1")),
        # step 1: q's random OTs (a choice other than q, a key other than the OT's)
        "query bit chosen": (au, "random_choices", _arg("choices", 1)),
        "query pad": (au, "random_choices", _out(8)),
        # products (strict_products)
        "vector-COT choices": (strict_products, "client_vole_choices", _out(1)),
        "vector-COT words": (strict_products, "client_vole_words", _out(M)),
        "lattice query": (strict_products, "client_lattice_query", _out(B)),
        "lattice share": (he_matvec_checked, "matvec_receiver", _out(M)),
        # steps 4-6 (laplacian_strict, commit_fp48)
        "share of L (b)": (ls, "client_share", _out(M)),
        "masked v": (ls, "client_masked", _out(M + 1)),
        "v / b bits committed": (commit_fp48, "bit_macs", _arg("choices", 1)),
        "v / b bits' MAC": (commit_fp48, "bit_macs", _fp48_out("mac")),
        "b_1 committed for beta": (commit_fp48, "bit_macs_on_pads", _arg("choices", 1)),
        "beta's MAC": (commit_fp48, "bit_macs_on_pads", _fp48_out()),
        "chi": (ls.lm, "expand_chi", _fp48_out()),
    }


_SITE_NAMES = sorted(_sites(25, 10))
#: sites whose every perturbation the protocol must catch (measured over every call and three
#: perturbations each; the others can be harmless: a table entry's or a pad's bits that nothing
#: reads -- padding words, MAC words' top bytes, pad bits 49-127 --, the QuickSilver mask's or
#: b_C's "believed" bits, which nothing reads after their commitment)
_ALWAYS_ABORT = {"chain s", "chain b_C", "random-OT bit w", "random-OT bit's MAC", "committed bit's MAC",
                 "QuickSilver U", "QuickSilver V", "vector-COT words", "lattice query", "lattice share",
                 "share of L (b)", "masked v", "v / b bits committed", "v / b bits' MAC", "beta's MAC",
                 "chi", "query bit chosen", "committed bit (chosen)", "query pad"}


def _calls(case, module, name, when=None) -> int:
    """How often the honest client calls ``module.name`` (with arguments passing ``when``) in one session."""
    counter = _Nth(module, name, lambda orig, a, kw, rng: orig(*a, **kw), -1, 0, when)
    assert _session(case, patches=(counter,)) == "ideal"
    return counter.calls


@pytest.mark.parametrize("engine", ["softspoken", "silent"])
@pytest.mark.parametrize("site", _SITE_NAMES)
def test_one_perturbed_client_value_aborts_or_gives_f_whatever_x(site, engine):
    """One random entry (one random bit, or +1 mod q for the MACs mod q) of one random call of the
    client step, the same perturbation against three models: abort before the tail or F(q')
    bit-exact, the same outcome for every X; the values every relation reads always abort."""
    cases = _models(engine)
    module, name, edit, *when = _sites(cases[0][1].ring_bits, cases[0][1].x_bits)[site]
    when = when[0] if when else None
    n = _calls(cases[0], module, name, when)
    assert n >= 1
    rng = np.random.default_rng([zlib.crc32(site.encode()), zlib.crc32(engine.encode())])
    outcomes = []
    for k in sorted(set(rng.choice(n, size=min(2, n), replace=False).tolist())):
        seed = int(rng.integers(0, 2**31))
        nths = [_Nth(module, name, edit, k, seed, when) for _ in cases]
        got = [_session(c, patches=(nth,)) for c, nth in zip(cases, nths)]
        assert all(nth.hit for nth in nths)
        assert len(set(got)) == 1, f"{site}, call {k}: the outcome depends on X: {got}"
        outcomes.append(got[0])
    if site in _ALWAYS_ABORT:
        assert all(o.startswith("abort") for o in outcomes), outcomes



@pytest.mark.slow
@pytest.mark.parametrize("engine", ["softspoken", "silent"])
def test_every_call_of_every_client_step_perturbed_three_ways_whatever_x(engine):
    """The exhaustive version of the test above: every call of every site (before the tail), three
    perturbations each, against three models: the same outcome for every X, abort or F(q')."""
    cases = _models(engine)
    M, B = cases[0][1].ring_bits, cases[0][1].x_bits
    tally: dict[str, dict[str, int]] = {}
    for site, (module, name, edit, *when) in _sites(M, B).items():
        when = when[0] if when else None
        for k in range(_calls(cases[0], module, name, when)):
            for seed in range(3):
                got = _same_outcome_for_every_x(cases, patches=(_Nth(module, name, edit, k, seed, when),))
                tally.setdefault(site, {}).setdefault(got, 0)
                tally[site][got] += 1
    for site in _ALWAYS_ABORT:
        assert all(o.startswith("abort") for o in tally[site]), (site, tally[site])
    print(engine, tally)


# ------------------------------------------------------------------------------------------------
# the client as an OT sender
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("what", ["level", "c", "c_bit0"])
def test_silent_client_as_ferret_sender_corrupted_changes_nothing(what):
    """The one-bit protocol's product COT ran on the silent engine with the client as Ferret sender
    (the server chooses), so a corrupted GGM level made step 6 fail (test_laplacian_malicious: the
    abort came from the server's choice bits). The bound chain's session does not set that direction
    up at all (every OT of laplacian_strict has the client choosing; registry._setup_exact_ot), so
    the same corrupted sender code never runs: F(q') bit-exact against every model -- no abort at all,
    so none that could depend on X."""
    from tests.protocols.krr.test_laplacian_malicious import _deviating_ferret_sender

    for case in _models("silent"):
        hit = {"n": 0}
        dev = _deviating_ferret_sender(what)
        corrupt = dev.fn

        def counting(orig, *a, **kw):
            hit["n"] += 1
            return corrupt(orig, *a, **kw)
        dev.fn = counting
        assert _session(case, patches=(dev,)) == "ideal"
        assert hit["n"] == 0  # no client-as-sender engine in the bound chain's session


# ------------------------------------------------------------------------------------------------
# the harness itself: it sees an X-dependent abort where there is one
# ------------------------------------------------------------------------------------------------

def test_the_harness_sees_the_one_bit_of_the_unbound_protocol():
    """Control: the same three models and seeds, the one-bit protocol (laplacian_malicious, the
    unbound chain) and its known deviation -- the product-OT choice b_1 flipped at one point, which
    aborts iff the server's MSB a_1 = 0 there (test_laplacian_malicious) -- give outcomes that differ
    across X: the X-independence asserted above is a property of the strict protocol, not of the
    harness."""
    from protocols.krr import laplacian_malicious as lm

    cases = _models("softspoken")
    differ = []
    for point in range(4):
        def flip(orig, b1, point=point):
            b1 = orig(b1).copy()
            b1[point] ^= 1
            return b1
        got = [_session(c, patches=(PartyPatch(lm, "client_product_choice", flip),), protocol=lm) for c in cases]
        assert set(got) <= {"ideal", "abort:ChainCheckError"}
        differ.append(len(set(got)) > 1)
    assert any(differ), "no X-dependent outcome: the control lost its bit"
    # the strict protocol's nearest lever (its committed b, the source of b_1) aborts for every X
    for point in range(4):
        def shift(orig, b, point=point):
            b = orig(b).copy()
            b[point] ^= U64(1) << U64(cases[0][1].ring_bits - 1)  # b_1 flipped
            return b
        assert _same_outcome_for_every_x(cases, patches=(PartyPatch(ls, "client_share", shift),)) == (
            "abort:StrictCheckError")


# ------------------------------------------------------------------------------------------------
# a targeted deviation: the abort step 6 alone would make X-dependent
# ------------------------------------------------------------------------------------------------

def _tied(tie: bool, engine: str = "softspoken", i: int = 3, j: int = 2):
    """_models()'s first case with x_ij set to the query's q_j (``tie``) or one grid step off it."""
    from protocols.common import KernelModelParams
    from protocols.krr import ServedModel

    model, pp, _, q = _models(engine)[0]
    X = np.array(model.X_train, dtype=float)
    X[i, j] = (int(q[j]) + (0 if tie else 1)) / 2 ** pp.frac_bits + pp.feature_lo
    model = KernelModelParams(X, model.dual_coef, model.y_offset, "laplacian", model.sigma)
    pp2 = ServedModel(model, security="semi-honest", frac_bits=4).public
    pp2.security, pp2.ot_engine = "client-malicious", engine
    pp2.validate()
    XT = ls.prepare_server(model, pp2)
    assert np.array_equal(pp2.encode_features(model.X_train[:1]), pp.encode_features(model.X_train[:1]))
    assert (int(XT[j, i]) == int(q[j])) is tie
    return model, pp2, XT, q


@pytest.mark.parametrize("engine", ["softspoken", "silent"])
def test_a_flipped_b_c_where_x_equals_q_is_caught_by_the_chain_for_every_x(engine):
    """The client commits b_C with one bit flipped at an element (i, j) and chooses that bit in the
    products' vector COT: they then use b_ij' = 1 - b_ij, which moves S_i by +-(q'_j - x_ij) -- nothing where x_ij = q'_j. So step 6's
    check alone would pass exactly where the training entry equals the query's (an X-dependent
    abort: the bit the strict protocol removes). The chain's check catches the flip itself: an abort
    at the chain for a tied and an untied model alike. Control: with the chain's verdict ignored on
    the server (QuickSilver's check swallowed, a test-only switch), the outcome does depend on X."""
    i, j = 3, 2
    cases = [_tied(True, engine, i, j), _tied(False, engine, i, j)]

    def flip(orig, bits):
        bits = orig(bits).copy()
        bits[j, i] ^= 1  # (column, point)
        return bits

    def flip_choice(orig, b_c):  # and chooses the same flipped bit in the products' vector COT
        b_c = orig(b_c).copy()
        b_c[i, j] ^= 1  # (point, column)
        return b_c

    def deviate():
        return (PartyPatch(bound_chain, "client_final", flip), PartyPatch(strict_products, "client_vole_choices",
                                                                          flip_choice))
    assert _same_outcome_for_every_x(cases, patches=deviate()) == "abort:ChainCheckError"

    def ignore(orig, self, party, chooser):
        try:
            orig(self, party, chooser)
        except gf2_auth.QuickSilverCheckError:
            pass
    got = [_session(c, patches=(*deviate(), PartyPatch(gf2_auth.Verifier, "finish", ignore, server=True)))
           for c in cases]
    assert got == ["ideal", "abort:StrictCheckError"]


@pytest.mark.parametrize("data_seed", DATA_SEEDS)
@pytest.mark.parametrize("engine", ["softspoken", "silent"])
def test_an_honest_client_never_aborts_at_the_edges(engine, data_seed):
    """Completeness where the comparisons and the carries are at their edges -- a query equal to a
    training point (L_i = 0, every x_ij = q'_j), the all-zero query, the largest training entry
    everywhere and the top of the public range -- against three models (two session seeds): F(q')
    bit-exact every time (a false abort of an honest client would be an X-dependent one)."""
    for model, pp, XT, q in [_case(N=N, d=D, seed=2, engine=engine, data_seed=data_seed)]:
        queries = [XT[:, 3], XT[:, 0], np.zeros_like(q), np.full_like(q, int(XT.max())),
                   np.full_like(q, (1 << pp.x_bits) - 1)]
        for n, qq in enumerate(queries):
            assert _session((model, pp, XT, np.ascontiguousarray(qq, dtype=U64)), seed=5 + n % 2) == "ideal"


def _call_counts(case, sites: dict) -> dict[str, int]:
    """How often the honest client calls each site's step (one session, every counter at once)."""
    counters = {k: _Nth(m, n, lambda orig, a, kw, rng: orig(*a, **kw), -1, 0, w[0] if w else None)
                for k, (m, n, _, *w) in sites.items()}
    assert _session(case, patches=tuple(counters.values())) == "ideal"
    return {k: c.calls for k, c in counters.items()}


@pytest.mark.parametrize("engine", ["softspoken", "silent"])
def test_two_perturbed_client_values_at_once_abort_or_give_f_whatever_x(engine):
    """Deviations of several steps together (one may try to compensate for another): a seeded sample
    of pairs of sites, a random call and entry each, against three models: abort before the tail or
    F(q') bit-exact, the same outcome for every X."""
    cases = _models(engine)
    sites = _sites(cases[0][1].ring_bits, cases[0][1].x_bits)
    counts = _call_counts(cases[0], sites)
    assert all(counts.values()), counts
    names = sorted(sites)
    rng = np.random.default_rng(zlib.crc32(engine.encode()))
    outcomes = []
    for _ in range(8):
        pair = rng.choice(len(names), size=2, replace=False)
        patches = []
        for s_ in pair:
            module, name, edit, *w = sites[names[s_]]
            patches.append(_Nth(module, name, edit, int(rng.integers(0, counts[names[s_]])),
                                int(rng.integers(0, 2**31)), w[0] if w else None))
        outcomes.append(_same_outcome_for_every_x(cases, patches=tuple(patches)))
    assert any(o.startswith("abort") for o in outcomes)
