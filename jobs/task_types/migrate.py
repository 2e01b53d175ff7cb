"""StorageMigration: every file of a pool (the caller's, or with the admin claim every
account's: scope "all") to another pool, each moved and verified as FileMove does
(jobs/task_types/move.py). Results: filesMigrated, bytesCopied, failures.

The files still to move are queried again on every run (those still in the source pool), so
a paused, resumed or crashed-and-retried run goes on where the last one stopped; the counters
are saved in the same commit that moves each file. A file that cannot be moved (its bytes do
not verify, its object is missing, the target pool's policy refuses it) stays where it was and
is listed in `failures`; a later run of the same task tries it again.
"""
from __future__ import annotations

import uuid

import sqlalchemy as sa
from flask import g
from marshmallow import ValidationError, fields, validate, validates_schema

from app.auth import is_admin
from app.errors import ApiError, BadRequest, Forbidden
from app.extensions import db
from app.models import CloudFile, Pool
from app.schemas.base import CamelSchema
from app.services.pools import usable_pool
from app.storage import ObjectMissing
from app.tasks.context import TaskContext, TaskFailed
from jobs.task_types.move import CopyMismatch, Item, check_pool_policy, move_file, reconcile

BATCH = 100


class MigrationParameters(CamelSchema):
    source_pool_id = fields.UUID(required=True)
    target_pool_id = fields.UUID(required=True)
    scope = fields.String(load_default="account", validate=validate.OneOf(["account", "all"]))

    @validates_schema
    def _different(self, data, **kwargs):
        if data.get("source_pool_id") and data.get("source_pool_id") == data.get("target_pool_id"):
            raise ValidationError("The target pool must differ from the source pool.", "targetPoolId")


def prepare(account_id, parameters: dict) -> dict:
    scope = parameters["scope"]
    if scope == "all" and not is_admin(g.get("claims")):
        raise Forbidden("Migrating every account's files needs an admin token", code="ADMIN_REQUIRED")
    source = usable_pool(parameters["source_pool_id"], account_id)
    target = usable_pool(parameters["target_pool_id"], account_id)
    if scope == "all" and target.account_id is not None:
        raise BadRequest("Every account's files can only go to a pool every account may use",
                         code="POOL_NOT_SHARED", details={"id": str(target.id)})
    return {"sourcePoolId": str(source.id), "targetPoolId": str(target.id), "scope": scope,
            "accountId": str(account_id) if scope == "account" else None}


def _remaining(params: dict, after: uuid.UUID | None, limit: int) -> list[CloudFile]:
    query = sa.select(CloudFile).where(CloudFile.pool_id == uuid.UUID(params["sourcePoolId"]),
                                       CloudFile.deleted_at.is_(None))
    if params.get("accountId"):
        query = query.where(CloudFile.account_id == uuid.UUID(params["accountId"]))
    if after is not None:
        query = query.where(CloudFile.id > after)
    return list(db.session.scalars(query.order_by(CloudFile.id).limit(limit)))


def _count_remaining(params: dict) -> int:
    query = sa.select(sa.func.count()).select_from(CloudFile).where(
        CloudFile.pool_id == uuid.UUID(params["sourcePoolId"]), CloudFile.deleted_at.is_(None))
    if params.get("accountId"):
        query = query.where(CloudFile.account_id == uuid.UUID(params["accountId"]))
    return db.session.scalar(query)


def run(ctx: TaskContext) -> None:
    params = ctx.parameters
    cp = ctx.checkpoint
    cp.setdefault("filesMigrated", 0)
    cp.setdefault("bytesCopied", 0)
    cp.setdefault("failures", [])
    reconcile(ctx)
    target_pool_id = uuid.UUID(params["targetPoolId"])
    target_pool = db.session.get(Pool, target_pool_id)
    if target_pool is None or db.session.get(Pool, uuid.UUID(params["sourcePoolId"])) is None:
        raise TaskFailed("The source or the target pool no longer exists")
    done_before = ctx.checkpoint["filesMigrated"]
    total = done_before + _count_remaining(params)
    seen, after = 0, None
    _results(ctx)
    while True:
        batch = _remaining(params, after, BATCH)
        if not batch:
            break
        items = []
        for file in batch:
            try:
                check_pool_policy(target_pool, file)
                items.append((Item.of(file), None))
            except ApiError as error:
                items.append((Item.of(file), error.message))
        db.session.rollback()
        for item, refused in items:
            after = item.id  # keyset: a failed file is not met again in this run

            def progress(fraction, base=done_before + seen):
                return 99.0 * min(1.0, (base + fraction) / max(total, 1))

            if refused is None:
                try:
                    copied = move_file(ctx, item, target_pool_id, None, progress,
                                       lambda checkpoint, item=item: _counted(ctx, checkpoint, item))
                    if copied is not None:
                        seen += 1
                    continue
                except (CopyMismatch, ObjectMissing, OSError) as error:
                    db.session.rollback()
                    refused = f"{type(error).__name__}: {error}"[:300]
            _failed(ctx, item.id, refused)
            seen += 1
            ctx.step(progress(1.0), dict(ctx.checkpoint, current=None), force=True)
    _results(ctx)


def _counted(ctx: TaskContext, checkpoint: dict, item: Item) -> dict:
    failures = [f for f in checkpoint["failures"] if f["fileId"] != str(item.id)]
    checkpoint = dict(checkpoint, filesMigrated=checkpoint["filesMigrated"] + 1,
                      bytesCopied=checkpoint["bytesCopied"] + item.stored_size, failures=failures)
    _results(ctx, checkpoint)
    return checkpoint


def _failed(ctx: TaskContext, file_id: uuid.UUID, error: str) -> None:
    failures = [f for f in ctx.checkpoint["failures"] if f["fileId"] != str(file_id)]
    failures.append({"fileId": str(file_id), "error": error})
    ctx.checkpoint = dict(ctx.checkpoint, failures=failures, current=None)
    _results(ctx)


def _results(ctx: TaskContext, checkpoint: dict | None = None) -> None:
    checkpoint = checkpoint or ctx.checkpoint
    ctx.results.update({"filesMigrated": checkpoint["filesMigrated"], "bytesCopied": checkpoint["bytesCopied"],
                        "failures": list(checkpoint["failures"])})
