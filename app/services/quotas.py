"""Quota reservation. `used_bytes` changes only through conditional UPDATEs inside the
caller's transaction, so concurrent creates cannot overshoot the limit together."""
from __future__ import annotations

import uuid

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from app.errors import Forbidden
from app.extensions import db
from app.models import CloudFile, Quota, UploadStatus, UploadTask


def _ensure_row(account_id: uuid.UUID) -> None:
    insert = pg_insert if db.engine.dialect.name == "postgresql" else sqlite_insert
    db.session.execute(insert(Quota).values(account_id=account_id, used_bytes=0).on_conflict_do_nothing())


def _default_limit() -> int:
    default = current_app.config["QUOTA_DEFAULT_BYTES"]
    return default if default > 0 else -1  # -1: unlimited


def reserve(account_id: uuid.UUID, amount: int) -> None:
    """Add `amount` to the account's usage or raise 403 QUOTA_EXCEEDED. Caller commits."""
    _ensure_row(account_id)
    limit = sa.func.coalesce(Quota.limit_bytes, _default_limit())
    result = db.session.execute(
        sa.update(Quota)
        .where(Quota.account_id == account_id, sa.or_(limit < 0, Quota.used_bytes + amount <= limit))
        .values(used_bytes=Quota.used_bytes + amount)
    )
    if result.rowcount != 1:
        quota = db.session.get(Quota, account_id)
        effective = quota.limit_bytes if quota.limit_bytes is not None else _default_limit()
        raise Forbidden(
            "This upload would exceed your storage quota",
            code="QUOTA_EXCEEDED",
            details={"used": quota.used_bytes, "limit": effective, "requested": amount},
        )


def release(account_id: uuid.UUID, amount: int) -> None:
    """Give `amount` back. Caller commits, in the same transaction as the state change."""
    if amount <= 0:
        return
    db.session.execute(
        sa.update(Quota)
        .where(Quota.account_id == account_id)
        .values(used_bytes=sa.case((Quota.used_bytes > amount, Quota.used_bytes - amount), else_=0))
    )


def set_limit(account_id: uuid.UUID, limit_bytes: int | None) -> Quota:
    _ensure_row(account_id)
    db.session.execute(sa.update(Quota).where(Quota.account_id == account_id).values(limit_bytes=limit_bytes))
    db.session.commit()
    return db.session.get(Quota, account_id)


def usage(account_id: uuid.UUID) -> dict:
    """Limit, total used, and its split into stored files and reservations of open uploads."""
    quota = db.session.get(Quota, account_id)
    files = db.session.scalar(
        sa.select(sa.func.coalesce(sa.func.sum(CloudFile.size), 0)).where(
            CloudFile.account_id == account_id, CloudFile.deleted_at.is_(None))
    )
    reserved = db.session.scalar(
        sa.select(sa.func.coalesce(sa.func.sum(UploadTask.quota_reserved), 0)).where(
            UploadTask.account_id == account_id, UploadTask.status == UploadStatus.InProgress)
    )
    limit = quota.limit_bytes if quota and quota.limit_bytes is not None else _default_limit()
    return {
        "accountId": str(account_id),
        "limit": None if limit < 0 else limit,
        "used": quota.used_bytes if quota else 0,
        "files": int(files),
        "reserved": int(reserved),
    }
