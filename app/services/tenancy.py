"""Every lookup is scoped to its owner: another account's id and a missing id look the same."""
from __future__ import annotations

import re
import uuid

from app.errors import NotFound
from app.extensions import db

TOKEN = re.compile(r"[\x21-\x7e]{1,64}")  # task ids are 32 hex digits, in a 64-character column


def parse_uuid(value, code: str, what: str) -> uuid.UUID:
    try:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    except (ValueError, TypeError, AttributeError) as error:
        raise NotFound(f"{what} not found", code=code, details={"id": str(value)[:100]}) from error


def is_token(value) -> bool:
    """Whether `value` could be one of our string ids (printable ASCII, at most 64 characters).
    Anything else names nothing, and is not sent to the database: PostgreSQL refuses a text
    parameter that holds a NUL, which would be a 500 rather than the 404 a missing id gets."""
    return isinstance(value, str) and TOKEN.fullmatch(value) is not None


def get_owned(model, object_id, account_id, *, code: str, what: str, id_column="id", for_update=False):
    """The row of `model` with that id owned by `account_id` and not deleted, or 404 `code`."""
    column = getattr(model, id_column)
    if id_column == "id":
        object_id = parse_uuid(object_id, code, what)
    elif not is_token(object_id):
        raise NotFound(f"{what} not found", code=code, details={"id": str(object_id)[:100]})
    query = db.select(model).where(column == object_id, model.account_id == account_id)
    if hasattr(model, "deleted_at"):
        query = query.where(model.deleted_at.is_(None))
    if for_update:
        query = query.with_for_update()
    row = db.session.execute(query).scalar_one_or_none()
    if row is None:
        raise NotFound(f"{what} not found", code=code, details={"id": str(object_id)[:100]})
    return row
