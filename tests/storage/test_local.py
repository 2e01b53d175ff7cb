"""The storage contract, run against every backend.

`StorageContract` holds the tests every backend must pass; a backend joins by subclassing it
with a `make_backend` (and saying whether its writers can concatenate server side). Checks that
only make sense for one backend (files on disk, no temporary names left) sit in its subclass.
"""
from __future__ import annotations

import os
import uuid

import pytest

from app.storage import Concatenating, ObjectMissing
from app.storage.local import LocalBackend
from tests.support import random_bytes

INVALID_KEYS = ["../x", "/abs", "a//b", "", ".", "a/./b", "a/../b", "a/", "uploads/../../etc/passwd"]


def store(backend, key: str, data: bytes) -> str:
    writer = backend.open_writer(key)
    writer.write(data)
    return writer.commit()


def read_all(backend, key: str, offset: int = 0) -> bytes:
    with backend.open_read(key, offset) as handle:
        return handle.read()


class StorageContract:
    """Every storage backend passes these."""

    concatenating = False

    @pytest.fixture()
    def backend(self, tmp_path):
        return self.make_backend(tmp_path)

    def make_backend(self, tmp_path):  # pragma: no cover - each backend overrides it
        raise NotImplementedError

    @pytest.fixture()
    def prefix(self):
        """A prefix of this test's own, so a shared bucket could hold several runs."""
        return f"contract-{uuid.uuid4().hex[:12]}"

    # write, commit, read ------------------------------------------------------------------
    def test_write_commit_read(self, backend, prefix):
        data = random_bytes(300_000, seed=1)
        key = f"{prefix}/obj"
        writer = backend.open_writer(key)
        for start in range(0, len(data), 65_536):
            writer.write(data[start:start + 65_536])
        assert not backend.exists(key), "an object must not be visible before commit"
        assert writer.commit() == key
        assert backend.exists(key)
        assert backend.size(key) == len(data)
        assert read_all(backend, key) == data

    @pytest.mark.parametrize("offset", [0, 1, 4095, 150_000, 299_999, 300_000])
    def test_read_from_offset(self, backend, prefix, offset):
        data = random_bytes(300_000, seed=2)
        key = store(backend, f"{prefix}/obj", data)
        assert read_all(backend, key, offset) == data[offset:]

    def test_empty_object(self, backend, prefix):
        key = store(backend, f"{prefix}/empty", b"")
        assert backend.exists(key) and backend.size(key) == 0 and read_all(backend, key) == b""

    def test_missing_object(self, backend, prefix):
        key = f"{prefix}/nothing"
        assert backend.exists(key) is False
        with pytest.raises(ObjectMissing):
            backend.open_read(key)
        with pytest.raises(ObjectMissing):
            backend.size(key)
        backend.delete(key)  # deleting what is not there is not an error
        assert backend.delete_prefix(f"{prefix}/none") == 0
        assert list(backend.list_objects(f"{prefix}/none")) == []

    def test_commit_never_overwrites(self, backend, prefix):
        key = store(backend, f"{prefix}/obj", b"first")
        second = backend.open_writer(key)
        second.write(b"second, longer")
        with pytest.raises(Exception):  # noqa: B017 - the type is the backend's; the outcome is what counts
            second.commit()
        assert read_all(backend, key) == b"first"
        assert [k for k, _ in backend.list_objects(prefix)] == [key], "the refused write left something behind"

    def test_abort_leaves_nothing(self, backend, prefix):
        key = f"{prefix}/aborted"
        writer = backend.open_writer(key)
        writer.write(random_bytes(100_000, seed=3))
        writer.abort()
        writer.abort()  # twice is harmless
        assert not backend.exists(key)
        assert list(backend.list_objects(prefix)) == []

    def test_exception_in_writer_context_aborts(self, backend, prefix):
        key = f"{prefix}/failed"
        with pytest.raises(RuntimeError):
            with backend.open_writer(key) as writer:
                writer.write(b"partial")
                raise RuntimeError("the client went away")
        assert not backend.exists(key)
        assert list(backend.list_objects(prefix)) == []

    def test_delete(self, backend, prefix):
        keep = store(backend, f"{prefix}/keep", b"k")
        gone = store(backend, f"{prefix}/gone", b"g")
        backend.delete(gone)
        assert not backend.exists(gone)
        assert backend.exists(keep) and read_all(backend, keep) == b"k"
        # the key is free again: a new object may be stored under it
        store(backend, gone, b"again")
        assert read_all(backend, gone) == b"again"

    def test_delete_prefix(self, backend, prefix):
        doomed = [store(backend, f"{prefix}/task/{i:08d}", bytes([i]) * 10) for i in range(5)]
        nested = store(backend, f"{prefix}/task/deeper/x", b"x")
        neighbour = store(backend, f"{prefix}/task-2/00000000", b"n")  # shares the text prefix only
        assert backend.delete_prefix(f"{prefix}/task") == 6
        for key in doomed + [nested]:
            assert not backend.exists(key)
        assert backend.exists(neighbour)
        assert [k for k, _ in backend.list_objects(prefix)] == [neighbour]

    def test_list_objects(self, backend, prefix):
        keys = {store(backend, f"{prefix}/a/{i}", b"1") for i in range(3)}
        keys.add(store(backend, f"{prefix}/a/b/c", b"2"))
        other = store(backend, f"{prefix}/z/1", b"3")
        listed = dict(backend.list_objects(f"{prefix}/a"))
        assert set(listed) == keys
        assert other not in listed
        for mtime in listed.values():
            assert isinstance(mtime, float) and mtime > 0
        assert set(dict(backend.list_objects(prefix))) == keys | {other}
        # a trailing slash names the same prefix
        assert set(dict(backend.list_objects(f"{prefix}/a/"))) == keys

    def test_append_object_concatenates(self, backend, prefix):
        parts = [random_bytes(size, seed=size) for size in (1, 70_000, 1024 * 1024 + 3)]
        part_keys = [store(backend, f"{prefix}/parts/{i}", part) for i, part in enumerate(parts)]
        writer = backend.open_writer(f"{prefix}/joined")
        assert isinstance(writer, Concatenating) is self.concatenating
        if not self.concatenating:  # the ability is optional; a backend without it says so above
            writer.abort()
            return
        writer.write(b"head:")
        for key in part_keys:
            writer.append_object(key)
        writer.write(b":tail")
        writer.commit()
        assert read_all(backend, f"{prefix}/joined") == b"head:" + b"".join(parts) + b":tail"
        for key, part in zip(part_keys, parts):  # the sources are untouched
            assert read_all(backend, key) == part

    @pytest.mark.parametrize("key", INVALID_KEYS)
    def test_invalid_keys_are_refused(self, backend, key):
        with pytest.raises(ValueError):
            backend.open_writer(key)
        with pytest.raises(ValueError):
            backend.open_read(key)
        with pytest.raises(ValueError):
            backend.exists(key)
        with pytest.raises(ValueError):
            backend.size(key)
        with pytest.raises(ValueError):
            backend.delete(key)

    @pytest.mark.parametrize("prefix_value", ["..", "../", "/", "/etc", "a//b"])
    def test_invalid_prefixes_are_refused(self, backend, prefix_value):
        with pytest.raises(ValueError):
            backend.delete_prefix(prefix_value)
        with pytest.raises(ValueError):
            list(backend.list_objects(prefix_value))


class TestLocalBackend(StorageContract):
    concatenating = True

    def make_backend(self, tmp_path):
        return LocalBackend(str(tmp_path / "root"), fsync=True)

    @staticmethod
    def files_on_disk(root) -> list[str]:
        return sorted(os.path.relpath(os.path.join(folder, name), root)
                      for folder, _, names in os.walk(root) for name in names)

    def test_abort_leaves_no_temporary_file(self, backend):
        writer = backend.open_writer("uploads/t/00000000")
        writer.write(b"x" * 10_000)
        assert len(self.files_on_disk(backend.root)) == 1  # the hidden temporary
        writer.abort()
        assert self.files_on_disk(backend.root) == []

    def test_commit_leaves_only_the_object(self, backend):
        key = store(backend, "files/abc", b"data")
        assert self.files_on_disk(backend.root) == [os.path.join("files", "abc")]
        refused = backend.open_writer(key)
        refused.write(b"other")
        with pytest.raises(FileExistsError):
            refused.commit()
        assert self.files_on_disk(backend.root) == [os.path.join("files", "abc")]

    def test_objects_stay_under_the_root(self, backend, tmp_path):
        outside = tmp_path / "outside"
        outside.write_bytes(b"precious")
        for key in ("../outside", "a/../../outside"):
            with pytest.raises(ValueError):
                backend.delete(key)
            with pytest.raises(ValueError):
                backend.delete_prefix(key)
        assert outside.read_bytes() == b"precious"
