from __future__ import annotations

import enum
import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import db
from app.models.types import BigId, Json, UtcDateTime, new_uuid, utcnow


class UploadStatus(enum.IntEnum):
    """Stored as the seed's integers; on the wire as the names."""

    InProgress = 0
    Completed = 1
    Failed = 2
    Expired = 3
    Cancelled = 6


class UploadTask(db.Model):
    """The seed's `upload_tasks`, with two deliberate changes: stored chunks are rows of
    `upload_chunks` (unique per task and index) instead of a JSON list, and there is no
    password column: only the public parameters of at-rest encryption are kept."""

    __tablename__ = "upload_tasks"
    __table_args__ = (
        sa.Index("idx_upload_tasks_account_id", "account_id"),
        sa.Index("idx_upload_tasks_status", "status"),
        sa.Index("idx_upload_tasks_last_activity", "last_activity"),
        sa.Index("idx_upload_tasks_hash", "hash"),
    )

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=new_uuid)
    task_id: Mapped[str] = mapped_column(sa.String(64), unique=True)
    file_name: Mapped[str] = mapped_column(sa.String(255))
    file_size: Mapped[int] = mapped_column(sa.BigInteger)
    content_type: Mapped[str] = mapped_column(sa.String(255))
    chunk_size: Mapped[int] = mapped_column(sa.BigInteger)
    chunks_count: Mapped[int] = mapped_column(sa.Integer)
    chunks_uploaded: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0")
    bytes_uploaded: Mapped[int] = mapped_column(sa.BigInteger, default=0, server_default="0")
    pool_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("pools.id"))
    bundle_id: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("bundles.id"))
    encryption: Mapped[dict | None] = mapped_column(Json)
    expired_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    hash: Mapped[str] = mapped_column(sa.String(64))
    account_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid)
    status: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0")
    error_message: Mapped[str | None] = mapped_column(sa.Text)
    quota_reserved: Mapped[int] = mapped_column(sa.BigInteger, default=0, server_default="0")
    file_id: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("files.id"))
    finalize_requested_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # the number of the finalize run in force: each run takes the next; only it may publish
    finalize_attempts: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0")
    completed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_activity: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    @property
    def status_name(self) -> str:
        return UploadStatus(self.status).name

    def expected_chunk_size(self, index: int) -> int:
        if index < self.chunks_count - 1:
            return self.chunk_size
        return self.file_size - self.chunk_size * (self.chunks_count - 1)


class UploadChunk(db.Model):
    """One stored chunk. The unique (task, index) constraint, not application code, decides
    which of two racing uploads of the same chunk is recorded."""

    __tablename__ = "upload_chunks"
    __table_args__ = (sa.UniqueConstraint("task_id", "chunk_index"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    task_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("upload_tasks.id", ondelete="CASCADE"))
    chunk_index: Mapped[int] = mapped_column(sa.Integer)
    size: Mapped[int] = mapped_column(sa.BigInteger)
    sha256: Mapped[str] = mapped_column(sa.String(64))
    storage_key: Mapped[str] = mapped_column(sa.String(512))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
