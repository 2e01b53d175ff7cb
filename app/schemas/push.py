"""Wire shapes of Web Push subscriptions.

A subscription comes in exactly as a browser's `PushSubscription.toJSON()` gives it:
`{"endpoint", "expirationTime", "keys": {"p256dh", "auth"}}`. Its keys are never dumped back
(`auth` is a secret shared with the browser); neither is anything of another account.
"""
from __future__ import annotations

import base64
import re
from datetime import datetime, timezone
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ec
from flask import current_app
from marshmallow import EXCLUDE, ValidationError, fields, post_load, validate, validates

from app.schemas.base import CamelSchema, UtcDateTime

MAX_ENDPOINT_LENGTH = 2048
P256DH_BYTES = 65  # an uncompressed P-256 point: 0x04 || X || Y
AUTH_BYTES = 16
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
URL_CHARACTERS = re.compile(r"^[\x21-\x7e]+$")  # printable ASCII, no spaces
BASE64URL = re.compile(r"^[A-Za-z0-9_-]+={0,2}$")
MAX_EPOCH_MS = 253402300799999  # 9999-12-31T23:59:59.999Z
# check_endpoint as the document states it (https, a host, no credentials or fragment)
ENDPOINT_PATTERN = r"^https://[A-Za-z0-9.-]+(:[0-9]{1,4})?(/[\x21\x22\x24-\x7e]*)?$"


def check_endpoint(url: str, allow_insecure: bool) -> None:
    """Raise ValidationError unless `url` is an https URL a push service could have given
    (plain http only to this machine, and only when `allow_insecure`: local test services)."""
    if not URL_CHARACTERS.match(url):
        raise ValidationError("The endpoint is not a URL.")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError as error:
        raise ValidationError("The endpoint is not a URL.") from error
    if not parts.hostname or parts.username is not None or parts.password is not None or parts.fragment:
        raise ValidationError("The endpoint must be a URL with a host and no credentials or fragment.")
    scheme = parts.scheme.lower()
    if scheme == "https":
        return
    if scheme == "http" and allow_insecure and parts.hostname.lower() in LOCAL_HOSTS:
        return
    raise ValidationError("The endpoint must be an https:// URL.")


def decode_base64url(value: str, size: int, what: str) -> bytes:
    """The bytes of a base64url value (padding optional) that must be `size` bytes long."""
    if not BASE64URL.match(value):
        raise ValidationError(f"The {what} is not base64url.")
    stripped = value.rstrip("=")
    try:
        raw = base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))
    except ValueError as error:
        raise ValidationError(f"The {what} is not base64url.") from error
    if len(raw) != size:
        raise ValidationError(f"The {what} must be {size} bytes, not {len(raw)}.")
    return raw


def encode_base64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


class ExpirationTime(UtcDateTime):
    """Browsers give `expirationTime` as milliseconds since the epoch (or null); an ISO 8601
    string with a zone is accepted too. It is dumped as ISO 8601 UTC, as every timestamp."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool):
            raise ValidationError("Milliseconds since the epoch, an ISO 8601 time or null.")
        if isinstance(value, (int, float)):
            if not 0 <= value <= MAX_EPOCH_MS:
                raise ValidationError("Out of range.")
            return datetime.fromtimestamp(value / 1000, tz=timezone.utc)
        return super()._deserialize(value, attr, data, **kwargs)


class SubscriptionKeysSchema(CamelSchema):
    p256dh = fields.String(required=True, metadata={"description": "An uncompressed P-256 point, base64url"})
    auth = fields.String(required=True, metadata={"pattern": r"^[A-Za-z0-9_-]{21}[AQgw](==)?$",
                                                  "description": "16 bytes, base64url"})

    class Meta:
        unknown = EXCLUDE

    @validates("p256dh")
    def _p256dh(self, value, **kwargs):
        raw = decode_base64url(value, P256DH_BYTES, "p256dh key")
        try:
            if raw[0] != 0x04:
                raise ValueError("compressed or hybrid form")
            ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)  # on the curve?
        except ValueError as error:
            raise ValidationError("The p256dh key is not an uncompressed P-256 public key.") from error

    @validates("auth")
    def _auth(self, value, **kwargs):
        decode_base64url(value, AUTH_BYTES, "auth secret")

    @post_load
    def _canonical(self, data, **kwargs):
        # stored unpadded, as browsers send them, whichever way they came
        data["p256dh"] = encode_base64url(decode_base64url(data["p256dh"], P256DH_BYTES, "p256dh key"))
        data["auth"] = encode_base64url(decode_base64url(data["auth"], AUTH_BYTES, "auth secret"))
        return data


class CreateSubscriptionSchema(CamelSchema):
    """What `PushSubscription.toJSON()` gives. Unknown fields are ignored rather than refused:
    a browser adding a field must not break every subscription."""

    endpoint = fields.String(required=True, validate=validate.Length(min=1, max=MAX_ENDPOINT_LENGTH),
                             metadata={"pattern": ENDPOINT_PATTERN})
    expiration_time = ExpirationTime(allow_none=True, load_default=None)
    keys = fields.Nested(SubscriptionKeysSchema, required=True)

    class Meta:
        unknown = EXCLUDE

    @validates("endpoint")
    def _endpoint(self, value, **kwargs):
        check_endpoint(value, bool(current_app.config["PUSH_ALLOW_INSECURE_ENDPOINTS"]))


class DeleteSubscriptionSchema(CamelSchema):
    endpoint = fields.String(required=True, validate=validate.Length(min=1, max=MAX_ENDPOINT_LENGTH))


class PushSubscriptionSchema(CamelSchema):
    id = fields.UUID()
    endpoint = fields.String()
    expiration_time = UtcDateTime(allow_none=True)
    created_at = UtcDateTime()
    last_error = fields.String(allow_none=True)


class VapidPublicKeySchema(CamelSchema):
    public_key = fields.String(metadata={"description": "The application server key (base64url, an "
                                                        "uncompressed P-256 point) for pushManager.subscribe"})
