"""Pools: which pool an upload goes to, and the default local pool."""
from __future__ import annotations

import uuid

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.exc import IntegrityError

from app.errors import NotFound
from app.extensions import db
from app.models import Pool
from app.services.tenancy import parse_uuid

DEFAULT_POOL_NAME = "default"


def ensure_default_pool() -> Pool:
    """The default pool, created if missing: a local pool under STORAGE_UPLOADS_PATH named
    'default'. When STORAGE_PREFERRED_REMOTE is set, the default pool is the pool with that
    id (created with that id if no pool has it yet)."""
    preferred = current_app.config["STORAGE_PREFERRED_REMOTE"]
    preferred_id = parse_uuid(preferred, "POOL_NOT_FOUND", "Pool") if preferred else None
    pool = _find_default(preferred_id)
    if pool is not None:
        return pool
    name = DEFAULT_POOL_NAME
    if preferred_id is not None and db.session.scalar(sa.select(Pool.id).where(Pool.name == name)):
        name = f"{DEFAULT_POOL_NAME}-{preferred_id.hex[:8]}"
    try:
        with db.session.begin_nested():
            db.session.add(Pool(id=preferred_id or uuid.uuid4(), name=name, backend="local", config={},
                                description="Local disk under STORAGE_UPLOADS_PATH"))
        db.session.commit()
    except IntegrityError:  # another process created it first
        db.session.rollback()
    return _find_default(preferred_id)


def _find_default(preferred_id: uuid.UUID | None) -> Pool | None:
    if preferred_id is not None:
        return db.session.get(Pool, preferred_id)
    return db.session.scalar(sa.select(Pool).where(Pool.name == DEFAULT_POOL_NAME))


def usable_pool(pool_id, account_id: uuid.UUID) -> Pool:
    """The pool an account asked for (or the default one); 404 if it may not use it."""
    if pool_id is None:
        return ensure_default_pool()
    pool = db.session.get(Pool, pool_id)
    if pool is None or (pool.account_id is not None and pool.account_id != account_id):
        raise NotFound("Pool not found", code="POOL_NOT_FOUND", details={"id": str(pool_id)})
    return pool


def visible_pools(account_id: uuid.UUID) -> list[Pool]:
    query = sa.select(Pool).where(sa.or_(Pool.account_id.is_(None), Pool.account_id == account_id))
    return list(db.session.scalars(query.order_by(Pool.name)))
