"""Local-disk backend: objects are files under a root folder.

Writes go to a hidden temporary name in the target folder, are fsynced, then linked to the
final name, which fails if the name exists: an object, once stored, is never overwritten, and
a crash never leaves a half-written object under its final name.
"""
from __future__ import annotations

import errno
import os
import shutil
import uuid
from typing import BinaryIO, Iterator

from app.storage.base import ObjectMissing, StorageFull

TMP_PREFIX = ".tmp-"


def _full(error: OSError) -> bool:
    return error.errno in (errno.ENOSPC, errno.EDQUOT)


class LocalWriter:
    def __init__(self, backend: "LocalBackend", key: str):
        self.backend = backend
        self.key = key
        self.path = backend.path(key)
        folder = os.path.dirname(self.path)
        os.makedirs(folder, exist_ok=True)
        self.tmp_path = os.path.join(folder, f"{TMP_PREFIX}{uuid.uuid4().hex}")
        self.file = open(self.tmp_path, "xb")
        self.done = False

    def write(self, data) -> None:
        try:
            self.file.write(data)
        except OSError as error:
            self.abort()
            if _full(error):
                raise StorageFull(str(error)) from error
            raise

    def append_object(self, key: str) -> None:
        self.file.flush()
        with open(self.backend.path(key), "rb") as source:
            remaining = os.fstat(source.fileno()).st_size
            out = self.file.fileno()
            try:
                while remaining:
                    copied = os.copy_file_range(source.fileno(), out, remaining)
                    if copied == 0:
                        raise OSError(errno.EIO, "short copy of " + key)
                    remaining -= copied
            except OSError as error:
                self.abort()
                if _full(error):
                    raise StorageFull(str(error)) from error
                raise
        self.file.seek(0, os.SEEK_END)

    def commit(self) -> str:
        try:
            self.file.flush()
            if self.backend.fsync:
                os.fsync(self.file.fileno())
            self.file.close()
            os.link(self.tmp_path, self.path)  # EEXIST: never overwrite a stored object
        except OSError as error:
            self.abort()
            if _full(error):
                raise StorageFull(str(error)) from error
            raise
        os.unlink(self.tmp_path)
        if self.backend.fsync:
            dir_fd = os.open(os.path.dirname(self.path), os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        self.done = True
        return self.key

    def abort(self) -> None:
        if self.done:
            return
        self.done = True
        try:
            self.file.close()
        finally:
            try:
                os.unlink(self.tmp_path)
            except FileNotFoundError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.abort()


class LocalBackend:
    name = "local"

    def __init__(self, root: str, fsync: bool = True):
        self.root = os.path.abspath(root)
        self.fsync = fsync

    def path(self, key: str) -> str:
        parts = key.split("/")
        if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"invalid storage key {key!r}")
        return os.path.join(self.root, *parts)

    def open_writer(self, key: str) -> LocalWriter:
        try:
            return LocalWriter(self, key)
        except OSError as error:
            if _full(error):
                raise StorageFull(str(error)) from error
            raise

    def open_read(self, key: str, offset: int = 0) -> BinaryIO:
        try:
            handle = open(self.path(key), "rb")
        except FileNotFoundError as error:
            raise ObjectMissing(key) from error
        if offset:
            handle.seek(offset)
        return handle

    def size(self, key: str) -> int:
        try:
            return os.stat(self.path(key)).st_size
        except FileNotFoundError as error:
            raise ObjectMissing(key) from error

    def exists(self, key: str) -> bool:
        return os.path.exists(self.path(key))

    def delete(self, key: str) -> None:
        try:
            os.unlink(self.path(key))
        except FileNotFoundError:
            pass

    def delete_prefix(self, prefix: str) -> int:
        folder = self.path(prefix.rstrip("/"))
        count = sum(len(files) for _, _, files in os.walk(folder))
        shutil.rmtree(folder, ignore_errors=True)
        return count

    def list_objects(self, prefix: str) -> Iterator[tuple[str, float]]:
        base = self.path(prefix.rstrip("/"))
        for folder, _, files in os.walk(base):
            for name in files:
                full = os.path.join(folder, name)
                try:
                    mtime = os.stat(full).st_mtime
                except FileNotFoundError:
                    continue
                yield os.path.relpath(full, self.root).replace(os.sep, "/"), mtime
