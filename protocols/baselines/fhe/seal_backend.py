"""Thin plumbing over ``tenseal.sealapi`` (Microsoft SEAL 4 through TenSEAL 0.3.18).

What the high-level TenSEAL API does not give us and this module does:

* contexts with an explicit prime chain, cached per parameter set (building one costs 0.2-2 s);
* the parms_id of every level, and the value of every prime;
* serialisation to/from ``bytes`` (sealapi only saves to and loads from file paths, so we go
  through a private temporary directory, in RAM where /dev/shm exists); every load is validated
  by SEAL against the context, and any failure becomes a :class:`ProtocolError`;
* the raw RNS words of a level-0 ciphertext / of the secret key (NTT form, prime q0), which is
  what lets the result be returned as a single polynomial coefficient (see :mod:`.server`).
"""
from __future__ import annotations

import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import tenseal.sealapi as seal

from secureml.errors import ProtocolError

_TMP_LOCK = threading.Lock()
_TMP_DIR: str | None = None
_COUNTER = [0]


def _tmp_path() -> str:
    """A fresh file name in this process's private temporary directory (RAM-backed if possible)."""
    global _TMP_DIR
    with _TMP_LOCK:
        if _TMP_DIR is None or not os.path.isdir(_TMP_DIR):
            base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
            _TMP_DIR = tempfile.mkdtemp(prefix="secureml-fhe-", dir=base)
            os.chmod(_TMP_DIR, 0o700)
            import atexit

            atexit.register(shutil.rmtree, _TMP_DIR, True)
        _COUNTER[0] += 1
        return os.path.join(_TMP_DIR, f"{os.getpid()}-{threading.get_ident()}-{_COUNTER[0]}.bin")


def to_bytes(obj: Any) -> bytes:
    """Serialise a SEAL object (or a ``Serializable`` from the key generator / encryptor)."""
    path = _tmp_path()
    try:
        obj.save(path)
        with open(path, "rb") as fh:
            return fh.read()
    finally:
        if os.path.exists(path):
            os.unlink(path)


def from_bytes(cls: type, ctx: "Context", data: bytes, what: str) -> Any:
    """Load a SEAL object of type ``cls`` from ``data``; SEAL checks it against the context."""
    path = _tmp_path()
    obj = cls()
    try:
        with open(path, "wb") as fh:
            fh.write(data)
        obj.load(ctx.seal, path)
    except Exception as exc:  # SEAL raises ValueError/RuntimeError/IOError on bad data
        raise ProtocolError(f"peer sent an invalid {what}: {exc}") from None
    finally:
        if os.path.exists(path):
            os.unlink(path)
    return obj


def galois_elt(step: int, poly_degree: int) -> int:
    """SEAL's Galois element for a left rotation of the slot vector by ``step`` > 0."""
    if not 0 < step < poly_degree // 2:
        raise ValueError(f"rotation step {step} out of range")
    return pow(3, step, 2 * poly_degree)


@dataclass
class Context:
    """A SEAL CKKS context plus the level chain (index 0 = last level, only prime q0)."""

    seal: Any
    poly_degree: int
    parms_ids: list[list[int]]  # parms_ids[l] = parms_id of the level holding primes q0..ql
    primes: list[int]  # primes[l] = q_l (data primes only, special prime excluded)
    special_prime: int
    encoder: Any
    evaluator: Any

    @property
    def top(self) -> int:
        return len(self.parms_ids) - 1

    @property
    def slots(self) -> int:
        return self.poly_degree // 2


_CTX_CACHE: dict[tuple[int, tuple[int, ...]], Context] = {}
_CTX_LOCK = threading.Lock()


def make_context(poly_degree: int, coeff_bits: tuple[int, ...] | list[int]) -> Context:
    """The (cached) 128-bit-secure CKKS context for this ring degree and prime sizes."""
    key = (int(poly_degree), tuple(int(b) for b in coeff_bits))
    with _CTX_LOCK:
        if key in _CTX_CACHE:
            return _CTX_CACHE[key]
        parms = seal.EncryptionParameters(seal.SCHEME_TYPE.CKKS)
        parms.set_poly_modulus_degree(key[0])
        parms.set_coeff_modulus(seal.CoeffModulus.Create(key[0], list(key[1])))
        ctx = seal.SEALContext(parms, True, seal.SEC_LEVEL_TYPE.TC128)
        if not ctx.parameters_set():
            raise ValueError(f"SEAL rejects these parameters: {ctx.parameters_error_message()}")
        ids: list[list[int]] = []
        cd = ctx.first_context_data()
        while cd is not None:
            ids.append(list(cd.parms_id()))
            cd = cd.next_context_data()
        ids.reverse()
        moduli = ctx.key_context_data().parms().coeff_modulus()
        primes = [int(m.value()) for m in moduli[:-1]]
        out = Context(
            seal=ctx,
            poly_degree=key[0],
            parms_ids=ids,
            primes=primes,
            special_prime=int(moduli[-1].value()),
            encoder=seal.CKKSEncoder(ctx),
            evaluator=seal.Evaluator(ctx),
        )
        if len(ids) != len(primes):
            raise ValueError("unexpected SEAL level chain")
        _CTX_CACHE[key] = out
        return out


def encode(ctx: Context, values: np.ndarray, level: int, scale: float) -> Any:
    """Encode a real slot vector (or a scalar, broadcast) at ``level`` with ``scale``."""
    pt = seal.Plaintext()
    if np.ndim(values) == 0:
        ctx.encoder.encode(float(values), ctx.parms_ids[level], float(scale), pt)
    else:
        ctx.encoder.encode(np.asarray(values, dtype=np.float64).tolist(), ctx.parms_ids[level], float(scale), pt)
    return pt


def level_of(ctx: Context, ct: Any) -> int:
    """Level index of a ciphertext (number of data primes it still carries, minus one)."""
    return int(ct.coeff_modulus_size()) - 1


def level0_words(ct: Any, poly_degree: int) -> np.ndarray:
    """RNS words (NTT form, mod q0) of a size-2 level-0 ciphertext: array (2, N) uint64."""
    if ct.size() != 2 or ct.coeff_modulus_size() != 1 or not ct.is_ntt_form():
        raise ValueError("expected a relinearised, NTT-form ciphertext at the last level")
    da = ct.dyn_array()
    at = da.at
    # sealapi exposes no buffer protocol: 2N element reads (~40 ms at N = 32768) happen once per query.
    return np.fromiter((at(i) for i in range(2 * poly_degree)), dtype=np.uint64, count=2 * poly_degree).reshape(
        2, poly_degree
    )


def secret_key_q0_words(sk: Any, poly_degree: int) -> np.ndarray:
    """The secret key's NTT-form words modulo q0 (the first RNS component)."""
    da = sk.data().dyn_array()
    at = da.at
    return np.fromiter((at(i) for i in range(poly_degree)), dtype=np.uint64, count=poly_degree)


def modmul_sum(a: np.ndarray, b: np.ndarray, q: int) -> int:
    """sum_j a_j * b_j mod q for uint64 arrays with entries < q < 2^61, exactly.

    Splits b into 20-bit limbs so every partial product fits in 81 bits -> Python ints are not
    needed per element: each limb product a_j * limb_j < 2^81 is reduced via float-free
    arithmetic on uint64 after splitting a into 30-bit halves.
    """
    a = np.asarray(a, dtype=np.uint64) % np.uint64(q)
    b = np.asarray(b, dtype=np.uint64) % np.uint64(q)
    a_lo = a & np.uint64((1 << 30) - 1)
    a_hi = a >> np.uint64(30)
    b_lo = b & np.uint64((1 << 30) - 1)
    b_hi = b >> np.uint64(30)
    # a*b = a_hi*b_hi*2^60 + (a_hi*b_lo + a_lo*b_hi)*2^30 + a_lo*b_lo, each product < 2^62
    total = 0
    for part, shift in ((a_hi * b_hi, 60), (a_hi * b_lo, 30), (a_lo * b_hi, 30), (a_lo * b_lo, 0)):
        # sum in chunks small enough not to overflow uint64 (each term < 2^62 -> 2 terms per add is unsafe)
        s = int(np.sum(part >> np.uint64(31), dtype=np.uint64)) << 31
        s += int(np.sum(part & np.uint64((1 << 31) - 1), dtype=np.uint64))
        total += s << shift
    return total % q


def centered(v: int, q: int) -> int:
    """Representative of v mod q in (-q/2, q/2]."""
    v %= q
    return v - q if v > q // 2 else v
