from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import db
from app.models.types import UtcDateTime, new_uuid, utcnow


class PushSubscription(db.Model):
    """A browser's Web Push subscription for one account: the push service's endpoint and the
    browser's keys (`p256dh`: its P-256 public key, `auth`: the shared auth secret), both
    base64url as `PushSubscription.toJSON()` gives them. One row per (account, endpoint).
    `last_error` is the last failed delivery's reason, cleared by a successful one; a
    subscription the push service answers 404/410 for is deleted."""

    __tablename__ = "push_subscriptions"
    __table_args__ = (sa.UniqueConstraint("account_id", "endpoint"),)

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=new_uuid)
    account_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, index=True)
    endpoint: Mapped[str] = mapped_column(sa.String(2048))
    p256dh: Mapped[str] = mapped_column(sa.String(128))
    auth: Mapped[str] = mapped_column(sa.String(64))
    expiration_time: Mapped[datetime | None] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    last_error: Mapped[str | None] = mapped_column(sa.Text)
