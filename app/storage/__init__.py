"""Storage backends, chosen per pool. Nothing outside this package assumes a path on disk."""
from __future__ import annotations

from flask import current_app

from app.storage.base import Composing, Concatenating, ObjectMissing, StorageBackend, StorageFull
from app.storage.local import LocalBackend

__all__ = ["Composing", "Concatenating", "ObjectMissing", "StorageBackend", "StorageFull", "backend_for"]

BACKENDS = {"local": LocalBackend}


def backend_for(pool) -> StorageBackend:
    """The backend of a pool. A local pool without a `root` uses STORAGE_UPLOADS_PATH."""
    config = pool.config or {}
    if pool.backend == "local":
        root = config.get("root") or current_app.config["STORAGE_UPLOADS_PATH"]
        return LocalBackend(root, fsync=current_app.config["STORAGE_FSYNC"])
    raise ValueError(f"unknown storage backend {pool.backend!r}")
