"""A Redis cache of the fields of an upload task that never change after create.

The chunk route reads these on every request; caching only immutable fields means the cache
can never be stale. Everything that changes (status, counters, deletion) is checked by the
database in the same statement that records a chunk. Redis being down only costs a query.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass

import sqlalchemy as sa
from flask import current_app
from redis.exceptions import RedisError

from app.errors import NotFound
from app.extensions import db
from app.models import UploadTask
from app.redis_client import get_redis
from app.services.tenancy import is_token


@dataclass(frozen=True)
class TaskMeta:
    id: str
    task_id: str
    account_id: str
    pool_id: str
    file_name: str
    file_size: int
    chunk_size: int
    chunks_count: int

    def expected_chunk_size(self, index: int) -> int:
        if index < self.chunks_count - 1:
            return self.chunk_size
        return self.file_size - self.chunk_size * (self.chunks_count - 1)


def _key(task_id: str) -> str:
    return f"drive:task-meta:{task_id}"


def _from_row(task: UploadTask) -> TaskMeta:
    return TaskMeta(
        id=str(task.id), task_id=task.task_id, account_id=str(task.account_id), pool_id=str(task.pool_id),
        file_name=task.file_name, file_size=task.file_size, chunk_size=task.chunk_size,
        chunks_count=task.chunks_count,
    )


def remember(task: UploadTask) -> None:
    try:
        ttl = current_app.config["UPLOAD_CACHE_DURATION_MINUTES"] * 60
        get_redis().set(_key(task.task_id), json.dumps(asdict(_from_row(task))), ex=ttl)
    except RedisError:
        pass


def forget(task_id: str) -> None:
    try:
        get_redis().delete(_key(task_id))
    except RedisError:
        pass


def task_meta(task_id: str, account_id: uuid.UUID) -> TaskMeta:
    """The immutable fields of the account's task, or 404 UPLOAD_NOT_FOUND."""
    meta = None
    if is_token(task_id):
        try:
            raw = get_redis().get(_key(task_id))
            meta = TaskMeta(**json.loads(raw)) if raw else None
        except RedisError:
            meta = None
        if meta is None:
            task = db.session.scalar(sa.select(UploadTask).where(
                UploadTask.task_id == task_id, UploadTask.deleted_at.is_(None)))
            if task is not None:
                remember(task)
                meta = _from_row(task)
    if meta is None or meta.account_id != str(account_id):
        raise NotFound("Upload task not found", code="UPLOAD_NOT_FOUND", details={"taskId": task_id[:100]})
    return meta
