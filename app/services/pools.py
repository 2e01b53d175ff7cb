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
    """The pool named 'default' (local, under STORAGE_UPLOADS_PATH), created if missing."""
    pool = db.session.scalar(sa.select(Pool).where(Pool.name == DEFAULT_POOL_NAME))
    if pool is not None:
        return pool
    try:
        with db.session.begin_nested():
            pool = Pool(name=DEFAULT_POOL_NAME, backend="local", config={},
                        description="Local disk under STORAGE_UPLOADS_PATH")
            db.session.add(pool)
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        pool = db.session.scalar(sa.select(Pool).where(Pool.name == DEFAULT_POOL_NAME))
    return pool


def usable_pool(pool_id, account_id: uuid.UUID) -> Pool:
    """The pool an account asked for (or the preferred/default one); 404 if it may not use it."""
    if pool_id is None:
        preferred = current_app.config["STORAGE_PREFERRED_REMOTE"]
        if preferred:
            pool = db.session.get(Pool, parse_uuid(preferred, "POOL_NOT_FOUND", "Pool"))
            if pool is None:
                raise NotFound("The preferred pool (STORAGE_PREFERRED_REMOTE) does not exist",
                               code="POOL_NOT_FOUND")
            return pool
        return ensure_default_pool()
    pool = db.session.get(Pool, pool_id)
    if pool is None or (pool.account_id is not None and pool.account_id != account_id):
        raise NotFound("Pool not found", code="POOL_NOT_FOUND", details={"id": str(pool_id)})
    return pool


def visible_pools(account_id: uuid.UUID) -> list[Pool]:
    query = sa.select(Pool).where(sa.or_(Pool.account_id.is_(None), Pool.account_id == account_id))
    return list(db.session.scalars(query.order_by(Pool.name)))
