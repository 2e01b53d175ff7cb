"""Finalize runs as numbered attempts, so a run that was given up for dead cannot publish a
second file, and what it stored is found and removed.

Each run of finalize_upload takes the next number (`upload_tasks.finalize_attempts`, bumped
by a conditional UPDATE) before it reads a byte, and every change it makes to the task at the
end (Completed, Failed, postponed) is guarded by that number. So the latest run to start is
the only one that can end the upload: an older one, still running on a worker that was taken
for dead, finds its UPDATE matching nothing and deletes its own object. A run's object key is
derived from the task and its number, so a new run deletes the objects of every earlier one
first (a killed run may have stored its whole file before it could publish it): an upload
ends with one file and one stored object, however many runs it took.
"""
from __future__ import annotations

import uuid

import sqlalchemy as sa

from app.extensions import db
from app.models import UploadStatus, UploadTask
from app.models.types import utcnow


def begin_attempt(task_pk: uuid.UUID) -> int | None:
    """Take the next attempt number for this run and commit; None if the task is no longer
    open (completed, failed or cancelled meanwhile)."""
    attempt = db.session.execute(
        sa.update(UploadTask)
        .where(UploadTask.id == task_pk, UploadTask.status == UploadStatus.InProgress,
               UploadTask.deleted_at.is_(None))
        .values(finalize_attempts=UploadTask.finalize_attempts + 1, updated_at=utcnow())
        .returning(UploadTask.finalize_attempts)
    ).scalar_one_or_none()
    db.session.commit()
    return attempt


def in_force(attempt: int | None):
    """The WHERE clause that lets only attempt `attempt` change the task (None: any)."""
    return sa.true() if attempt is None else UploadTask.finalize_attempts == attempt


def attempt_file_id(task_pk: uuid.UUID, attempt: int) -> uuid.UUID:
    """The id of the file attempt `attempt` would publish (its object is `files/{id}`)."""
    return uuid.uuid5(task_pk, f"finalize-{attempt}")


def discard_earlier_attempts(backend, task_pk: uuid.UUID, attempt: int) -> None:
    """Delete whatever the earlier attempts stored: none of them can publish any more, so no
    file refers to their objects. A composed object cut short is a folder without its marker,
    which `delete` leaves alone; `delete_prefix` takes its parts."""
    for earlier in range(1, attempt):
        key = f"files/{attempt_file_id(task_pk, earlier)}"
        backend.delete(key)
        backend.delete_prefix(key + "/")
