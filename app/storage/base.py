"""The storage protocol. Only backends know paths or buckets; everything else holds opaque keys.

A backend stores immutable objects. New objects are written through a `Writer`, which makes
the object visible under its key only on `commit()` (durably, all or nothing) and leaves no
trace on `abort()`. Optional abilities are separate protocols, checked before use:
`Composing` (a backend that makes one object out of others without copying their bytes, as
S3's multipart completion does), `Concatenating` (a writer that can append a stored object
without the bytes crossing user space). Ranged reads are not optional: `open_read` takes an
offset.
"""
from __future__ import annotations

from typing import BinaryIO, Iterator, Protocol, runtime_checkable


class StorageFull(Exception):
    """The backend has no space left; nothing was kept."""


class ObjectMissing(Exception):
    """No object under that key."""


class Writer(Protocol):
    key: str

    def write(self, data) -> None: ...

    def commit(self) -> str: ...

    def abort(self) -> None: ...


@runtime_checkable
class Concatenating(Protocol):
    def append_object(self, key: str) -> None:
        """Append the stored object `key` to this writer (server side, no user-space copy)."""


@runtime_checkable
class Composing(Protocol):
    def compose(self, source_keys: list[str], key: str) -> str:
        """Make `key` an object whose bytes are those of `source_keys` in order, without
        copying them; all or nothing, never overwriting `key`. The sources stay readable
        until deleted."""


class StorageBackend(Protocol):
    name: str

    def open_writer(self, key: str) -> Writer:
        """A writer for a new object under `key`; `commit` fails if `key` already exists."""

    def open_read(self, key: str, offset: int = 0) -> BinaryIO: ...

    def size(self, key: str) -> int: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None:
        """Remove `key`; a missing key is not an error."""

    def delete_prefix(self, prefix: str) -> int: ...

    def list_objects(self, prefix: str) -> Iterator[tuple[str, float]]:
        """(key, modified time as a UNIX timestamp) of every object under `prefix`."""
