"""Local-disk backend: objects are files under a root folder.

Writes go to a hidden temporary name in the target folder, are fsynced, then linked to the
final name, which fails if the name exists: an object, once stored, is never overwritten, and
a crash never leaves a half-written object under its final name.

A composed object (`compose`) is a folder of hard links to its parts plus a `.composite`
marker written last: no byte is copied, and reading it reads the parts in turn. A folder
without the marker is an interrupted compose: its parts show up as separate objects that no
row refers to, and cleanup sweeps them.
"""
from __future__ import annotations

import bisect
import ctypes
import errno
import functools
import io
import json
import os
import shutil
import uuid
from typing import BinaryIO, Iterator

from app.storage.base import ObjectMissing, StorageFull

TMP_PREFIX = ".tmp-"
COMPOSITE_MARKER = ".composite"
WRITEBACK_STEP = 1024 * 1024  # with fsync on, writeback starts after each MiB written
_SYNC_FILE_RANGE_WRITE = 2


def _full(error: OSError) -> bool:
    return error.errno in (errno.ENOSPC, errno.EDQUOT)


@functools.cache
def _sync_file_range():
    """libc's sync_file_range, looked up once; None where there is none."""
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing these bytes to disk now, without waiting (Linux's
    sync_file_range(SYNC_FILE_RANGE_WRITE)). The fsync at commit then finds most of a chunk
    on its way already instead of starting all of it at the end, so the disk works while the
    body is still arriving. Durability still comes from the fsync; where the call does not
    exist this does nothing."""
    function = _sync_file_range()
    if function is not None:
        function(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


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
        self.written = self.queued = 0  # bytes written; of those, handed to writeback early

    def write(self, data) -> None:
        try:
            self.file.write(data)
            self.written += len(data)
            if self.backend.fsync and self.written - self.queued >= WRITEBACK_STEP:
                self.file.flush()
                start_writeback(self.file.fileno(), self.queued, self.written - self.queued)
                self.queued = self.written
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


class _PartsReader(io.RawIOBase):
    """The parts of a composed object read as one seekable stream."""

    def __init__(self, paths: list[str], sizes: list[int]):
        self.paths = paths
        self.starts = [0]
        for size in sizes:
            self.starts.append(self.starts[-1] + size)
        self.position = 0
        self.open_index = -1
        self.handle = None

    def readable(self):
        return True

    def seekable(self):
        return True

    def tell(self):
        return self.position

    def seek(self, offset, whence=io.SEEK_SET):
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.starts[-1]}[whence]
        self.position = max(0, base + offset)
        return self.position

    def readinto(self, buffer) -> int:
        if self.position >= self.starts[-1]:
            return 0
        index = bisect.bisect_right(self.starts, self.position) - 1
        if index != self.open_index:
            if self.handle is not None:
                self.handle.close()
            self.handle = open(self.paths[index], "rb", buffering=0)
            self.open_index = index
        self.handle.seek(self.position - self.starts[index])
        view = memoryview(buffer)[: self.starts[index + 1] - self.position]
        count = self.handle.readinto(view)
        if not count:
            raise OSError(errno.EIO, f"part {self.paths[index]} is shorter than recorded")
        self.position += count
        return count

    def close(self):
        if self.handle is not None:
            self.handle.close()
            self.handle = None
        super().close()


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
        path = self.path(key)
        if os.path.isdir(path):
            paths, sizes = self._parts(key)
            handle = io.BufferedReader(_PartsReader(paths, sizes), buffer_size=1024 * 1024)
        else:
            try:
                handle = open(path, "rb")
            except FileNotFoundError as error:
                raise ObjectMissing(key) from error
        if offset:
            handle.seek(offset)
        return handle

    def _parts(self, key: str) -> tuple[list[str], list[int]]:
        folder = self.path(key)
        try:
            with open(os.path.join(folder, COMPOSITE_MARKER)) as marker:
                names = json.load(marker)["parts"]
        except FileNotFoundError as error:
            raise ObjectMissing(key) from error
        paths = [os.path.join(folder, name) for name in names]
        return paths, [os.stat(p).st_size for p in paths]

    def size(self, key: str) -> int:
        path = self.path(key)
        if os.path.isdir(path):
            return sum(self._parts(key)[1])
        try:
            return os.stat(path).st_size
        except FileNotFoundError as error:
            raise ObjectMissing(key) from error

    def exists(self, key: str) -> bool:
        path = self.path(key)
        if os.path.isdir(path):
            return os.path.exists(os.path.join(path, COMPOSITE_MARKER))
        return os.path.exists(path)

    def compose(self, source_keys: list[str], key: str) -> str:
        folder = self.path(key)
        os.makedirs(os.path.dirname(folder), exist_ok=True)
        try:
            os.mkdir(folder)  # FileExistsError: never overwrite
        except OSError as error:
            if _full(error):
                raise StorageFull(str(error)) from error
            raise
        try:
            names = []
            for number, source in enumerate(source_keys):
                name = f"{number:08d}"
                os.link(self.path(source), os.path.join(folder, name))
                names.append(name)
            tmp = os.path.join(folder, TMP_PREFIX + "marker")
            with open(tmp, "x") as marker:
                json.dump({"parts": names}, marker)
                marker.flush()
                if self.fsync:
                    os.fsync(marker.fileno())
            os.rename(tmp, os.path.join(folder, COMPOSITE_MARKER))
            if self.fsync:
                for target in (folder, os.path.dirname(folder)):
                    dir_fd = os.open(target, os.O_RDONLY)
                    try:
                        os.fsync(dir_fd)
                    finally:
                        os.close(dir_fd)
        except BaseException as error:
            shutil.rmtree(folder, ignore_errors=True)
            if isinstance(error, OSError) and _full(error):
                raise StorageFull(str(error)) from error
            raise
        return key

    def delete(self, key: str) -> None:
        path = self.path(key)
        if os.path.isdir(path):
            # only a composed object is a folder; a plain folder is no object to delete
            if os.path.exists(os.path.join(path, COMPOSITE_MARKER)):
                shutil.rmtree(path, ignore_errors=True)
            return
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    def delete_prefix(self, prefix: str) -> int:
        folder = self.path(prefix.rstrip("/"))
        count = sum(1 for _ in self.list_objects(prefix))
        shutil.rmtree(folder, ignore_errors=True)
        return count

    def list_objects(self, prefix: str) -> Iterator[tuple[str, float]]:
        base = self.path(prefix.rstrip("/"))
        for folder, subfolders, files in os.walk(base):
            if COMPOSITE_MARKER in files:  # one composed object: list it, not its parts
                subfolders.clear()
                try:
                    mtime = os.stat(os.path.join(folder, COMPOSITE_MARKER)).st_mtime
                except FileNotFoundError:
                    continue
                yield os.path.relpath(folder, self.root).replace(os.sep, "/"), mtime
                continue
            for name in files:
                full = os.path.join(folder, name)
                try:
                    mtime = os.stat(full).st_mtime
                except FileNotFoundError:
                    continue
                yield os.path.relpath(full, self.root).replace(os.sep, "/"), mtime
