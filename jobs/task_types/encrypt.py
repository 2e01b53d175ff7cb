"""FileEncrypt and FileDecrypt: the account's files re-written with (or without) the at-rest
encryption that uploads with `encryptPassword` use (app/crypto.py). Parameters: `fileIds`
(1..100) and `password`. Results: filesProcessed, fileIds (and skippedFileIds: files deleted,
or already in the wanted state, by the time the task reached them).

The password is never stored. FileEncrypt keeps only the public parameters derived from it
(`_encryption`: salt, scrypt cost, public key). FileDecrypt checks the password against every
file at creation (403 WRONG_PASSWORD, nothing queued) and keeps only the files' keys, sealed
with the server's key (`_sealedKeys`, app/sealed.py); the job erases them from the task row
when the task ends (completed, failed or cancelled; a pause keeps them). Keys starting with
"_" never leave the server (TaskSchema drops them).

Each file is one unit: its new object is written (plaintext hashed on the way and checked
against the file's SHA-256), then one commit points the row at it, then the old object is
deleted; a pause, cancel or crash in the middle removes the half-written object and leaves
the file as it was. The checkpoint counts finished files; a resumed task goes on from there.
A cancel keeps the files already converted (each is whole, in one state or the other).
"""
from __future__ import annotations

import base64
import hashlib
import json
import uuid

import sqlalchemy as sa
from marshmallow import fields, validate
from rq import get_current_job

from app import crypto
from app.errors import BadRequest, Forbidden
from app.extensions import db
from app.models import CloudFile, Pool, Task
from app.models.types import utcnow
from app.sealed import SealBroken, seal, unseal
from app.schemas.base import CamelSchema
from app.services.file_meta import probe_file_meta
from app.storage import backend_for
from app.tasks.context import TaskCancelled, TaskContext, TaskFailed, TaskPaused
from app.tasks.files import owned_files

READ_BLOCK = 1024 * 1024
SEALED = "_sealedKeys"
ENCRYPTION = "_encryption"


class EncryptParameters(CamelSchema):
    file_ids = fields.List(fields.UUID(), required=True, validate=validate.Length(min=1, max=100))
    password = fields.String(required=True, load_only=True, validate=validate.Length(min=1, max=1024))


def _unique(ids: list) -> list:
    return list(dict.fromkeys(str(i) for i in ids))


# creation (in the web process) ------------------------------------------------------------
def prepare_encrypt(account_id: uuid.UUID, parameters: dict) -> dict:
    files = owned_files(account_id, _unique(parameters["file_ids"]))
    for file in files:
        if file.is_encrypted:
            raise BadRequest("The file is already encrypted", code="FILE_ENCRYPTED", details={"id": str(file.id)})
        if not db.session.get(Pool, file.pool_id).allow_encryption:
            raise BadRequest("This file's pool does not allow encrypted files", code="ENCRYPTION_NOT_ALLOWED",
                             details={"id": str(file.id), "poolId": str(file.pool_id)})
    return {"fileIds": [str(f.id) for f in files], ENCRYPTION: crypto.new_password_params(parameters["password"])}


def prepare_decrypt(account_id: uuid.UUID, parameters: dict) -> dict:
    files = owned_files(account_id, _unique(parameters["file_ids"]))
    keys = {}
    for file in files:
        if not file.is_encrypted:
            raise BadRequest("The file is not encrypted", code="FILE_NOT_ENCRYPTED", details={"id": str(file.id)})
        try:
            key = crypto.open_file_key(parameters["password"], file.encryption)
        except crypto.WrongPassword as error:
            raise Forbidden("The password is not correct", code="WRONG_PASSWORD",
                            details={"id": str(file.id)}) from error
        keys[str(file.id)] = base64.b64encode(key).decode()
    return {"fileIds": [str(f.id) for f in files],
            SEALED: seal(json.dumps(keys).encode(), context=account_id.bytes)}


# the jobs ---------------------------------------------------------------------------------
def run_encrypt(ctx: TaskContext) -> None:
    params = ctx.parameters[ENCRYPTION]
    _convert_all(ctx, to_encrypted=True, key_for=lambda file_id: crypto.new_file_key(params))


def run_decrypt(ctx: TaskContext) -> None:
    try:
        _decrypt(ctx)
    except TaskPaused:
        raise  # a paused task resumes later and needs its keys
    except (TaskCancelled, TaskFailed):
        _erase_secret(ctx)
        raise
    except Exception:
        job = get_current_job()
        if job is None or not job.retries_left:  # the last try: the task ends Failed
            _erase_secret(ctx)
        raise
    _erase_secret(ctx)


def _decrypt(ctx: TaskContext) -> None:
    remaining = _remaining(ctx, to_encrypted=False)
    if not remaining:
        _convert_all(ctx, to_encrypted=False, key_for=None)
        return
    if SEALED not in ctx.parameters:
        raise TaskFailed("The password is no longer held for this task (it is erased when a task ends); "
                         "create a new FileDecrypt task")
    try:
        sealed = json.loads(unseal(ctx.parameters[SEALED], context=ctx.account_id.bytes))
        keys = {file_id: base64.b64decode(key) for file_id, key in sealed.items()}
    except SealBroken as error:
        raise TaskFailed("The task's sealed password does not open on this server (SECRET_KEY changed?); "
                         "create a new FileDecrypt task") from error
    # A key that does not open a file fails the task before any file is changed.
    for file in remaining:
        key = keys.get(str(file.id))
        if key is None or not _opens(file, key):
            db.session.rollback()
            raise TaskFailed(f"The password does not open file {file.id}; no file was changed by this run")
    db.session.rollback()
    _convert_all(ctx, to_encrypted=False, key_for=lambda file_id: (keys[file_id], None))


def _remaining(ctx: TaskContext, to_encrypted: bool) -> list[CloudFile]:
    ids = [uuid.UUID(i) for i in ctx.parameters["fileIds"][ctx.checkpoint.get("filesProcessed", 0):]]
    rows = db.session.scalars(sa.select(CloudFile).where(
        CloudFile.id.in_(ids), CloudFile.account_id == ctx.account_id, CloudFile.deleted_at.is_(None),
        CloudFile.is_encrypted == (not to_encrypted)))
    return list(rows)


def _opens(file: CloudFile, key: bytes) -> bool:
    if file.size == 0:
        return True
    backend = backend_for(db.session.get(Pool, file.pool_id))
    try:
        opener = lambda offset: backend.open_read(file.storage_key, offset)  # noqa: E731
        for _ in crypto.decrypt_range(key, dict(file.encryption), opener, file.size, 0, 1):
            pass
    except crypto.CorruptCiphertext:
        return False
    return True


def _erase_secret(ctx: TaskContext) -> None:
    """Remove the sealed keys from the task's row (the task has ended)."""
    db.session.rollback()
    task = db.session.get(Task, ctx.task_pk)
    if task is not None and SEALED in (task.parameters or {}):
        ctx.parameters = {k: v for k, v in task.parameters.items() if k != SEALED}
        db.session.execute(sa.update(Task).where(Task.id == ctx.task_pk).values(parameters=ctx.parameters))
        db.session.commit()
    db.session.rollback()


def _convert_all(ctx: TaskContext, *, to_encrypted: bool, key_for) -> None:
    file_ids = ctx.parameters["fileIds"]
    start = ctx.checkpoint.get("filesProcessed", 0)
    ctx.results.setdefault("fileIds", [])
    ctx.results.setdefault("skippedFileIds", [])
    ctx.results["filesProcessed"] = len(ctx.results["fileIds"])
    sizes = dict(db.session.execute(sa.select(CloudFile.id, CloudFile.size).where(
        CloudFile.id.in_([uuid.UUID(i) for i in file_ids]))).all())
    db.session.rollback()
    total = sum(sizes.values()) or 1
    done = sum(sizes.get(uuid.UUID(i), 0) for i in file_ids[:start])
    pending: dict = {}

    def remove_pending():
        if pending:
            pending["backend"].delete(pending["key"])
            pending.clear()

    ctx.on_cancel(remove_pending)
    for index in range(start, len(file_ids)):
        file_id = file_ids[index]

        def progress(count, base=done):
            progress.bytes += count
            ctx.step(99.0 * (base + progress.bytes) / total, {"filesProcessed": index})
        progress.bytes = 0

        if _convert_one(ctx, file_id, to_encrypted, key_for, progress, pending):
            ctx.results["fileIds"].append(file_id)
        else:
            ctx.results["skippedFileIds"].append(file_id)
        ctx.results["filesProcessed"] = len(ctx.results["fileIds"])
        done += sizes.get(uuid.UUID(file_id), 0)
        ctx.step(99.0 * done / total, {"filesProcessed": index + 1}, force=True)


def _convert_one(ctx, file_id: str, to_encrypted: bool, key_for, progress, pending: dict) -> bool:
    """Re-write one file; False if it is gone or already as wanted (nothing done)."""
    file = db.session.scalar(sa.select(CloudFile).where(
        CloudFile.id == uuid.UUID(file_id), CloudFile.account_id == ctx.account_id, CloudFile.deleted_at.is_(None)))
    if file is None or file.is_encrypted == to_encrypted:
        db.session.rollback()
        return False
    backend = backend_for(db.session.get(Pool, file.pool_id))
    old_key, size, expected, mime_type = file.storage_key, file.size, file.hash, file.mime_type
    old_encryption = dict(file.encryption or {})
    db.session.rollback()  # no transaction is held while bytes move (SQLite's write lock)

    new_key = f"files/{uuid.uuid4()}"
    writer = backend.open_writer(new_key)
    pending.update(backend=backend, key=new_key)
    digest = hashlib.sha256()
    stored = None
    try:
        if to_encrypted:
            file_key, stored = key_for(file_id)
            encryptor = crypto.SegmentEncryptor(file_key)
            with backend.open_read(old_key) as source:
                while True:
                    block = source.read(READ_BLOCK)
                    if not block:
                        break
                    digest.update(block)
                    for sealed in encryptor.update(block):
                        writer.write(sealed)
                    progress(len(block))
            writer.write(encryptor.finish())
        else:
            file_key, _ = key_for(file_id)
            try:
                for piece in crypto.decrypt_range(file_key, old_encryption,
                                                  lambda offset: backend.open_read(old_key, offset), size, 0, size):
                    digest.update(piece)
                    writer.write(piece)
                    progress(len(piece))
            except crypto.CorruptCiphertext as error:
                raise TaskFailed(f"File {file_id} could not be decrypted ({error}); it was left as it was") from error
        if digest.hexdigest() != expected:
            raise TaskFailed(f"File {file_id} does not match its SHA-256; it was left as it was")
        writer.commit()
    except BaseException:
        writer.abort()
        backend.delete(new_key)
        pending.clear()
        raise

    try:
        file_meta = {} if to_encrypted else probe_file_meta(backend, new_key, mime_type)
        now = utcnow()
        moved = db.session.execute(
            sa.update(CloudFile)
            .where(CloudFile.id == uuid.UUID(file_id), CloudFile.storage_key == old_key,
                   CloudFile.is_encrypted == (not to_encrypted), CloudFile.deleted_at.is_(None))
            .values(storage_key=new_key, is_encrypted=to_encrypted,
                    encryption=stored if to_encrypted else sa.null(), file_meta=file_meta,
                    stored_size=backend.size(new_key), updated_at=now)
        ).rowcount
        if moved != 1:  # deleted or changed meanwhile: keep what is there
            db.session.rollback()
            backend.delete(new_key)
            pending.clear()
            return False
        db.session.commit()
    except BaseException:
        db.session.rollback()
        backend.delete(new_key)
        pending.clear()
        raise
    pending.clear()
    backend.delete(old_key)
    return True

