"""Cleanup: stale uploads expire, expired files go, orphaned objects are swept.

Run by `flask uploads cleanup` and every UPLOAD_CLEANUP_INTERVAL_MINUTES by the scheduler.
Each task or file changes state in its own conditional UPDATE and commit, so a cleanup that
runs twice at once, or dies half way, leaves nothing inconsistent.
"""
from __future__ import annotations

import time
import uuid
from datetime import timedelta

import sqlalchemy as sa
from flask import current_app

from app.events import iso, publish_event
from app.extensions import db
from app.models import CloudFile, Pool, UploadChunk, UploadStatus, UploadTask
from app.models.types import utcnow
from app.services import quotas, task_cache
from app.services.files import remove_file
from app.services.uploads import remove_task_chunks
from app.storage import backend_for

ORPHAN_GRACE_SECONDS = 3600  # objects younger than this may belong to a write in flight


def _stale_tasks():
    now = utcnow()
    cutoff = now - timedelta(hours=current_app.config["UPLOAD_STALE_THRESHOLD_HOURS"])
    return list(db.session.scalars(
        sa.select(UploadTask).where(
            UploadTask.status == UploadStatus.InProgress, UploadTask.deleted_at.is_(None),
            UploadTask.finalize_requested_at.is_(None),
            sa.or_(UploadTask.last_activity < cutoff, UploadTask.expired_at <= now))
    ))


def _expired_files():
    return list(db.session.scalars(sa.select(CloudFile).where(
        CloudFile.deleted_at.is_(None), CloudFile.expired_at <= utcnow())))


def expire_task(task: UploadTask) -> bool:
    now = utcnow()
    reserved, account_id = task.quota_reserved, task.account_id
    moved = db.session.execute(
        sa.update(UploadTask)
        .where(UploadTask.id == task.id, UploadTask.status == UploadStatus.InProgress,
               UploadTask.finalize_requested_at.is_(None))
        .values(status=UploadStatus.Expired, quota_reserved=0, updated_at=now,
                error_message="The upload expired without being completed")
    ).rowcount
    if moved != 1:
        db.session.rollback()
        return False
    quotas.release(account_id, reserved)
    db.session.commit()
    task = db.session.get(UploadTask, task.id)
    task_cache.forget(task.task_id)
    remove_task_chunks(task)
    publish_event(account_id, "upload.failed", {
        "taskId": task.task_id, "fileName": task.file_name, "fileSize": task.file_size,
        "failedAt": iso(now), "errorMessage": "The upload expired without being completed",
    })
    return True


def _sweep_orphans(dry_run: bool) -> list[str]:
    """Objects under uploads/ and files/ that no row refers to, older than the grace time."""
    removed = []
    cutoff = time.time() - ORPHAN_GRACE_SECONDS
    chunk_keys = set(db.session.scalars(sa.select(UploadChunk.storage_key)))
    file_keys = set(db.session.scalars(sa.select(CloudFile.storage_key).where(CloudFile.deleted_at.is_(None))))
    for pool in db.session.scalars(sa.select(Pool)):
        backend = backend_for(pool)
        for prefix, known in (("uploads", chunk_keys), ("files", file_keys)):
            for key, mtime in backend.list_objects(prefix):
                if key not in known and mtime < cutoff:
                    removed.append(f"{pool.name}:{key}")
                    if not dry_run:
                        backend.delete(key)
    return removed


def run_cleanup(dry_run: bool = False) -> dict:
    stale = _stale_tasks()
    files = _expired_files()
    report = {
        "expiredTasks": [t.task_id for t in stale],
        "expiredFiles": [str(f.id) for f in files],
    }
    if not dry_run:
        report["expiredTasks"] = [t.task_id for t in stale if expire_task(t)]
        for file in files:
            remove_file(file)
    report["orphanedObjects"] = _sweep_orphans(dry_run)
    report["dryRun"] = dry_run
    return report


def cleanup_account_tasks(account_id: uuid.UUID) -> list[str]:
    """Forget the account's failed, expired and cancelled tasks (their chunks are gone)."""
    now = utcnow()
    ids = list(db.session.scalars(sa.select(UploadTask.task_id).where(
        UploadTask.account_id == account_id, UploadTask.deleted_at.is_(None),
        UploadTask.status.in_([UploadStatus.Failed, UploadStatus.Expired, UploadStatus.Cancelled]))))
    if ids:
        db.session.execute(sa.update(UploadTask).where(
            UploadTask.account_id == account_id, UploadTask.task_id.in_(ids), UploadTask.deleted_at.is_(None)
        ).values(deleted_at=now, updated_at=now))
    db.session.commit()
    for task_id in ids:
        task_cache.forget(task_id)
    return ids
