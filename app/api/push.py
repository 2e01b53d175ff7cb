"""/push: Web Push subscriptions of the account, and the server's application server key."""
from __future__ import annotations

from flask import current_app, g

from app.api import api
from app.api.decorators import body, other_responses, response
from app.schemas.push import (
    CreateSubscriptionSchema,
    DeleteSubscriptionSchema,
    PushSubscriptionSchema,
    VapidPublicKeySchema,
)
from app.services import push


@api.post("/push/subscriptions")
@body(CreateSubscriptionSchema)
@response(PushSubscriptionSchema, 201, "The new subscription")
@other_responses({200: (PushSubscriptionSchema, "The account had this endpoint already: keys and expiry updated"),
                  400: (None, "VALIDATION_ERROR (endpoint not https, keys not base64url of the right length)"),
                  409: (None, "PUSH_SUBSCRIPTION_LIMIT")})
def create_subscription(data):
    """Store a browser's push subscription (`PushSubscription.toJSON()`) for this account.
    Idempotent per endpoint: posting it again updates its keys and expiry."""
    subscription, created = push.save_subscription(g.account_id, data)
    if created:
        return subscription
    return current_app.response_class(PushSubscriptionSchema().dumps(subscription), status=200,
                                      mimetype="application/json")


@api.get("/push/subscriptions")
@response(PushSubscriptionSchema, 200, "The account's push subscriptions (without their keys)", many=True)
def list_subscriptions():
    """List the account's push subscriptions."""
    return push.list_subscriptions(g.account_id)


@api.delete("/push/subscriptions")
@body(DeleteSubscriptionSchema)
@response(None, 204, "Removed")
@other_responses({404: (None, "PUSH_SUBSCRIPTION_NOT_FOUND")})
def delete_subscription_by_endpoint(data):
    """Remove the account's subscription with this endpoint (what a browser knows after
    unsubscribing)."""
    push.delete_subscription_by_endpoint(g.account_id, data["endpoint"])


@api.delete("/push/subscriptions/<subscription_id>")
@response(None, 204, "Removed")
@other_responses({404: (None, "PUSH_SUBSCRIPTION_NOT_FOUND")})
def delete_subscription(subscription_id):
    """Remove one of the account's push subscriptions."""
    push.delete_subscription(g.account_id, subscription_id)


@api.get("/push/vapid-public-key")
@response(VapidPublicKeySchema, 200, "The key to pass as applicationServerKey to pushManager.subscribe")
@other_responses({404: (None, "PUSH_NOT_CONFIGURED")})
def vapid_public_key():
    """The server's VAPID public key (base64url, an uncompressed P-256 point)."""
    return {"public_key": push.vapid_public_key()}
