from __future__ import annotations

import enum
import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import db
from app.models.types import Json, UtcDateTime, new_uuid, utcnow


class TaskStatus(enum.IntEnum):
    """The seed's task statuses. The numbers agree with UploadStatus where both have a
    status, so an upload and a generic task in one list sort and filter alike."""

    InProgress = 0
    Completed = 1
    Failed = 2
    Expired = 3
    Pending = 4
    Paused = 5
    Cancelled = 6


FINISHED = (TaskStatus.Completed, TaskStatus.Failed, TaskStatus.Cancelled, TaskStatus.Expired)


class Task(db.Model):
    """A generic background task (the seed's PersistentTask).

    `parameters` are the validated inputs of its type; `results` what it produced;
    `checkpoint` what a paused or crashed run had finished, so the next run goes on from
    there; `control` a pending request ('pause' or 'cancel') that the running job honours at
    its next step. A password given for the encryption types is never stored: only the
    public parameters derived from it (see app/crypto.py)."""

    __tablename__ = "tasks"
    __table_args__ = (
        sa.Index("idx_tasks_type", "type"),
        sa.Index("idx_tasks_status", "status"),
        sa.Index("idx_tasks_priority", "priority"),
        sa.Index("idx_tasks_account_type", "account_id", "type"),
        sa.Index("idx_tasks_last_activity", "last_activity"),
    )

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=new_uuid)
    task_id: Mapped[str] = mapped_column(sa.String(64), unique=True)
    name: Mapped[str] = mapped_column(sa.String(255))
    description: Mapped[str | None] = mapped_column(sa.Text)
    type: Mapped[str] = mapped_column(sa.String(64))
    status: Mapped[int] = mapped_column(sa.Integer, default=TaskStatus.Pending)
    account_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, index=True)
    progress: Mapped[float] = mapped_column(sa.Float, default=0.0)
    parameters: Mapped[dict] = mapped_column(Json, default=dict)
    results: Mapped[dict] = mapped_column(Json, default=dict)
    checkpoint: Mapped[dict] = mapped_column(Json, default=dict)
    control: Mapped[str | None] = mapped_column(sa.String(16))
    error_message: Mapped[str | None] = mapped_column(sa.Text)
    priority: Mapped[int] = mapped_column(sa.Integer, default=50)
    estimated_duration_seconds: Mapped[int | None] = mapped_column(sa.BigInteger)
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0)
    last_activity: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)

    @property
    def status_name(self) -> str:
        return TaskStatus(self.status).name
