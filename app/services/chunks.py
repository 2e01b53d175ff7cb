"""Receiving one chunk: the hot path.

The body streams to a new object in the pool's storage while it is hashed; only a complete,
correctly sized (and, if the client sent `X-Chunk-SHA256`, correctly hashed) chunk is
committed to storage, and only a committed object is recorded. The unique (task, index)
constraint decides between racing copies of one chunk; the loser's object is deleted. The
task row is updated in the same transaction, guarded by its status, so a chunk can never be
recorded for a task that was cancelled, expired or is being finalized.
"""
from __future__ import annotations

import hashlib
import re
import uuid
from datetime import timedelta

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.exc import IntegrityError

from app import metrics
from app.errors import ApiError, BadRequest, Conflict, Gone, InsufficientStorage, NotFound, PayloadTooLarge
from app.events import iso, publish_event
from app.extensions import db
from app.models import Pool, UploadChunk, UploadStatus, UploadTask
from app.models.types import utcnow
from app.services import file_hash
from app.services.chunk_body import ChunkBody
from app.services.task_cache import TaskMeta, task_meta
from app.storage import StorageFull, backend_for

PROGRESS_STEPS = 20  # an event each 5 %
DISCARD_SLACK = 1024 * 1024  # multipart framing around a chunk
DIGITS = re.compile(r"-?[0-9]{1,40}")


def parse_index(raw: str, meta: TaskMeta) -> int:
    if not DIGITS.fullmatch(raw):  # int() would also take '+1', '0_1', ' 1' and other scripts' digits
        raise BadRequest("The chunk index must be a whole number", code="CHUNK_INDEX_INVALID",
                         details={"chunkIndex": raw[:40]})
    index = int(raw)
    if not 0 <= index < meta.chunks_count:
        raise BadRequest(f"The chunk index must be between 0 and {meta.chunks_count - 1}",
                         code="CHUNK_INDEX_OUT_OF_RANGE",
                         details={"chunkIndex": index, "chunksCount": meta.chunks_count})
    return index


def _existing_chunk(task_pk: uuid.UUID, index: int) -> UploadChunk | None:
    return db.session.scalar(sa.select(UploadChunk).where(
        UploadChunk.task_id == task_pk, UploadChunk.chunk_index == index))


def _already(chunk: UploadChunk, task_id: str) -> Conflict:
    return Conflict("This chunk is already stored", code="CHUNK_ALREADY_UPLOADED",
                    details={"taskId": task_id, "chunkIndex": chunk.chunk_index, "size": chunk.size,
                             "sha256": chunk.sha256})


def _not_open(task: UploadTask | None, task_id: str):
    """The error for a task that cannot take chunks (now)."""
    if task is None or task.deleted_at is not None:
        return NotFound("Upload task not found", code="UPLOAD_NOT_FOUND", details={"taskId": task_id})
    if task.status == UploadStatus.Expired or _is_stale(task):
        return Gone("The upload has expired", code="UPLOAD_EXPIRED", details={"taskId": task_id})
    if task.status == UploadStatus.InProgress and task.finalize_requested_at is not None:
        return Conflict("The upload is being finalized", code="UPLOAD_FINALIZING", details={"taskId": task_id})
    status = UploadStatus(task.status).name
    return Conflict(f"The upload is {status}", code="UPLOAD_NOT_IN_PROGRESS",
                    details={"taskId": task_id, "status": status})


def _is_stale(task: UploadTask) -> bool:
    now = utcnow()
    if task.expired_at is not None and task.expired_at <= now:
        return True
    hours = current_app.config["UPLOAD_STALE_THRESHOLD_HOURS"]
    return task.status == UploadStatus.InProgress and task.last_activity < now - timedelta(hours=hours)


def _accepting(task: UploadTask | None) -> bool:
    return (task is not None and task.deleted_at is None and task.status == UploadStatus.InProgress
            and task.finalize_requested_at is None and not _is_stale(task))


def _size_error(index: int, expected: int, got: int):
    maximum = current_app.config["UPLOAD_MAX_CHUNK_SIZE"]
    details = {"chunkIndex": index, "expectedSize": expected, "receivedSize": got}
    if got > maximum:
        return PayloadTooLarge(f"A chunk may be at most {maximum} bytes", code="CHUNK_TOO_LARGE",
                               details=dict(details, maxChunkSize=maximum))
    return BadRequest(f"Chunk {index} must be exactly {expected} bytes", code="CHUNK_SIZE_MISMATCH",
                      details=details)


def receive_chunk(account_id: uuid.UUID, task_id: str, raw_index: str, body: ChunkBody) -> dict:
    """Store one chunk, or raise the error that says why not (having read the rest of the
    body, so the connection stays usable for the client's next chunk)."""
    try:
        return _receive_chunk(account_id, task_id, raw_index, body)
    except ApiError as error:
        metrics.chunk_refused(error.code)
        body.discard_rest(current_app.config["UPLOAD_MAX_CHUNK_SIZE"] + DISCARD_SLACK)
        raise


def _receive_chunk(account_id: uuid.UUID, task_id: str, raw_index: str, body: ChunkBody) -> dict:
    meta = task_meta(task_id, account_id)
    index = parse_index(raw_index, meta)
    body.validate()
    task_pk = uuid.UUID(meta.id)
    # One query for everything checked before the body is read: the task's state, its
    # pool, and whether this chunk is stored already.
    state = db.session.execute(
        sa.select(UploadTask.status, UploadTask.deleted_at, UploadTask.finalize_requested_at,
                  UploadTask.expired_at, UploadTask.last_activity, Pool.backend, Pool.config,
                  UploadChunk.chunk_index, UploadChunk.size, UploadChunk.sha256)
        .join(Pool, Pool.id == UploadTask.pool_id)
        .outerjoin(UploadChunk, sa.and_(UploadChunk.task_id == UploadTask.id, UploadChunk.chunk_index == index))
        .where(UploadTask.id == task_pk)
    ).one_or_none()
    db.session.rollback()  # hold no transaction (or SQLite lock) while the body streams
    if not _accepting(state):
        raise _not_open(state, task_id)
    if state.chunk_index is not None:
        raise _already(state, task_id)
    pool = state  # backend and config are all the storage needs

    expected = meta.expected_chunk_size(index)
    if body.exact_length is not None and body.exact_length != expected:
        raise _size_error(index, expected, body.exact_length)

    backend = backend_for(pool)
    key = f"uploads/{task_id}/{index:08d}.{uuid.uuid4().hex[:12]}"
    digest = hashlib.sha256()
    size = 0
    try:
        writer = backend.open_writer(key)
    except StorageFull as error:
        raise InsufficientStorage("No space left to store the chunk", code="STORAGE_FULL") from error
    except OSError as error:
        raise _closed_meanwhile(task_pk, task_id) or error
    try:
        for piece in body.pieces():
            size += len(piece)
            if size > expected:
                raise _size_error(index, expected, size)
            digest.update(piece)
            writer.write(piece)
        if size != expected:
            raise _size_error(index, expected, size)
        sha256 = digest.hexdigest()
        if body.checksum is not None and body.checksum != sha256:
            raise BadRequest("The chunk does not match X-Chunk-SHA256", code="CHUNK_CHECKSUM_MISMATCH",
                             details={"chunkIndex": index, "expected": body.checksum, "actual": sha256})
        writer.commit()
    except StorageFull as error:
        writer.abort()
        raise InsufficientStorage("No space left to store the chunk", code="STORAGE_FULL") from error
    except OSError as error:
        # the task's folder can vanish under us when the task is cancelled or expires
        writer.abort()
        raise _closed_meanwhile(task_pk, task_id) or error
    except BaseException:
        writer.abort()
        raise

    receipt = _record(task_pk, task_id, index, size, sha256, key, backend)
    file_hash.advance(task_pk, backend)
    return receipt


def _closed_meanwhile(task_pk, task_id):
    """The error to answer when the task stopped taking chunks while one streamed, else None."""
    db.session.rollback()
    task = db.session.get(UploadTask, task_pk)
    error = None if _accepting(task) else _not_open(task, task_id)
    db.session.rollback()
    return error


def _record(task_pk, task_id, index, size, sha256, key, backend) -> dict:
    now = utcnow()
    try:
        db.session.execute(sa.insert(UploadChunk).values(
            task_id=task_pk, chunk_index=index, size=size, sha256=sha256, storage_key=key, created_at=now))
        row = db.session.execute(
            sa.update(UploadTask)
            .where(UploadTask.id == task_pk, UploadTask.status == UploadStatus.InProgress,
                   UploadTask.deleted_at.is_(None), UploadTask.finalize_requested_at.is_(None))
            .values(chunks_uploaded=UploadTask.chunks_uploaded + 1,
                    bytes_uploaded=UploadTask.bytes_uploaded + size, last_activity=now, updated_at=now)
            .returning(UploadTask.chunks_uploaded, UploadTask.chunks_count, UploadTask.file_name,
                       UploadTask.file_size, UploadTask.account_id, UploadTask.bytes_uploaded)
        ).one_or_none()
        if row is None:
            db.session.rollback()
            backend.delete(key)
            raise _not_open(db.session.get(UploadTask, task_pk), task_id)
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        backend.delete(key)
        existing = _existing_chunk(task_pk, index)
        if existing is None:  # the winner's row vanished with its task
            raise _not_open(db.session.get(UploadTask, task_pk), task_id) from None
        raise _already(existing, task_id) from None
    except BaseException:
        db.session.rollback()
        backend.delete(key)
        raise

    metrics.chunk_stored(size)
    uploaded, total = row.chunks_uploaded, row.chunks_count
    progress = round(100.0 * uploaded / total, 2)
    step_crossed = uploaded * PROGRESS_STEPS // total != (uploaded - 1) * PROGRESS_STEPS // total
    if uploaded == 1 or uploaded == total or step_crossed:
        publish_event(row.account_id, "upload.progress", {
            "taskId": task_id, "fileName": row.file_name, "fileSize": row.file_size,
            "chunksUploaded": uploaded, "chunksTotal": total, "progress": progress,
            "status": "InProgress", "lastActivity": iso(now),
        })
    return {"task_id": task_id, "chunk_index": index, "size": size, "sha256": sha256,
            "chunks_uploaded": uploaded, "chunks_count": total, "progress": progress}
