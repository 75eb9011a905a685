"""The L1 comparison chain with every client value bound: [x_ij < q'_j] XOR-shared for the committed q'.

Steps 2-2c of the strict client-malicious Laplacian protocol (:mod:`protocols.krr.laplacian_strict`;
docs/malicious.md, "The Laplacian chain without the bit"). The semi-honest chain
(:func:`protocols.krr.laplacian.l1_shares`, steps 2-3) computes the same shares; here nothing the
client feeds into it is free, so a deviating client either aborts -- for a reason that depends on its
own bytes only, never on the training data X -- or holds exactly the shares of b = [x < q'].

Threat model: the server (model owner) is semi-honest; the client may send anything. Public: N, d,
the digit plan (:func:`bound_levels`), the entries' bit width. The client's
query q' is fixed before this step by the choice bits of step 1's random OTs (``q_pads``).

Notation: digits m_0..m_K of the B-bit entries, least significant first; n = d N elements, in the
order (column j, point i). c^k = [x^(<=k) < q'^(<=k)] is the comparison of the digits up to k,
XOR-shared c^k = c^k_S ^ c^k_C. "Committed" (:func:`protocols.mpc.gf2_auth.commit_bits`): the bit is
the choice of a COT of the checked engine with the server's global Delta; the client holds an IT-MAC
in three GF(2^16) slots (48 bits), the server the key.

  0. Digit 0: per column j a **bound** table OT (:func:`protocols.mpc.authenticated.bound_lut` on
     step 1's OTs, re-keyed for this use, index = the committed digit q'^(0)_j):
     entry v = ([x^(0)_ij < v])_i ^ r_j (N bits). The client's share c^0_C is the entry at q'^(0)_j,
     the server's r.
  For k = 1..K:
   a. The client commits its share c^(k-1)_C (one COT per element).
   b. **Authenticated random OT** on that COT (:func:`~protocols.mpc.gf2_auth.auth_random_ot`): the
      server gets random bits (m0, m1), the client w = m_(c^(k-1)_C) *and a MAC on w* (the server's
      48-bit correction D per element). delta = m0 ^ m1.
   c. Bound table OT on the committed digit q'^(k)_j: entry v = (A(v), B(v)) with
      A = [x^(k) < v + c_S] ^ r_A and B = [x^(k) < v + 1 - c_S] ^ r_A ^ delta (the semi-honest
      chain's two thresholds, c_S = c^(k-1)_S).
   d. The client commits s = A ^ B and sets c^k_C = A ^ w ^ c^(k-1)_C s (the threshold its share
      selects, unmasked by its random-OT bit); the server's share is c^k_S = r_A ^ m0.
  Then the client commits c^K_C = b_C (the products' choice bits: :mod:`protocols.krr.strict_products`).
  e. **Check** (one batched degree-2 check, :class:`~protocols.mpc.gf2_auth.Prover` /
     :class:`~protocols.mpc.gf2_auth.Verifier`): the server draws chi (per element and digit step,
     uniform in GF(2^16)^3) and gamma after every commitment and sends them as a seed; per column j
     and digit k it sends, through a bound table OT on the committed q'^(k)_j, MAC words
     W_kj(v) = K_kj + g_kj(v) Delta of
         g_0j(v) = sum_i chi_0ij A^0_ij(v),    g_kj(v) = sum_i chi_kij (A_ij(v) + gamma s_ij(v))  (k >= 1)
     (s(v) = A(v) ^ B(v)). The client proves, for every k, sum_ij chi_kij f_kij + sum_j g_kj = 0 with
         f_0 = c^0_C,    f_k = c^(k-1)_C s + c^k_C + w + gamma s          (char 2: + is XOR)
     -- c^k_C = A ^ w ^ c^(k-1)_C s says f_k = A + gamma s. The server aborts (``ChainCheckError``)
     unless the check passes.

What each step binds, and why a deviation cannot depend on X. Every value in the relations is one
the client committed (c, s, w -- w through the authenticated random OT) or a MAC word the server
computed from X at the client's *committed* digit (g). Whether a relation holds is therefore fixed by
values the client knows: A and B at its committed digit (what it received), its random-OT bit w (what
it received), and what it committed. A client that commits anything else, or opens another table
entry (a pseudorandom string), makes a relation false, and the check rejects a false relation with
probability >= 1 - (4/2^16)^3 (2^-42.0; per slot: 2/2^16 for the degree-2 identity in Delta's slot,
2/2^16 for chi and gamma -- the aggregated error of a false relation is a polynomial of degree <= 1 in
gamma whose value chi-weights, so e.g. a wrong s alone leaves chi gamma, zero with probability ~2/2^16;
gf2_auth's argument for the rest; review of protocol 42), independently of X. A passing session has
c^k_C = c^k ^ c^k_S for every k: b_C is the client's share of [x < q'] with q' of step 1.

What each party learns: the client sees table entries masked by r, r_A (uniform) and, for B, by delta
(uniform to a client that knows m_c only: the random OT's hiding), D (one-time padded by the hash of
the key it lacks), chi, gamma and MAC words under fresh keys K_kj -- nothing that depends on X. The
server sees OT-extension messages (its COTs' choice bits are hidden by the engine) and the check's
masked sums -- nothing that depends on q'.

Cost per element (N = 16,384, d = 351, silent OT, this chain's own digit plan :func:`bound_levels`:
(5, 5, 5) for 15-bit entries): the tables' 32 + 2 x 64 bits, per digit step two commitments (~1.7
bits each on silent OT) and D (48 bits), one more commitment for b_C: 160 + 2 x 51.4 + 1.7 = 264.5
bits against the semi-honest chain's 78.8 (its (3, 3, 3, 3, 3) tables and random OTs); the
semi-honest plan here would be 279 bits and twice the digit steps (measured: 334.5 MB and 12.3-12.6 s
per session with it, 323.9 MB and 9.5 s with this plan; docs/malicious/strict/). The MAC-word tables
are per column (2^m x 6 bytes).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from protocols.krr.chain import CLIENT, SERVER
from protocols.krr import laplacian
from protocols.krr.laplacian import _digit_tables, _pack, _unpack
from protocols.krr.params import PublicParams
from protocols.mpc import authenticated as au
from protocols.mpc import gf2_auth as g2
from protocols.mpc.context import PartyContext
from protocols.mpc.owner_cache import OwnerCache
from secureml.errors import ProtocolError

U64 = np.uint64
#: bytes of the seed chi and gamma are expanded from
SEED_BYTES = 32
#: re-keying domains of step 1's OT keys, one per use (a bound table on the same keys, digit and
#: tweak twice would pad two tables with the same strings)
_COLUMN_DOMAIN = 0x40
_CHECK_DOMAIN = 0x60


class ChainCheckError(au.MacCheckError):
    """Step 2e failed: the client's committed chain values are not those of its committed query."""


def rekey(pads, domain: int):
    """Step 1's random-OT keys hashed into a fresh domain, both roles (client: (n, bits, 16); server:
    the pair). A client still holds exactly the key of its committed bit: the hash of a key it lacks is
    as unknown as the key (TCCR)."""
    def one(p: np.ndarray) -> np.ndarray:
        flat = np.ascontiguousarray(p).reshape(-1, 16)
        hi, lo = au._expand(flat, 1, domain)
        out = np.empty((flat.shape[0], 2), dtype="<u8")
        out[:, 0], out[:, 1] = lo[:, 0], hi[:, 0]
        return out.view(np.uint8).reshape(p.shape)
    if isinstance(pads, tuple):
        return one(pads[0]), one(pads[1])
    return one(pads)


def _lanes(a: np.ndarray) -> np.ndarray:
    """(..., 3) uint16 -> (...) uint64 with the slots in lanes 0..2 (XOR of lanes is slot-wise XOR)."""
    out = np.zeros(a.shape[:-1] + (4,), dtype=np.uint16)
    out[..., :3] = a
    return out.view(U64).reshape(a.shape[:-1])


def _unlanes(a: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_lanes`."""
    return np.ascontiguousarray(a, dtype=U64)[..., None].view(np.uint16)[..., :3]


@dataclass(frozen=True)
class HistogramPlan:
    """The sort :func:`xor_histogram` needs for one digit matrix (d, N): the flat positions in
    (column, digit) order, the first position of each non-empty (column, digit) run, and which runs
    are non-empty. A function of the training data and the public digit plan only: the server keeps
    one per model and digit (:func:`_histogram_plans`)."""

    d: int
    m: int
    order: np.ndarray
    starts: np.ndarray
    hit: np.ndarray


def histogram_plan(dig: np.ndarray, m: int) -> HistogramPlan:
    """Sort the (column, digit) keys of ``dig`` (d, N) once (numpy has no XOR bincount)."""
    d, N = dig.shape
    key = (np.arange(d, dtype=np.int64)[:, None] << m) + dig.astype(np.int64)
    order = np.argsort(key, axis=None, kind="stable")
    if order.size < 2 ** 31:
        order = order.astype(np.int32)  # half the memory of a kept plan
    counts = np.bincount(key.ravel(), minlength=d << m)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    hit = counts > 0
    for a in (order, starts, hit):
        a.flags.writeable = False
    return HistogramPlan(d, m, order, starts[hit], hit)


def xor_histogram(dig: np.ndarray | None, m: int, vals: np.ndarray, plan: HistogramPlan | None = None) -> np.ndarray:
    """H[j, t] = XOR of vals[j, i] over the points i whose digit dig[j, i] is t: (d, 2^m) uint64.
    ``plan``: :func:`histogram_plan` of ``dig`` made before (``dig`` is then not read)."""
    if plan is None:
        plan = histogram_plan(dig, m)
    out = np.zeros(plan.d << m, dtype=U64)
    if plan.hit.any():
        out[plan.hit] = np.bitwise_xor.reduceat(vals.ravel()[plan.order], plan.starts)
    return out.reshape(plan.d, 1 << m)


# The server's histogram plans per digit of the public plan depend on the training data only: made
# once per model (the first session) and kept while the read-only encoded data XT lives (as
# protocols.krr.laplacian keeps its digit tables): 4 bytes per element and digit, 115 MB at
# N = 16,384, d = 351, five digits; saves the per-query sorts (~1.2 s of the server's CPU there).
_PLANS: OwnerCache[tuple[tuple, list]] = OwnerCache()
#: the digit tables kept per model for this chain's plan: (5, 5, 5) at N = 16,384, d = 351 is 138 MB
_TABLES_MAX_BYTES = 160 << 20

# The digit plan's cost model, bits-worth per element (traffic, and compute at the semi-honest plan's
# exchange rate, protocols.krr.laplacian): a digit of m bits costs its bound table, 2^m bits (digit 0)
# or 2 x 2^m (A and B); each digit step above the first the authenticated random OT's correction D
# (48 bits), two commitments (c and s: the engine's bits per chosen COT plus its compute) and the
# step's hashing and QuickSilver products; one more commitment for b_C. Unlike the semi-honest chain
# (a random OT per step, ~22 bits), a step here costs ~110: fewer, wider digits win -- (5, 5, 5) for
# 15-bit entries (160 + 2 x 111.4 + 21.7 = 404 against 539 for the semi-honest plan's (3, 3, 3, 3, 3):
# 10.6 MB fewer at N = 16,384, d = 351, and 2 of the 4 steps' 23M COTs and D words gone).
_D_BITS = 48
_COMMIT_BITS = {"silent": 1.7 + 20, "softspoken": 32 + 64}
_STEP_WORK = 20


@lru_cache(maxsize=None)
def bound_levels(x_bits: int, engine: str = "silent") -> tuple[tuple[int, int], ...]:
    """Digit bit ranges [a, b) of the bound chain, least significant first, minimising the cost model
    above for the OT engine ``engine`` (public: both parties compute the same plan)."""
    try:
        # the final commitment of b_C is the same for every plan: it does not enter the choice
        return laplacian.cheapest_digit_plan(x_bits, _D_BITS + 2 * _COMMIT_BITS[engine] + _STEP_WORK)
    except ValueError as exc:
        raise ProtocolError(str(exc)) from None


def prepare_server(XT: np.ndarray, pp: PublicParams) -> None:
    """Make (and keep, for a read-only XT) the server's per-model histogram plans of the public
    digit plan now, before any client: sessions then find them made."""
    levels = bound_levels(pp.x_bits, pp.ot_engine)
    _histogram_plans(XT, levels)
    laplacian._server_tables(XT, levels, (XT.shape[1] + 63) // 64, max_bytes=_TABLES_MAX_BYTES)


def _histogram_plans(XT: np.ndarray, levels) -> list:
    """One :class:`HistogramPlan` per digit level, cached per read-only XT (made per call else)."""
    key = tuple(levels)

    def make() -> tuple[tuple, list]:
        return key, [histogram_plan(((XT >> U64(a)) & U64((1 << (b - a)) - 1)).astype(np.intp), b - a)
                     for a, b in levels]
    if XT.flags.writeable:
        return make()[1]
    return _PLANS.get(XT, make, fits=lambda v: v[0] == key)[1]


def check_words(dig: np.ndarray | None, m: int, chi: np.ndarray, gamma: np.ndarray, r: np.ndarray,
                c_s: np.ndarray | None = None, delta: np.ndarray | None = None,
                plan: HistogramPlan | None = None) -> np.ndarray:
    """Server, step 2e: g_kj(v) for every column j and candidate v, (d, 2^m, 3) uint16.

    ``dig`` (d, N) the digit of x; ``chi`` (d, N, 3); ``r`` the tables' mask bits (d, N) (r for
    digit 0, r_A above); ``c_s``, ``delta`` (d, N) bits for k >= 1 (None at digit 0). With
    H(t) = XOR of chi over the points whose digit is t, H'(t) the same over c_S = 1 and R the XOR of
    chi over r = 1: sum_i chi_i A_i(v) = XOR_{t < v} H(t) ^ H'(v) ^ R (A = [x < v] ^ (c_S [x == v])
    ^ r), and sum_i chi_i s_i(v) = H(v) ^ sum_i chi_i delta_i (s = [x == v] ^ delta). ``plan``:
    :func:`histogram_plan` of ``dig``, if made before."""
    ch = _lanes(chi)
    zero = U64(0)
    if plan is None:
        plan = histogram_plan(dig, m)
    H = xor_histogram(None, m, ch, plan)
    R = np.bitwise_xor.reduce(np.where(r.astype(bool), ch, zero), axis=1)
    below = np.zeros_like(H)
    np.bitwise_xor.accumulate(H[:, :-1], axis=1, out=below[:, 1:])
    if c_s is None:
        return _unlanes(below ^ R[:, None])
    Hc = xor_histogram(None, m, np.where(c_s.astype(bool), ch, zero), plan)
    A = below ^ Hc ^ R[:, None]
    S = H ^ np.bitwise_xor.reduce(np.where(delta.astype(bool), ch, zero), axis=1)[:, None]
    return _unlanes(A) ^ g2.gf_mul(_unlanes(S), gamma)


def _mac_words(g: np.ndarray, K: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """W = K + g Delta per slot, as one uint64 word per entry (6 bytes travel): (d, 2^m, 1)."""
    return _lanes(K[:, None, :] ^ g2.gf_mul(g, delta))[:, :, None]


class CheckChallenge:
    """chi per digit step ((n, 3) uint16) and gamma ((3,) uint16) from the server's seed: elements
    k n .. (k + 1) n - 1 of :func:`~protocols.mpc.gf2_auth.expand_chi`'s stream are step k's chi,
    element ``steps`` n is gamma. Step k's chi is drawn when asked for (:meth:`chi`), into one
    buffer reused by every step (valid until the next call): 1/steps of the memory of drawing all."""

    def __init__(self, seed: bytes, n: int, steps: int) -> None:
        if len(seed) != SEED_BYTES:
            raise ProtocolError("check seed of the wrong length")
        self.seed, self.n, self.steps = bytes(seed), int(n), int(steps)
        self.gamma = g2.expand_chi(self.seed, 1, start=self.n * self.steps)[0]
        self._buf: np.ndarray | None = None

    def chi(self, k: int) -> np.ndarray:
        if not 0 <= k < self.steps:
            raise IndexError(k)
        if self._buf is None:
            self._buf = np.empty((self.n, g2.SLOTS), dtype=np.uint16)
        return g2.expand_chi(self.seed, self.n, start=k * self.n, out=self._buf)


def expand_check(seed: bytes, n: int, steps: int) -> CheckChallenge:
    """The check's chi (per digit step) and gamma from the server's seed (:class:`CheckChallenge`)."""
    return CheckChallenge(seed, n, steps)


@dataclass
class ChainResult:
    """One party's output of the bound chain: its share (d, N) bits of b = [x < q'] and the
    commitment of the client's share b_C (the products read their choice bits through it)."""

    share: np.ndarray
    final: object  # gf2_auth ClientBits / ServerBits of b_C


def run(party: PartyContext, pp: PublicParams, N: int, *, q_pads, XT: np.ndarray | None = None,
        q: np.ndarray | None = None) -> ChainResult:
    """Steps 0-2e, both roles (the server passes ``XT`` (d, N), the client its committed ``q`` (d,));
    ``q_pads`` step 1's random-OT keys of q's bits (client (d, B, 16); server the pair)."""
    server = party.role == SERVER
    d = XT.shape[0] if server else q.shape[0]
    n = d * N
    W = (N + 63) // 64
    levels = bound_levels(pp.x_bits, pp.ot_engine)
    K = len(levels) - 1
    commits: list = []  # commitment of c^k_C, k = 0..K
    s_commits: list = [None]  # of s at step k (k >= 1)
    w_auth: list = [None]  # (m0, m1, key_w) / (w, mac_w) at step k
    record: list = []  # server: per step (r, c_S, delta), packed, for the check tables
    c = None
    # the server's digit tables [x < v], [x == v]: the semi-honest chain's, kept per model (made by
    # prepare_server) where they fit its cache, else made here per digit
    cached = laplacian._server_tables(XT, levels, W, max_bytes=_TABLES_MAX_BYTES) if server else None
    for k, (a, b) in enumerate(levels):
        m = b - a
        pads = rekey(q_pads, _COLUMN_DOMAIN + k)
        if k > 0:
            # a. commit c^(k-1)_C; b. the authenticated random OT on that COT
            if server:
                com = g2.commit_bits(party, CLIENT, n=n)
                m0, m1, key_w = g2.auth_random_ot(party, CLIENT, com)
                w_auth.append((m0, m1, key_w))
                com.pads = None  # used up (the random OT); the check reads the keys only
            else:
                com = g2.commit_bits(party, CLIENT, n=n, bits=_unpack(c, N).ravel())
                w_auth.append(g2.auth_random_ot(party, CLIENT, com))
                com.pad = None
            commits.append(com)
        if server:
            r = party.rng.random_u64((d, W))
            if k == 0:
                # 0. [x < v] ^ r per column, on the committed digit
                tables = np.empty((d, 1 << m, W), dtype=U64)
                for j, lt, _ in _tables_of(XT, levels, k, cached, W):
                    np.bitwise_xor(lt, r[j, None, :], out=tables[j])
                au.bound_lut(party, CLIENT, (a, b), pads=pads, tables=tables)
                record.append((r, None, None))
                c = r
                continue
            m0p = _pack(m0.reshape(d, N), W)
            delta = m0p ^ _pack(m1.reshape(d, N), W)
            # c. A = [x < v + c_S] ^ r_A, B = [x < v + 1 - c_S] ^ r_A ^ delta
            tables = np.empty((d, 1 << m, 2 * W), dtype=U64)
            for j, lt, eq in _tables_of(XT, levels, k, cached, W):
                A, B = tables[j, :, :W], tables[j, :, W:]
                np.bitwise_and(eq, c[j, None, :], out=A)
                A ^= lt
                A ^= r[j, None, :]
                np.bitwise_xor(A, eq, out=B)
                B ^= delta[j, None, :]
            au.bound_lut(party, CLIENT, (a, b), pads=pads, tables=tables)
            s_commits.append(g2.commit_bits(party, CLIENT, n=n, pads=False))  # d. the client's s (MACs only)
            record.append((r, c, delta))
            c = r ^ m0p
        else:
            got = au.bound_lut(party, CLIENT, (a, b), pads=pads, values=q, w=W if k == 0 else 2 * W)
            if k == 0:
                c = np.ascontiguousarray(got)
                continue
            A, B = got[:, :W], got[:, W:]
            s = A ^ B
            s_commits.append(g2.commit_bits(party, CLIENT, n=n, bits=client_s(_unpack(s, N)).ravel(), pads=False))
            w = _pack(w_auth[k][0].reshape(d, N), W)
            c = client_next_share(A, w, c, s)
    # the client's share of b = c^K: its commitment (the products' choice bits)
    final = (g2.commit_bits(party, CLIENT, n=n) if server
             else g2.commit_bits(party, CLIENT, n=n, bits=client_final(_unpack(c, N)).ravel()))
    commits.append(final)
    _check(party, N, d, levels, q_pads, XT, q, commits, s_commits, w_auth, record)
    return ChainResult(_unpack(c, N), final)


def _tables_of(XT: np.ndarray, levels, k: int, cached: list | None, W: int):
    """(column slice, lt, eq) blocks of digit k's tables (:func:`protocols.krr.laplacian._digit_tables`):
    the kept ones (laplacian._server_tables: column blocks in laplacian._column_blocks order) or,
    without them, one block made now."""
    a, b = levels[k]
    m = b - a
    if cached is None:
        dig = ((XT >> U64(a)) & U64((1 << m) - 1)).astype(np.intp)
        lt, eq = _digit_tables(dig, m, W)
        yield slice(0, XT.shape[0]), lt, eq
        return
    spans = laplacian._column_blocks(XT.shape[0], 1 << m, W if k == 0 else 2 * W)
    for (j0, j1), (lt, eq) in zip(spans, cached[k]):
        yield slice(j0, j1), lt, eq


def _check(party: PartyContext, N: int, d: int, levels, q_pads, XT, q, commits, s_commits, w_auth,
           record) -> None:
    """Step 2e, both roles."""
    server = party.role == SERVER
    n = d * N
    steps = len(levels)
    if server:
        seed = party.rng.random_bytes(SEED_BYTES)
        party.ch.send_array(np.frombuffer(seed, dtype=np.uint8))
    else:
        seed = party.ch.recv_array(np.uint8, (SEED_BYTES,)).tobytes()
    challenge = expand_check(seed, n, steps)
    gamma = challenge.gamma
    proof = g2.Verifier(commits[0].delta) if server else g2.Prover()
    plans = _histogram_plans(XT, levels) if server else None
    for k, (a, b) in enumerate(levels):
        m = b - a
        pads = rekey(q_pads, _CHECK_DOMAIN + k)
        chi = challenge.chi(k)
        if server:
            delta = proof.delta
            r, c_s, dl = record[k]
            g = check_words(None, m, chi.reshape(d, N, 3), gamma, _unpack(r, N),
                            None if c_s is None else _unpack(c_s, N), None if dl is None else _unpack(dl, N),
                            plan=plans[k])
            Kj = party.rng.random_u64((d,)).view(np.uint16).reshape(d, 4)[:, :3].copy()
            au.bound_lut(party, CLIENT, (a, b), pads=pads, tables=_mac_words(g, Kj, delta), widths=(6,))
            kj = np.bitwise_xor.reduce(Kj, axis=0)
            if k == 0:
                proof.add_linear(g2.weighted(chi, commits[0].key) ^ kj)
                continue
            # f_k's product c^(k-1) s and its linear terms c^k + w + gamma s in one pass (gamma is one
            # field element per slot: sum chi gamma K_s = gamma sum chi K_s)
            proof.add_products(chi, commits[k - 1].key, s_commits[k].key, lin=commits[k].key ^ w_auth[k][2],
                               y_coef=gamma)
            proof.add_linear(kj)
        else:
            words = au.bound_lut(party, CLIENT, (a, b), pads=pads, values=q, w=1, widths=(6,))
            wj = np.bitwise_xor.reduce(_unlanes(words[:, 0]), axis=0)
            if k == 0:
                proof.add_linear(g2.weighted(chi, commits[0].mac) ^ wj)
                continue
            cs = s_commits[k]
            prev = commits[k - 1]
            proof.add_products(chi, prev.bits, prev.mac, cs.bits, cs.mac, lin=commits[k].mac ^ w_auth[k][1],
                               y_coef=gamma)
            proof.add_linear(wj)
    try:
        proof.finish(party, CLIENT)
    except au.MacCheckError as exc:
        raise ChainCheckError("the client's comparison chain failed its check: session aborted") from exc


# ---- the client's local steps (module functions, so a test can replace one of them) -----------
def client_s(s_bits: np.ndarray) -> np.ndarray:
    """Step d, client: the bits s = A ^ B it commits (honest: what it received)."""
    return s_bits


def client_next_share(A: np.ndarray, w: np.ndarray, c: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Step d, client: c^k_C = A ^ w ^ c^(k-1)_C s (packed words)."""
    return A ^ w ^ (c & s)


def client_final(b_bits: np.ndarray) -> np.ndarray:
    """The bits the client commits as its share of b (honest: its chain share)."""
    return b_bits


__all__ = ["run", "bound_levels", "ChainResult", "ChainCheckError", "check_words", "xor_histogram", "histogram_plan", "HistogramPlan",
           "rekey", "expand_check", "CheckChallenge", "prepare_server"]
