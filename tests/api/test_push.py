"""/api/push: storing, listing and removing an account's Web Push subscriptions, the server's
VAPID public key, and `flask push vapid-keys`.

Outcomes asserted: responses and the error envelope, the `push_subscriptions` rows, and that
no account sees or removes another's subscription.
"""
from __future__ import annotations

import base64
import os
import uuid

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from app import create_app
from app.models import PushSubscription
from app.services.push import MAX_SUBSCRIPTIONS_PER_ACCOUNT, PushConfigError, load_vapid_key
from config import Config
from tests.support import ApiClient, assert_error, database

SUBSCRIPTIONS = "/push/subscriptions"
VISIBLE_KEYS = {"id", "endpoint", "expirationTime", "createdAt", "lastError"}


# helpers -----------------------------------------------------------------------------------
def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def browser_keys() -> dict:
    """What a browser's PushSubscription.toJSON() has under `keys`."""
    key = ec.generate_private_key(ec.SECP256R1())
    point = key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return {"p256dh": b64url(point), "auth": b64url(os.urandom(16))}


def subscription(endpoint: str | None = None, **fields) -> dict:
    body = {"endpoint": endpoint or f"https://push.example.com/wpush/v2/{uuid.uuid4().hex}",
            "expirationTime": None, "keys": browser_keys()}
    body.update(fields)
    return body


def rows(app, account_id) -> list[PushSubscription]:
    with database(app) as session:
        found = list(session.scalars(sa.select(PushSubscription).where(PushSubscription.account_id == account_id)))
        session.expunge_all()
        return found


def other_app(settings, **overrides):
    return create_app(Config.from_env(settings, TESTING=True, **overrides))


# storing -----------------------------------------------------------------------------------
def test_post_stores_the_subscription_and_never_shows_its_keys(app, api):
    body = subscription()
    created = api.post(SUBSCRIPTIONS, json=body)
    assert created.status_code == 201, created.get_json()
    answer = created.get_json()
    assert set(answer) == VISIBLE_KEYS
    assert answer["endpoint"] == body["endpoint"]
    assert answer["expirationTime"] is None and answer["lastError"] is None
    assert answer["createdAt"].endswith("Z")
    assert body["keys"]["auth"] not in created.get_data(as_text=True)

    [row] = rows(app, api.account_id)
    assert (str(row.id), row.endpoint, row.p256dh, row.auth) == (
        answer["id"], body["endpoint"], body["keys"]["p256dh"], body["keys"]["auth"])


def test_post_is_idempotent_per_endpoint_and_updates_the_keys(app, api):
    first = subscription(endpoint="https://push.example.com/same")
    created = api.post(SUBSCRIPTIONS, json=first)
    assert created.status_code == 201
    again = subscription(endpoint=first["endpoint"], expirationTime=4102444800000)  # 2100-01-01
    updated = api.post(SUBSCRIPTIONS, json=again)
    assert updated.status_code == 200, updated.get_json()
    assert updated.get_json()["id"] == created.get_json()["id"]
    assert updated.get_json()["expirationTime"] == "2100-01-01T00:00:00Z"

    [row] = rows(app, api.account_id)
    assert (row.p256dh, row.auth) == (again["keys"]["p256dh"], again["keys"]["auth"])
    assert api.post(SUBSCRIPTIONS, json=again).status_code == 200
    assert len(rows(app, api.account_id)) == 1


def test_two_accounts_may_hold_the_same_endpoint(app, make_api):
    a, b = make_api(), make_api()
    body = subscription()
    assert a.post(SUBSCRIPTIONS, json=body).status_code == 201
    assert b.post(SUBSCRIPTIONS, json=body).status_code == 201
    assert len(rows(app, a.account_id)) == len(rows(app, b.account_id)) == 1


@pytest.mark.parametrize("fields", [
    {"expirationTime": 1893456000000},                       # browsers: ms since the epoch
    {"expirationTime": 1893456000000.0},
    {"expirationTime": "2030-01-01T00:00:00Z"},
    {"keys": {**browser_keys(), "extra": "ignored"}, "futureField": 1},  # unknown fields are ignored
], ids=["ms", "ms-float", "iso", "unknown-fields"])
def test_post_accepts_what_browsers_send(api, fields):
    created = api.post(SUBSCRIPTIONS, json=subscription(**fields))
    assert created.status_code == 201, created.get_json()
    if "expirationTime" in fields:
        assert created.get_json()["expirationTime"] == "2030-01-01T00:00:00Z"


def test_padded_keys_are_stored_unpadded(app, api):
    keys = browser_keys()
    padded = {"p256dh": keys["p256dh"] + "=" * (-len(keys["p256dh"]) % 4),
              "auth": keys["auth"] + "=" * (-len(keys["auth"]) % 4)}
    assert padded != keys
    assert api.post(SUBSCRIPTIONS, json=subscription(keys=padded)).status_code == 201
    [row] = rows(app, api.account_id)
    assert (row.p256dh, row.auth) == (keys["p256dh"], keys["auth"])


def _point(prefix: bytes, size: int) -> str:
    return b64url(prefix + b"\x00" * (size - len(prefix)))


VALID = browser_keys()
COMPRESSED = b64url(b"\x02" + base64.urlsafe_b64decode(VALID["p256dh"] + "==")[1:33])
INVALID = [
    # (what, body changes, field in details.fields)
    ("endpoint missing", {"endpoint": None}, "endpoint"),
    ("endpoint not a string", {"endpoint": 42}, "endpoint"),
    ("endpoint empty", {"endpoint": ""}, "endpoint"),
    ("http to another host", {"endpoint": "http://push.example.com/x"}, "endpoint"),
    ("http to a private address", {"endpoint": "http://10.0.0.1/x"}, "endpoint"),
    ("another scheme", {"endpoint": "ftp://push.example.com/x"}, "endpoint"),
    ("no host", {"endpoint": "https:///x"}, "endpoint"),
    ("credentials", {"endpoint": "https://user:pw@push.example.com/x"}, "endpoint"),
    ("fragment", {"endpoint": "https://push.example.com/x#frag"}, "endpoint"),
    ("space", {"endpoint": "https://push.example.com/a b"}, "endpoint"),
    ("non-ASCII", {"endpoint": "https://push.example.com/é"}, "endpoint"),
    ("bad port", {"endpoint": "https://push.example.com:99999/x"}, "endpoint"),
    ("too long", {"endpoint": "https://push.example.com/" + "a" * 2048}, "endpoint"),
    ("not a URL", {"endpoint": "push.example.com/x"}, "endpoint"),
    ("keys missing", {"keys": None}, "keys"),
    ("keys not an object", {"keys": "p256dh"}, "keys"),
    ("p256dh missing", {"keys": {"auth": VALID["auth"]}}, "keys"),
    ("auth missing", {"keys": {"p256dh": VALID["p256dh"]}}, "keys"),
    ("p256dh not base64url", {"keys": {**VALID, "p256dh": "!!" + VALID["p256dh"][2:]}}, "keys"),
    ("p256dh standard base64", {"keys": {**VALID, "p256dh": VALID["p256dh"][:-2] + "+/"}}, "keys"),
    ("p256dh 64 bytes", {"keys": {**VALID, "p256dh": _point(b"\x04", 64)}}, "keys"),
    ("p256dh 66 bytes", {"keys": {**VALID, "p256dh": _point(b"\x04", 66)}}, "keys"),
    ("p256dh compressed", {"keys": {**VALID, "p256dh": COMPRESSED}}, "keys"),
    ("p256dh not on the curve", {"keys": {**VALID, "p256dh": _point(b"\x04\x01", 65)}}, "keys"),
    ("p256dh not uncompressed", {"keys": {**VALID, "p256dh": b64url(b"\x06" + base64.urlsafe_b64decode(
        VALID["p256dh"] + "==")[1:])}}, "keys"),
    ("p256dh not a string", {"keys": {**VALID, "p256dh": 7}}, "keys"),
    ("auth 15 bytes", {"keys": {**VALID, "auth": b64url(b"a" * 15)}}, "keys"),
    ("auth 17 bytes", {"keys": {**VALID, "auth": b64url(b"a" * 17)}}, "keys"),
    ("auth empty", {"keys": {**VALID, "auth": ""}}, "keys"),
    ("auth too much padding", {"keys": {**VALID, "auth": VALID["auth"] + "==="}}, "keys"),
    ("expirationTime a word", {"expirationTime": "tomorrow"}, "expirationTime"),
    ("expirationTime a boolean", {"expirationTime": True}, "expirationTime"),
    ("expirationTime negative", {"expirationTime": -1}, "expirationTime"),
    ("expirationTime beyond 9999", {"expirationTime": 10**17}, "expirationTime"),
    ("expirationTime without a zone", {"expirationTime": "2030-01-01T00:00:00"}, "expirationTime"),
]


@pytest.mark.parametrize("changes,field", [case[1:] for case in INVALID], ids=[case[0] for case in INVALID])
def test_post_refuses_what_is_not_a_subscription(app, api, changes, field):
    body = subscription()
    for name, value in changes.items():
        if value is None and name in ("endpoint", "keys"):
            del body[name]
        else:
            body[name] = value
    assert_error(api.post(SUBSCRIPTIONS, json=body), 400, "VALIDATION_ERROR", field=field)
    assert rows(app, api.account_id) == []


def test_post_refuses_a_body_that_is_not_json(api):
    assert_error(api.post(SUBSCRIPTIONS, data="endpoint=x", content_type="text/plain"), 415, "INVALID_JSON")
    assert_error(api.post(SUBSCRIPTIONS, json=[subscription()]), 400, "INVALID_JSON")


def test_plain_http_to_this_machine_only_when_allowed(app, settings, api):
    for endpoint in ("http://127.0.0.1:8999/push/a", "http://localhost/push/b", "http://[::1]:8999/push/c"):
        assert api.post(SUBSCRIPTIONS, json=subscription(endpoint=endpoint)).status_code == 201
    strict = other_app(settings, PUSH_ALLOW_INSECURE_ENDPOINTS=False)
    client = ApiClient(strict.test_client(), api.token, api.account_id)
    for endpoint in ("http://127.0.0.1:8999/push/d", "http://localhost/push/e"):
        assert_error(client.post(SUBSCRIPTIONS, json=subscription(endpoint=endpoint)), 400, "VALIDATION_ERROR",
                     field="endpoint")
    assert client.post(SUBSCRIPTIONS, json=subscription()).status_code == 201
    assert len(rows(app, api.account_id)) == 4


def test_an_account_holds_a_bounded_number_of_subscriptions(app, api):
    for _ in range(MAX_SUBSCRIPTIONS_PER_ACCOUNT):
        assert api.post(SUBSCRIPTIONS, json=subscription()).status_code == 201
    payload = assert_error(api.post(SUBSCRIPTIONS, json=subscription()), 409, "PUSH_SUBSCRIPTION_LIMIT")
    assert payload["details"] == {"limit": MAX_SUBSCRIPTIONS_PER_ACCOUNT}
    existing = rows(app, api.account_id)[0]
    renewed = api.post(SUBSCRIPTIONS, json=subscription(endpoint=existing.endpoint))
    assert renewed.status_code == 200  # re-subscribing a known endpoint is still fine
    assert len(rows(app, api.account_id)) == MAX_SUBSCRIPTIONS_PER_ACCOUNT


# listing and removing ----------------------------------------------------------------------
def test_list_shows_only_the_accounts_own(make_api):
    a, b = make_api(), make_api()
    a_ids = [a.post(SUBSCRIPTIONS, json=subscription()).get_json()["id"] for _ in range(2)]
    b_body = subscription()
    b_id = b.post(SUBSCRIPTIONS, json=b_body).get_json()["id"]

    listed = a.get(SUBSCRIPTIONS)
    assert listed.status_code == 200
    assert [s["id"] for s in listed.get_json()] == a_ids
    assert all(set(s) == VISIBLE_KEYS for s in listed.get_json())
    assert b_id not in listed.get_data(as_text=True) and b_body["endpoint"] not in listed.get_data(as_text=True)
    assert [s["id"] for s in b.get(SUBSCRIPTIONS).get_json()] == [b_id]
    assert make_api().get(SUBSCRIPTIONS).get_json() == []


def test_delete_by_id(app, make_api):
    a, b = make_api(), make_api()
    sub_id = a.post(SUBSCRIPTIONS, json=subscription()).get_json()["id"]
    kept_id = a.post(SUBSCRIPTIONS, json=subscription()).get_json()["id"]

    # another account's id is exactly as unknown as a missing one
    assert_error(b.delete(f"{SUBSCRIPTIONS}/{sub_id}"), 404, "PUSH_SUBSCRIPTION_NOT_FOUND")
    assert_error(b.delete(f"{SUBSCRIPTIONS}/{uuid.uuid4()}"), 404, "PUSH_SUBSCRIPTION_NOT_FOUND")
    assert_error(b.delete(f"{SUBSCRIPTIONS}/not-a-uuid"), 404, "PUSH_SUBSCRIPTION_NOT_FOUND")
    assert len(rows(app, a.account_id)) == 2

    gone = a.delete(f"{SUBSCRIPTIONS}/{sub_id}")
    assert gone.status_code == 204 and gone.data == b""
    assert [str(r.id) for r in rows(app, a.account_id)] == [kept_id]
    assert_error(a.delete(f"{SUBSCRIPTIONS}/{sub_id}"), 404, "PUSH_SUBSCRIPTION_NOT_FOUND")


def test_delete_by_endpoint(app, make_api):
    a, b = make_api(), make_api()
    body = subscription()
    assert a.post(SUBSCRIPTIONS, json=body).status_code == 201

    assert_error(b.delete(SUBSCRIPTIONS, json={"endpoint": body["endpoint"]}), 404, "PUSH_SUBSCRIPTION_NOT_FOUND")
    assert len(rows(app, a.account_id)) == 1
    assert_error(a.delete(SUBSCRIPTIONS, json={}), 400, "VALIDATION_ERROR", field="endpoint")

    assert a.delete(SUBSCRIPTIONS, json={"endpoint": body["endpoint"]}).status_code == 204
    assert rows(app, a.account_id) == []
    assert_error(a.delete(SUBSCRIPTIONS, json={"endpoint": body["endpoint"]}), 404, "PUSH_SUBSCRIPTION_NOT_FOUND")


def test_the_drive_prefix_serves_the_same_routes(app, make_api):
    drive = make_api(prefix="/drive")
    created = drive.post(SUBSCRIPTIONS, json=subscription())
    assert created.status_code == 201
    assert [s["id"] for s in drive.get(SUBSCRIPTIONS).get_json()] == [created.get_json()["id"]]
    assert drive.delete(f"{SUBSCRIPTIONS}/{created.get_json()['id']}").status_code == 204


def test_every_route_needs_a_token(client):
    for method, path in (("POST", SUBSCRIPTIONS), ("GET", SUBSCRIPTIONS), ("DELETE", SUBSCRIPTIONS),
                         ("DELETE", f"{SUBSCRIPTIONS}/{uuid.uuid4()}"), ("GET", "/push/vapid-public-key")):
        assert_error(client.open("/api" + path, method=method, json={}), 401, "UNAUTHORIZED")


# the server's key --------------------------------------------------------------------------
def test_vapid_public_key_is_the_configured_one(api, settings):
    answer = api.get("/push/vapid-public-key")
    assert answer.status_code == 200
    public = answer.get_json()["publicKey"]
    assert public == settings["VAPID_PUBLIC_KEY"]
    point = base64.urlsafe_b64decode(public + "=" * (-len(public) % 4))
    assert len(point) == 65 and point[0] == 4
    ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)


def test_vapid_public_key_without_push_configured(api, settings):
    disabled = other_app(settings, VAPID_PRIVATE_KEY="", VAPID_PUBLIC_KEY="")
    client = ApiClient(disabled.test_client(), api.token, api.account_id)
    assert_error(client.get("/push/vapid-public-key"), 404, "PUSH_NOT_CONFIGURED")


def test_a_pem_private_key_gives_the_same_public_key(settings):
    raw = settings["VAPID_PRIVATE_KEY"]
    key = ec.derive_private_key(int.from_bytes(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)), "big"),
                                ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    for text in (pem, pem.replace("\n", "\\n")):  # as a file would hold it, and squeezed into one line
        loaded = load_vapid_key({"VAPID_PRIVATE_KEY": text, "VAPID_PUBLIC_KEY": settings["VAPID_PUBLIC_KEY"]})
        assert loaded.private_numbers() == key.private_numbers()


@pytest.mark.parametrize("private,public", [
    ("not a key", ""),
    ("AAAA", ""),                                        # 3 bytes: neither a raw scalar nor DER
    (None, b64url(b"\x04" + b"\x01" * 64)),              # a public key of another private key
], ids=["garbage", "short", "mismatched-public"])
def test_a_bad_vapid_configuration_is_reported(settings, private, public):
    with pytest.raises(PushConfigError):
        load_vapid_key({"VAPID_PRIVATE_KEY": private or settings["VAPID_PRIVATE_KEY"], "VAPID_PUBLIC_KEY": public})


def test_cli_generates_a_usable_key_pair(app, settings, api):
    result = app.test_cli_runner().invoke(args=["push", "vapid-keys"])
    assert result.exit_code == 0, result.output
    lines = dict(line.split("=", 1) for line in result.output.strip().splitlines())
    assert set(lines) == {"VAPID_PRIVATE_KEY", "VAPID_PUBLIC_KEY"}
    assert len(base64.urlsafe_b64decode(lines["VAPID_PRIVATE_KEY"] + "==")) == 32
    assert lines["VAPID_PUBLIC_KEY"] != settings["VAPID_PUBLIC_KEY"]  # a new pair each time

    configured = other_app(settings, **lines)
    client = ApiClient(configured.test_client(), api.token, api.account_id)
    assert client.get("/push/vapid-public-key").get_json() == {"publicKey": lines["VAPID_PUBLIC_KEY"]}
