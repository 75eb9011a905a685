"""Client-malicious exact Laplacian-kernel KRR prediction (``security = "client-malicious"``).

    prediction(q') = y_offset + sum_i alpha_i exp(-||x_i - q'||_1 / sigma)

Threat model: the server (model owner) is semi-honest; the client may deviate arbitrarily (any
bytes, any order, many sessions). Guarantee: per query the client learns F(q') for one q' of the
public input domain -- F_det + C + e_T of :func:`protocols.krr.gaussian_malicious.kernel_output`
on the L1 distance: the deterministic fixed-point function, at most N K' units of truncation
carries and the flooding term e_T of 2^40 N K' units that hides them (protocol 26, steps 11b and
13a there) -- **plus at most one bit: whether the session
aborted** (the leakage of dual execution, Huang-Katz-Evans 2012; below); the server learns
nothing about q'. The server counts aborts per client and refuses a client after
``serve --max-aborts`` of them (:mod:`protocols.krr.server`).

Protocol (both parties run :func:`online`; M = pp.ring_bits, B = pp.x_bits; steps 4-6 compute mod
the prime q = 2^48 - 59 since protocol 34, :mod:`protocols.mpc.fp48` -- mod 2^64 - 59 in protocols
31-32, in Z_2^128 before):
  1. The server draws a fresh MAC key Delta, uniform in F_q. The query's bits are fixed: the d B bits
     of q' are the choice bits of d B random OTs of the checked OT extension
     (:func:`~protocols.mpc.authenticated.random_choices`; KOS-style consistency check, so every
     choice bit is well defined). Nothing is sent on them yet.
  2. The semi-honest L1 chain of :func:`protocols.krr.laplacian.l1_shares` (column OTs per digit,
     random OTs chosen by the client's share bits, two products with (M-1)-bit corrections) -- the
     semi-honest protocol's own code and ring (protocol 32; mod 2^64 with 63-bit corrections
     before): shares a (server), b (client) in [0, 2^M), a + b = L (mod 2^M), on the OT engine
     ``pp.ot_engine`` names (its digit plan too): the checked SoftSpoken extension, or (protocol
     27, models of at least SILENT_OT_MIN_ELEMENTS entries, as semi-honest) silent OT, checked in
     the direction where the client chooses (below, "The chain on silent OT"). Its client-side
     choices are *not* bound: step 6 checks the result.
  3. Mask-reveal mod 2^M (protocol 34): the server sends c = a + rho (mod 2^M), 4 bytes a point,
     rho uniform on Z_2^M (:func:`draw_mask`); the client sets v = b + c over the integers
     (< 2^(M+1)) and u = v mod 2^M = L + rho (mod 2^M): the u of the Gaussian protocol's steps 10-13.
     c is *exactly* uniform whatever a is -- also when a deviating client shifted a in step 2 by
     any amount (protocols 17-32 sent c = L_S + rho mod 2^64 with rho on [0, 2^64 - 2^M): within
     2^(M-64) per point, 2^-25 per session at N = 2^14, M = 25).
     Over the integers, with kappa = [b + c >= 2^M] (the client's), lambda = [a + rho >= 2^M] and
     a_1, b_1 the shares' MSBs (for honest L < 2^(M-1) the wrap of a + b is a_1 OR b_1, so
     L = a + b - 2^M (a_1 + b_1 - a_1 b_1)):
         v - 2^M b_1 (1 - a_1) - L = rho + 2^M (a_1 - lambda)                        (*)
     whose right side the server knows; the client knows v and b_1; b_1 (1 - a_1) is a product of
     the two parties' bits, which step 4 gives the client a MAC on without telling either party
     the other's bit. (Protocol 32 lifted the shares to 64 bits with one COT per point instead and
     committed all 64 bits of u = L + rho; the same wrap formula.)
  4. MACs mod q (:func:`protocols.mpc.commit_fp48.bit_macs`, one random OT of the checked extension
     and a 6-byte correction per bit): on the M + 1 bits of v (M_v = K_v + v Delta; the random-OT
     keys are kept: step 7's bound tables read u's digits, bits [0, M) of v, through them), and one
     product OT per point with the client's choice b_1 and the server's scale 1 - a_1: the client
     gets M_beta = K_beta + b_1 (1 - a_1) Delta, the server keeps K_beta. The client's combined MAC
     is M_i = M_v,i - 2^M M_beta,i, the server's key K_i = K_v,i - 2^M K_beta,i. (M + 2) N OTs and
     6 (M + 2) N bytes: 2.65 MB at N = 2^14, M = 25, against 64 N x 8 B = 8.39 MB and step 2b's
     5 N B in protocol 32.
  5. The server draws chi_i uniform in F_q (after every MAC) and sends it as a fresh 32-byte seed
     that both parties expand (:func:`expand_chi`: AES-CTR keyed by BLAKE2b(seed), words >= q
     redrawn, so exactly uniform in F_q given the stream). For every feature j and every v of the
     public domain [0, 2^B) it computes g_j(v) = sum_i chi_i |x_ij - v| mod q (exact per 22-bit
     limb of chi: histograms over the column's values, two prefix sums, g_j(v) = T_j + 2 C_j(v) -
     v S_j; the limbs folded mod q, :func:`mac_word_tables`), and one bound table OT per feature on
     step 1's OTs (:func:`~protocols.mpc.authenticated.bound_lut`, index = the committed q'_j)
     whose entry v is the MAC word W_j(v) = K_j + g_j(v) Delta (mod q), K_j fresh uniform in F_q,
     in 6 bytes. The client obtains W_j(q'_j) only -- never g_j(q'_j) (masked by K_j), never another
     entry. 2^B x 6 bytes per feature (8 in protocols 31-32, 16 before), independent of N.
  6. Check: the client sends MW = sum_i chi_i M_i - sum_j W_j(q'_j); the server accepts iff
        MW = sum_i chi_i K_i - sum_j K_j + (sum_i chi_i (rho_i + 2^M (a_1,i - lambda_i))) Delta   (mod q),
     i.e. iff Z = sum_i chi_i e_i = 0 (mod q) with e_i = v_i - 2^M beta_i - L_i(q') - rho_i -
     2^M (a_1,i - lambda_i) (beta_i the product bit the client's MAC carries), the client holding
     only a MAC on Z. On failure the session ends here (logged as ``MacCheckError``, counted
     against the client), before anything that depends on u leaves the server.
  7.-11. Steps 10-14 of the Gaussian protocol (:func:`protocols.krr.gaussian_malicious.
     kernel_output`: G table on the committed high digit, the masked public-factor chain, the
     output, noise; server-to-client only, nothing left to check) on u = v mod 2^M, the low M
     committed bits, with the Laplacian's constant pp.c (t = c L', L' = L >> s).

Soundness of step 6 (mod q, q = 2^48 - 59): the e_i are integers fixed before chi is drawn (v and
the product choice by step 4's OTs, q' by step 1's choice bits, rho, a_1 and lambda by the server)
and small: 0 <= v_i < 2^(M+1), beta_i in {0, 1}, 0 <= L_i(q') < 2^(M-1) for every q' of the domain,
0 <= rho_i < 2^M, so |e_i| < 2^(M+3) <= 2^35 < q (M <= 32, check_params): e_i = 0 (mod q) iff
e_i = 0 -- no wrap-around case (protocols 31-32 had one: u_i + p for L_i + rho_i < 59, N 2^-58
per session). The client may pass with some e_i != 0 in two ways only: (b) sum_i chi_i e_i = 0
(mod q) with chi uniform in F_q and independent of the e_i: probability 1/q < 2^-47.99 (plus the
advantage of a distinguisher for the AES-CTR stream that tests this for fixed e); (c) e != 0
(mod q) and the MAC forged: its honest MW minus e Delta, i.e. Delta: its view -- step 4's outputs
P_c + c tau with tau one-time padded by the unchosen pad's residue (within 2^-80 of uniform per
bit: (M + 2) N 2^-80 over a session), MAC words under fresh K_j, chi -- is independent of Delta up
to that distance: probability <= 1/q + (M + 2) N 2^-80. In all Pr[pass with some e_i != 0]
<= 2^-46.99 + (M + 2) N 2^-80 (< 2^-46.9 at N = 2^14, M = 25; protocol 32: < 2^-43). So a
passing session has e_i = 0 for every i, i.e. by (*) v_i = L_i(q') + rho_i + 2^M (beta_i + a_1,i -
lambda_i), hence u_i = v_i mod 2^M = L_i(q') + rho_i (mod 2^M) exactly, with q' the query fixed by
step 1's choice bits -- whatever the client did in steps 2-4; from there the Gaussian protocol's
argument (docs/malicious.md, steps 10-13) gives F(q').

Hiding: the client sees OT outputs of the chain (masked as in the semi-honest protocol: its
view there is simulatable whatever choices it makes, laplacian.py's docstring), c (uniform on
Z_2^M whatever a is: rho), step 4's MAC outputs and corrections (uniform: each tau is one-time
padded by the pad of the choice it did not make, whatever the scale 1 - a_1 is -- the product
OT tells it nothing of a_1), chi (random), W_j(q'_j) (uniform in F_q: K_j), then the Gaussian
tail's messages. The server sees OT-extension messages (step 4's choice bits -- v's bits and b_1
-- among the choices the OT hides) and MW (its own sum for an honest client).

**The chain on silent OT (protocol 27; protocols.ot.ferret).** One engine per direction:
  * the client as Ferret *receiver* (everything the client chooses: step 1's bound OTs, the chain's
    random and column OTs, product (ii) with its choice b_C, step 4's MACs (v's bits and the
    product OT's b_1), steps 5 and 7-11's bound tables): checked mode, i.e. S1 on the checked
    SoftSpoken extension. The receiver sends nothing in the iterations and any derandomisation
    bit is valid, so its one lever was S1's column consistency (the KOS attack on Delta); checked,
    every output is a COT with a well-defined choice bit and a hidden Delta -- what the checked
    SoftSpoken extension gave.
  * the client as Ferret *sender* (product (i): its correlation q (1 - 2 b_C), the server choosing
    b_S): it may send any GGM sums, c_i and corrections. Two effects, both covered:
    (a) the server's COT outputs go wrong where the error reaches (in a pattern that may depend on
    the server's noise positions): a moves, which nothing before step 6 shows (c = a + rho
    mod 2^M hides any a exactly), and step 6 then aborts or u = L(q') + rho passes -- the
    selective-failure class below, at most one bit per aborted session, no new leakage class.
    The bits may now be about the server's noise positions instead of X (the engine lives for the
    session's queries); they count against the same bound (~K log2 S bits: ~40 for 3 aborts in
    10^4 queries), against ~55,000 bits of noise positions per main iteration (4,971 trees of
    2^11 leaves at the b11 set).
    (b) In product (i) the server chooses with its Ferret receiver's own r (reserved COTs, protocol
    28: nothing sent; in 27 it sent d = b_S ^ r), and r is its share: b_S = r, b_S ^ b_C = b =
    [x_ij < q_j] with b_C the client's own share, so the client knows r exactly where it knows b,
    and b where it could predict r. Hence the server's privacy needs r pseudorandom to the client
    (LPN, as in the semi-honest protocol, where a semi-honest client is in the same position), and
    a deviating sender must not be able to move r. It cannot: r = e ^ A u
    is computed from the server's own randomness only -- the engine sets the noise bit at alpha
    itself (until protocol 27 it read it from bit 0 of c_i; a sender clearing that bit erased
    the noise, made r = A u linear, and could then solve for u from d on columns where it knows b
    (e.g. q_j = 0 in the chain: r = d ^ b_C) and read b on every other column: a whole session's
    comparison bits for one abort; tests/protocols/ot/test_ferret.py
    ::test_a_deviating_sender_cannot_move_the_receivers_choice_bits).
  The server's view of the client's choices: as semi-honest (the client's r pseudorandom under
  LPN). Tests: tests/protocols/krr/test_laplacian_malicious.py::test_silent_*.

**The one-bit leakage (a selective failure, bounded by the abort counter).** Step 2's choices
are not bound, and the client is the OT *sender* in the chain's first product COT. A deviation
there changes its share of L_i by an amount that depends on X; the client must then commit u
adjusted by its *guess* of that amount, and step 6 passes iff the guess was right. So the abort
reveals one predicate of X per session, e.g.: adding delta to its COT correlation of element
(i, j) shifts L_i by delta b_S,ij, where b_S = [x_ij < q_j] xor b_C (b_C its own share bit):
guessing "no shift" passes iff [x_ij < q_j] = b_C -- one threshold bit of one training entry per
session, so about B sessions (15 at CM on the 2^-8 grid) to learn a coordinate by binary search,
about half of them aborting; flipping its random-OT choice at the top digit flips b_ij with
probability 1/2 (the server's random delta) and then shifts L_i by -2 |x_ij - q_j| (a noisy
"is x_ij = q_j +- g"); flipping its product-OT choice b_1 at point i (step 4, protocol 34; step
2b's lift choice in protocol 32, with the complementary outcome) gives it a MAC on b_1' (1 - a_1),
so the checked sum is off by +-2^M (1 - a_1) -- the session aborts iff a_1 = 0, a_1 the MSB of
the server's share a = L_i - b mod 2^M, i.e. [L_i < b <= L_i + 2^(M-1)] for honest L_i (a
threshold bit on the distance at the client's own share b), unless it also moves v by its guess:
one bit of the same kind, no new class (tested). The chain's shares are mod 2^M: a deviating
client's shifts of a are mod 2^M (a shift that carries a past 2^M also moves a_1 and lambda,
so the right side of (*) moves by an X-dependent multiple of 2^M): v is still off by an
X-dependent amount that c hides and step 6 catches unless guessed -- the same one bit. For
comparison, the kink attack learns a coordinate in ~19 honest predictions (docs/attacks.md) through any prediction interface. With at most K aborts
allowed per client and S checked queries (each query of a session runs step 6; the first failure
ends the session), the abort pattern carries at most log2(sum_{k<=K} C(S, k)) bits
(about K log2 S: 3 aborts in 10^4 queries ~ 40 bits). Binding the chain's share-dependent
choices (committing every comparison share and checking each digit step) would remove the bit;
not built. The design with measured hot loops (docs/malicious.md, "Design: the Laplacian chain
without the bit") comes to ~3.4x the semi-honest session's bytes: holding the client to its
random-OT outputs costs a 48-bit MAC correction per element and digit step.
"""
from __future__ import annotations

import numpy as np

from protocols.common import KernelModelParams
from protocols.krr import gaussian_malicious, laplacian
from protocols.krr.chain import CLIENT, SERVER
from protocols.krr.expsum import encode_weights
from protocols.krr.params import LAPLACIAN_MALICIOUS_MAX_RING_BITS, LAPLACIAN_MALICIOUS_MAX_X_BITS, PublicParams
from protocols.mpc import authenticated as au
from protocols.mpc import commit_fp48, fp48
from protocols.mpc.context import PartyContext
from protocols.mpc.pages import prefer_small_pages
from protocols.mpc.randomness import SecureRandom
from protocols.ot.crypto import derive_key
from secureml.errors import ModelError, ProtocolError

U64 = np.uint64
#: bytes of the seed step 5's chi is expanded from (both parties expand it)
CHI_SEED_BYTES = 32
#: widest encoded entry whose per-feature MAC-word table (2^B x 6 bytes) this protocol sends
MAX_X_BITS = LAPLACIAN_MALICIOUS_MAX_X_BITS
#: entries of the MAC-word tables built and sent per block of features
_TABLE_ENTRIES = 1 << 20


class ChainCheckError(au.MacCheckError):
    """Step 6 failed: the client's committed u is not L(q') + rho mod 2^M (a deviating client)."""


def check_params(pp: PublicParams) -> None:
    """ProtocolError (naming ``--security semi-honest``) if this model has no client-malicious
    Laplacian plan: the shared tail's plan, entries of at most MAX_X_BITS bits, distances of at
    most LAPLACIAN_MALICIOUS_MAX_RING_BITS bits (c travels in 4 bytes, |e_i| < 2^(M+3) < q)."""
    if pp.x_bits > MAX_X_BITS:
        raise ProtocolError(f"the client-malicious Laplacian protocol serves entries of at most {MAX_X_BITS} bits "
                            f"(its check sends 2^x_bits x 6 bytes per feature), this model's have {pp.x_bits}: "
                            "train on a coarser grid or serve it with --security semi-honest")
    if pp.ring_bits > LAPLACIAN_MALICIOUS_MAX_RING_BITS:
        raise ProtocolError(f"the client-malicious Laplacian protocol needs distances of at most "
                            f"{LAPLACIAN_MALICIOUS_MAX_RING_BITS} bits: serve it with --security semi-honest")
    gaussian_malicious.plan(pp)


def draw_mask(rng, n: int, M: int) -> np.ndarray:
    """Step 3's rho: uniform on Z_2^M. c = a + rho (mod 2^M) is then uniform whatever the server's
    share a is -- also one a deviating client shifted in the chain -- exactly, not statistically."""
    return rng.random_below(n, M)


def expand_chi(seed: bytes, n: int) -> np.ndarray:
    """Step 5's chi from the server's seed, both parties: n residues mod q from the AES-CTR stream
    keyed by BLAKE2b(seed) (:class:`~protocols.mpc.randomness.SecureRandom`), exactly uniform in
    F_q given the stream (:func:`~protocols.mpc.fp48.uniform` redraws the top-48-bit words >= q, the
    same words on both sides: the stream is deterministic)."""
    if len(seed) != CHI_SEED_BYTES:
        raise ProtocolError("chi seed of the wrong length")
    return fp48.uniform(SecureRandom(derive_key(b"secureml/lap-chi", seed)), n)


def mac_word_tables(XT: np.ndarray, chi: np.ndarray, x_bits: int, delta: np.uint64, K: np.ndarray) -> np.ndarray:
    """Step 5, server: W_j(v) = K_j + g_j(v) Delta (mod q, q = 2^48 - 59) for the features of ``XT``
    (d', N) and every v in [0, 2^x_bits), g_j(v) = sum_i chi_i |x_ij - v|. Returns (d', 2^B) uint64.

    g_j(v + 1) - g_j(v) = 2 A_j(v) - S_j with A_j(v) = sum_{x_ij <= v} chi_i, S_j = A_j(max), so
    g_j(v) = T_j + 2 C_j(v) - v S_j with T_j = g_j(0) = sum_i chi_i x_ij and C_j(v) = sum_{u < v} A_j(u).
    Delta is folded into chi first (chi'_i = chi_i Delta mod q: N products, not d 2^B), so the
    tables are g'_j(v) = sum_i chi'_i |x_ij - v| = g_j(v) Delta (mod q). Exact: chi' (< 2^48) is
    split into limbs c_l of w bits (:func:`_limb_bits`: two limbs at N = 16,384, B = 15); per limb the
    per-value weight (< N 2^w <= 2^53, exact in float64's bincount), A, C and the limb's own
    g_l(v) = sum_i c_l,i |x_ij - v| < N 2^(w + B) <= 2^64 are exact in uint64 (g_l's formula wraps
    mod 2^64 on the way, its value does not); then g' = sum_l 2^(w l) g_l (< 2^(48 + log2 N + B),
    exact as a limb pair), reduced mod q once with shifts (numpy-vectorised: no per-v loop)."""
    d, N = XT.shape
    if N <= _FAST_MAX_N and x_bits <= _FAST_MAX_X_BITS:
        return _mac_word_tables_mod_q(XT, chi, x_bits, delta, K)
    V = 1 << x_bits
    w = _limb_bits(N, x_bits)
    chid = fp48.mul(chi, delta)
    idx = (np.arange(d, dtype=np.int64)[:, None] * V + XT.astype(np.int64)).ravel()
    vals = np.arange(V, dtype=U64)[None, :]
    XTu = XT.astype(U64)
    hi = lo = None  # g' = sum_l 2^(w l) g_l, accumulated exactly as (hi, lo), reduced once
    for shift in range(0, 48, w):  # chi' < 2^48
        cu = (chid >> U64(shift)) & U64((1 << w) - 1)
        a = np.bincount(idx, weights=np.broadcast_to(cu.astype(np.float64)[None, :], (d, N)).ravel(),
                        minlength=d * V)
        A = np.cumsum(np.rint(a).astype(U64).reshape(d, V), axis=1, dtype=U64)
        gl = np.zeros((d, V), dtype=U64)
        np.cumsum(A[:, :-1], axis=1, dtype=U64, out=gl[:, 1:])  # C_l(v)
        T = (XTu * cu[None, :]).sum(axis=1, dtype=U64)  # g_l(0) < N 2^(w + B) <= 2^64
        gl = (gl << U64(1)) + T[:, None] - vals * A[:, -1:]
        if shift == 0:
            hi, lo = np.zeros_like(gl), gl
        else:
            part = gl << U64(shift)
            lo = lo + part
            hi = hi + (gl >> U64(64 - shift)) + (lo < part).astype(U64)
    # g' = sum_i chi'_i |x_ij - v| < 2^(48 + nb + B): hi < 2^(nb + B - 16) <= 2^40 (_limb_bits)
    return fp48.add(fp48.reduce128_short(hi, lo), K[:, None])


#: :func:`_mac_word_tables_mod_q`'s range: A_j(v) <= N (q - 1) < 2^62 exact in uint64, and its
#: cumulative sum of 2^B - 1 folded steps (each < 2^48 + 2^22) plus T + K (< 2q) below 2^64
_FAST_MAX_N = 1 << 14
_FAST_MAX_X_BITS = 15
_Q = U64(fp48.P)
_M32 = U64((1 << 32) - 1)


def _mac_word_tables_mod_q(XT: np.ndarray, chi: np.ndarray, x_bits: int, delta: np.uint64,
                           K: np.ndarray) -> np.ndarray:
    """:func:`mac_word_tables` for N <= 2^14, B <= 15 (the same values), in ~20 in-place passes over
    the (d', 2^B) tables instead of ~45 with fresh temporaries (0.70-1.07 -> 0.27-0.35 s of the server's
    CPU per query at N = 16,384, d = 351: docs/malicious/stop10-lapcpu/micro_mac_word_tables.py).

    g'_j(v) = T_j + sum_{u < v} D_j(u) with D_j(u) = 2 A_j(u) - S_j (the difference g'(u + 1) -
    g'(u)), all mod q. Bounds: chi' < q, so A_j(u) <= S_j <= N (q - 1) < 2^62 is exact in uint64
    from two exact float64 histograms of chi's 24-bit halves; D_j(u) is taken as 2 A_j(u) + c_j with
    c_j = ceil'(S_j / q) q - S_j in (0, q] (a multiple of q minus S_j: nonnegative, < 2^63 + 2^48);
    one fold brings each below 2^48 + 59 2^16, so the cumulative sum over 2^B - 1 <= 2^15 steps stays
    below 2^63 + 2^37, and with T_j + K_j (< q) one fold and one conditional subtraction give the
    residue."""
    d, N = XT.shape
    V = 1 << x_bits
    chid = fp48.mul(chi, delta)
    idx = (np.arange(d, dtype=np.int64)[:, None] * V + XT.astype(np.int64)).ravel()
    halves = []
    for c in (chid >> U64(24), chid & U64((1 << 24) - 1)):  # per-value sums < N 2^24 <= 2^38: exact in float64
        halves.append(np.bincount(idx, weights=np.broadcast_to(c.astype(np.float64)[None, :], (d, N)).ravel(),
                                  minlength=d * V).astype(U64).reshape(d, V))
    A, tmp = halves
    A <<= U64(24)
    A += tmp  # the per-value sums of chi' (< 2^62)
    np.cumsum(A, axis=1, out=A)  # A_j(v) = sum_{x_ij <= v} chi'_i <= S_j
    S = A[:, -1].copy()
    A <<= U64(1)
    A += ((S // _Q + U64(1)) * _Q - S)[:, None]  # D_j(u) + a multiple of q, < 2^64
    fp48.fold_inplace(A, tmp)
    out = tmp  # reused: the fold no longer needs it
    out[:, 0] = 0
    np.cumsum(A[:, :-1], axis=1, out=out[:, 1:])  # sum_{u < v} D_j(u), < 2^63 + 2^37
    # T_j = sum_i chi'_i x_ij mod q from chi's 32-bit halves (each sum < 2^(32 + 15 + 14) = 2^61)
    T = fp48.add(fp48.reduce((XT * (chid & _M32)[None, :]).sum(axis=1, dtype=U64)),
                 fp48.mul(fp48.reduce((XT * (chid >> U64(32))[None, :]).sum(axis=1, dtype=U64)), U64(1 << 32)))
    out += fp48.add(T, K)[:, None]
    fp48.fold_inplace(out, A)  # < 2^48 + 2^22 < 2q
    np.subtract(out, _Q, out=out, where=out >= _Q)
    return out


def _limb_bits(n: int, x_bits: int) -> int:
    """The widest limb w for :func:`mac_word_tables`: n (2^w - 1)(2^B - 1) < 2^64 keeps a limb's
    g_l exact in uint64, n 2^w <= 2^53 its per-value weights exact in float64; n 2^B <= 2^56 keeps
    the tables' high word short enough for :func:`fp48.reduce128_short`."""
    nb = max(1, (n - 1).bit_length())
    w = min(64 - nb - x_bits, 53 - nb)
    if w < 1 or nb + x_bits > 56:
        raise ProtocolError("too many training points for step 5's exact tables")
    return w


def _feature_blocks(d: int, x_bits: int):
    step = max(1, _TABLE_ENTRIES >> x_bits)
    for a in range(0, d, step):
        yield a, min(d, a + step)


def check_offset(M: int, rho: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Server, step 6: rho_i + 2^M (a_1,i - lambda_i) mod q, the part of the honest
    v_i - 2^M b_1,i (1 - a_1,i) - L_i that the server knows (a_1 = MSB of its share a, lambda =
    [a + rho >= 2^M], the wrap of c)."""
    a1 = a >> U64(M - 1)
    lam = (a + rho) >> U64(M)
    return fp48.sub(fp48.add(rho, a1 << U64(M)), lam << U64(M))


# ---- the client's local steps (module functions, so a test can replace one of them) -----------
def client_chain_query(q: np.ndarray) -> np.ndarray:
    """Step 2, client: the query it feeds the chain (honest: the committed one)."""
    return q


def client_masked(b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Step 3, client: v = b + c over the integers (< 2^(M+1)); u = v mod 2^M = L + rho mod 2^M."""
    return b + c


def client_product_choice(b1: np.ndarray) -> np.ndarray:
    """Step 4, client: its choice bits of the product OT (honest: the MSBs b_1 of its chain shares)."""
    return b1


def client_check_mac(mac: np.ndarray, chi: np.ndarray, words: np.ndarray) -> int:
    """Step 6, client: sum_i chi_i M_i - sum_j W_j (mod q)."""
    return int(fp48.sub(fp48.total(fp48.mul(mac, chi)), fp48.total(words)))


def commit_query(party: PartyContext, pp: PublicParams, *, model: KernelModelParams | None = None,
                 q: np.ndarray | None = None):
    """Step 1, both roles (this protocol's and :mod:`protocols.krr.laplacian_strict`'s): the query's
    d B bits as the choice bits of d B random OTs of the checked extension. Server (``model``: its
    weights' width is checked first): (Delta in F_q, (m0, m1) each (d, B, 16)); client (its encoded
    ``q``, refused if wider than the public bound): (q as uint64 (d,), its keys (d, B, 16))."""
    d, xb = pp.n_features, pp.x_bits
    if party.role == SERVER:
        _, need = encode_weights(model.dual_coef, pp.weight_frac_bits)
        if need > pp.weight_bits:
            raise ModelError("weights wider than the advertised weight_bits")
        delta = commit_fp48.new_delta(party)
        m0, m1 = au.random_choices(party, CLIENT, n=d * xb)
        return delta, (m0.reshape(d, xb, 16), m1.reshape(d, xb, 16))
    q = np.ascontiguousarray(q, dtype=U64).ravel()
    if q.size and int(q.max()) >> xb:
        raise ProtocolError("query wider than the public bound")
    qbits = ((q[:, None] >> np.arange(xb, dtype=U64)[None, :]) & U64(1)).astype(np.uint8).ravel()
    return q, au.random_choices(party, CLIENT, n=d * xb, choices=qbits).reshape(d, xb, 16)


def online(party: PartyContext, pp: PublicParams, *, model: KernelModelParams | None = None,
           XT: np.ndarray | None = None, q: np.ndarray | None = None, lam: int = au.STAT_BITS) -> dict | int:
    """One query, both roles. Server: ``model`` and its encoded, transposed training data ``XT``
    (d, N); returns a record of its randomness (rho mod 2^M, r, noise) for tests. Client: its
    encoded ``q`` (d,); returns y (mod 2^R, scale 2^scale_bits of the tail's plan). Raises
    :class:`ChainCheckError` on the server when step 6 fails."""
    check_params(pp)
    # both parties: no huge-page faults on the chain's large arrays (protocols.mpc.pages; the
    # server has it from prepare_server already)
    prefer_small_pages()
    N, d, M, xb = pp.n_train, pp.n_features, pp.ring_bits, pp.x_bits
    low = U64((1 << M) - 1)
    top = U64(1) << U64(M)
    if party.role == SERVER:
        # 1. Delta (in F_q, q = 2^48 - 59); the query's bits as choice bits of d B random OTs (checked extension)
        delta, (m0, m1) = commit_query(party, pp, model=model)
        # 2. the L1 chain, shares mod 2^M (the semi-honest protocol's)
        a = laplacian.l1_shares(party, pp, N, XT=XT)
        # 3. mask-reveal mod 2^M: c = a + rho is uniform whatever a is
        rho = draw_mask(party.rng, N, M)
        party.ch.send_array(np.ascontiguousarray((a + rho) & low, dtype="<u4"))
        # 4. MACs on the bits of v = b + c (M + 1 bits) and on b_1 (1 - a_1) (the product OT)
        scales = np.ones((N, M + 2), dtype=U64)
        scales[:, M + 1] = U64(1) - (a >> U64(M - 1))
        keys = commit_fp48.bit_macs(party, CLIENT, n=N, bits=M + 2, delta=delta, scales=scales)
        key = fp48.sub(commit_fp48.value_mac(keys.key[:, :M + 1]), fp48.mul(keys.key[:, M + 1], top))
        # 5. chi after every MAC; MAC words of g_j on the committed q'_j
        seed = party.rng.random_bytes(CHI_SEED_BYTES)
        party.ch.send_array(np.frombuffer(seed, dtype=np.uint8))
        chi = expand_chi(seed, N)
        K = fp48.uniform(party.rng, d)
        for j0, j1 in _feature_blocks(d, xb):
            W = mac_word_tables(XT[j0:j1], chi, xb, delta, K[j0:j1])
            au.bound_lut(party, CLIENT, (0, xb), pads=(m0[j0:j1], m1[j0:j1]), tables=W[:, :, None],
                         widths=(fp48.BYTES,))
        # 6. the check, before anything that depends on u leaves the server
        got = int(party.ch.recv_array(np.dtype("<u8"), (1,))[0])
        want = int(fp48.add(fp48.sub(fp48.total(fp48.mul(chi, key)), fp48.total(K)),
                            fp48.mul(fp48.total(fp48.mul(chi, check_offset(M, rho, a))), delta)))
        if got != want:
            raise ChainCheckError("the client's masked L1 distances failed their check: session aborted")
        # 7.-11. the Gaussian protocol's steps 10-14 on the checked u = v mod 2^M
        return gaussian_malicious.kernel_output(party, pp, rho=rho, delta=delta, u_pads=keys.pads,
                                                model=model, lam=lam)
    # 1. q's bits as choice bits
    q, pads = commit_query(party, pp, q=q)
    # 2. the chain
    b = laplacian.l1_shares(party, pp, N, q=client_chain_query(q))
    # 3. v = b + c (the server's c is below 2^M: a word >= 2^M is refused)
    c = party.ch.recv_array(np.dtype("<u4"), (N,)).astype(U64)
    if bool((c >> U64(M)).any()):
        raise ProtocolError("malformed masked share")
    v = client_masked(b, c)
    # 4. MACs on v's M + 1 bits and on b_1 (1 - a_1)
    bits = ((v[:, None] >> np.arange(M + 1, dtype=U64)[None, :]) & U64(1)).astype(np.uint8)
    choice = client_product_choice((b >> U64(M - 1)).astype(np.uint8))
    cm = commit_fp48.bit_macs(party, CLIENT, n=N, bits=M + 2, choices=np.concatenate([bits, choice[:, None]], axis=1))
    mac = fp48.sub(commit_fp48.value_mac(cm.mac[:, :M + 1]), fp48.mul(cm.mac[:, M + 1], top))
    # 5. chi; the MAC words at the committed q'_j
    chi = expand_chi(party.ch.recv_array(dtype=np.uint8, shape=(CHI_SEED_BYTES,)).tobytes(), N)
    got = [au.bound_lut(party, CLIENT, (0, xb), pads=pads[j0:j1], values=q[j0:j1], w=1, widths=(fp48.BYTES,))
           for j0, j1 in _feature_blocks(d, xb)]
    words = np.concatenate(got)[:, 0]
    # 6. the combined MAC (a residue mod q in an 8-byte word)
    party.ch.send_array(np.array([client_check_mac(mac, chi, words)], dtype="<u8"))
    party.ch.flush()
    # 7.-11.
    return gaussian_malicious.kernel_output(party, pp, u=v & low, u_pads=cm.pads, lam=lam)


def prepare_server(model: KernelModelParams, pp: PublicParams) -> np.ndarray:
    """The server's encoded training data, transposed (d, N): the semi-honest protocol's
    (query-independent, cached on the model under the same key)."""
    return laplacian.prepare_server(model, pp)


def server_online(party: PartyContext, pp: PublicParams, k: int, model: KernelModelParams) -> None:
    """Model owner's side of k queries, one :func:`online` run each."""
    XT = prepare_server(model, pp)
    for _ in range(k):
        online(party, pp, model=model, XT=XT)


def client_online(party: PartyContext, pp: PublicParams, Q: np.ndarray) -> np.ndarray:
    """Query owner's side: the predictions for the rows of Q (k, d)."""
    enc = pp.encode_features(np.atleast_2d(Q), "query")
    return np.array([gaussian_malicious.decode(pp, online(party, pp, q=q)) for q in enc])


def reference(pp: PublicParams, model: KernelModelParams, XT: np.ndarray, q: np.ndarray, rho: np.ndarray,
              masks: list[np.ndarray] | None = None) -> int:
    """F_det(q') for the server's rho in Python integers; with the server's chain ``masks`` (its
    record) F_det + C, the honest output before e_T and e, bit-exact (tests)."""
    L = np.abs(XT.astype(object) - np.asarray(q).astype(object)[:, None]).sum(axis=0)
    return gaussian_malicious.reference_from_distances(pp, model, L, rho, masks)


__all__ = ["online", "server_online", "client_online", "reference", "prepare_server", "check_params", "expand_chi",
           "mac_word_tables", "check_offset", "draw_mask", "ChainCheckError", "MAX_X_BITS"]
