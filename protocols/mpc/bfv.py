"""Thin numpy bridge to SEAL's BFV scheme (through ``tenseal.sealapi``), for coefficient-packed products.

TenSEAL ships Microsoft SEAL's low-level API, but its Python bindings move polynomials only
through files (``save``/``load`` by path) or one coefficient per call. Writing SEAL's own
serialization format (uncompressed) from numpy is the fast way in: one plaintext of 8,192
coefficients loads in microseconds. SEAL itself writes compressed (zstd) objects; we ship those
bytes as they are and let SEAL read them back, so nothing here parses compressed data.

Parameters (:data:`POLY_DEGREE`, :data:`COEFF_BITS`): ring degree n = 8,192; data-level modulus
Q = q1 q2 q3 with q1 a 60-bit prime (the level results are switched down to) and two 45-bit primes;
a 40-bit special prime on top (key level). 190 bits in all, below the 218 bits that the
HomomorphicEncryption.org standard allows for 128-bit security at n = 8,192 (SEAL checks it:
``sec_level TC128``). The plaintext modulus is t = 2^M (the ring of the shares, M <= 56).

Noise flooding (:func:`flood_ciphertext`) adds to c0 an integer drawn uniformly from
[-2^b, 2^b] per coefficient, reduced into every RNS prime, so that the server's contribution to
the noise is statistically hidden (distance <= 2^-40 per coefficient when b is 40 bits above the
noise bound).
"""
from __future__ import annotations

import os
import struct
import tempfile
import threading
from functools import lru_cache
from itertools import count
from typing import Any

import numpy as np

from secureml.errors import ProtocolError

POLY_DEGREE = 8192
# data level q1 (60 bits, kept to the end), q2, q3 (45 bits each, dropped by modulus switching);
# the last one is SEAL's special (key-switching) prime
COEFF_BITS = (60, 45, 45, 40)
# SEAL's error distribution: clipped normal, sigma 3.2, |e| <= 6 sigma (seal/util/globals)
NOISE_MAX = 20

_SEAL_HEADER_SIZE = 16
_COMPR_NONE = 0
_tmp_lock = threading.Lock()
_tmp_dir: str | None = None
_tmp_counter = count()


def _sealapi():
    try:
        import tenseal.sealapi as sealapi
    except ImportError as exc:  # pragma: no cover - tenseal is a core dependency
        raise ProtocolError(f"the lattice cross term needs tenseal (SEAL): {exc}") from None
    return sealapi


def _scratch(kind: str) -> str:
    """A fresh file name in a private scratch folder (RAM-backed where possible).

    SEAL's bindings only load from and save to paths; names are unique per call so that
    concurrent sessions (server threads) never share a file.
    """
    global _tmp_dir
    with _tmp_lock:
        if _tmp_dir is None:
            base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
            _tmp_dir = tempfile.mkdtemp(prefix="secureml-bfv-", dir=base)
            os.chmod(_tmp_dir, 0o700)
            import atexit
            import shutil

            atexit.register(shutil.rmtree, _tmp_dir, True)  # files are unlinked as used; drop the folder
        return os.path.join(_tmp_dir, f"{kind}-{os.getpid()}-{next(_tmp_counter)}")


class BFVContext:
    """SEAL context for BFV with plaintext modulus 2^plain_bits, plus what numpy needs to talk to it."""

    def __init__(self, plain_bits: int, seed: int | None = None) -> None:
        s = _sealapi()
        self.s = s
        self.n = POLY_DEGREE
        self.plain_bits = int(plain_bits)
        parms = s.EncryptionParameters(s.SCHEME_TYPE.BFV)
        parms.set_poly_modulus_degree(self.n)
        parms.set_coeff_modulus(s.CoeffModulus.Create(self.n, list(COEFF_BITS)))
        parms.set_plain_modulus(s.Modulus(1 << self.plain_bits))
        if seed is not None:
            # tests only (a seeded Party): SEAL's keys and encryption noise from a fixed seed, so a
            # session's transcript is reproducible -- as insecure as the seeded Party itself
            import hashlib

            words = np.frombuffer(hashlib.blake2b(f"bfv:{seed}".encode(), digest_size=64).digest(), dtype="<u8")
            parms.set_random_generator(s.Blake2xbPRNGFactory([int(w) for w in words]))
        self.ctx = s.SEALContext(parms, True, s.SEC_LEVEL_TYPE.TC128)
        if not self.ctx.parameters_set():
            raise ProtocolError(f"SEAL rejected the BFV parameters: {self.ctx.parameters_error_message()}")
        self.primes = [m.value() for m in parms.coeff_modulus()]
        self.data_primes = self.primes[:-1]
        self.Q = 1
        for p in self.data_primes:
            self.Q *= p
        self.evaluator = s.Evaluator(self.ctx)
        self.first_parms_id = self.ctx.first_parms_id()
        self.last_parms_id = self.ctx.last_parms_id()
        # the 6-byte prefix of SEAL's header (magic, header size, version) as this SEAL writes it
        probe = _scratch("probe")
        s.Plaintext(1).save(probe)
        with open(probe, "rb") as f:
            self._header_prefix = f.read(5)
        os.unlink(probe)
        # 2^k mod p for the flooding arithmetic
        self._two32 = [pow(2, 32, p) for p in self.data_primes]

    # ---- SEAL's (uncompressed) serialization, written from numpy -----------------------------
    def _header(self, size: int) -> bytes:
        return self._header_prefix + bytes([_COMPR_NONE]) + b"\0\0" + struct.pack("<Q", size)

    def _dynarray(self, a: np.ndarray) -> bytes:
        body = struct.pack("<Q", a.size) + np.ascontiguousarray(a, dtype="<u8").tobytes()
        return self._header(_SEAL_HEADER_SIZE + len(body)) + body

    def plaintext(self, coeffs: np.ndarray) -> Any:
        """A SEAL plaintext with the given coefficients (each < 2^plain_bits), in coefficient form."""
        coeffs = np.asarray(coeffs, dtype=np.uint64)
        body = b"\0" * 32 + struct.pack("<Qd", coeffs.size, 1.0) + self._dynarray(coeffs)
        pt = self.s.Plaintext()
        self._load(pt, self._header(_SEAL_HEADER_SIZE + len(body)) + body)
        return pt

    def ciphertext_rns(self, rns: np.ndarray) -> Any:
        """A size-2 ciphertext at the data level from its RNS coefficients (2, k, n), coefficient form."""
        rns = np.ascontiguousarray(rns, dtype=np.uint64)
        k = len(self.data_primes)
        if rns.shape != (2, k, self.n):
            raise ValueError(f"RNS shape {rns.shape} != (2, {k}, {self.n})")
        body = (struct.pack("<4Q", *self.first_parms_id) + b"\0"
                + struct.pack("<QQQdQ", 2, self.n, k, 1.0, 1) + self._dynarray(rns.ravel()))
        ct = self.s.Ciphertext(self.ctx)
        self._load(ct, self._header(_SEAL_HEADER_SIZE + len(body)) + body)
        return ct

    def _load(self, obj: Any, data: bytes) -> None:
        path = _scratch("in")
        try:
            with open(path, "wb") as f:
                f.write(data)
            obj.load(self.ctx, path)
        except (RuntimeError, ValueError) as exc:
            raise ProtocolError(f"malformed lattice ciphertext or key: {exc}") from None
        finally:
            try:
                os.unlink(path)
            except OSError:
                pass

    def to_bytes(self, obj: Any) -> bytes:
        """SEAL's own serialization (zstd-compressed; seeded ciphertexts stay half size)."""
        path = _scratch("out")
        try:
            obj.save(path)
            with open(path, "rb") as f:
                return f.read()
        finally:
            try:
                os.unlink(path)
            except OSError:
                pass

    def load_ciphertext(self, data: bytes, *, level: str = "first") -> Any:
        """A peer's ciphertext; SEAL validates it, we also check its level, size and form."""
        ct = self.s.Ciphertext(self.ctx)
        self._load(ct, data)
        want = self.first_parms_id if level == "first" else self.last_parms_id
        if list(ct.parms_id()) != list(want) or ct.size() != 2 or ct.is_ntt_form():
            raise ProtocolError("lattice ciphertext at the wrong level, size or form")
        return ct

    def load_public_key(self, data: bytes) -> Any:
        pk = self.s.PublicKey()
        self._load(pk, data)
        return pk

    # ---- noise flooding -------------------------------------------------------------------
    def flood_ciphertext(self, rng: Any, bits: int) -> Any:
        """Encryption of zero with noise uniform in [-2^bits, 2^bits) in c0 and c1 = 0.

        The integer e = hi 2^32 + lo (hi signed, lo in [0, 2^32)) is reduced into each prime
        without overflowing uint64: 60-bit primes leave 4 spare bits, so the multiplication by
        2^32 mod p runs as eight multiplications by 16.
        """
        if not 32 < bits <= 32 + 62:
            raise ValueError("flooding bits out of range")
        n = self.n
        hi = rng.random_below(n, bits - 32 + 1).astype(np.int64) - np.int64(1 << (bits - 32))
        lo = rng.random_below(n, 32)
        rns = np.zeros((2, len(self.data_primes), n), dtype=np.uint64)
        for k, p in enumerate(self.data_primes):
            P = np.uint64(p)
            x = (hi % np.int64(p)).astype(np.uint64)  # non-negative representative of hi mod p
            for _ in range(8):
                x = (x * np.uint64(16)) % P
            rns[0, k] = (x + lo % P) % P
        return self.ciphertext_rns(rns)


@lru_cache(maxsize=8)
def context(plain_bits: int, seed: int | None = None) -> BFVContext:
    """One context per plaintext modulus and process (SEAL contexts are immutable, thread-safe);
    ``seed`` (tests with seeded parties only) makes SEAL's randomness reproducible."""
    return BFVContext(plain_bits, seed)
