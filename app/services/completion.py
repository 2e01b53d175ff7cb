"""Completing an upload: check that every chunk is stored, start exactly one finalize job,
and wait (up to UPLOAD_COMPLETE_WAIT_SECONDS) for it to publish the file.

`finalize_requested_at` is set by one conditional UPDATE, so of many concurrent completes
only one enqueues the job. A later complete finds the job by its id; if RQ lost it (Redis
restarted, the worker was killed and the job abandoned) while the task is still open, it is
enqueued again (jobs/upload_recovery.py, which the scheduler also runs for every such upload):
finalizing is idempotent. A claim whose job cannot be queued (Redis down) is given back, and
complete answers 503 QUEUE_UNAVAILABLE with Retry-After. A job that finds no room to store the file gives
the claim back (the upload stays open, chunks and reservation kept): the complete waiting for
it answers 507 STORAGE_FULL, and the next complete claims and enqueues afresh.
"""
from __future__ import annotations

import time
import uuid

import sqlalchemy as sa
from flask import current_app
from redis.exceptions import RedisError

from app.errors import BadRequest, Gone, InsufficientStorage, ServiceUnavailable
from app.extensions import db
from app.live.hub import get_hub
from app.models import CloudFile, UploadStatus, UploadTask
from app.models.types import utcnow
from app.services.chunks import _is_stale
from app.services.uploads import get_task, uploaded_indices
from jobs.finalize import done_channel
from jobs.upload_recovery import enqueue_finalize, ensure_finalize


def _outcome(task: UploadTask):
    """('file', CloudFile) when done; raises for a failed or expired upload; None otherwise."""
    if task.status == UploadStatus.Completed:
        return db.session.get(CloudFile, task.file_id)
    if task.status == UploadStatus.Failed:
        raise BadRequest("The upload failed", code="UPLOAD_FAILED",
                         details={"taskId": task.task_id, "error": task.error_message})
    if task.status == UploadStatus.Expired:
        raise Gone("The upload has expired", code="UPLOAD_EXPIRED", details={"taskId": task.task_id})
    return None


def complete_upload(account_id: uuid.UUID, task_id: str):
    """The CloudFile when finalizing ended in time, else the task (still InProgress)."""
    task = get_task(task_id, account_id)
    result = _outcome(task)
    if result is not None:
        return result
    if task.finalize_requested_at is None:
        if _is_stale(task):
            raise Gone("The upload has expired", code="UPLOAD_EXPIRED", details={"taskId": task_id})
        have = set(uploaded_indices(task))
        missing = [i for i in range(task.chunks_count) if i not in have]
        if missing:
            raise BadRequest(f"{len(missing)} chunk(s) are missing", code="CHUNKS_MISSING",
                             details={"taskId": task_id, "missingChunks": missing, "missingCount": len(missing)})
        now = utcnow()
        claimed = db.session.execute(
            sa.update(UploadTask)
            .where(UploadTask.id == task.id, UploadTask.status == UploadStatus.InProgress,
                   UploadTask.finalize_requested_at.is_(None), UploadTask.deleted_at.is_(None))
            .values(finalize_requested_at=now, error_message=None, updated_at=now, last_activity=now)
        ).rowcount
        db.session.commit()
        task = db.session.get(UploadTask, task.id)
        if claimed:
            try:
                enqueue_finalize(task)
            except RedisError as error:
                _unclaim(task.id, now)
                raise _queue_unavailable() from error
    else:
        try:
            ensure_finalize(task)
        except RedisError as error:
            raise _queue_unavailable() from error
    return _wait(task.id, task_id)


def _queue_unavailable() -> ServiceUnavailable:
    return ServiceUnavailable("The job queue is unavailable; call complete again",
                              code="QUEUE_UNAVAILABLE", headers={"Retry-After": "5"})


def _unclaim(task_pk: uuid.UUID, claimed_at) -> None:
    """Give back a claim whose job could not be queued (Redis down): the upload is as before
    the complete, and the next complete claims and queues afresh."""
    db.session.execute(
        sa.update(UploadTask)
        .where(UploadTask.id == task_pk, UploadTask.status == UploadStatus.InProgress,
               UploadTask.finalize_requested_at == claimed_at)
        .values(finalize_requested_at=None))
    db.session.commit()


def _wait(task_pk: uuid.UUID, task_id: str):
    deadline = time.monotonic() + current_app.config["UPLOAD_COMPLETE_WAIT_SECONDS"]
    # the end is announced on a Redis channel that this process's hub listens to already:
    # waiting costs no connection or subscription of its own (app/live/hub.py)
    waiter = get_hub(current_app._get_current_object()).watch(done_channel(task_id))
    try:
        while True:
            task = db.session.get(UploadTask, task_pk)
            result = _outcome(task)
            if result is not None:
                return result
            if task.finalize_requested_at is None:  # the claim was given back
                if task.error_message:  # by the job: no room to store the file (jobs/finalize.py)
                    raise InsufficientStorage(task.error_message, code="STORAGE_FULL", details={"taskId": task_id})
                return task  # by a complete whose job could not be queued: the client calls again
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return task
            # End the transaction: hold no lock (SQLite) and see the worker's commit next time.
            db.session.rollback()
            # the worker announces the end; re-reading every second covers a lost message
            waiter.wait(min(remaining, 1.0))
    finally:
        waiter.close()
