"""Bundles: named groups of one account's files."""
from __future__ import annotations

import uuid

import sqlalchemy as sa

from app.extensions import db
from app.models import Bundle
from app.services.tenancy import get_owned


def create_bundle(account_id: uuid.UUID, data: dict) -> Bundle:
    bundle = Bundle(account_id=account_id, name=data["name"], description=data.get("description"))
    db.session.add(bundle)
    db.session.commit()
    return bundle


def list_bundles(account_id: uuid.UUID, offset: int, limit: int) -> tuple[list[Bundle], int]:
    where = Bundle.account_id == account_id
    total = db.session.scalar(sa.select(sa.func.count()).select_from(Bundle).where(where))
    rows = db.session.scalars(sa.select(Bundle).where(where).order_by(Bundle.created_at.desc(), Bundle.id)
                              .offset(offset).limit(limit))
    return list(rows), total


def get_bundle(bundle_id, account_id: uuid.UUID) -> Bundle:
    return get_owned(Bundle, bundle_id, account_id, code="BUNDLE_NOT_FOUND", what="Bundle")
