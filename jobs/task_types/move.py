"""FileMove: the account's files to another pool and/or bundle. Results: filesProcessed,
movedFileIds, bytesCopied.

Moving a file between pools (shared with StorageMigration, jobs/task_types/migrate.py):
1. the task's checkpoint names the file in flight (`current`: from pool/key, to pool/key),
   written before any byte is copied;
2. the stored object is streamed to the target backend under a new key (encrypted files as
   stored: the ciphertext and the encryption parameters are kept) and committed there;
3. it is read back from the target and its SHA-256 compared with the bytes read from the
   source, which for an unencrypted file must also be the file's own `hash`;
4. ONE commit points the row at the new pool and key (only if it still points where it did)
   and saves the counters in the task's checkpoint;
5. the old object is deleted.
A pause or cancel during 2-3 removes the partial copy. A run that died anywhere is put right
by the next one (`reconcile`): if the row points at the new key, the old object goes; if not,
the copy does. So a file is never lost, and ends with exactly one stored object.
"""
from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from typing import Callable

import sqlalchemy as sa
from flask import current_app
from marshmallow import ValidationError, fields, validate, validates_schema

from app.errors import BadRequest, PayloadTooLarge
from app.extensions import db
from app.models import Bundle, CloudFile, Pool, Task
from app.models.types import utcnow
from app.schemas.base import CamelSchema
from app.services.pools import usable_pool
from app.services.tenancy import get_owned
from app.storage import ObjectMissing, backend_for
from app.tasks.context import TaskContext, TaskFailed
from app.tasks.files import owned_files

BLOCK = 1024 * 1024  # ctx.step is called per block: a long copy keeps the heartbeat going


class MoveParameters(CamelSchema):
    file_ids = fields.List(fields.UUID(), required=True, validate=validate.Length(min=1, max=1000))
    target_pool_id = fields.UUID(allow_none=True)
    target_bundle_id = fields.UUID(allow_none=True)

    @validates_schema
    def _a_target(self, data, **kwargs):
        if not data.get("target_pool_id") and not data.get("target_bundle_id"):
            raise ValidationError("Give targetPoolId, targetBundleId or both.", "targetPoolId")


class CopyMismatch(Exception):
    """The bytes read back from the target are not those of the source (or of the file)."""


def check_pool_policy(pool: Pool, file: CloudFile) -> None:
    """400/413 if `pool` would not accept `file` as an upload (size, type, encryption)."""
    limit = pool.max_file_size or current_app.config["UPLOAD_MAX_FILE_SIZE"]
    if file.size > limit:
        raise PayloadTooLarge("The file is larger than the target pool accepts", code="FILE_TOO_LARGE",
                              details={"id": str(file.id), "fileSize": file.size, "maxFileSize": limit})
    if not pool.accepts_type(file.mime_type):
        raise BadRequest("The target pool does not accept this file's content type", code="CONTENT_TYPE_NOT_ALLOWED",
                         details={"id": str(file.id), "contentType": file.mime_type})
    if file.is_encrypted and not pool.allow_encryption:
        raise BadRequest("The target pool does not allow encrypted files", code="ENCRYPTION_NOT_ALLOWED",
                         details={"id": str(file.id), "poolId": str(pool.id)})


def prepare(account_id, parameters: dict) -> dict:
    files = owned_files(account_id, parameters["file_ids"])
    pool = usable_pool(parameters["target_pool_id"], account_id) if parameters.get("target_pool_id") else None
    bundle_id = parameters.get("target_bundle_id")
    if bundle_id is not None:
        get_owned(Bundle, bundle_id, account_id, code="BUNDLE_NOT_FOUND", what="Bundle")
    if pool is not None:
        for file in files:
            if file.pool_id != pool.id:
                check_pool_policy(pool, file)
    return {"fileIds": list(dict.fromkeys(str(f.id) for f in files)),
            "targetPoolId": str(pool.id) if pool else None,
            "targetBundleId": str(bundle_id) if bundle_id else None}


@dataclass(frozen=True)
class Item:
    """What a move needs of a file row, read once: the session is committed between steps."""
    id: uuid.UUID
    pool_id: uuid.UUID
    key: str
    size: int
    stored_size: int
    hash: str
    encrypted: bool

    @classmethod
    def of(cls, file: CloudFile) -> "Item":
        return cls(file.id, file.pool_id, file.storage_key, file.size, file.stored_size, file.hash, file.is_encrypted)


def target_key(file_id: uuid.UUID, ctx: TaskContext) -> str:
    # unique per (file, task): a copy left by a dead run of this task is found again and replaced
    return f"files/{file_id}.{ctx.task_id[:16]}"


def backend_of(pool_id) -> object:
    pool = db.session.get(Pool, uuid.UUID(str(pool_id)))
    if pool is None:
        raise TaskFailed(f"Pool {pool_id} no longer exists")
    return backend_for(pool)


def reconcile(ctx: TaskContext) -> None:
    """Finish what a run that died (or paused) left in flight: keep one object per file."""
    current = ctx.checkpoint.get("current")
    if not current:
        return
    file = db.session.get(CloudFile, uuid.UUID(current["fileId"]))
    switched = file is not None and str(file.pool_id) == current["toPoolId"] and file.storage_key == current["toKey"]
    db.session.rollback()
    if switched:
        backend_of(current["fromPoolId"]).delete(current["fromKey"])
    else:
        backend_of(current["toPoolId"]).delete(current["toKey"])
    ctx.checkpoint = dict(ctx.checkpoint, current=None)


def copy_verified(item: Item, source, target, key: str, report: Callable[[float], None]) -> int:
    """Copy the stored object of `item` to `key` on `target` and verify it by SHA-256;
    `report(fraction)` between blocks (it may raise TaskPaused / TaskCancelled). On any
    failure nothing is left under `key`. Returns the bytes copied."""
    writer = target.open_writer(key)
    committed = False
    work = 2 * max(item.stored_size, 1)
    try:
        digest, copied = hashlib.sha256(), 0
        with source.open_read(item.key) as reader:
            while block := reader.read(BLOCK):
                digest.update(block)
                writer.write(block)
                copied += len(block)
                report(copied / work)
        writer.commit()
        committed = True
        if copied != item.stored_size:
            raise CopyMismatch(f"read {copied} bytes, the file has {item.stored_size} stored")
        if not item.encrypted and digest.hexdigest() != item.hash:
            raise CopyMismatch("the stored bytes do not match the file's SHA-256")
        back, seen = hashlib.sha256(), 0
        with target.open_read(key) as reader:
            while block := reader.read(BLOCK):
                back.update(block)
                seen += len(block)
                report((copied + seen) / work)
        if back.hexdigest() != digest.hexdigest() or seen != copied:
            raise CopyMismatch("the copy read back from the target pool differs from the source")
        return copied
    except BaseException:
        writer.abort()
        if committed:
            target.delete(key)
        raise


def move_file(ctx: TaskContext, item: Item, target_pool_id: uuid.UUID, bundle_id, progress: Callable[[float], float],
              counted: Callable[[dict], dict]) -> int | None:
    """Move one file to `target_pool_id` (and `bundle_id`, unless None), as the module says.
    `progress(fraction of this file)` gives the task's progress; `counted(checkpoint)` the
    checkpoint after this file is done (its counters updated), saved in the switching commit.
    Returns the bytes copied, or None if the file changed meanwhile (nothing moved).
    Raises CopyMismatch (or ObjectMissing) with the file left where it was."""
    key = target_key(item.id, ctx)
    current = {"fileId": str(item.id), "fromPoolId": str(item.pool_id), "fromKey": item.key,
               "toPoolId": str(target_pool_id), "toKey": key}
    ctx.step(progress(0.0), dict(ctx.checkpoint, current=current), force=True)
    source, target = backend_of(item.pool_id), backend_of(target_pool_id)
    db.session.rollback()  # no transaction open while bytes stream (SQLite: BEGIN IMMEDIATE)
    target.delete(key)  # a copy of a run that died before switching
    copied = copy_verified(item, source, target, key, lambda fraction: ctx.step(progress(fraction)))
    values = {"pool_id": target_pool_id, "storage_key": key, "updated_at": utcnow()}
    if bundle_id is not None:
        values["bundle_id"] = bundle_id
    switched = db.session.execute(sa.update(CloudFile).where(
        CloudFile.id == item.id, CloudFile.pool_id == item.pool_id, CloudFile.storage_key == item.key,
        CloudFile.deleted_at.is_(None)).values(**values)).rowcount
    if not switched:
        db.session.rollback()
        target.delete(key)
        return None
    checkpoint = counted(dict(ctx.checkpoint, current=current))
    save_checkpoint(ctx, checkpoint)  # same transaction as the switch: counters match the rows
    db.session.commit()
    source.delete(item.key)
    ctx.step(progress(1.0), dict(checkpoint, current=None))
    return copied


def save_checkpoint(ctx: TaskContext, checkpoint: dict) -> None:
    """Set the checkpoint (and the results) in the caller's transaction."""
    ctx.checkpoint = checkpoint
    db.session.execute(sa.update(Task).where(Task.id == ctx.task_pk).values(
        checkpoint=checkpoint, results=ctx.results, last_activity=utcnow()))


def run(ctx: TaskContext) -> None:
    params = ctx.parameters
    ctx.checkpoint.setdefault("done", [])
    ctx.checkpoint.setdefault("moved", [])
    ctx.checkpoint.setdefault("bytesCopied", 0)
    reconcile(ctx)
    target_pool_id = uuid.UUID(params["targetPoolId"]) if params.get("targetPoolId") else None
    bundle_id = uuid.UUID(params["targetBundleId"]) if params.get("targetBundleId") else None
    if target_pool_id is not None:
        backend_of(target_pool_id)
    ids = params["fileIds"]
    total = len(ids)
    finished = set(ctx.checkpoint["done"])  # by an earlier run
    for number, file_id in enumerate(ids):
        if file_id in finished:
            continue
        try:
            file = owned_files(ctx.account_id, [file_id])[0]
        except Exception as error:  # deleted since the task was created
            raise TaskFailed(f"File {file_id} no longer exists") from error
        item = Item.of(file)
        _publish_results(ctx)

        def progress(fraction, number=number):
            return 99.0 * (number + fraction) / total

        def counted(checkpoint, file_id=file_id, moved=True, copied=0):
            checkpoint = dict(checkpoint, done=checkpoint["done"] + [file_id],
                              moved=checkpoint["moved"] + ([file_id] if moved else []),
                              bytesCopied=checkpoint["bytesCopied"] + copied)
            _publish_results(ctx, checkpoint)
            return checkpoint

        if target_pool_id is None or item.pool_id == target_pool_id:  # bundle only
            if bundle_id is not None and file.bundle_id != bundle_id:
                file.bundle_id, file.updated_at = bundle_id, utcnow()
            save_checkpoint(ctx, counted(ctx.checkpoint, moved=False))
            db.session.commit()
            ctx.step(progress(1.0))
            continue
        try:
            check_pool_policy(db.session.get(Pool, target_pool_id), file)
        except Exception as error:
            raise TaskFailed(f"File {file_id}: {getattr(error, 'message', error)}") from error
        try:
            copied = move_file(ctx, item, target_pool_id, bundle_id, progress,
                               lambda checkpoint, file_id=file_id: counted(checkpoint, file_id, True, item.stored_size))
        except (CopyMismatch, ObjectMissing) as error:
            raise TaskFailed(f"File {file_id} was not moved: {error}") from error
        if copied is None:
            raise TaskFailed(f"File {file_id} changed or was deleted while it was moved; it was not moved")
    _publish_results(ctx)


def _publish_results(ctx: TaskContext, checkpoint: dict | None = None) -> None:
    checkpoint = checkpoint or ctx.checkpoint
    ctx.results.update({"filesProcessed": len(checkpoint["done"]), "movedFileIds": list(checkpoint["moved"]),
                        "bytesCopied": checkpoint["bytesCopied"]})
