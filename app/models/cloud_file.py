from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import db
from app.models.types import Json, UtcDateTime, new_uuid, utcnow


class CloudFile(db.Model):
    """A stored file. `storage_key` is opaque: only the pool's backend knows what it names.
    `encryption` holds the public parameters of at-rest encryption (salt, public keys);
    no password or key is ever stored, and the column is never serialised."""

    __tablename__ = "files"
    __table_args__ = (sa.Index("ix_files_account_id_hash", "account_id", "hash"),)

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=new_uuid)
    name: Mapped[str] = mapped_column(sa.String(255))
    description: Mapped[str | None] = mapped_column(sa.Text)
    mime_type: Mapped[str] = mapped_column(sa.String(255))
    size: Mapped[int] = mapped_column(sa.BigInteger)
    hash: Mapped[str] = mapped_column(sa.String(64))
    file_meta: Mapped[dict] = mapped_column(Json, default=dict)
    user_meta: Mapped[dict] = mapped_column(Json, default=dict)
    is_encrypted: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    encryption: Mapped[dict | None] = mapped_column(Json)
    pool_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("pools.id"))
    bundle_id: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("bundles.id"))
    account_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, index=True)
    storage_key: Mapped[str] = mapped_column(sa.String(512))
    stored_size: Mapped[int] = mapped_column(sa.BigInteger)
    expired_at: Mapped[datetime | None] = mapped_column(UtcDateTime, index=True)
    uploaded_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
