"""Upload tasks: create, look up, list, cancel. Chunks are in chunks.py, completion in
completion.py."""
from __future__ import annotations

import math
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from flask import current_app

from app import crypto
from app.errors import BadRequest, Conflict, PayloadTooLarge
from app.events import iso, publish_event
from app.extensions import db
from app.models import Bundle, CloudFile, Pool, UploadChunk, UploadStatus, UploadTask
from app.models.types import utcnow
from app.services import quotas, task_cache
from app.services.pools import usable_pool
from app.services.tenancy import get_owned
from app.storage import backend_for

MAX_CHUNKS = 1_000_000


def chunk_prefix(task: UploadTask) -> str:
    return f"uploads/{task.task_id}"


def get_task(task_id: str, account_id: uuid.UUID, for_update: bool = False) -> UploadTask:
    return get_owned(UploadTask, task_id, account_id, code="UPLOAD_NOT_FOUND", what="Upload task",
                     id_column="task_id", for_update=for_update)


def _existing_file(account_id: uuid.UUID, file_hash: str) -> CloudFile | None:
    now = utcnow()
    return db.session.scalar(
        sa.select(CloudFile)
        .where(CloudFile.account_id == account_id, CloudFile.hash == file_hash,
               CloudFile.deleted_at.is_(None), CloudFile.is_encrypted.is_(False),
               sa.or_(CloudFile.expired_at.is_(None), CloudFile.expired_at > now))
        .order_by(CloudFile.created_at)
        .limit(1)
    )


def _chunk_size(requested: int | None, file_size: int, pool) -> int:
    config = current_app.config
    maximum = config["UPLOAD_MAX_CHUNK_SIZE"]
    minimum = min(config["UPLOAD_MIN_CHUNK_SIZE"], file_size)
    size = requested or pool.default_chunk_size or config["UPLOAD_DEFAULT_CHUNK_SIZE"]
    if requested is not None and not minimum <= requested <= maximum:
        raise BadRequest(
            f"chunkSize must be between {minimum} and {maximum} bytes",
            code="CHUNK_SIZE_INVALID", details={"chunkSize": requested, "min": minimum, "max": maximum},
        )
    size = min(max(size, minimum), maximum, file_size)  # a pool's default may be out of bounds
    if math.ceil(file_size / size) > MAX_CHUNKS:
        raise BadRequest(f"chunkSize too small: a file may have at most {MAX_CHUNKS} chunks",
                         code="CHUNK_SIZE_INVALID", details={"chunkSize": size, "maxChunks": MAX_CHUNKS})
    return size


def create_upload(account_id: uuid.UUID, data: dict) -> dict:
    """Validate against the pool's policy, reserve the declared size and open a task; or, if
    this account already stores a file with that hash, return it and open nothing."""
    pool = usable_pool(data.get("pool_id"), account_id)
    bundle_id = data.get("bundle_id")
    if bundle_id is not None:
        get_owned(Bundle, bundle_id, account_id, code="BUNDLE_NOT_FOUND", what="Bundle")
    size = data["file_size"]
    limit = pool.max_file_size or current_app.config["UPLOAD_MAX_FILE_SIZE"]
    if size > limit:
        raise PayloadTooLarge("The file is larger than this pool accepts", code="FILE_TOO_LARGE",
                              details={"fileSize": size, "maxFileSize": limit, "poolId": str(pool.id)})
    if not pool.accepts_type(data["content_type"]):
        raise BadRequest("This pool does not accept that content type", code="CONTENT_TYPE_NOT_ALLOWED",
                         details={"contentType": data["content_type"], "accepted": pool.accepted_types})
    password = data.get("encrypt_password")
    if password and not pool.allow_encryption:
        raise BadRequest("This pool does not allow encrypted files", code="ENCRYPTION_NOT_ALLOWED",
                         details={"poolId": str(pool.id)})
    expired_at = data.get("expired_at")
    if expired_at is not None and expired_at <= utcnow():
        raise BadRequest("expiredAt must be in the future", code="VALIDATION_ERROR",
                         details={"fields": {"expiredAt": ["Must be in the future."]}})
    chunk_size = _chunk_size(data.get("chunk_size"), size, pool)

    if not password:
        existing = _existing_file(account_id, data["hash"])
        if existing is not None:
            return {"file_exists": True, "file": existing}

    now = utcnow()
    task = UploadTask(
        task_id=secrets.token_hex(16), file_name=data["file_name"], file_size=size,
        content_type=data["content_type"], chunk_size=chunk_size, chunks_count=math.ceil(size / chunk_size),
        pool_id=pool.id, bundle_id=bundle_id, expired_at=expired_at, hash=data["hash"],
        account_id=account_id, status=UploadStatus.InProgress, quota_reserved=size,
        encryption=crypto.new_password_params(password) if password else None,
        last_activity=now, created_at=now, updated_at=now,
    )
    quotas.reserve(account_id, size)
    db.session.add(task)
    db.session.commit()
    task_cache.remember(task)
    return {"file_exists": False, "task_id": task.task_id, "chunk_size": task.chunk_size,
            "chunks_count": task.chunks_count}


def uploaded_indices(task: UploadTask) -> list[int]:
    return list(db.session.scalars(
        sa.select(UploadChunk.chunk_index).where(UploadChunk.task_id == task.id).order_by(UploadChunk.chunk_index)
    ))


@dataclass
class TaskView:
    """A task with what resume and details add to it, for the schemas to dump."""

    task: UploadTask
    uploaded_chunks: list
    missing_chunks: list
    chunk_url_template: str
    complete_url: str
    pool: object = None
    bundle: object = None
    speed_bytes_per_second: float = 0.0
    estimated_seconds_remaining: float | None = None

    def __getattr__(self, name):
        return getattr(self.task, name)


def resume_view(task_id: str, account_id: uuid.UUID, prefix: str) -> TaskView:
    task = get_task(task_id, account_id)
    done = uploaded_indices(task)
    have = set(done)
    return TaskView(
        task=task, uploaded_chunks=done,
        missing_chunks=[i for i in range(task.chunks_count) if i not in have],
        chunk_url_template=f"{prefix}/files/upload/chunk/{task.task_id}/{{chunkIndex}}",
        complete_url=f"{prefix}/files/upload/complete/{task.task_id}",
    )


def details_view(task_id: str, account_id: uuid.UUID, prefix: str) -> TaskView:
    """Resume data plus pool, bundle, the speed over the last UPLOAD_SPEED_WINDOW_SECONDS
    (bytes of chunks stored in that window) and the time left at that speed."""
    view = resume_view(task_id, account_id, prefix)
    task = view.task
    view.pool = db.session.get(Pool, task.pool_id)
    view.bundle = db.session.get(Bundle, task.bundle_id) if task.bundle_id else None
    window = current_app.config["UPLOAD_SPEED_WINDOW_SECONDS"]
    since = utcnow() - timedelta(seconds=window)
    recent = db.session.execute(
        sa.select(sa.func.coalesce(sa.func.sum(UploadChunk.size), 0), sa.func.min(UploadChunk.created_at))
        .where(UploadChunk.task_id == task.id, UploadChunk.created_at >= since)
    ).one()
    recent_bytes, first = int(recent[0]), recent[1]
    if recent_bytes and first is not None:
        elapsed = max((utcnow() - first).total_seconds(), 1.0)
        view.speed_bytes_per_second = round(recent_bytes / min(elapsed, window), 1)
    remaining = task.file_size - task.bytes_uploaded
    if task.status != UploadStatus.InProgress:
        view.estimated_seconds_remaining = None if task.status != UploadStatus.Completed else 0.0
    elif view.speed_bytes_per_second > 0:
        view.estimated_seconds_remaining = round(remaining / view.speed_bytes_per_second, 1)
    return view


SORT_COLUMNS = {
    "filename": UploadTask.file_name,
    "filesize": UploadTask.file_size,
    "createdAt": UploadTask.created_at,
    "updatedAt": UploadTask.updated_at,
    "lastActivity": UploadTask.last_activity,
}


def list_tasks(account_id: uuid.UUID, query: dict) -> tuple[list[UploadTask], int]:
    where = [UploadTask.account_id == account_id, UploadTask.deleted_at.is_(None)]
    if query.get("status"):
        where.append(UploadTask.status.in_([UploadStatus[s.strip()] for s in query["status"].split(",")]))
    total = db.session.scalar(sa.select(sa.func.count()).select_from(UploadTask).where(*where))
    column = SORT_COLUMNS[query["sort_by"]]
    order = column.desc() if query["sort_descending"] else column.asc()
    rows = db.session.scalars(
        sa.select(UploadTask).where(*where).order_by(order, UploadTask.id)
        .offset(query["offset"]).limit(query["limit"])
    )
    return list(rows), total


def recent_tasks(account_id: uuid.UUID, limit: int) -> list[UploadTask]:
    return list(db.session.scalars(
        sa.select(UploadTask)
        .where(UploadTask.account_id == account_id, UploadTask.deleted_at.is_(None))
        .order_by(UploadTask.last_activity.desc(), UploadTask.id).limit(limit)
    ))


def upload_stats(account_id: uuid.UUID) -> dict:
    """The seed's statistics. totalUploadedBytes counts stored chunks of every task (a
    completed task counts its whole size); averageProgress is that of the tasks in progress
    (0 when there are none), as in the original service."""
    rows = db.session.execute(
        sa.select(UploadTask.status, sa.func.count(),
                  sa.func.coalesce(sa.func.sum(UploadTask.bytes_uploaded), 0),
                  sa.func.coalesce(sa.func.sum(UploadTask.file_size), 0),
                  sa.func.coalesce(sa.func.sum(100.0 * UploadTask.chunks_uploaded / UploadTask.chunks_count), 0))
        .where(UploadTask.account_id == account_id, UploadTask.deleted_at.is_(None))
        .group_by(UploadTask.status)
    ).all()
    counts = {status: 0 for status in UploadStatus}
    total_bytes, progress_sum = 0, 0.0
    for status, count, uploaded, declared, progress in rows:
        status = UploadStatus(status)
        counts[status] = count
        total_bytes += int(declared if status == UploadStatus.Completed else uploaded)
        if status == UploadStatus.InProgress:
            progress_sum = float(progress)
    total = sum(counts.values())
    in_progress = counts[UploadStatus.InProgress]
    return {
        "total_tasks": total,
        "in_progress_tasks": counts[UploadStatus.InProgress],
        "completed_tasks": counts[UploadStatus.Completed],
        "failed_tasks": counts[UploadStatus.Failed],
        "expired_tasks": counts[UploadStatus.Expired],
        "cancelled_tasks": counts[UploadStatus.Cancelled],
        "total_uploaded_bytes": total_bytes,
        "average_progress": round(progress_sum / in_progress, 2) if in_progress else 0.0,
        "recent_activity": recent_tasks(account_id, 5),
    }


def remove_task_chunks(task: UploadTask) -> None:
    """Delete a task's stored chunks (after the commit that ended the task)."""
    backend_for(db.session.get(Pool, task.pool_id)).delete_prefix(chunk_prefix(task))


def cancel_upload(task_id: str, account_id: uuid.UUID) -> None:
    """Cancel an open upload (its chunks are removed, its reservation released), or forget a
    failed/expired one. A completed task keeps its file: delete the file instead."""
    task = get_task(task_id, account_id, for_update=True)
    now = utcnow()
    if task.status == UploadStatus.Completed:
        raise Conflict("The upload is completed; delete its file instead",
                       code="UPLOAD_ALREADY_COMPLETED", details={"taskId": task.task_id, "fileId": str(task.file_id)})
    if task.status == UploadStatus.InProgress and task.finalize_requested_at is not None:
        raise Conflict("The upload is being finalized", code="UPLOAD_FINALIZING", details={"taskId": task.task_id})
    was_open = task.status == UploadStatus.InProgress
    if was_open:
        quotas.release(account_id, task.quota_reserved)
        task.quota_reserved = 0
        task.status = UploadStatus.Cancelled
    task.deleted_at = now
    task.updated_at = now
    db.session.commit()
    task_cache.forget(task.task_id)
    remove_task_chunks(task)
    if was_open:
        publish_event(account_id, "upload.cancelled", {
            "taskId": task.task_id, "fileName": task.file_name, "fileSize": task.file_size,
            "cancelledAt": iso(now),
        })
