"""BulkOperation: one operation over many of the account's files, with a result per item.

Parameters: `operationType` (delete | move | setExpiry), `targetIds` (1..10000 file ids),
`operationParameters`:
- delete: `confirm: true` (required: 400 CONFIRMATION_REQUIRED without it), optional
  `olderThanDays` (files uploaded more recently are skipped, error NOT_OLD_ENOUGH);
  a deleted file's quota is released (app.services.files.remove_file).
- move: `targetBundleId` (one of the account's bundles, 404 BUNDLE_NOT_FOUND at creation;
  null takes the files out of their bundle).
- setExpiry: `expiredAt` (ISO 8601 with a zone; null clears it).

Results: `items` = [{id, ok, error?}] in the order given, and `succeeded`, `failed`, `skipped`
counts. An id that is not one of the account's live files fails alone with FILE_NOT_FOUND
(nothing more is said about it); the others proceed. Items are done in batches, the
checkpoint after each, so a paused or crashed task goes on where it stopped. A cancel stops
after the current batch; what was done stays done (the results say which).
"""
from __future__ import annotations

import uuid
from datetime import timedelta

import sqlalchemy as sa
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from app.errors import BadRequest
from app.extensions import db
from app.models import Bundle, CloudFile
from app.models.types import utcnow
from app.schemas.base import CamelSchema, StrictInt, UtcDateTime
from app.services.files import remove_file
from app.services.tenancy import get_owned
from app.tasks.context import TaskContext, TaskFailed

BATCH = 200
OPERATIONS = ("delete", "move", "setExpiry")


class StrictBool(fields.Boolean):
    """JSON true or false only: a deletion is not confirmed by "yes" or 1."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


class DeleteOptions(CamelSchema):
    confirm = StrictBool()
    older_than_days = StrictInt(validate=validate.Range(min=0, max=100_000))


class MoveOptions(CamelSchema):
    target_bundle_id = fields.UUID(required=True, allow_none=True)


class ExpiryOptions(CamelSchema):
    expired_at = UtcDateTime(required=True, allow_none=True)


OPTIONS: dict[str, type[Schema]] = {"delete": DeleteOptions, "move": MoveOptions, "setExpiry": ExpiryOptions}


class BulkParameters(CamelSchema):
    operation_type = fields.String(required=True, validate=validate.OneOf(OPERATIONS))
    target_ids = fields.List(fields.UUID(), required=True, validate=validate.Length(min=1, max=10_000))
    operation_parameters = fields.Dict(load_default=dict)

    @validates_schema
    def _options(self, data, **kwargs):
        schema = OPTIONS.get(data.get("operation_type"))
        if schema is not None:
            try:
                data["operation_parameters"] = schema().load(data.get("operation_parameters") or {})
            except ValidationError as error:
                raise ValidationError(error.messages, field_name="operationParameters") from error


def prepare(account_id: uuid.UUID, parameters: dict) -> dict:
    operation, options = parameters["operation_type"], parameters["operation_parameters"]
    stored: dict = {}
    if operation == "delete":
        if options.get("confirm") is not True:
            raise BadRequest("Deleting files needs operationParameters.confirm = true", code="CONFIRMATION_REQUIRED",
                             details={"operationType": operation})
        stored = {"confirm": True}
        if options.get("older_than_days") is not None:
            stored["olderThanDays"] = options["older_than_days"]
    elif operation == "move":
        target = options["target_bundle_id"]
        if target is not None:
            get_owned(Bundle, target, account_id, code="BUNDLE_NOT_FOUND", what="Bundle")
        stored = {"targetBundleId": str(target) if target else None}
    elif operation == "setExpiry":
        moment = options["expired_at"]
        stored = {"expiredAt": moment.isoformat().replace("+00:00", "Z") if moment else None}
    return {"operationType": operation, "targetIds": [str(i) for i in parameters["target_ids"]],
            "operationParameters": stored}


def run(ctx: TaskContext) -> None:
    params = ctx.parameters
    operation, options, ids = params["operationType"], params["operationParameters"], params["targetIds"]
    apply = _operation(ctx, operation, options)
    items: list = ctx.results.setdefault("items", [])
    start = ctx.checkpoint.get("itemsProcessed", 0)
    del items[start:]  # results beyond the checkpoint were not saved with it
    for begin in range(start, len(ids), BATCH):
        batch = ids[begin:begin + BATCH]
        rows = {f.id: f for f in db.session.scalars(sa.select(CloudFile).where(
            CloudFile.id.in_([uuid.UUID(i) for i in batch]), CloudFile.account_id == ctx.account_id,
            CloudFile.deleted_at.is_(None)))}
        for file_id in batch:
            file = rows.get(uuid.UUID(file_id))
            if file is None:
                items.append({"id": file_id, "ok": False, "error": "FILE_NOT_FOUND"})
                continue
            error = apply(file)
            items.append({"id": file_id, "ok": True} if error is None else {"id": file_id, "ok": False, "error": error})
        db.session.commit()
        _count(ctx.results)
        ctx.step(99.0 * (begin + len(batch)) / len(ids), {"itemsProcessed": begin + len(batch)}, force=True)
    _count(ctx.results)


def _count(results: dict) -> None:
    items = results["items"]
    results["succeeded"] = sum(1 for i in items if i["ok"])
    results["skipped"] = sum(1 for i in items if not i["ok"] and i["error"] == "NOT_OLD_ENOUGH")
    results["failed"] = len(items) - results["succeeded"] - results["skipped"]


def _operation(ctx: TaskContext, operation: str, options: dict):
    """The function applied to each file: None when done, else an error code for its item."""
    if operation == "delete":
        cutoff = None
        if options.get("olderThanDays") is not None:
            cutoff = utcnow() - timedelta(days=options["olderThanDays"])

        def delete(file):
            if cutoff is not None and file.uploaded_at > cutoff:
                return "NOT_OLD_ENOUGH"
            remove_file(file)  # commits: the row is marked deleted and the quota released first
            return None
        return delete
    if operation == "move":
        target = options["targetBundleId"]
        if target is not None:
            target = uuid.UUID(target)
            exists = db.session.scalar(sa.select(Bundle.id).where(Bundle.id == target,
                                                                  Bundle.account_id == ctx.account_id))
            if exists is None:
                raise TaskFailed("The target bundle no longer exists")

        def move(file):
            file.bundle_id, file.updated_at = target, utcnow()
            return None
        return move
    if operation == "setExpiry":
        moment = UtcDateTime().deserialize(options["expiredAt"]) if options["expiredAt"] else None

        def set_expiry(file):
            file.expired_at, file.updated_at = moment, utcnow()
            return None
        return set_expiry
    raise TaskFailed(f"Unknown operation {operation!r}")
