"""The products step of the bit-free Laplacian chain (docs/malicious.md, "Design: the Laplacian chain
without the bit", step 4), with the client only *receiving*.

Inputs, per element (i, j) of the N x d training matrix X (entries < 2^B, B = ``x_bits``):
the comparison bit b_ij = [x_ij < q_j] is XOR-shared, b = b_S xor b_C, server b_S, client b_C.
The client's b_C bits are **committed**: b_C,ij is the choice bit of a random OT of the checked
extension whose pads the caller passes (element index i d + j, row-major: client m_(b_C) (N d, 16),
server (m_0, m_1); :func:`protocols.mpc.authenticated.random_choices`). The query q (d entries
< 2^B) is committed by step 1's random OTs on its bits (value-major, least significant first:
(d, B, 16) or (d B, 16)). Output: additive shares mod 2^M (M = ``ring_bits``) of

    S_i = sum_j (q_j - x_ij) b_ij          server s_S (N,), client s_C (N,), s_S + s_C = S (mod 2^M).

Method. With sigma_ij = 1 - 2 b_S,ij (= +-1 mod 2^M), b = b_S + b_C sigma (over the integers).
  1. One vector COT per element on the committed b_C pads (:func:`~protocols.mpc.authenticated.
     vole_on_pads`, domain ``domain``), two M-bit words, correlations (x sigma, sigma) mod 2^M:
     the client gets y_ij = T1_ij + b_C,ij x_ij sigma_ij and a_ij = T2_ij + b_C,ij sigma_ij, the
     server keeps T1, T2 (vole_on_pads: the chooser gets P_c + c tau with tau = P_0 + corr - P_1,
     i.e. P_0 + c corr; the sender keeps P_0). 2 ceil(M / 8) bytes per element, server to client.
  2. x b = x b_S + (y - T1); q b = q b_S + q (a - T2) = q P + q a with P = b_S - T2 (mod 2^M).
     The client forms sum_j q_j a_ij itself; P q is the checked lattice matvec
     (:mod:`protocols.mpc.he_matvec_checked`) on the server's fresh P, its proof's MACs on q's bits
     taken on step 1's pads (domain ``q_domain``: :func:`~protocols.mpc.he_matvec_checked.commit_query`),
     so the client's ciphertexts are bound to the committed q. P's entries are M bits wide, the
     query's B: the matvec's plan takes the matrix width apart from the query's (``w_bits = M``,
     layout "wide", the default: the proof still commits the d B query bits; only the noise bound,
     the flooding and the reply format grow). Layout "stacked" instead splits P into limbs of at most
     B bits, P = sum_l 2^(l B) P_l, stacked as the rows of one matrix (L N x d, L = ceil(M / B)): one
     key, one set of ciphertexts, one proof, L N reply rows. :func:`lattice_bytes` compares them
     (and L separate matvecs); at N = 16,384, d = 351, B = 15, M = 25 "wide" sends 16,417,135 B,
     "stacked" 22,405,482 B, per limb 32,834,270 B (the same at M = 24, the ring
     :mod:`protocols.krr.laplacian_strict` runs this step in: it needs S mod 2^(M-1) only).
  3. s_S = (P q)_S - sum_j x_ij b_S,ij + sum_j T1_ij,  s_C = (P q)_C + sum_j q_j a_ij - sum_j y_ij.

What each party sees. The client: per element two words P_c + c tau (P_c the hash of the pad it
holds) and the corrections tau = P_0 + corr - P_1, one-time padded (mod 2^M) by the hash of the pad
it lacks (correlation robustness of the TCCR hash, as for every COT on these pads), so its words
y, a are pseudorandom and independent of b_S and X (for c = 0 they are P_0 itself, for c = 1
P_0 + corr with P_0 unknown to it); then the checked lattice's messages
(:mod:`~protocols.mpc.he_matvec_checked`: an RLWE-hidden c1, a flooded reply within 2^-40 of one
independent of P; its share (P q)_C = (P q) + R is masked by the server's uniform R). P = b_S - T2
is uniform mod 2^M (T2 is) and fresh per call, but b = P + a, so P is exactly what the lattice must
hide, and does. The server: the OT messages of step 1 (it only sends there) and the lattice's key,
ciphertexts and proof (RLWE under the client's key; the proof is zero knowledge against a
semi-honest server, :mod:`protocols.mpc.bfv_proof`), so nothing about q or b_C.

Why a deviating client gains nothing here. Every message of the products goes from the server to
the client, except the lattice's, and:
  * its choice bits are the committed ones: b_C,ij is fixed by the random OT (a consistency-checked
    extension), and every word it can compute is either P_c + c tau for its own pad (the honest
    output: c = b_C), or that word plus a multiple of tau -- an amount it received, so it knows
    it -- or a function of the pad it lacks (pseudorandom to it). Passing "flipped choices" gives
    P_c + (1 - c) tau = honest output + (1 - 2c) tau: its shares y, a (and so s_C) move by
    amounts it knows, while the b in S stays b_S xor (committed b_C). In general its share moves by
    a function of its own view only, never by an amount that depends on X or b_S; the server's share
    does not move at all (it received nothing);
  * the lattice step: its key and ciphertexts are proven well formed and their messages bound to the
    bits of q that step 1's random OTs fixed (the server aborts with MacCheckError before anything
    computed from them leaves, and that abort depends only on the client's own messages and its
    commitment, never on X); after a passing proof its share is (P q) + R for the committed q, and
    any later change it makes is again an amount it knows.
So the client's final share is s_C(honest) + e with e computed from its own view, and a later check
(the chain's, on committed values) sees exactly that e: it either is caught whatever X is, or it is
harmless. Soundness of this step: the OT extension's consistency check and the lattice proof's
(~2^-49 per prime; :mod:`protocols.mpc.bfv_proof`).

Threat model: semi-honest server, any client.
"""
from __future__ import annotations

import numpy as np

from protocols.krr.chain import CLIENT
from protocols.mpc import authenticated as au
from protocols.mpc import bfv_proof, he_matvec_checked, rlwe
from protocols.mpc.context import PartyContext
from secureml.errors import DataError, ProtocolError

U64 = np.uint64
#: hash domain of the products' vector COTs on the b_C pads (binding.py uses 1-3 on q's pads)
PRODUCTS_DOMAIN = 7
#: hash domain of the lattice proof's MACs on step 1's q pads
QUERY_MAC_DOMAIN = 8
_WORDS = 2  # (x sigma, sigma)


LAYOUTS = ("wide", "stacked")


def limb_bits(x_bits: int, ring_bits: int) -> tuple[int, int]:
    """(width, count) of the limbs P is split into: width min(B, M), count ceil(M / width)."""
    w = min(x_bits, ring_bits)
    return w, -(-ring_bits // w)


def vole_bytes_per_element(ring_bits: int) -> int:
    """Bytes of step 1 per element (server to client): two words of ceil(M / 8) bytes each (the
    random OTs are the b_C commitment's, counted there)."""
    return _WORDS * -(-ring_bits // 8)


def lattice_bytes(n_rows: int, d: int, x_bits: int, ring_bits: int) -> dict[str, int]:
    """Bytes of step 2's lattice matvec per query, from the plan functions (binding.cross_term_bytes's
    accounting: plan estimate + witness OTs at 16 B + q's MACs), per layout: "wide" (one matvec of
    N rows, M-bit matrix entries), "stacked" (one matvec on the L N stacked limb rows) and
    "per_limb" (L matvecs of N rows, not built)."""
    ring = rlwe.modulus()
    w, L = limb_bits(x_bits, ring_bits)

    def one(rows: int, w_bits: int | None) -> int:
        plan = he_matvec_checked.make_plan(rows, d, x_bits, ring_bits, ring, w_bits=w_bits)
        witness_bits = bfv_proof.witness_count(ring, plan.blocks)
        return plan.bytes_estimate(ring) + 4 * witness_bits + d * x_bits * -(-plan.mac_bits(ring) // 8)

    return {"wide": one(n_rows, ring_bits), "stacked": one(L * n_rows, w), "per_limb": L * one(n_rows, w)}


def _q_pads(pads: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(pads).reshape(-1, 16)


# ---- the client's local steps (module functions, so a test can replace one of them) -----------
def client_vole_choices(b_C: np.ndarray) -> np.ndarray:
    """Step 1, client: the choice bits it hands to the vector COT (honest: its committed b_C)."""
    return b_C


def client_lattice_query(q: np.ndarray) -> np.ndarray:
    """Step 2, client: the query it encrypts for the lattice matvec (honest: the committed q)."""
    return q


def client_vole_words(words: np.ndarray) -> np.ndarray:
    """Step 1, client: the (N d, 2) words it uses (honest: the vector COT's output)."""
    return words


def server(party: PartyContext, *, X: np.ndarray, b_S: np.ndarray, b_pads: tuple[np.ndarray, np.ndarray],
           q_pads: tuple[np.ndarray, np.ndarray], x_bits: int, ring_bits: int,
           domain: int = PRODUCTS_DOMAIN, q_domain: int = QUERY_MAC_DOMAIN, layout: str = "wide") -> np.ndarray:
    """Server: its share s_S (N,) uint64 mod 2^M of S_i = sum_j (q_j - x_ij) b_ij.

    ``X`` (N, d) entries < 2^x_bits; ``b_S`` (N, d) uint8 its comparison shares; ``b_pads``
    (m_0, m_1), each (N d, 16) uint8, the random OTs whose choice bits are the client's b_C
    (row-major over (i, j)); ``q_pads`` (m_0, m_1) of step 1's d x_bits query-bit OTs;
    ``layout`` of the lattice matvec ("wide" or "stacked", both parties the same)."""
    X = np.ascontiguousarray(X, dtype=U64)
    b_S = np.ascontiguousarray(b_S, dtype=np.uint8)
    N, d = X.shape
    M = ring_bits
    if b_S.shape != (N, d) or b_pads[0].shape != (N * d, 16) or b_pads[1].shape != (N * d, 16):
        raise DataError("products: shapes of X, b_S and the b pads disagree")
    if X.size and int(X.max()) >> x_bits:
        raise DataError(f"matrix entries do not fit in {x_bits} bits")
    if b_S.size and int(b_S.max()) > 1:
        raise DataError("comparison shares must be bits")
    mask = U64((1 << M) - 1)
    sigma = (U64(1) - U64(2) * b_S.astype(U64)) & mask  # 1 - 2 b_S mod 2^M
    corr = np.empty((N * d, _WORDS), dtype=U64)
    corr[:, 0] = ((X * sigma) & mask).ravel()
    corr[:, 1] = sigma.ravel()
    # 1. T1, T2: the sender's outputs (P_0 mod 2^M); the client gets T + b_C corr
    T = au.vole_on_pads(party, CLIENT, b_pads, domain, bits=np.full(N * d, M), ring_bits=M, corr=corr)
    T1, T2 = T[:, 0].reshape(N, d), T[:, 1].reshape(N, d)
    # 2. P = b_S - T2 (uniform, fresh): one checked matvec, per call (P is fresh)
    P = (b_S.astype(U64) - T2) & mask
    w, L = _layout(layout, x_bits, M)
    if L > 1:  # limbs of <= x_bits bits, stacked as rows
        P = np.concatenate([(P >> U64(l * w)) & U64((1 << w) - 1) for l in range(L)], axis=0)
    prepared = he_matvec_checked.PreparedChecked(P, x_bits, M, w_bits=w)
    qp = (q_pads[0].reshape(-1, 16), q_pads[1].reshape(-1, 16))
    share = he_matvec_checked.matvec_sender(party, CLIENT, prepared, q_pads=qp, domain=q_domain)
    pq = _combine_limbs(share, N, L, w, M)
    # 3. s_S = (P q)_S - sum_j x b_S + sum_j T1
    xbs = (X * b_S.astype(U64)).sum(axis=1, dtype=U64)
    return (pq - xbs + T1.sum(axis=1, dtype=U64)) & mask


def client(party: PartyContext, *, q: np.ndarray, b_C: np.ndarray, b_pads: np.ndarray, q_pads: np.ndarray,
           x_bits: int, ring_bits: int, domain: int = PRODUCTS_DOMAIN, q_domain: int = QUERY_MAC_DOMAIN,
           layout: str = "wide") -> np.ndarray:
    """Client: its share s_C (N,) uint64 mod 2^M of S_i. ``q`` (d,) its committed query (entries
    < 2^x_bits); ``b_C`` (N, d) uint8 its committed comparison shares; ``b_pads`` (N d, 16) its
    pads of their random OTs; ``q_pads`` its pads of step 1's query-bit OTs ((d, x_bits, 16) or
    (d x_bits, 16))."""
    q = np.ascontiguousarray(q, dtype=U64).ravel()
    b_C = np.ascontiguousarray(b_C, dtype=np.uint8)
    N, d = b_C.shape
    M = ring_bits
    if q.shape[0] != d or b_pads.shape != (N * d, 16):
        raise DataError("products: shapes of q, b_C and the b pads disagree")
    if q.size and int(q.max()) >> x_bits:
        raise ProtocolError("query wider than the public bound")
    if b_C.size and int(b_C.max()) > 1:
        raise DataError("comparison shares must be bits")
    mask = U64((1 << M) - 1)
    # 1. y = T1 + b_C x sigma, a = T2 + b_C sigma
    Y = au.vole_on_pads(party, CLIENT, b_pads, domain, bits=np.full(N * d, M), ring_bits=M,
                        choices=client_vole_choices(b_C).ravel(), n_words=_WORDS)
    Y = client_vole_words(Y)
    y, a = Y[:, 0].reshape(N, d), Y[:, 1].reshape(N, d)
    # 2. (P q)_C by the checked lattice on the committed q (bits of the q whose OTs fixed them)
    w, L = _layout(layout, x_bits, M)
    qbits = ((q[:, None] >> np.arange(x_bits, dtype=U64)[None, :]) & U64(1)).astype(np.uint8).ravel()
    share = he_matvec_checked.matvec_receiver(party, CLIENT, client_lattice_query(q), x_bits, L * N, M,
                                              q_pads=_q_pads(q_pads), q_bits=qbits, domain=q_domain, w_bits=w)
    pq = _combine_limbs(share, N, L, w, M)
    # 3. s_C = (P q)_C + sum_j q a - sum_j y
    return (pq + (a * q[None, :]).sum(axis=1, dtype=U64) - y.sum(axis=1, dtype=U64)) & mask


def _layout(layout: str, x_bits: int, M: int) -> tuple[int, int]:
    """(matrix width, limb count) of the lattice matvec: "wide" one M-bit limb, "stacked" x_bits limbs."""
    if layout == "wide":
        return M, 1
    if layout == "stacked":
        return limb_bits(x_bits, M)
    raise ValueError(f"unknown layout {layout!r}")


def _combine_limbs(share: np.ndarray, N: int, L: int, w: int, M: int) -> np.ndarray:
    """Shares of P_l q (stacked, (L N,)) -> shares of P q = sum_l 2^(l w) P_l q (mod 2^M)."""
    parts = share.reshape(L, N)
    out = np.zeros(N, dtype=U64)
    for l in range(L):
        out += parts[l] << U64(l * w)
    return out & U64((1 << M) - 1)


def reference(X: np.ndarray, q: np.ndarray, b: np.ndarray, ring_bits: int) -> np.ndarray:
    """S_i = sum_j (q_j - x_ij) b_ij mod 2^M in Python integers (tests)."""
    diff = np.asarray(q).astype(object)[None, :] - np.asarray(X).astype(object)
    S = (diff * np.asarray(b).astype(object)).sum(axis=1)
    return np.array([int(s) % (1 << ring_bits) for s in S], dtype=U64)


__all__ = ["server", "client", "reference", "limb_bits", "LAYOUTS", "vole_bytes_per_element", "lattice_bytes",
           "PRODUCTS_DOMAIN", "QUERY_MAC_DOMAIN"]
