"""The client's cache of public feature maps: files by hash, decoded once per process."""
from __future__ import annotations

from protocols.krr.cache import PublicModelCache


def test_store_has_load_once(tmp_path):
    cache = PublicModelCache(tmp_path / "pm")
    assert not cache.has("ab")
    cache.store("ab", b"blob")
    assert cache.has("ab") and cache.path("ab").read_bytes() == b"blob"
    calls = []

    def decode(b: bytes) -> str:
        calls.append(b)
        return b.decode()

    assert cache.load("ab", decode) == "blob" and cache.load("ab", decode) == "blob"
    assert calls == [b"blob"]  # kept loaded: decoded once


def test_default_root_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SECUREML_CACHE", str(tmp_path))
    assert PublicModelCache().path("x") == tmp_path / "public-models" / "x.npz"
