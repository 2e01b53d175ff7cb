"""send_push: deliver one event to every Web Push subscription of an account.

Each subscription gets the event's packet (`{"id", "type", "data"}`, the same JSON the live
relay sends) encrypted for the browser (aes128gcm, RFC 8291), signed with the server's VAPID
key (RFC 8292) and a TTL of PUSH_TTL_SECONDS. A subscription the push service answers 404 or
410 for is gone and is deleted; an expired one (past its expirationTime) too, unsent. Any
other failure is recorded in the subscription's `last_error` (a later success clears it) and,
once every subscription has been tried, re-raised as PushDeliveryFailed so RQ records the job
as failed. The job is not retried: the subscriptions that did get the message would get it
twice. Without VAPID_PRIVATE_KEY it logs that push is disabled and sends nothing.
"""
from __future__ import annotations

import json
import logging
import uuid

import requests
import sqlalchemy as sa
from flask import current_app
from marshmallow import ValidationError
from py_vapid import Vapid
from pywebpush import WebPushException, webpush

from app.extensions import db
from app.models import PushSubscription
from app.models.types import utcnow
from app.schemas.push import check_endpoint
from app.services.push import load_vapid_key
from jobs.context import with_app

log = logging.getLogger(__name__)

# A push service must accept 4096 bytes of body; aes128gcm adds an 86-byte header, a padding
# delimiter and a 16-byte tag to one record, which leaves this much for the packet.
MAX_PAYLOAD_BYTES = 4096 - 86 - 1 - 16
SEND_TIMEOUT = (5, 10)  # seconds to connect, to read the answer
GONE = (404, 410)
KEPT_WHEN_TRUNCATED = ("taskId", "fileId")


class PushDeliveryFailed(Exception):
    """Some subscriptions could not be reached; their `last_error` says why."""


class _NoRedirects(requests.Session):
    """A push service answers, it never redirects; following one would carry the payload and
    the VAPID token to a URL the subscription did not name."""

    def request(self, *args, **kwargs):
        kwargs["allow_redirects"] = False
        return super().request(*args, **kwargs)


def payload_of(packet: dict) -> str:
    """The packet as compact JSON; an oversized one (a long error message) keeps only its ids
    and says `"truncated": true` in its data."""
    text = json.dumps(packet, separators=(",", ":"))
    if len(text.encode()) <= MAX_PAYLOAD_BYTES:
        return text
    data = {key: packet["data"][key] for key in KEPT_WHEN_TRUNCATED if key in packet.get("data", {})}
    data["truncated"] = True
    return json.dumps({"id": packet["id"], "type": packet["type"], "data": data}, separators=(",", ":"))


@with_app
def send_push(account_id: str, packet: dict) -> dict:
    """Send `packet` to the account's subscriptions; returns counts of sent, dropped, failed."""
    config = current_app.config
    key = load_vapid_key(config)
    if key is None:
        log.info("web push disabled (VAPID_PRIVATE_KEY is empty): %s #%s not sent", packet["type"], packet["id"])
        return {"sent": 0, "dropped": 0, "failed": 0, "disabled": True}
    account = uuid.UUID(account_id)
    subscriptions = [(row.id, row.endpoint, row.p256dh, row.auth, row.expiration_time)
                     for row in db.session.scalars(sa.select(PushSubscription)
                                                   .where(PushSubscription.account_id == account)
                                                   .order_by(PushSubscription.created_at, PushSubscription.id))]
    db.session.rollback()  # no transaction (on SQLite: no write lock) while talking to push services
    if not subscriptions:
        return {"sent": 0, "dropped": 0, "failed": 0}

    vapid = Vapid(private_key=key)
    payload = payload_of(packet)
    now = utcnow()
    sent, dropped, failed = [], [], {}
    with _NoRedirects() as session:
        for sub_id, endpoint, p256dh, auth, expires in subscriptions:
            if expires is not None and expires <= now:
                dropped.append(sub_id)
                continue
            try:
                check_endpoint(endpoint, bool(config["PUSH_ALLOW_INSECURE_ENDPOINTS"]))
                webpush({"endpoint": endpoint, "keys": {"p256dh": p256dh, "auth": auth}}, data=payload,
                        vapid_private_key=vapid, vapid_claims={"sub": config["VAPID_SUBJECT"]},
                        content_encoding="aes128gcm", ttl=int(config["PUSH_TTL_SECONDS"]),
                        timeout=SEND_TIMEOUT, requests_session=session)
                sent.append(sub_id)
            except WebPushException as error:
                status = error.status_code
                if status in GONE:
                    dropped.append(sub_id)
                else:
                    reason = getattr(error.response, "reason", "") if error.response is not None else ""
                    failed[sub_id] = (f"push service answered {status} {reason}".strip() if status
                                      else str(error.message))[:500]
            except ValidationError as error:
                failed[sub_id] = f"endpoint not allowed: {' '.join(error.messages)}"[:500]
            except Exception as error:  # noqa: BLE001 - recorded, and re-raised below once all are tried
                failed[sub_id] = f"{type(error).__name__}: {error}"[:500]

    _record(account, sent, dropped, failed)
    log.info("web push %s #%s: %d sent, %d dropped, %d failed", packet["type"], packet["id"],
             len(sent), len(dropped), len(failed))
    if failed:
        raise PushDeliveryFailed(f"{len(failed)} of {len(subscriptions)} push deliveries failed: "
                                 + "; ".join(sorted(set(failed.values())))[:1000])
    return {"sent": len(sent), "dropped": len(dropped), "failed": 0}


def _record(account: uuid.UUID, sent: list, dropped: list, failed: dict) -> None:
    """One short transaction: drop the gone, note the errors, clear the errors of the reached."""
    mine = PushSubscription.account_id == account
    if dropped:
        db.session.execute(sa.delete(PushSubscription).where(mine, PushSubscription.id.in_(dropped)))
    if sent:
        db.session.execute(sa.update(PushSubscription)
                           .where(mine, PushSubscription.id.in_(sent), PushSubscription.last_error.is_not(None))
                           .values(last_error=None))
    for sub_id, message in failed.items():
        db.session.execute(sa.update(PushSubscription).where(mine, PushSubscription.id == sub_id)
                           .values(last_error=message))
    if dropped or sent or failed:
        db.session.commit()
