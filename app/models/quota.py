from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import db
from app.models.types import UtcDateTime, utcnow


class Quota(db.Model):
    """An account's storage quota.

    `used_bytes` counts stored files plus the declared sizes reserved by unfinished uploads;
    it only changes through one conditional UPDATE (see services/quotas.py), so two creates at
    once cannot both squeeze under the limit. `limit_bytes` NULL means QUOTA_DEFAULT_BYTES.
    """

    __tablename__ = "quotas"

    account_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True)
    limit_bytes: Mapped[int | None] = mapped_column(sa.BigInteger)
    used_bytes: Mapped[int] = mapped_column(sa.BigInteger, default=0, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)
