"""Web Push: an account's subscriptions, the server's VAPID key, and handing events to the
worker that sends them (jobs/push.py).

Push is enabled by VAPID_PRIVATE_KEY (PEM, or base64url of the raw 32-byte P-256 scalar as
`flask push vapid-keys` prints it). Without it nothing is enqueued and
`GET /push/vapid-public-key` answers 404 PUSH_NOT_CONFIGURED; subscriptions can still be
stored. VAPID_PUBLIC_KEY is optional; when set it must be the private key's public half.
"""
from __future__ import annotations

import base64
import logging
import uuid

import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flask import current_app
from sqlalchemy.exc import IntegrityError

from app.errors import Conflict, NotFound
from app.extensions import db
from app.models import PushSubscription
from app.schemas.push import BASE64URL, encode_base64url
from app.services.tenancy import get_owned

log = logging.getLogger(__name__)

PUSH_EVENT_TYPES = frozenset({"upload.completed", "upload.failed", "task.completed", "task.failed"})
MAX_SUBSCRIPTIONS_PER_ACCOUNT = 50  # browsers and devices; bounds the fan-out of one event
PUSH_JOB_TIMEOUT_SECONDS = 20 * MAX_SUBSCRIPTIONS_PER_ACCOUNT  # each send waits at most 5 s + 10 s


class PushConfigError(ValueError):
    """VAPID_PRIVATE_KEY cannot be read, or VAPID_PUBLIC_KEY is not its public half."""


# keys ------------------------------------------------------------------------------------
def generate_vapid_keys() -> tuple[str, str]:
    """A new P-256 key pair as (VAPID_PRIVATE_KEY, VAPID_PUBLIC_KEY), both base64url: the raw
    32-byte private scalar and the uncompressed public point (the application server key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_numbers().private_value.to_bytes(32, "big")
    return encode_base64url(private), public_key_of(key)


def public_key_of(key: ec.EllipticCurvePrivateKey) -> str:
    return encode_base64url(key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint))


def load_vapid_key(config) -> ec.EllipticCurvePrivateKey | None:
    """The VAPID private key of `config`, None when push is disabled; PushConfigError when the
    key is unreadable or VAPID_PUBLIC_KEY does not match it."""
    text = (config.get("VAPID_PRIVATE_KEY") or "").strip()
    if not text:
        return None
    try:
        if "-----BEGIN" in text:
            # an environment variable may carry the PEM's newlines as literal "\n"
            key = serialization.load_pem_private_key(text.replace("\\n", "\n").encode(), password=None)
        else:
            if not BASE64URL.match(text):
                raise ValueError("neither PEM nor base64url")
            stripped = text.rstrip("=")
            raw = base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))
            if len(raw) == 32:
                key = ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())
            else:  # base64url DER, as py-vapid also accepts
                key = serialization.load_der_private_key(raw, password=None)
    except (ValueError, TypeError) as error:
        raise PushConfigError(f"VAPID_PRIVATE_KEY is not a P-256 private key: {error}") from error
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise PushConfigError("VAPID_PRIVATE_KEY is not a P-256 (prime256v1) private key")
    configured_public = (config.get("VAPID_PUBLIC_KEY") or "").strip().rstrip("=")
    if configured_public and configured_public != public_key_of(key):
        raise PushConfigError("VAPID_PUBLIC_KEY is not the public half of VAPID_PRIVATE_KEY")
    return key


def vapid_public_key() -> str:
    """The application server key browsers pass to pushManager.subscribe; 404 when disabled."""
    key = load_vapid_key(current_app.config)
    if key is None:
        raise NotFound("Web Push is not configured on this server", code="PUSH_NOT_CONFIGURED")
    return public_key_of(key)


# subscriptions ---------------------------------------------------------------------------
def _find(account_id: uuid.UUID, endpoint: str) -> PushSubscription | None:
    return db.session.scalar(sa.select(PushSubscription).where(
        PushSubscription.account_id == account_id, PushSubscription.endpoint == endpoint))


def save_subscription(account_id: uuid.UUID, data: dict) -> tuple[PushSubscription, bool]:
    """Store the subscription, or update the keys and expiry of the account's subscription with
    that endpoint (a browser re-subscribing). Returns (row, created). 409
    PUSH_SUBSCRIPTION_LIMIT when the account has MAX_SUBSCRIPTIONS_PER_ACCOUNT already."""
    values = {"p256dh": data["keys"]["p256dh"], "auth": data["keys"]["auth"],
              "expiration_time": data.get("expiration_time"), "last_error": None}
    for _ in range(2):  # a concurrent first POST of the same endpoint: the loser updates
        row = _find(account_id, data["endpoint"])
        if row is not None:
            for name, value in values.items():
                setattr(row, name, value)
            db.session.commit()
            return row, False
        count = db.session.scalar(sa.select(sa.func.count()).select_from(PushSubscription)
                                  .where(PushSubscription.account_id == account_id))
        if count >= MAX_SUBSCRIPTIONS_PER_ACCOUNT:
            db.session.rollback()
            raise Conflict(f"An account may hold at most {MAX_SUBSCRIPTIONS_PER_ACCOUNT} push subscriptions; "
                           "delete one first", code="PUSH_SUBSCRIPTION_LIMIT",
                           details={"limit": MAX_SUBSCRIPTIONS_PER_ACCOUNT})
        row = PushSubscription(account_id=account_id, endpoint=data["endpoint"], **values)
        db.session.add(row)
        try:
            db.session.commit()
            return row, True
        except IntegrityError:
            db.session.rollback()
    raise Conflict("The subscription changed concurrently; try again", code="PUSH_SUBSCRIPTION_CONFLICT")


def list_subscriptions(account_id: uuid.UUID) -> list[PushSubscription]:
    return list(db.session.scalars(sa.select(PushSubscription)
                                   .where(PushSubscription.account_id == account_id)
                                   .order_by(PushSubscription.created_at, PushSubscription.id)))


def delete_subscription(account_id: uuid.UUID, subscription_id) -> None:
    row = get_owned(PushSubscription, subscription_id, account_id, code="PUSH_SUBSCRIPTION_NOT_FOUND",
                    what="Push subscription")
    db.session.delete(row)
    db.session.commit()


def delete_subscription_by_endpoint(account_id: uuid.UUID, endpoint: str) -> None:
    row = _find(account_id, endpoint)
    if row is None:
        db.session.rollback()
        raise NotFound("Push subscription not found", code="PUSH_SUBSCRIPTION_NOT_FOUND")
    db.session.delete(row)
    db.session.commit()


# sending ---------------------------------------------------------------------------------
def push_job_id(account_id, event_id: int) -> str:
    return f"push-{account_id}-{event_id}"


def after_publish(account_id, packet: dict) -> None:
    """Hand a published event to the worker for Web Push, if it is one of PUSH_EVENT_TYPES and
    push is configured. Called by publish_event after Redis took the event; raises whatever
    enqueueing raises (publish_event logs it and carries on).

    A job is enqueued for every such event, whether or not the account has subscriptions:
    publish_event runs in its caller's app context right after the caller's commit, and a query
    here would open a transaction in the caller's session (on SQLite an IMMEDIATE one, i.e. the
    write lock) or need a connection of its own. These events come once per upload or task, so
    one short job each is cheap; the job reads the subscriptions when it sends and returns at
    once when there are none.
    """
    if packet["type"] not in PUSH_EVENT_TYPES or not current_app.config.get("VAPID_PRIVATE_KEY"):
        return
    from jobs.push import send_push  # noqa: PLC0415 - jobs import services, not the other way at import
    from jobs.queues import get_queue  # noqa: PLC0415

    get_queue("default").enqueue(
        send_push, str(account_id), packet, job_id=push_job_id(account_id, packet["id"]),
        job_timeout=PUSH_JOB_TIMEOUT_SECONDS, result_ttl=3600, failure_ttl=7 * 24 * 3600,
        description=f"web push {packet['type']} #{packet['id']}",
    )
