"""Integrity of model files: a SHA-256 over everything in the file and an optional Ed25519 signature.

What is hashed (:func:`content_digest`): a domain tag, the metadata JSON exactly as stored, then
every array in name order as (name, dtype, shape, raw C-order bytes), each length-prefixed -- so
scaling the weights by 1.05, moving the offset by 100 kcal/mol, dropping a column or renaming an
array all change the digest.  The digest is stored in the file as ``__secureml_sha256__``
(written by every save since format version 3 and checked on every load: a file modified after
it was written is refused with one line).

A hash only detects accidents and careless edits: whoever can rewrite the file can rewrite its
hash.  Against a deliberate tamperer the model owner signs the digest with an Ed25519 key
(``secureml keys signing``, ``secureml sign`` or ``secureml train --sign-key``); the signature and
the signer's public key are stored as ``__secureml_signature__`` and ``secureml serve
--verify-key OWNER.pub`` refuses any file not signed by that key.

Threat model: the attacker can write the model file on disk (a shared volume, a compromised
deployment pipeline) but not read the owner's signing key.
"""
from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from secureml.errors import ModelError

__all__ = ["HASH_KEY", "SIG_KEY", "content_digest", "generate_signing_key", "sign_digest",
           "verify_signature", "load_private_key", "load_public_key", "public_key_hex"]

HASH_KEY = "__secureml_sha256__"
SIG_KEY = "__secureml_signature__"
_TAG = b"secureml-model-digest-v1\x00"


def _update(h: "hashlib._Hash", data: bytes | memoryview) -> None:
    h.update(struct.pack("<Q", memoryview(data).nbytes))
    h.update(data)


def content_digest(meta_json: str, arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 (hex) over the metadata text and every array (name, dtype, shape, bytes)."""
    h = hashlib.sha256(_TAG)
    _update(h, meta_json.encode("utf-8"))
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        _update(h, json.dumps([name, a.dtype.str, list(a.shape)]).encode())
        _update(h, memoryview(a.reshape(-1).view(np.uint8)) if a.size else b"")
    return h.hexdigest()


def generate_signing_key() -> tuple[bytes, bytes]:
    """A new Ed25519 key pair: (private key PEM, public key PEM)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    priv = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return priv, pub


def load_private_key(path: str | Path) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ModelError(f"{path}: not a readable signing key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ModelError(f"{path}: not an Ed25519 private key (make one with `secureml keys signing`)")
    return key


def load_public_key(path: str | Path) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        raise ModelError(f"{path}: not a readable public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ModelError(f"{path}: not an Ed25519 public key")
    return key


def public_key_hex(public_key: Any) -> str:
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def sign_digest(digest_hex: str, private_key: Any) -> str:
    """The signature entry stored in the file: JSON {alg, public_key, signature} (hex)."""
    sig = private_key.sign(_TAG + bytes.fromhex(digest_hex))
    return json.dumps({"alg": "ed25519", "public_key": public_key_hex(private_key.public_key()),
                       "signature": sig.hex()})


def verify_signature(digest_hex: str, entry: str | None, public_key: Any, source: str) -> None:
    """ModelError unless ``entry`` is a valid signature of the digest by ``public_key``."""
    from cryptography.exceptions import InvalidSignature

    if entry is None:
        raise ModelError(f"{source}: model file is not signed (sign it with `secureml sign`)")
    try:
        info = json.loads(entry)
        sig = bytes.fromhex(info["signature"])
        signer = info["public_key"]
    except (ValueError, KeyError, TypeError):
        raise ModelError(f"{source}: malformed signature entry") from None
    if signer != public_key_hex(public_key):
        raise ModelError(f"{source}: model file is signed by another key ({signer[:16]}...)")
    try:
        public_key.verify(sig, _TAG + bytes.fromhex(digest_hex))
    except InvalidSignature:
        raise ModelError(f"{source}: model file signature is invalid (file modified after signing)") from None
