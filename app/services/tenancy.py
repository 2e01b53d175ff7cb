"""Every lookup is scoped to its owner: another account's id and a missing id look the same."""
from __future__ import annotations

import uuid

from app.errors import NotFound
from app.extensions import db


def parse_uuid(value, code: str, what: str) -> uuid.UUID:
    try:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    except (ValueError, TypeError, AttributeError) as error:
        raise NotFound(f"{what} not found", code=code, details={"id": str(value)[:100]}) from error


def get_owned(model, object_id, account_id, *, code: str, what: str, id_column="id", for_update=False):
    """The row of `model` with that id owned by `account_id` and not deleted, or 404 `code`."""
    column = getattr(model, id_column)
    if id_column == "id":
        object_id = parse_uuid(object_id, code, what)
    query = db.select(model).where(column == object_id, model.account_id == account_id)
    if hasattr(model, "deleted_at"):
        query = query.where(model.deleted_at.is_(None))
    if for_update:
        query = query.with_for_update()
    row = db.session.execute(query).scalar_one_or_none()
    if row is None:
        raise NotFound(f"{what} not found", code=code, details={"id": str(object_id)[:100]})
    return row
