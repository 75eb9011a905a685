"""Output defenses applied *inside* the double-blind protocols: calibrated noise and rounding.

The client of :mod:`protocols.krr` reconstructs its prediction from two additive shares. An output
defense changes what it reconstructs, on the server's side, before the client can see anything:

* **noise**: the server adds e = round(n 2^S), n ~ N(0, noise_std^2) (kcal/mol) drawn fresh for
  every answer, to its own share;
* **rounding**: the client learns y only on the public grid 2^round_bits (kcal/mol), rounded half
  up, by an exact truncation of the shared value (no probabilistic error, no wrap-around).

The mechanism (grid, noise distribution) is public -- it travels in :class:`PublicParams`
``output_defense`` -- so the client knows what it gets; the noise values stay with the server.

Threat model: as the protocol it defends (semi-honest server and client, no dealer). What it adds:
the client's view is a function of round(y + n) alone -- every message below is uniformly masked
-- so the undefended value y is never visible to it, neither in the output nor in the transcript
(``tests/protocols/krr/test_defense.py`` checks a recorded transcript). What it does not add:
fresh noise averages out over repeated queries (the client may ask the same query again; the
server cannot tell, since it does not see queries), so noise must be paired with a query budget
(:mod:`secureml.serving.ledger`); see docs/defenses.md for the measured adaptive attacker.

Protocol (after the protocol's own last step, which leaves shares s_S (server), s_C (client) of
y 2^S in Z_2^R; R = 128 for the exact kernels, ``out_bits`` <= 64 for compact models):
  D1. Noise (server): s_S += round(n 2^S) per answer.
  D2. Rounding to 2^-k' with g = S + round_bits bits to drop (server): s_S += 2^(g-1) (half up);
      rho = -s_S mod 2^R, u = s_C, so y' = u - rho (mod 2^R) and
          floor(y' / 2^g) = (u >> g) - (rho >> g) - beta (mod 2^W), W = R - g,
      with beta = [u mod 2^g < rho mod 2^g] the borrow out of the low g bits.
  D3. Borrow chain (:mod:`protocols.krr.chain`, 8-bit digits): XOR shares beta_s, beta_c, each
      uniformly random on its own.
  D4. Bit to arithmetic: one 1-out-of-2 table OT; the server's table holds (b ^ beta_s) + r mod
      2^W for b = 0, 1 (r fresh, uniform); the client, at index beta_c, receives beta + r.
  D5. The server sends m = r - (rho >> g) mod 2^W; the client outputs
      ((u >> g) + m - (beta + r)) mod 2^W, sign-extended, times 2^round_bits.
Without rounding the protocol's own reveal follows D1 unchanged.

Cost per answer: ceil(g / 8) table OTs of 1-out-of-512 (2-bit entries) + one 1-out-of-2 OT +
one W-bit word; 2 rounds per table OT (the client's choice correction, the server's table), all
queries of a session together: 2 (ceil(g / 8) + 1) + 1 rounds. For the exact kernels g ~ 96
(12 digits, 26 extra rounds measured, ~6 kB per query), for compact models g ~ 40-50.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from protocols.krr.chain import chain, digit_plan
from protocols.krr.defense_spec import OutputDefense
from secureml.errors import ProtocolError

U64 = np.uint64
#: digit size of the rounding borrow chain (1-out-of-2^(8+1) table OTs)
ROUND_DIGIT_BITS = 8
_MASK64 = (1 << 64) - 1


def _gaussian(party: Any, k: int) -> np.ndarray:
    """k standard normal draws from the party's cryptographic generator (Box-Muller)."""
    u = party.rng.random_u64(2 * k)
    u = ((u >> U64(11)).astype(np.float64) + 0.5) / float(1 << 53)  # (0, 1), never 0
    return np.sqrt(-2.0 * np.log(u[:k])) * np.cos(2.0 * math.pi * u[k:])


def add_noise(party: Any, d: OutputDefense, shares: list[int], ring_bits: int, scale_bits: int) -> list[int]:
    """D1 (server): fresh Gaussian noise, encoded at 2^scale_bits, added to the server's shares."""
    if d.noise_std <= 0:
        return shares
    n = _gaussian(party, len(shares)) * d.noise_std
    mod = 1 << ring_bits
    return [(s + int(round(float(e) * 2.0 ** scale_bits))) % mod for s, e in zip(shares, n)]


def _drop_bits(d: OutputDefense, ring_bits: int, scale_bits: int) -> tuple[int, int]:
    g = scale_bits + int(d.round_bits)
    w = ring_bits - g
    if not (1 <= g and 2 <= w <= 64):
        raise ProtocolError(f"cannot round to 2^{d.round_bits} in this protocol's {ring_bits}-bit "
                            f"ring at 2^-{scale_bits}")
    return g, w


def _words(x: list[int]) -> tuple[np.ndarray, np.ndarray]:
    return (np.array([v & _MASK64 for v in x], dtype=U64), np.array([(v >> 64) & _MASK64 for v in x], dtype=U64))


def _chain_plan(g: int) -> list[tuple[int, list[tuple[int, int]]]]:
    """Digits of the low g bits, per 64-bit word (low word first)."""
    return [(0, digit_plan(0, min(g, 64), ROUND_DIGIT_BITS))] + (
        [(1, digit_plan(0, g - 64, ROUND_DIGIT_BITS))] if g > 64 else [])


def server_round(party: Any, d: OutputDefense, shares: list[int], ring_bits: int, scale_bits: int) -> None:
    """Steps D2-D5, model owner: the client learns only its answers on the public grid."""
    g, w = _drop_bits(d, ring_bits, scale_bits)
    mod, k = 1 << ring_bits, len(shares)
    rho = [(-(s + (1 << (g - 1)))) % mod for s in shares]  # D2: half up, then y' = u - rho
    words = _words(rho)
    beta = np.zeros(k, dtype=np.uint8)
    for word, digits in _chain_plan(g):  # D3: borrow out of the low g bits
        beta, _ = chain(party, words[word], digits, beta, None)
    r = party.rng.random_u64(k) & U64((1 << w) - 1 if w < 64 else _MASK64)  # D4
    bs = beta.astype(U64)
    table = np.stack([(bs + r), ((bs ^ U64(1)) + r)], axis=1)
    if w < 64:
        table &= U64((1 << w) - 1)
    party.ot_sender.lut_send(np.ascontiguousarray(table), bits=w)
    wmask = (1 << w) - 1
    m = np.array([(int(ri) - (p >> g)) & wmask for ri, p in zip(r, rho)], dtype=U64)  # D5
    party.ch.send_array(m)


def client_round(party: Any, d: OutputDefense, shares: list[int], ring_bits: int, scale_bits: int) -> np.ndarray:
    """Steps D3-D5, query owner: returns the k answers on the grid (float)."""
    g, w = _drop_bits(d, ring_bits, scale_bits)
    k = len(shares)
    mod = 1 << ring_bits
    u = [s % mod for s in shares]
    words = _words(u)
    beta = np.zeros(k, dtype=np.uint8)
    for word, digits in _chain_plan(g):
        beta, _ = chain(party, words[word], digits, beta, None)
    got = np.asarray(party.ot_receiver.lut_recv(beta.astype(np.int64), 1, w=1, bits=w), dtype=U64).ravel()
    m = party.ch.recv_array(dtype=np.uint64, shape=(k,))
    wmask = (1 << w) - 1
    out = np.empty(k)
    for a in range(k):
        z = ((u[a] >> g) + int(m[a]) - int(got[a])) & wmask
        if z >= 1 << (w - 1):
            z -= 1 << w
        out[a] = z * 2.0 ** d.round_bits
    return out


def server_output(party: Any, spec: dict[str, Any] | None, shares: list[int], ring_bits: int,
                  scale_bits: int) -> list[int] | None:
    """The protocols' hook at their reveal step (server). Returns the shares to reveal as usual
    (noise added, D1), or None when rounding (D2-D5) has already delivered the answers."""
    d = OutputDefense.from_dict(spec)
    if not d.enabled:
        return shares
    shares = add_noise(party, d, shares, ring_bits, scale_bits)
    if d.round_bits is None:
        return shares
    server_round(party, d, shares, ring_bits, scale_bits)
    return None


def client_output(party: Any, spec: dict[str, Any] | None, shares: list[int], ring_bits: int,
                  scale_bits: int) -> np.ndarray | None:
    """The protocols' hook at their reveal step (client): the answers on the grid when the model
    rounds, else None (the protocol's own reveal follows)."""
    d = OutputDefense.from_dict(spec)
    if d.round_bits is None:
        return None
    return client_round(party, d, shares, ring_bits, scale_bits)
