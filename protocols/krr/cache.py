"""The query owner's cache of public feature maps (compact models), on disk and in memory.

A compact model's public part (random feature map, PCA basis) is sent once per client and kept
under its SHA-256; later sessions only compare the hash. The files hold public data only.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Callable


def default_root() -> Path:
    """``$SECUREML_CACHE/public-models`` (default ``~/.cache/secureml/public-models``)."""
    return Path(os.environ.get("SECUREML_CACHE", Path.home() / ".cache" / "secureml")) / "public-models"


class PublicModelCache:
    """sha256 -> public model: files under ``root``, loaded models kept in memory (warm client)."""

    def __init__(self, root: Path | None = None) -> None:
        self._root = root
        self._loaded: dict[str, Any] = {}
        self._seen: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    @property
    def root(self) -> Path:
        # resolved at use, so a test or a user that sets SECUREML_CACHE later is honoured
        return default_root() if self._root is None else self._root

    def path(self, sha: str) -> Path:
        return self.root / f"{sha}.npz"

    def has(self, sha: str) -> bool:
        # a file seen under this root in this process is taken as still there: no file-system
        # calls on a warm client's session path (load() keeps the decoded model anyway)
        key = (os.environ.get("SECUREML_CACHE", ""), sha) if self._root is None else ("", sha)
        if key in self._seen:
            return True
        if self.path(sha).exists():
            self._seen.add(key)
            return True
        return False

    def store(self, sha: str, blob: bytes) -> None:
        path = self.path(sha)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blob)

    def load(self, sha: str, decode: Callable[[bytes], Any]) -> Any:
        """The model with this hash, decoded from its file once per process."""
        with self._lock:
            model = self._loaded.get(sha)
        if model is None:
            model = decode(self.path(sha).read_bytes())
            with self._lock:
                self._loaded[sha] = model
        return model


#: the process-wide cache the client uses by default
PUBLIC_MODELS = PublicModelCache()
