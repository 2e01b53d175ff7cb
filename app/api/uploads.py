"""/files/upload/...: the seed's upload routes."""
from __future__ import annotations

from flask import current_app, g, request

from app.api import api, api_prefix
from app.api.decorators import arguments, body, other_responses, response
from app.models import CloudFile
from app.schemas.base import CamelSchema
from app.schemas.files import CloudFileSchema
from app.schemas.uploads import (
    CleanupResultSchema,
    CreateUploadResponseSchema,
    CreateUploadSchema,
    PendingCompletionSchema,
    ProgressSchema,
    RecentQuerySchema,
    ResumeSchema,
    StatsSchema,
    TaskDetailsSchema,
    TaskListQuerySchema,
    UploadTaskSchema,
)
from app.services import chunks, cleanup, completion, uploads
from app.services.chunk_body import ChunkBody

from marshmallow import fields


class ChunkReceiptSchema(CamelSchema):
    task_id = fields.String()
    chunk_index = fields.Integer()
    size = fields.Integer()
    sha256 = fields.String()
    chunks_uploaded = fields.Integer()
    chunks_count = fields.Integer()
    progress = fields.Float()


@api.post("/files/upload/create")
@body(CreateUploadSchema)
@response(CreateUploadResponseSchema, 200, "The task to send chunks to, or the file this account already has")
@other_responses({403: (None, "QUOTA_EXCEEDED"), 404: (None, "POOL_NOT_FOUND / BUNDLE_NOT_FOUND"),
                  413: (None, "FILE_TOO_LARGE")})
def create_upload(data):
    """Create a resumable upload task."""
    return uploads.create_upload(g.account_id, data)


@api.post("/files/upload/chunk/<task_id>/<chunk_index>")
@response(ChunkReceiptSchema, 200, "The chunk is stored")
@other_responses({409: (None, "CHUNK_ALREADY_UPLOADED (details: size, sha256)"),
                  400: (None, "CHUNK_SIZE_MISMATCH / CHUNK_CHECKSUM_MISMATCH / CHUNK_CHECKSUM_INVALID / CHUNK_INDEX_OUT_OF_RANGE"),
                  410: (None, "UPLOAD_EXPIRED"), 413: (None, "CHUNK_TOO_LARGE"),
                  507: (None, "STORAGE_FULL: nothing was kept; send the chunk again later")})
def upload_chunk(task_id, chunk_index):
    """Send one chunk: a raw application/octet-stream body, or the multipart field `chunk`.
    Optional header X-Chunk-SHA256 is checked before the chunk is accepted."""
    return chunks.receive_chunk(g.account_id, task_id, chunk_index, ChunkBody.from_request(request))


@api.post("/files/upload/complete/<task_id>")
@response(CloudFileSchema, 200, "The stored file")
@other_responses({202: (PendingCompletionSchema, "Still finalizing: call again after Retry-After"),
                  400: (None, "CHUNKS_MISSING / UPLOAD_FAILED"), 410: (None, "UPLOAD_EXPIRED"),
                  507: (None, "STORAGE_FULL: the upload stays open; complete again later")})
def complete_upload(task_id):
    """Complete the upload: verify the SHA-256 and store the file (waits up to
    UPLOAD_COMPLETE_WAIT_SECONDS)."""
    result = completion.complete_upload(g.account_id, task_id)
    if isinstance(result, CloudFile):
        return result
    pending = {"task_id": result.task_id, "status": result.status_name,
               "progress": 100.0, "message": "The file is being verified and stored; call complete again"}
    return current_app.response_class(
        PendingCompletionSchema().dumps(pending), status=202, mimetype="application/json",
        headers={"Retry-After": "2"})


@api.get("/files/upload/tasks")
@arguments(TaskListQuerySchema)
@response(UploadTaskSchema, 200, "The account's upload tasks; X-Total holds the count", many=True)
def list_tasks(query):
    """List upload tasks with filters, sorting and pagination."""
    rows, total = uploads.list_tasks(g.account_id, query)
    return rows, {"X-Total": str(total)}


@api.get("/files/upload/tasks/recent")
@arguments(RecentQuerySchema)
@response(UploadTaskSchema, 200, "The most recently active tasks", many=True)
def recent_tasks(query):
    """The most recent upload tasks."""
    return uploads.recent_tasks(g.account_id, query["limit"])


@api.get("/files/upload/progress/<task_id>")
@response(ProgressSchema)
def task_progress(task_id):
    """Current progress of a task."""
    return uploads.get_task(task_id, g.account_id)


@api.get("/files/upload/resume/<task_id>")
@response(ResumeSchema)
def resume_task(task_id):
    """What a client needs to continue: the stored chunk indices (sorted) and the missing ones."""
    return uploads.resume_view(task_id, g.account_id, api_prefix())


@api.get("/files/upload/tasks/<task_id>/details")
@response(TaskDetailsSchema)
def task_details(task_id):
    """Everything about a task: pool, bundle, current speed and time remaining."""
    return uploads.details_view(task_id, g.account_id, api_prefix())


@api.delete("/files/upload/task/<task_id>")
@response(None, 204, "Cancelled: chunks removed, quota released")
def cancel_task(task_id):
    """Cancel an upload task and remove what it stored."""
    uploads.cancel_upload(task_id, g.account_id)


@api.get("/files/upload/stats")
@response(StatsSchema)
def upload_stats():
    """Upload statistics of the account."""
    return uploads.upload_stats(g.account_id)


@api.delete("/files/upload/tasks/cleanup")
@response(CleanupResultSchema)
def cleanup_tasks():
    """Forget the account's failed, expired and cancelled tasks."""
    ids = cleanup.cleanup_account_tasks(g.account_id)
    return {"removed_tasks": len(ids), "task_ids": ids}
