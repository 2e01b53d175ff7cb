"""Wire shapes of upload tasks: the seed's names, exactly."""
from __future__ import annotations

import re

from marshmallow import ValidationError, fields, post_load, validate, validates

from app.models import UploadStatus
from app.schemas.base import CamelSchema, QueryInt, StrictInt, UtcDateTime, check_text, status_list
from app.schemas.files import BundleSchema, CloudFileSchema, ListQuerySchema, PoolSchema

HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
CONTENT_TYPE = re.compile(r"^[\w.+-]+/[\w.+-]+(\s*;.*)?$")
CONTENT_TYPE_DOC = r"^[A-Za-z0-9_.+-]+/[A-Za-z0-9_.+-]+( *;[^\x00-\x1f\x7f-\x9f]*)?$"  # what the document promises
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1
# check_file_name as an OpenAPI pattern: not '.' or '..', no separator or control character,
# not only spaces
FILE_NAME_PATTERN = r"^(?!\.\.?$)[^/\\\x00-\x1f\x7f-\x9f]*[^/\\\x00-\x1f\x7f-\x9f\s][^/\\\x00-\x1f\x7f-\x9f]*$"


def check_file_name(name: str) -> None:
    """A name a file can be stored and downloaded under on any system: one path component,
    no character that could split a header or hide what the name is (base.unsafe_character),
    at most 255 bytes of UTF-8."""
    if not name.strip():
        raise ValidationError("The file name is empty.")
    if "/" in name or "\\" in name:
        raise ValidationError("The file name may not contain path separators.")
    check_text(name, "file name")
    if name in (".", ".."):
        raise ValidationError("The file name may not be '.' or '..'.")
    if len(name.encode("utf-8")) > 255:
        raise ValidationError("The file name is longer than 255 bytes.")


class CreateUploadSchema(CamelSchema):
    file_name = fields.String(required=True, metadata={
        "pattern": FILE_NAME_PATTERN, "maxLength": 255, "description": "One path component, at most 255 bytes of UTF-8"})
    file_size = StrictInt(required=True, validate=validate.Range(min=1))
    content_type = fields.String(required=True, validate=validate.Length(min=3, max=255),
                                 metadata={"pattern": CONTENT_TYPE_DOC})
    pool_id = fields.UUID(allow_none=True)
    bundle_id = fields.UUID(allow_none=True)
    chunk_size = StrictInt(allow_none=True, validate=validate.Range(min=1))
    encrypt_password = fields.String(allow_none=True, load_only=True, validate=validate.Length(min=1, max=1024))
    expired_at = UtcDateTime(allow_none=True)
    hash = fields.String(required=True, metadata={"pattern": HEX64.pattern})

    @validates("file_name")
    def _file_name(self, value, **kwargs):
        check_file_name(value)

    @validates("content_type")
    def _content_type(self, value, **kwargs):
        if not CONTENT_TYPE.match(value) or CONTROL.search(value):
            raise ValidationError("Not a MIME type such as 'video/mp4'.")

    @validates("hash")
    def _hash(self, value, **kwargs):
        if not HEX64.match(value):
            raise ValidationError("The SHA-256 of the file as 64 hexadecimal characters.")

    @post_load
    def _normalise(self, data, **kwargs):
        data["hash"] = data["hash"].lower()
        data["content_type"] = data["content_type"].strip().lower()
        return data


class CreateUploadResponseSchema(CamelSchema):
    file_exists = fields.Boolean()
    file = fields.Nested(CloudFileSchema)
    task_id = fields.String()
    chunk_size = fields.Integer()
    chunks_count = fields.Integer()


def _progress(task) -> float:
    if task.status == UploadStatus.Completed:
        return 100.0
    return round(100.0 * task.chunks_uploaded / task.chunks_count, 2) if task.chunks_count else 0.0


class UploadTaskSchema(CamelSchema):
    task_id = fields.String()
    file_name = fields.String()
    file_size = fields.Integer()
    content_type = fields.String()
    chunk_size = fields.Integer()
    chunks_count = fields.Integer()
    chunks_uploaded = fields.Integer()
    bytes_uploaded = fields.Integer()
    progress = fields.Function(_progress)
    status = fields.Function(lambda task: task.status_name)
    pool_id = fields.UUID()
    bundle_id = fields.UUID(allow_none=True)
    hash = fields.String()
    is_encrypted = fields.Function(lambda task: task.encryption is not None)
    file_id = fields.UUID(allow_none=True)
    error_message = fields.String(allow_none=True)
    expired_at = UtcDateTime(allow_none=True)
    last_activity = UtcDateTime()
    created_at = UtcDateTime()
    updated_at = UtcDateTime()


class ProgressSchema(CamelSchema):
    task_id = fields.String()
    file_name = fields.String()
    file_size = fields.Integer()
    chunks_uploaded = fields.Integer()
    chunks_total = fields.Integer(attribute="chunks_count")
    bytes_uploaded = fields.Integer()
    progress = fields.Function(_progress)
    status = fields.Function(lambda task: task.status_name)
    last_activity = UtcDateTime()


class ResumeSchema(UploadTaskSchema):
    uploaded_chunks = fields.List(fields.Integer())
    missing_chunks = fields.List(fields.Integer())
    chunk_url_template = fields.String()
    complete_url = fields.String()


class TaskDetailsSchema(ResumeSchema):
    pool = fields.Nested(PoolSchema)
    bundle = fields.Nested(BundleSchema, allow_none=True)
    speed_bytes_per_second = fields.Float()
    estimated_seconds_remaining = fields.Float(allow_none=True)


class PendingCompletionSchema(CamelSchema):
    task_id = fields.String()
    status = fields.String()
    progress = fields.Float()
    message = fields.String()


class TaskListQuerySchema(ListQuerySchema):
    status = status_list(UploadStatus)
    sort_by = fields.String(
        load_default="lastActivity",
        validate=validate.OneOf(["filename", "filesize", "createdAt", "updatedAt", "lastActivity"]),
    )
    sort_descending = fields.Boolean(load_default=True)


class RecentQuerySchema(CamelSchema):
    limit = QueryInt(load_default=10, validate=validate.Range(min=1, max=100))

    class Meta:
        unknown = "exclude"


class RecentActivitySchema(CamelSchema):
    task_id = fields.String()
    file_name = fields.String()
    status = fields.Function(lambda task: task.status_name)
    progress = fields.Function(_progress)
    last_activity = UtcDateTime()


class StatsSchema(CamelSchema):
    total_tasks = fields.Integer()
    in_progress_tasks = fields.Integer()
    completed_tasks = fields.Integer()
    failed_tasks = fields.Integer()
    expired_tasks = fields.Integer()
    cancelled_tasks = fields.Integer()
    total_uploaded_bytes = fields.Integer()
    average_progress = fields.Float()
    recent_activity = fields.List(fields.Nested(RecentActivitySchema))


class CleanupResultSchema(CamelSchema):
    removed_tasks = fields.Integer()
    task_ids = fields.List(fields.String())
