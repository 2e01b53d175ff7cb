"""What task types share: the account's files by id, reading their bytes, and storing a new
file (hashed while written, quota reserved, row created in one commit)."""
from __future__ import annotations

import hashlib
import uuid
from typing import Iterator

import sqlalchemy as sa
from marshmallow import ValidationError, fields

from app.errors import ApiError, NotFound
from app.extensions import db
from app.models import CloudFile, Pool
from app.models.types import utcnow
from app.schemas.uploads import check_file_name
from app.services import quotas
from app.services.pools import ensure_default_pool
from app.storage import backend_for

READ_BLOCK = 1024 * 1024


class FileName(fields.String):
    """A file name as uploads accept it (no separators or control characters, ≤ 255 bytes)."""

    def _deserialize(self, value, attr, data, **kwargs):
        name = super()._deserialize(value, attr, data, **kwargs)
        check_file_name(name)
        return name


def owned_files(account_id: uuid.UUID, file_ids: list, *, plain_only: bool = False) -> list[CloudFile]:
    """The account's live files with these ids, in that order; 404 FILE_NOT_FOUND naming the
    first that is missing or another account's, 400 for an encrypted one when `plain_only`."""
    ids = [uuid.UUID(str(i)) for i in file_ids]
    rows = {f.id: f for f in db.session.scalars(sa.select(CloudFile).where(
        CloudFile.id.in_(ids), CloudFile.account_id == account_id, CloudFile.deleted_at.is_(None)))}
    for file_id in ids:
        if file_id not in rows:
            raise NotFound("File not found", code="FILE_NOT_FOUND", details={"id": str(file_id)})
        if plain_only and rows[file_id].is_encrypted:
            raise ApiError("An encrypted file cannot be used by this task; decrypt it first",
                           code="FILE_ENCRYPTED", details={"id": str(file_id)})
    return [rows[i] for i in ids]


def read_file(file: CloudFile) -> Iterator[bytes]:
    backend = backend_for(db.session.get(Pool, file.pool_id))
    with backend.open_read(file.storage_key) as source:
        while True:
            block = source.read(READ_BLOCK)
            if not block:
                return
            yield block


class NewFile:
    """A file being written to a pool: `write()` bytes, then `publish()` it (quota reserved,
    row created) or `abort()`. The SHA-256 and size are computed as it is written."""

    def __init__(self, account_id: uuid.UUID, pool: Pool | None = None, file_id: uuid.UUID | None = None):
        # `file_id`: a caller that must find its output again after a crash (a resumed task)
        # chooses the id; by default a new random one.
        self.account_id = account_id
        self.pool = pool or ensure_default_pool()
        self.backend = backend_for(self.pool)
        self.file_id = file_id or uuid.uuid4()
        self.key = f"files/{self.file_id}"
        self.writer = self.backend.open_writer(self.key)
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data) -> int:
        self.digest.update(data)
        self.writer.write(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        pass

    def abort(self) -> None:
        self.writer.abort()
        self.backend.delete(self.key)

    def publish(self, name: str, mime_type: str, bundle_id=None, file_meta: dict | None = None) -> CloudFile:
        self.writer.commit()
        now = utcnow()
        try:
            quotas.reserve(self.account_id, self.size)
            file = CloudFile(
                id=self.file_id, name=name, mime_type=mime_type, size=self.size, hash=self.digest.hexdigest(),
                file_meta=file_meta or {}, user_meta={}, is_encrypted=False, encryption=None, pool_id=self.pool.id,
                bundle_id=uuid.UUID(str(bundle_id)) if bundle_id else None, account_id=self.account_id, storage_key=self.key, stored_size=self.size,
                uploaded_at=now, created_at=now, updated_at=now)
            db.session.add(file)
            db.session.commit()
        except BaseException:
            db.session.rollback()
            self.backend.delete(self.key)
            raise
        return file


def validate_uuid_list(values: list) -> None:
    for value in values:
        try:
            uuid.UUID(str(value))
        except ValueError as error:
            raise ValidationError(f"{value!r} is not an id") from error
