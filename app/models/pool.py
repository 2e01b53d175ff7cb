from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import db
from app.models.types import Json, UtcDateTime, new_uuid, utcnow


class Pool(db.Model):
    """A storage pool: which backend holds the bytes (and how to reach it) plus a policy.

    `config` may hold credentials: it is never serialised.
    `account_id` NULL means every account may use the pool; otherwise only that account.
    """

    __tablename__ = "pools"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=new_uuid)
    name: Mapped[str] = mapped_column(sa.String(100), unique=True)
    description: Mapped[str | None] = mapped_column(sa.Text)
    backend: Mapped[str] = mapped_column(sa.String(32), default="local")
    config: Mapped[dict] = mapped_column(Json, default=dict)
    account_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid, index=True)
    max_file_size: Mapped[int | None] = mapped_column(sa.BigInteger)
    accepted_types: Mapped[list] = mapped_column(Json, default=list)  # [] accepts all
    allow_encryption: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    default_chunk_size: Mapped[int | None] = mapped_column(sa.BigInteger)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)

    def accepts_type(self, content_type: str) -> bool:
        if not self.accepted_types:
            return True
        content_type = content_type.lower()
        for pattern in self.accepted_types:
            pattern = pattern.lower()
            if pattern == content_type or (pattern.endswith("/*") and content_type.startswith(pattern[:-1])):
                return True
        return False
