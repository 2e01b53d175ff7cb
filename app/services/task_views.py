"""Uploads in the task list: an upload is a task of type FileUpload (the seed's first task
type). Its rows stay in `upload_tasks`; the task list pages over both tables at once (one
UNION of the columns it filters and sorts by), then loads each page's rows from their table.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from app.extensions import db
from app.models import Task, TaskStatus, UploadStatus, UploadTask

UPLOAD_TYPE = "FileUpload"
UPLOAD_PRIORITY = 50


@dataclass
class UploadAsTask:
    """An upload task shown with the fields of a generic task."""

    upload: UploadTask

    task_id: str = ""
    type: str = UPLOAD_TYPE
    description: str | None = None
    priority: int = UPLOAD_PRIORITY
    estimated_duration_seconds: int | None = None

    def __post_init__(self):
        self.task_id = self.upload.task_id

    @property
    def name(self) -> str:
        return self.upload.file_name

    @property
    def status_name(self) -> str:
        return TaskStatus(self.upload.status).name

    @property
    def progress(self) -> float:
        upload = self.upload
        if upload.status == UploadStatus.Completed:
            return 100.0
        return round(100.0 * upload.chunks_uploaded / upload.chunks_count, 2)

    @property
    def parameters(self) -> dict:
        u = self.upload
        return {"fileName": u.file_name, "fileSize": u.file_size, "contentType": u.content_type,
                "chunkSize": u.chunk_size, "chunksCount": u.chunks_count, "hash": u.hash,
                "poolId": str(u.pool_id), "bundleId": str(u.bundle_id) if u.bundle_id else None}

    @property
    def results(self) -> dict:
        return {"fileId": str(self.upload.file_id)} if self.upload.file_id else {}

    def __getattr__(self, name):  # account_id, error_message, timestamps
        return getattr(self.upload, name)

    @property
    def started_at(self) -> datetime:
        return self.upload.created_at


def _upload_progress():
    return sa.case((UploadTask.status == UploadStatus.Completed, 100.0),
                   else_=100.0 * UploadTask.chunks_uploaded / UploadTask.chunks_count)


def _selects(account_id: uuid.UUID, types: list[str] | None, statuses: list[int] | None):
    generic = sa.select(
        sa.literal("task").label("kind"), Task.task_id.label("task_id"), Task.name.label("name"),
        Task.type.label("type"), Task.status.label("status"), Task.priority.label("priority"),
        Task.progress.label("progress"), Task.created_at.label("created_at"), Task.updated_at.label("updated_at"),
        Task.last_activity.label("last_activity"),
    ).where(Task.account_id == account_id)
    uploads = sa.select(
        sa.literal("upload").label("kind"), UploadTask.task_id.label("task_id"), UploadTask.file_name.label("name"),
        sa.literal(UPLOAD_TYPE).label("type"), UploadTask.status.label("status"),
        sa.literal(UPLOAD_PRIORITY).label("priority"), _upload_progress().label("progress"),
        UploadTask.created_at.label("created_at"), UploadTask.updated_at.label("updated_at"),
        UploadTask.last_activity.label("last_activity"),
    ).where(UploadTask.account_id == account_id, UploadTask.deleted_at.is_(None))
    if statuses:
        generic = generic.where(Task.status.in_(statuses))
        uploads = uploads.where(UploadTask.status.in_(statuses))
    parts = []
    if not types or any(t != UPLOAD_TYPE for t in types):
        parts.append(generic.where(Task.type.in_(types)) if types else generic)
    if not types or UPLOAD_TYPE in types:
        parts.append(uploads)
    return parts


SORT = {"name": "name", "type": "type", "status": "status", "priority": "priority", "progress": "progress",
        "createdAt": "created_at", "updatedAt": "updated_at", "lastActivity": "last_activity"}


def list_all_tasks(account_id: uuid.UUID, query: dict) -> tuple[list, int]:
    """Generic tasks and uploads of the account, filtered, sorted and paged together."""
    types = [t.strip() for t in query["type"].split(",")] if query.get("type") else None
    statuses = [TaskStatus[s.strip()] for s in query["status"].split(",")] if query.get("status") else None
    union = sa.union_all(*_selects(account_id, types, statuses)).subquery()
    total = db.session.scalar(sa.select(sa.func.count()).select_from(union))
    column = union.c[SORT[query["sort_by"]]]
    page = db.session.execute(
        sa.select(union.c.kind, union.c.task_id)
        .order_by(column.desc() if query["sort_descending"] else column.asc(), union.c.task_id)
        .offset(query["offset"]).limit(query["limit"])
    ).all()
    task_ids = [row.task_id for row in page if row.kind == "task"]
    upload_ids = [row.task_id for row in page if row.kind == "upload"]
    loaded = {t.task_id: t for t in db.session.scalars(sa.select(Task).where(Task.task_id.in_(task_ids)))}
    loaded.update({u.task_id: UploadAsTask(u) for u in db.session.scalars(
        sa.select(UploadTask).where(UploadTask.task_id.in_(upload_ids)))})
    return [loaded[row.task_id] for row in page if row.task_id in loaded], total


def find_upload_as_task(task_id: str, account_id: uuid.UUID) -> UploadAsTask | None:
    upload = db.session.scalar(sa.select(UploadTask).where(
        UploadTask.task_id == task_id, UploadTask.account_id == account_id, UploadTask.deleted_at.is_(None)))
    return UploadAsTask(upload) if upload is not None else None


def upload_counts(account_id: uuid.UUID) -> list[tuple[int, int, float]]:
    """(status, count, sum of progress) of the account's uploads."""
    return [tuple(r) for r in db.session.execute(
        sa.select(UploadTask.status, sa.func.count(), sa.func.coalesce(sa.func.sum(_upload_progress()), 0))
        .where(UploadTask.account_id == account_id, UploadTask.deleted_at.is_(None))
        .group_by(UploadTask.status)).all()]
