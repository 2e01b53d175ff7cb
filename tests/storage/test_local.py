"""The storage contract, run against every backend.

`StorageContract` holds the tests every backend must pass; a backend joins by subclassing it
with a `make_backend` and saying which optional abilities it has (`concatenating` writers,
`composing`). Checks that only make sense for one backend (files on disk, no temporary names
left) sit in its subclass.
"""
from __future__ import annotations

import os
import uuid

import pytest

from app.storage import Composing, Concatenating, ObjectMissing
from app.storage.local import WRITEBACK_STEP, LocalBackend
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
    composing = False

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

    def test_a_prefix_is_not_an_object(self, backend, prefix):
        """A key under which other objects live is not itself an object: it does not exist, and
        deleting it (a missing key) removes nothing."""
        inner = store(backend, f"{prefix}/folder/inner", b"inner")
        outer = f"{prefix}/folder"
        assert backend.exists(outer) is False
        with pytest.raises(ObjectMissing):
            backend.size(outer)
        with pytest.raises(ObjectMissing):
            backend.open_read(outer)
        backend.delete(outer)
        assert backend.exists(inner) and read_all(backend, inner) == b"inner"

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

    # compose (optional) ---------------------------------------------------------------------
    def parts(self, backend, prefix, sizes=(5, 0, 70_000, 1024 * 1024 + 3, 1)):
        data = [random_bytes(size, seed=size + 100) for size in sizes]
        return data, [store(backend, f"{prefix}/parts/{i:08d}", part) for i, part in enumerate(data)]

    def test_compose(self, backend, prefix):
        assert isinstance(backend, Composing) is self.composing
        if not self.composing:  # the ability is optional; a backend without it says so above
            return
        data, keys = self.parts(backend, prefix)
        whole, key = b"".join(data), f"{prefix}/whole"
        assert backend.compose(keys, key) == key
        assert backend.exists(key) and backend.size(key) == len(whole)
        assert read_all(backend, key) == whole
        for offset in (1, 4, 5, 6, 70_004, 70_005, 70_006, len(whole) - 1, len(whole)):
            assert read_all(backend, key, offset) == whole[offset:], offset
        # listed once, as one object, next to its sources
        assert {k for k, _ in backend.list_objects(prefix)} == set(keys) | {key}
        assert {k for k, _ in backend.list_objects(key)} == {key}
        # the sources may go (finalize removes the chunks): the composed object stays whole
        assert backend.delete_prefix(f"{prefix}/parts") == len(keys)
        assert read_all(backend, key) == whole and backend.size(key) == len(whole)
        backend.delete(key)
        assert not backend.exists(key)
        assert list(backend.list_objects(prefix)) == []

    def test_composed_object_reads_in_pieces(self, backend, prefix):
        if not self.composing:
            assert not isinstance(backend, Composing)
            return
        data, keys = self.parts(backend, prefix, sizes=(3, 10, 0, 7, 65_536, 2))
        whole = b"".join(data)
        key = backend.compose(keys, f"{prefix}/whole")
        for piece in (1, 4, 9, 4096, 100_000):
            got = bytearray()
            with backend.open_read(key, 2) as handle:
                while block := handle.read(piece):
                    got += block
            assert bytes(got) == whole[2:], piece
        buffer = bytearray(5000)  # as finalize reads: readinto a reused buffer
        got = bytearray()
        with backend.open_read(key) as handle:
            while count := handle.readinto(buffer):
                got += buffer[:count]
        assert bytes(got) == whole

    def test_compose_never_overwrites(self, backend, prefix):
        if not self.composing:
            assert not isinstance(backend, Composing)
            return
        _, keys = self.parts(backend, prefix, sizes=(10, 20))
        plain = store(backend, f"{prefix}/plain", b"plain")
        with pytest.raises(Exception):  # noqa: B017 - the type is the backend's; the outcome is what counts
            backend.compose(keys, plain)
        assert read_all(backend, plain) == b"plain"
        composed = backend.compose(keys[:1], f"{prefix}/composed")
        with pytest.raises(Exception):  # noqa: B017
            backend.compose(keys, composed)
        assert backend.size(composed) == 10
        assert {k for k, _ in backend.list_objects(prefix)} == set(keys) | {plain, composed}

    def test_compose_is_all_or_nothing(self, backend, prefix):
        if not self.composing:
            assert not isinstance(backend, Composing)
            return
        _, keys = self.parts(backend, prefix, sizes=(10, 20))
        key = f"{prefix}/whole"
        with pytest.raises(Exception):  # noqa: B017
            backend.compose([keys[0], f"{prefix}/parts/missing", keys[1]], key)
        assert not backend.exists(key)
        with pytest.raises(ObjectMissing):
            backend.open_read(key)
        assert {k for k, _ in backend.list_objects(prefix)} == set(keys)
        # and the key is still free
        assert read_all(backend, backend.compose(keys, key)) == read_all(backend, keys[0]) + read_all(backend, keys[1])

    def test_delete_prefix_counts_a_composed_object_once(self, backend, prefix):
        if not self.composing:
            assert not isinstance(backend, Composing)
            return
        _, keys = self.parts(backend, prefix, sizes=(10, 20, 30))
        backend.compose(keys, f"{prefix}/files/whole")
        store(backend, f"{prefix}/files/plain", b"x")
        assert len(list(backend.list_objects(f"{prefix}/files"))) == 2
        assert backend.delete_prefix(f"{prefix}/files") == 2
        assert list(backend.list_objects(f"{prefix}/files")) == []

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
        if self.composing:
            source = store(backend, f"contract-{uuid.uuid4().hex[:12]}/source", b"s")
            with pytest.raises(ValueError):
                backend.compose([source], key)
            target = f"contract-{uuid.uuid4().hex[:12]}/target"
            with pytest.raises(ValueError):
                backend.compose([source, key], target)
            assert not backend.exists(target)

    @pytest.mark.parametrize("prefix_value", ["..", "../", "/", "/etc", "a//b"])
    def test_invalid_prefixes_are_refused(self, backend, prefix_value):
        with pytest.raises(ValueError):
            backend.delete_prefix(prefix_value)
        with pytest.raises(ValueError):
            list(backend.list_objects(prefix_value))


class TestLocalBackend(StorageContract):
    concatenating = True
    composing = True

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

    def test_writes_past_the_writeback_step_in_odd_pieces(self, backend):
        """With fsync on, writeback is started every WRITEBACK_STEP bytes while writing: the
        object still holds exactly what was written, from views of a reused buffer too."""
        data = random_bytes(3 * WRITEBACK_STEP + 12_345, seed=7)
        writer = backend.open_writer("uploads/t/00000001")
        buffer = memoryview(bytearray(700_001))
        for start in range(0, len(data), len(buffer)):
            piece = data[start:start + len(buffer)]
            buffer[:len(piece)] = piece
            writer.write(buffer[:len(piece)])
        assert writer.written == len(data) and writer.queued > 2 * WRITEBACK_STEP
        writer.commit()
        assert read_all(backend, "uploads/t/00000001") == data

    def test_objects_stay_under_the_root(self, backend, tmp_path):
        outside = tmp_path / "outside"
        outside.write_bytes(b"precious")
        for key in ("../outside", "a/../../outside"):
            with pytest.raises(ValueError):
                backend.delete(key)
            with pytest.raises(ValueError):
                backend.delete_prefix(key)
        assert outside.read_bytes() == b"precious"
