"""finalize_upload: verify the whole file's SHA-256, store it in the pool, publish the file.

Safe to run twice: the task row's status is the guard (only an InProgress task is finalized,
and the transition to Completed is a conditional UPDATE, so only one run publishes a file), and
each run is a numbered attempt that only the latest can end (jobs/finalize_attempts.py).
The hash is checked before any file is assembled: a mismatch ends the task Failed, stores
nothing and releases the reservation. No room to store the file (StorageFull) fails nothing:
the run gives its claim back and the next complete tries again. An unexpected error is retried
by RQ; on the last try the task is marked Failed, the failure published, and the exception
re-raised.
"""
from __future__ import annotations

import logging
import uuid

import sqlalchemy as sa
from rq import get_current_job

from app import crypto
from app.events import iso, publish_event
from app.extensions import db
from app.metrics import timed_finalize
from app.models import CloudFile, Pool, UploadChunk, UploadStatus, UploadTask
from app.models.types import utcnow
from app.redis_client import get_redis
from app.services import file_hash, quotas
from app.services.file_meta import probe_file_meta
from app.services.uploads import remove_task_chunks
from app.storage import Composing, Concatenating, StorageFull, backend_for
from jobs.context import with_app
from jobs.finalize_attempts import attempt_file_id, begin_attempt, discard_earlier_attempts, in_force

log = logging.getLogger(__name__)

READ_BLOCK = 8 * 1024 * 1024
NO_ROOM = "No space left to store the file; complete again once there is room"


def done_channel(task_id: str) -> str:
    return f"drive:upload-done:{task_id}"


class UploadRejected(Exception):
    """The upload's bytes are not what was declared; the task fails, nothing is retried."""


@with_app
def finalize_upload(task_pk: str) -> str | None:
    task = db.session.get(UploadTask, uuid.UUID(task_pk))
    if task is None or task.deleted_at is not None or task.status != UploadStatus.InProgress:
        return str(task.file_id) if task is not None and task.file_id else None
    attempt = begin_attempt(task.id)  # from now on only this run can end the task (finalize_attempts.py)
    if attempt is None:
        return None
    try:
        return _finalize(task, attempt)
    except UploadRejected as error:
        db.session.rollback()
        fail_upload(task_pk, str(error), attempt)
        return None
    except StorageFull:
        db.session.rollback()
        _postpone(task_pk, NO_ROOM, attempt)
        return None
    except Exception as error:
        db.session.rollback()
        job = get_current_job()
        if job is None or not job.retries_left:
            fail_upload(task_pk, f"File processing failed: {type(error).__name__}", attempt)
        raise


def _chunks(task: UploadTask) -> list[UploadChunk]:
    chunks = list(db.session.scalars(
        sa.select(UploadChunk).where(UploadChunk.task_id == task.id).order_by(UploadChunk.chunk_index)))
    if [c.chunk_index for c in chunks] != list(range(task.chunks_count)):
        raise UploadRejected("Chunks are missing")
    for chunk in chunks:
        if chunk.size != task.expected_chunk_size(chunk.chunk_index):
            raise UploadRejected(f"Chunk {chunk.chunk_index} has the wrong size")
    return chunks


def _read_blocks(backend, key: str, buffer: bytearray):
    view = memoryview(buffer)
    with backend.open_read(key) as source:
        while True:
            count = source.readinto(view)
            if not count:
                return
            yield view[:count]


@timed_finalize
def _finalize(task: UploadTask, attempt: int) -> str:
    chunks = _chunks(task)
    pool = db.session.get(Pool, task.pool_id)
    backend = backend_for(pool)
    file_id = attempt_file_id(task.id, attempt)
    key = f"files/{file_id}"
    buffer = bytearray(READ_BLOCK)
    # the leading chunks that the web processes hashed already as they arrived
    hashed, digest = file_hash.resume(task.id, chunks)
    encryption = None
    # Detach what was loaded and end the transaction: none is held while bytes move
    # (on SQLite an open transaction would hold the database's write lock).
    db.session.expunge_all()
    db.session.rollback()
    discard_earlier_attempts(backend, task.id, attempt)

    if task.encryption:
        file_key, encryption = crypto.new_file_key(task.encryption)
        encryptor = crypto.SegmentEncryptor(file_key)
        writer = backend.open_writer(key)
        try:
            for number, chunk in enumerate(chunks):
                for block in _read_blocks(backend, chunk.storage_key, buffer):
                    if number >= hashed:
                        digest.update(block)
                    for sealed in encryptor.update(block):
                        writer.write(sealed)
            _check_hash(task, digest)
            writer.write(encryptor.finish())
            writer.commit()
        except BaseException:
            writer.abort()
            raise
    else:
        # hash first, then join the chunks; a mismatch assembles nothing
        for chunk in chunks[hashed:]:
            for block in _read_blocks(backend, chunk.storage_key, buffer):
                digest.update(block)
        _check_hash(task, digest)
        _assemble(backend, [chunk.storage_key for chunk in chunks], key, buffer)

    file_meta = {} if encryption else probe_file_meta(backend, key, task.content_type)
    return _publish(task, pool, backend, file_id, key, encryption, file_meta, attempt)


def _assemble(backend, keys: list[str], key: str, buffer: bytearray) -> None:
    """One object from the chunks, copying as little as the backend allows."""
    if isinstance(backend, Composing):
        backend.compose(keys, key)
        return
    writer = backend.open_writer(key)
    try:
        for source in keys:
            if isinstance(writer, Concatenating):
                writer.append_object(source)
            else:
                for block in _read_blocks(backend, source, buffer):
                    writer.write(block)
        writer.commit()
    except BaseException:
        writer.abort()
        raise


def _check_hash(task: UploadTask, digest) -> None:
    actual = digest.hexdigest()
    if actual != task.hash:
        raise UploadRejected(f"SHA-256 mismatch: declared {task.hash}, received {actual}")


def _publish(task, pool, backend, file_id, key, encryption, file_meta, attempt) -> str:
    now = utcnow()
    task_pk = task.id
    try:
        db.session.add(CloudFile(
            id=file_id, name=task.file_name, mime_type=task.content_type, size=task.file_size,
            hash=task.hash, file_meta=file_meta, user_meta={}, is_encrypted=encryption is not None,
            encryption=encryption, pool_id=pool.id, bundle_id=task.bundle_id, account_id=task.account_id,
            storage_key=key, stored_size=backend.size(key), expired_at=task.expired_at,
            uploaded_at=now, created_at=now, updated_at=now,
        ))
        db.session.flush()
        moved = db.session.execute(
            sa.update(UploadTask)
            .where(UploadTask.id == task_pk, UploadTask.status == UploadStatus.InProgress,
                   UploadTask.deleted_at.is_(None), in_force(attempt))
            .values(status=UploadStatus.Completed, file_id=file_id, completed_at=now, quota_reserved=0,
                    updated_at=now, last_activity=now)
        ).rowcount
        if moved != 1:  # another run got there first or took over, or the task was cancelled
            db.session.rollback()
            backend.delete(key)
            return None
        db.session.commit()
    except BaseException:
        db.session.rollback()
        backend.delete(key)
        raise
    task = db.session.get(UploadTask, task_pk)
    _drop_chunks(task)
    publish_event(task.account_id, "upload.completed", {
        "taskId": task.task_id, "fileId": str(file_id), "fileName": task.file_name,
        "fileSize": task.file_size, "completedAt": iso(now),
    })
    _announce(task.task_id, "Completed")
    return str(file_id)


def _postpone(task_pk: str, message: str, attempt: int | None = None) -> None:
    """No room to store the file: give the finalize claim back instead of failing. The task
    stays open with its chunks and its reservation (a full disk is no fault of the upload, and
    retrying at once would only fill the disk's last bytes again); the waiting complete answers
    507 and the next complete starts a new run."""
    now = utcnow()
    moved = db.session.execute(
        sa.update(UploadTask)
        .where(UploadTask.id == uuid.UUID(task_pk), UploadTask.status == UploadStatus.InProgress,
               UploadTask.finalize_requested_at.is_not(None), in_force(attempt))
        .values(finalize_requested_at=None, error_message=message, updated_at=now)
    ).rowcount
    db.session.commit()
    if moved == 1:
        task = db.session.get(UploadTask, uuid.UUID(task_pk))
        log.warning("upload %s postponed: %s", task.task_id, message)
        _announce(task.task_id, "Postponed")


def fail_upload(task_pk: str, message: str, attempt: int | None = None) -> None:
    """Mark the task Failed (once), release its reservation, publish, drop its chunks; with
    `attempt`, only while that finalize attempt is the one in force."""
    now = utcnow()
    task = db.session.get(UploadTask, uuid.UUID(task_pk))
    reserved = task.quota_reserved
    moved = db.session.execute(
        sa.update(UploadTask)
        .where(UploadTask.id == task.id, UploadTask.status == UploadStatus.InProgress, in_force(attempt))
        .values(status=UploadStatus.Failed, error_message=message, quota_reserved=0, updated_at=now,
                last_activity=now)
    ).rowcount
    if moved != 1:
        db.session.rollback()
        return
    quotas.release(task.account_id, reserved)
    db.session.commit()
    log.info("upload %s failed: %s", task.task_id, message)
    _drop_chunks(task)
    publish_event(task.account_id, "upload.failed", {
        "taskId": task.task_id, "fileName": task.file_name, "fileSize": task.file_size,
        "failedAt": iso(now), "errorMessage": message,
    })
    _announce(task.task_id, "Failed")


def _drop_chunks(task: UploadTask) -> None:
    """Remove an ended task's chunks before its end is told, so whoever hears it (a waiting
    complete) finds them gone. A failure here must not keep the end untold: what is left is
    an orphan that cleanup sweeps."""
    try:
        remove_task_chunks(task)
    except Exception:  # noqa: BLE001
        log.warning("could not remove the chunks of %s", task.task_id, exc_info=True)
    file_hash.forget(task.id)


def _announce(task_id: str, status: str) -> None:
    try:
        get_redis().publish(done_channel(task_id), status)
    except Exception:  # noqa: BLE001 - waiters re-read the database anyway
        log.warning("could not announce the end of %s", task_id, exc_info=True)
