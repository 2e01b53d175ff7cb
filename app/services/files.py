"""Stored files: metadata, streamed downloads (ranges, ETag, decryption), deletion."""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Iterator

from app import crypto
from app.errors import Forbidden, Gone
from app.extensions import db
from app.models import CloudFile, Pool
from app.models.types import utcnow
from app.services import quotas
from app.services.tenancy import get_owned
from app.storage import backend_for

STREAM_BLOCK = 1024 * 1024


def get_file(file_id, account_id: uuid.UUID) -> CloudFile:
    return get_owned(CloudFile, file_id, account_id, code="FILE_NOT_FOUND", what="File")


@dataclass
class Download:
    file: CloudFile
    size: int
    opener: object  # (start, end) -> iterator of bytes


def open_download(file_id, account_id: uuid.UUID, password: str | None) -> Download:
    """What a download streams. 410 after expiredAt; an encrypted file needs its password
    (403, revealing nothing, when it is missing or wrong)."""
    file = get_file(file_id, account_id)
    if file.expired_at is not None and file.expired_at <= utcnow():
        raise Gone("The file has expired", code="FILE_EXPIRED", details={"id": str(file.id)})
    backend = backend_for(db.session.get(Pool, file.pool_id))
    key, size = file.storage_key, file.size
    if not file.is_encrypted:
        def plain(start: int, end: int) -> Iterator[bytes]:
            remaining = end - start
            with backend.open_read(key, start) as source:
                while remaining > 0:
                    block = source.read(min(STREAM_BLOCK, remaining))
                    if not block:
                        return
                    remaining -= len(block)
                    yield block
        return Download(file, size, plain)

    if not password:
        raise Forbidden("This file is encrypted: send its password in X-Encrypt-Password",
                        code="PASSWORD_REQUIRED")
    try:
        file_key = crypto.open_file_key(password, file.encryption)
    except crypto.WrongPassword as error:
        raise Forbidden("The password is not correct", code="WRONG_PASSWORD") from error
    params = dict(file.encryption)

    def decrypted(start: int, end: int) -> Iterator[bytes]:
        return crypto.decrypt_range(file_key, params, lambda offset: backend.open_read(key, offset),
                                    size, start, end)
    return Download(file, size, decrypted)


def delete_file(file_id, account_id: uuid.UUID) -> None:
    """Delete a file: its row is marked deleted and its quota released in one commit, then
    its bytes are removed."""
    file = get_owned(CloudFile, file_id, account_id, code="FILE_NOT_FOUND", what="File", for_update=True)
    remove_file(file)


def remove_file(file: CloudFile) -> None:
    now = utcnow()
    file.deleted_at = now
    file.updated_at = now
    quotas.release(file.account_id, file.size)
    db.session.commit()
    backend_for(db.session.get(Pool, file.pool_id)).delete(file.storage_key)
