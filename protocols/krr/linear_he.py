"""Compact models, semi-honest: the prediction's inner product with lattice HE (one flight each way).

    prediction(molecule) = y_offset + w . phi(molecule)

Same public feature map, fixed-point plan and integer result as :mod:`protocols.krr.linear` (the
OT path): ``y' = sum_j w'_j phi'_j + lo 2^F sum(w') + y_offset 2^(F+fw)`` with
``phi' = (phi - lo) 2^F`` and ``w' = round(w 2^fw)``; only the two-party step differs. Instead of
F' x_bits oblivious transfers (base OTs on a client's first session), one RLWE ciphertext goes up
and one comes back (:mod:`protocols.mpc.rlwe_ip`: ring degree 4,096 or 8,192, q = 2^108 or 2^128,
128-bit security by the HE standard, 40-bit statistical flooding).

Threat model: **semi-honest** (``--security semi-honest``). The server learns nothing about phi
(RLWE ciphertexts); the client learns ``y'`` plus a noise of at most ~2^-17 (RFF model) that is
statistically independent of w up to 2^-41, and nothing else (see :mod:`protocols.mpc.rlwe_ip`).
A client that sends ill-formed polynomials (not RLWE samples with small noise) can learn more
than its prediction -- the flood is sized for honest noise, and a rigged public key can undo the
re-randomisation of c1' -- so client-malicious sessions keep the checked OT path
(:mod:`protocols.krr.linear`). A proof of well-formedness would be checked in
:func:`protocols.mpc.rlwe_ip.check_client_message` (before the server computes anything); the one
merged for the Gaussian cross term (:mod:`protocols.mpc.bfv_proof`) commits its witness with more
checked OTs than the OT path uses, so it is not wired in (docs/compact-models.md).

Protocol (client = role 1, server = role 0), two messages after the handshake:
  0. keys: the client's secret key and public key pk0 are made once per process and ring
     (:class:`protocols.mpc.rlwe_ip.ClientKey`); pk0 travels in step 2 only on the first session
     with a server (the server keeps it by key id, LRU 1,024, one hour, at most
     ``serve --max-per-client`` keys per client identity), or when asked again.
     ``resume_ot=False`` on the client: a fresh key for this session only (unlinkable sessions).
  1. hello (a TCP client, :func:`hello_seed`): carries ``lattice_seed``, the 16-byte seed of the
     first query's a -- the seed of a mask the client made last session, or a fresh one. Once the
     public parameters are on their way the server computes that query's re-randomisation
     a W + p1 u + e1 with a fresh u (:func:`server_early`; or takes the one it made for this seed
     after the client's last reply), while the client waits and computes its features.
  2. client -> server: header, key id, [pk0], [next seed], and per query (seed of a,
     c0 = -a s + e + Delta Phi') with Delta = 2^(log q - out_bits); the first query's seed is the
     announced one. With ``PREPARE_NEXT`` the client also names the seed of its next session's
     first a, and makes that mask (-a s + e) on its mask worker thread while it waits for the reply
     (:class:`_PendingMask`; made inline, it could still be running when the reply arrived).
  3. server -> client: status; ``need-key`` if it holds no pk0 for the key id (the client repeats
     step 2 with pk0 and the same ciphertexts), else per query (v, top 64 bits of c1') with the
     constant ``lo 2^F sum(w') + y_offset 2^(F+fw)`` folded into v; then, for a next seed, it
     makes that seed's re-randomisation (kept by (model, client, seed), LRU 1,024, at most
     ``serve --max-per-client`` per client identity, taken by one use) and
     binds it to this session's key (:func:`protocols.mpc.rlwe_ip.server_bind`): the part of v
     that needs no c0, (pk0 u)[n-1] + e0 + Delta c + flood, made now with fresh e0 and flood and
     kept with the re-randomisation (spent with it). An answer whose key id is the bound one adds
     only (c0 W)[n-1] (no copy of pk0, no randomness drawn before it); any other key gets the
     part made afresh from its own pk0.
  4. client: m = v + (c1' s)[n-1], the prediction m / 2^(log q - out_bits + F + fw).

Offline / online (what moves off the critical path, and why that is safe): the client's mask
-a s + e and the server's a W + p1 u + e1 depend only on the seed of a, never on the query; both
are made before the query (steps 1 and 3) and each is **single use**: a mask is spent by its one
encryption (two queries under one a and e would hand the server Delta (Phi - Phi')), a
re-randomisation by its one answer (the masking of a W by p1 u + e1 is argued for one answer;
two sharing u and e1 are correlated, and under two values of a their difference is (a - a') W
plus small noise); :class:`protocols.mpc.rlwe_ip.Mask` and
:class:`~protocols.mpc.rlwe_ip.Rerandomised` refuse a second use, the stores hand each out once
(taken, not read), and a server asked twice for one seed answers the second query with a fresh u.
What remains online: the client adds Delta phi' (0.04 ms CPU at n = 4,096) and decrypts (one
wrapping uint64 dot product, ~0.015 ms); the server computes v, one dot product (c0 W)[n-1] when
the re-randomisation is bound to the client's key (two, 0.06 ms, otherwise). The
seeds are public (they travel with c0 anyway). A deviating client that announces another
client's seed only makes the server spend that re-randomisation on its own query (a fresh u,
never a second use). Binding changes when the server computes, not what it sends: v has the
same terms, e0 and the flood are drawn fresh for each re-randomisation and used by its one
answer only (:meth:`protocols.mpc.rlwe_ip.Rerandomised.take_bound` spends both together), and
the bound key id is SHA-256(pk0)[:16] of the key the server holds, checked against the query's
key id (a query that sends its pk0 has it checked against that id first). A client that uses
another key id than the one its last session bound gets the part computed from the pk0 held for
that id, as before; it can learn nothing new, since every answer is the one it would have got
with the part made online. What the client sees of this: nothing (same bytes, same timing
except that the answer comes sooner).

Critical path (why the server's party is light and the client's masks have one worker): between
the client's ready message and the answer the server now reads the request into one buffer and
views c0 in place (:meth:`protocols.mpc.rlwe_ip.Ring.view_bytes`), makes no OT party
(:class:`LatticeParty`; a full one, and a cold AES key set-up for its randomness, were ~0.1 ms
each on an idle core) and sends the reply's parts in one gather write; the client hands the
next mask to one worker thread by a queue put (:class:`_MaskWorker`; a thread start per mask
was ~0.15 ms between the query and the reply).

Traffic (RFF, F' = 4,096, one query, key cached): 57,344 + 42 bytes up (+ 16 with a next seed,
+ about 50 in the hello), 32,785 down; first session with a server adds pk0 (57,344 bytes).
Rounds after the handshake: one each way; a resumed client sends the hello, ready and step 2 in
one flight (:func:`protocols.krr.client.predict`, parameters cached and checked by digest): 2
rounds in all; the hello still goes out first, before the features, so that step 1's work overlaps them.
"""
from __future__ import annotations

import itertools

import hashlib
import os
import queue
import struct
import threading
import time
from typing import Any

import numpy as np

from protocols.common import peak_rss_mb
from protocols.krr.chain import SERVER
from protocols.krr.params import PublicParams
from protocols.mpc import rlwe_ip
from protocols.mpc.context import PartyContext
from protocols.mpc.owner_cache import OwnerCache
from protocols.net.quota import OwnedLRU, current_client
from secureml.errors import ModelError, ProtocolError

_MAGIC = b"SMHE"
_HDR = struct.Struct("<4sBBHH")  # magic, version, flags (bit 0: pk0, bit 1: next seed), k, ring degree / 1024
_VERSION = 2
_OK, _NEED_KEY = 0, 1
#: True: a resumed client picks the seed of its next session's first a now, sends it with this
#: session's query, and makes that session's mask (-a s + e, the query-independent part of its
#: encryption) while it waits for this reply -- in the same thread, in time it would otherwise
#: spend blocked on the socket; the server makes the matching re-randomisation (a W + p1 u + e1)
#: right after its reply. The next session announces the seed in its hello, finds both ready and
#: only adds Delta phi' (client) and computes v (server). False: the client makes its mask inside
#: the session, after its features; the server re-randomises while the client featurises.
PREPARE_NEXT = True
#: largest acceptable error of the lattice step alone, in units of the prediction (kcal/mol for
#: energies): a fifth of the OT path's 5e-3 budget
MAX_ERROR = 1e-3


def ring_params(pp: PublicParams) -> rlwe_ip.RingParams:
    return rlwe_ip.ring_for(pp.n_features)


def delta_bits(pp: PublicParams, out_bits: int) -> int:
    """Delta = 2^(log q - out_bits): |Delta y'| < q / 8 by the public output bound."""
    return ring_params(pp).q_bits - int(out_bits)


def encode_weights(w: np.ndarray, pp: PublicParams) -> np.ndarray:
    w_int = np.rint(np.asarray(w, dtype=np.float64) * float(1 << pp.weight_frac_bits))
    if np.abs(w_int).max(initial=0) >= 2.0**40:
        raise ModelError("weights too large for the fixed-point plan")
    return w_int.astype(np.int64)


_PREPARED_UIDS = itertools.count()


class PreparedModel:
    """What the server prepares once per served model: W's spectra and the public-to-it constant."""

    def __init__(self, w: np.ndarray, y_offset: float, pp: PublicParams, out_bits: int) -> None:
        # a process-unique name for the stores keyed by the prepared model (NEXT): id() may be reused
        # by a later model once this one is freed, which would hand it this model's re-randomisations
        self.uid = next(_PREPARED_UIDS)
        self.rp = ring_params(pp)
        self.delta_bits = delta_bits(pp, out_bits)
        w_int = encode_weights(w, pp)
        self.weights = rlwe_ip.PreparedWeights(w_int, self.rp)
        lo_int = int(round(pp.feature_lo * (1 << pp.frac_bits)))
        off = int(round(y_offset * 2.0 ** (pp.frac_bits + pp.weight_frac_bits)))
        self.const = lo_int * int(w_int.sum()) + off
        # the lattice step's own error in prediction units (flood and other noise / Delta 2^(F+fw))
        self.max_error = self.weights.error_units(self.delta_bits) / 2.0 ** (pp.frac_bits + pp.weight_frac_bits)


def fits(w: np.ndarray, pp: PublicParams, out_bits: int) -> float | None:
    """The lattice step's worst-case error for this model, or None if it cannot serve it."""
    try:
        err = PreparedModel(w, 0.0, pp, out_bits).max_error
    except (ProtocolError, ModelError):
        return None
    return err if err <= MAX_ERROR and delta_bits(pp, out_bits) > rlwe_ip.LIMB else None


# by the served model's identity; the weak reference drops the entry with the model
_PREPARED: OwnerCache[PreparedModel] = OwnerCache()
#: the server's copy of clients' public keys (one per server process)
KEYS = rlwe_ip.KeyStore()


def prepared(model: Any) -> PreparedModel:
    """The served model's :class:`PreparedModel`, made on first use and kept with it."""
    return _PREPARED.get(model, lambda: PreparedModel(model.compact.weights, model.compact.offset, model.public,
                                                      model.compact.out_bits))


class LatticeParty:
    """A party of this path (client role 1, server role 0): the channel, the role and private
    randomness, nothing else -- the path has no OT, so no OT provider is built (a full
    :class:`protocols.mpc.party.Party` costs ~0.1 ms per session on a cold core, on the server's
    critical path between the ready message and the query). The randomness is a fresh
    :class:`~protocols.mpc.randomness.SecureRandom` (new OS key) made on first use and never shared
    between sessions; a session that spends only what was prepared before it draws none before its
    answer."""

    seed = None

    def __init__(self, ch: Any, role: int) -> None:
        self.ch = ch
        self.role = role
        self._rng: rlwe_ip.SecureRandom | None = None

    @property
    def rng(self) -> rlwe_ip.SecureRandom:
        if self._rng is None:
            self._rng = rlwe_ip.SecureRandom()
        return self._rng


# ---- client ---------------------------------------------------------------------------------------

_CLIENT_KEYS: dict[rlwe_ip.RingParams, rlwe_ip.ClientKey] = {}
_KEY_SENT: set[tuple[str, bytes]] = set()
_CLIENT_LOCK = threading.Lock()


def client_key(rp: rlwe_ip.RingParams, fresh: bool = False) -> tuple[rlwe_ip.ClientKey, bool]:
    """This process's key for the ring (made on first use), or a fresh one; (key, newly made)."""
    if fresh:
        return rlwe_ip.ClientKey(rp), True
    with _CLIENT_LOCK:
        key = _CLIENT_KEYS.get(rp)
        if key is None:
            key = _CLIENT_KEYS[rp] = rlwe_ip.ClientKey(rp)
            return key, True
        return key, False


def _request(key: rlwe_ip.ClientKey, with_pk: bool, cts: list[tuple[bytes, bytes]],
             next_seed: bytes | None = None) -> list[bytes]:
    flags = (1 if with_pk else 0) | (2 if next_seed is not None else 0)
    parts = [_HDR.pack(_MAGIC, _VERSION, flags, len(cts), key.ring.n // 1024), key.key_id]
    if with_pk:
        parts.append(key.pk0_bytes)
    if next_seed is not None:
        parts.append(next_seed)
    for seed, c0 in cts:
        parts += [seed, c0]
    return parts


class _MaskWorker:
    """One daemon thread per process that makes the next sessions' masks, fed by a queue: handing
    it a mask costs a queue put, where a thread per mask cost a thread start (~0.15 ms, the caller
    blocked until the new thread ran -- on a busy core, until the scheduler got to it) between
    this session's query and its reply. Normal priority: a thread at idle priority (SCHED_IDLE)
    was tried and measured worse -- holding the GIL while a busy core gave it no CPU, it stalled
    the session's own thread (33 against 18.6 ms per session beside a CPU hog)."""

    def __init__(self) -> None:
        self._q: "queue.SimpleQueue[_PendingMask]" = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, job: "_PendingMask") -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():  # first use (or after a fork)
                self._thread = threading.Thread(target=self._loop, daemon=True, name="secureml-next-mask")
                self._thread.start()
        self._q.put(job)

    def _loop(self) -> None:
        while True:
            self._q.get()._run()


_WORKER = _MaskWorker()


class _PendingMask:
    """The next session's mask, made by the mask worker (:class:`_MaskWorker`) while this session
    waits for the server's answer and after it (the mask is ~0.7 ms of NTT work at n = 4,096;
    made inline, it was still running when the answer arrived on a fast link). Its seed is known
    at once (the hello and this session's request name it). :meth:`result` takes the mask: it
    waits for one the worker is making; one the worker has not started (queued behind others) is
    made by the taking session itself, for the same seed, and the worker then skips it (it is
    never made twice, so no (a, e) ever serves two queries)."""

    def __init__(self, key: rlwe_ip.ClientKey, seed: bytes) -> None:
        self.seed = seed
        self._key = key
        self._mask: rlwe_ip.Mask | None = None
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._state = "queued"  # -> "running" (worker) -> "done"; or "taken" (made by the session)
        _WORKER.submit(self)

    def _run(self) -> None:
        with self._lock:
            if self._state != "queued":  # its session made it meanwhile
                return
            self._state = "running"
        try:
            self._mask = self._key.mask(self.seed, rlwe_ip.SecureRandom())
        except BaseException as exc:  # noqa: BLE001 - handed to the session that takes the mask
            self._error = exc
        self._done.set()

    def result(self) -> rlwe_ip.Mask:
        with self._lock:
            inline = self._state == "queued"
            if inline:
                self._state = "taken"
        if inline:  # made here, for the same seed (the worker skips it)
            self._mask = self._key.mask(self.seed, rlwe_ip.SecureRandom())
            self._done.set()
        self._done.wait()
        if self._error is not None:
            raise self._error
        assert self._mask is not None
        return self._mask


# masks made for the client's next session with a server, by (server, key id); each is taken
# (removed) by that session's first encryption: a mask encrypts one query only
_NEXT_MASKS: dict[tuple[str, bytes], rlwe_ip.Mask | _PendingMask] = {}


def _fresh_seed() -> bytes:
    return os.urandom(rlwe_ip.SEED_BYTES)  # a public seed: fresh OS entropy, no cipher set-up


def hello_seed(pp: PublicParams | None, server_key: str) -> bytes:
    """The seed of a that a client announces in its hello (``lattice_seed``), so that a lattice
    server computes a W + p1 u + e1 for it while the client waits for the parameters and computes
    its features (:func:`server_early`; other servers ignore it). The seed is public (it travels
    with c0 anyway): with ``pp`` (parameters cached from an earlier session) the seed of the mask
    made last session if one waits, else a fresh one."""
    if pp is not None:
        key, _ = client_key(ring_params(pp))
        with _CLIENT_LOCK:
            mask = _NEXT_MASKS.get((server_key, key.key_id))
        if mask is not None:
            return mask.seed
    return _fresh_seed()


def settle_next_mask(pp: PublicParams, server_key: str) -> None:
    """Once the hello is out and before the features: finish the mask waiting for this session if
    the worker is still making it (a busy machine gave it no CPU in the gap), or make it here if
    it is still queued. Left to overlap the features, the two threads hand the GIL back and forth
    at the interpreter's 5 ms switch interval (features measured 5-10 ms instead of 1.8 under
    load); waiting now costs at most the rest of one mask (~0.7 ms CPU)."""
    key, _ = client_key(ring_params(pp))
    with _CLIENT_LOCK:
        mask = _NEXT_MASKS.get((server_key, key.key_id))
    if isinstance(mask, _PendingMask) and not mask._done.is_set():
        try:
            mask.result()  # kept: the session's result() returns the same mask (or raises again)
        except Exception:  # noqa: BLE001 - raised to the session that takes the mask
            pass


def _first_mask(server_key: str, key: rlwe_ip.ClientKey, party: PartyContext, resume: bool,
                announced: bytes | None) -> tuple[rlwe_ip.Mask | None, bool]:
    """The mask for this session's first query and whether it was made before the session: one
    made last session (for the seed the hello announced), or one made now for the announced seed,
    or None (no seed announced: a fresh one, inline). A waiting mask whose seed was not announced
    is dropped unused. ``party.rng`` is read only when a mask is made here (a session whose mask
    was made last session draws no randomness of its own: nothing is set up for it)."""
    mask = None
    if resume:
        with _CLIENT_LOCK:
            mask = _NEXT_MASKS.pop((server_key, key.key_id), None)
    if mask is not None and (announced is None or mask.seed == announced):
        return (mask.result() if isinstance(mask, _PendingMask) else mask), True
    return (key.mask(announced, party.rng) if announced is not None else None), False


def client_online(party: PartyContext, pp: PublicParams, phi: np.ndarray, server_key: str,
                  resume: bool = True, announced: bytes | None = None, encoded: np.ndarray | None = None
                  ) -> tuple[np.ndarray, dict[str, Any]]:
    """Steps 0-3, query owner: the k predictions and what the session cost. ``announced``: the
    seed of a this session's hello announced (:func:`hello_seed`), used for the first query.
    ``encoded``: ``pp.encode_features(phi)`` when the caller already made it (and so checked phi)."""
    t0 = time.perf_counter()
    if encoded is None or encoded.shape != np.shape(np.atleast_2d(phi)):
        encoded = pp.encode_features(np.atleast_2d(phi), "query features")
    # phi' in [0, 2^x_bits), x_bits < 63: the same values read as int64, no copy
    enc = np.ascontiguousarray(encoded, dtype=np.uint64).view(np.int64)
    rp = ring_params(pp)
    db = delta_bits(pp, pp.output_bits)
    key, new = client_key(rp, fresh=not resume)
    keygen_s = key.keygen_s if new else 0.0
    with_pk = not resume or (server_key, key.key_id) not in _KEY_SENT
    mask, premade = _first_mask(server_key, key, party, resume, announced)
    cts = [key.encrypt_with(mask, enc[0], db)] if mask is not None else []
    cts += [key.encrypt(row, db, party.rng) for row in enc[len(cts):]]
    ch = party.ch
    next_seed = _fresh_seed() if resume and PREPARE_NEXT else None
    ch.send_parts(_request(key, with_pk, cts, next_seed))  # one frame, the 57 kB c0 not joined into a copy
    t_sent = time.perf_counter()
    next_s = 0.0
    if next_seed is not None:  # the next session's mask, made while the server answers, off this thread
        ch.flush()  # the request goes out first (an early-data channel holds sends until a read)
        pending = _PendingMask(key, next_seed)
        with _CLIENT_LOCK:
            _NEXT_MASKS[(server_key, key.key_id)] = pending
        next_s = time.perf_counter() - t_sent
    k, n = enc.shape[0], rp.n
    reply_bytes = 1 + k * (16 + 8 * n)
    peak_mb = peak_rss_mb()  # read for the cost report while the server answers (a /proc read, ~30 us cold)
    reply = ch.recv_bytearray(max_bytes=reply_bytes)
    if reply[:1] == bytes([_NEED_KEY]) and len(reply) == 1 and not with_pk:
        with_pk = True  # the server forgot our key (restart, eviction): the same ciphertexts, with it
        ch.send_parts(_request(key, True, cts, next_seed))
        reply = ch.recv_bytearray(max_bytes=reply_bytes)
    if len(reply) != reply_bytes or reply[0] != _OK:
        raise ProtocolError(f"lattice reply: expected {reply_bytes} bytes with status ok, got {len(reply)}")
    if resume:
        _KEY_SENT.add((server_key, key.key_id))
    scale = 2.0 ** (db + pp.frac_bits + pp.weight_frac_bits)
    out = np.empty(k)
    mv = memoryview(reply)[1:]
    for i in range(k):
        rec = mv[i * (16 + 8 * n):(i + 1) * (16 + 8 * n)]
        v = int.from_bytes(rec[:16], "little")
        top = np.frombuffer(rec[16:], dtype="<u8")
        out[i] = key.decrypt(v, top) / scale
    return out, {"out_bits": pp.output_bits, "engine": "lattice", "key_sent": with_pk, "keygen_s": keygen_s,
                 "resumed": not with_pk, "prepared": premade, "prepare_next_s": next_s, "_peak_rss_mb": peak_mb,
                 "client_crypto_s": time.perf_counter() - t0 - next_s}


# ---- server ---------------------------------------------------------------------------------------

def _parse(data: bytes | bytearray, rp: rlwe_ip.RingParams, k: int
           ) -> tuple[bool, bytes, memoryview | None, bytes | None, list[tuple[bytes, memoryview]]]:
    """(pk included, key id, pk0 bytes, next seed, [(seed, c0 bytes)]) with every size checked;
    the polynomials are views into ``data`` (not copied)."""
    if len(data) < _HDR.size + rlwe_ip.KEY_ID_BYTES:
        raise ProtocolError(f"lattice query: {len(data)} bytes is too short")
    magic, version, flags, kk, ring_k = _HDR.unpack_from(data)
    if magic != _MAGIC or version != _VERSION or flags > 3:
        raise ProtocolError("lattice query: bad header")
    if kk != k or ring_k * 1024 != rp.n:
        raise ProtocolError(f"lattice query: {kk} queries at ring degree {ring_k * 1024}, expected {k} at {rp.n}")
    with_pk, with_next = bool(flags & 1), bool(flags & 2)
    pb = rp.poly_bytes
    want = (_HDR.size + rlwe_ip.KEY_ID_BYTES + (pb if with_pk else 0) + (rlwe_ip.SEED_BYTES if with_next else 0)
            + k * (rlwe_ip.SEED_BYTES + pb))
    if len(data) != want:
        raise ProtocolError(f"lattice query: expected {want} bytes, got {len(data)}")
    mv = memoryview(data)
    off = _HDR.size
    key_id = bytes(mv[off:off + rlwe_ip.KEY_ID_BYTES])
    off += rlwe_ip.KEY_ID_BYTES
    pk = None
    if with_pk:
        pk = mv[off:off + pb]
        off += pb
    next_seed = None
    if with_next:
        next_seed = bytes(mv[off:off + rlwe_ip.SEED_BYTES])
        off += rlwe_ip.SEED_BYTES
    cts = []
    for _ in range(k):
        seed = bytes(mv[off:off + rlwe_ip.SEED_BYTES])
        off += rlwe_ip.SEED_BYTES
        cts.append((seed, mv[off:off + pb]))
        off += pb
    return with_pk, key_id, pk, next_seed, cts


def server_early(model: Any, hello: dict[str, Any]) -> dict[str, Any]:
    """Between the hello's answer and the client's ciphertext (the client is computing its
    features): the query-independent half of the first reply, a W + p1 u + e1 with a fresh u, for
    the seed the hello announced: ``{"lattice_early": Rerandomised}``; nothing without a seed.
    It belongs to this session only and is spent by the one answer it serves."""
    seed_hex = hello.get("lattice_seed")
    if seed_hex is None:
        return {}
    if not isinstance(seed_hex, str) or len(seed_hex) != 2 * rlwe_ip.SEED_BYTES:
        raise ProtocolError("hello: lattice_seed must be 32 hex digits")
    try:
        seed = bytes.fromhex(seed_hex)
    except ValueError:
        raise ProtocolError("hello: lattice_seed must be 32 hex digits") from None
    pm = prepared(model)
    # made after this client's last reply, if it announced the seed then (only this client's: a
    # seed another client announced is not this one's to take)
    prep = _take_prepared(pm, seed, current_client())
    return {"lattice_early": prep or rlwe_ip.server_prepare(pm.weights, seed, rlwe_ip.SecureRandom())}


def server_online(party: PartyContext, model: Any, k: int, keep_keys: bool = True,
                  store: rlwe_ip.KeyStore | None = None, early: rlwe_ip.Rerandomised | None = None
                  ) -> dict[str, Any]:
    """Steps 1-2, model owner: answer the client's ciphertexts (it learns nothing of them).
    ``early``: the first query's re-randomisation made after the hello (:func:`server_early`),
    used if the first ciphertext's seed is the one announced (else dropped unsent)."""
    assert party.role == SERVER
    pm = prepared(model)
    rp, R = pm.rp, pm.weights.ring
    store = KEYS if store is None else store
    ch = party.ch
    pb = rp.poly_bytes
    max_req = _HDR.size + rlwe_ip.KEY_ID_BYTES + pb + rlwe_ip.SEED_BYTES + k * (rlwe_ip.SEED_BYTES + pb)
    with_pk, key_id, pk_bytes, next_seed, cts = _parse(ch.recv_bytearray(max_bytes=max_req), rp, k)
    pk0 = None
    # the usual resumed session: one query whose re-randomisation was made after this client's last
    # reply and already holds its key's part of v (rlwe_ip.server_bind): pk0 is not needed now
    bound = (k == 1 and early is not None and not early.spent and early.seed == cts[0][0]
             and early.bound_key == key_id)
    if pk_bytes is not None:
        if hashlib.sha256(pk_bytes).digest()[:rlwe_ip.KEY_ID_BYTES] != key_id:
            raise ProtocolError("lattice query: key id does not match the public key")
        pk0 = R.from_bytes(pk_bytes, "public key")
    elif keep_keys:
        if not (bound and store.touch(key_id)):
            bound = False
            pk0 = store.get(key_id)
    else:
        bound = False
    if pk0 is None and not bound:  # unknown key: ask once for it
        ch.send(bytes([_NEED_KEY]))
        with_pk, key_id2, pk_bytes, next_seed, cts2 = _parse(ch.recv_bytearray(max_bytes=max_req), rp, k)
        if pk_bytes is None or key_id2 != key_id:
            raise ProtocolError("lattice query: public key missing after the server asked for it")
        if cts2 != cts:  # the same ciphertexts, now with the key (anything else: a new query)
            raise ProtocolError("lattice query: the ciphertexts changed when the key was sent")
        if hashlib.sha256(pk_bytes).digest()[:rlwe_ip.KEY_ID_BYTES] != key_id:
            raise ProtocolError("lattice query: key id does not match the public key")
        pk0 = R.from_bytes(pk_bytes, "public key")
    c0s = [R.view_bytes(c0, "ciphertext") for _, c0 in cts]  # uint16 views of the request: no copy
    rlwe_ip.check_client_message(R, pk0, c0s)  # semi-honest: sizes and ranges (checked above)
    if keep_keys and with_pk:
        store.put(key_id, pk0, current_client())  # counts against this client's quota
    out = [bytes([_OK])]
    used = 0
    for i, ((seed, _), c0) in enumerate(zip(cts, c0s)):
        prep = early if i == 0 and early is not None and not early.spent and early.seed == seed else None
        used += prep is not None
        if prep is None:
            prep = rlwe_ip.server_prepare(pm.weights, seed, party.rng)
        # a part bound to this key needs no randomness now (a cold SecureRandom costs ~0.1 ms)
        rng = None if prep.bound_key == key_id else party.rng
        v = rlwe_ip.server_finish(pm.weights, prep, pk0, c0, pm.const, pm.delta_bits, rng, key_id=key_id)
        out += [v.to_bytes(16, "little"), prep.top_bytes]
    ch.send_parts(out)  # one frame, the parts not joined
    if next_seed is not None and keep_keys:  # the client's next session, prepared after this reply
        prep = rlwe_ip.server_prepare(pm.weights, next_seed, party.rng)
        pk0 = pk0 if pk0 is not None else store.get(key_id)
        if pk0 is not None:  # and its key's part of v (pk0 u)[k] + e0 + Delta c + flood, bound to this key
            rlwe_ip.server_bind(pm.weights, prep, key_id, pk0, pm.const, pm.delta_bits, party.rng)
        _store_prepared(pm, prep, current_client())
    return {"key_received": with_pk, "prepared": used, "bound": bool(bound)}


# the server's re-randomisations for seeds clients announced for their next session, by (model,
# client, seed): LRU (1,024), at most ``per_owner`` per client, each taken (removed) by its one use
# -- a second answer with the same u and e1 would let the client cancel the re-randomisation. The
# client is part of the key, so one client announcing another's seed neither takes nor replaces
# that client's entry.
NEXT: OwnedLRU[tuple[int, str | None, bytes], rlwe_ip.Rerandomised] = OwnedLRU(1024)


def _store_prepared(pm: PreparedModel, prep: rlwe_ip.Rerandomised, owner: str | None = None) -> None:
    NEXT.put((pm.uid, owner, prep.seed), prep, owner)


def _take_prepared(pm: PreparedModel, seed: bytes, owner: str | None = None) -> rlwe_ip.Rerandomised | None:
    return NEXT.pop((pm.uid, owner, seed))
