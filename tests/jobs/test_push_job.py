"""Web Push end to end: a real upload finishes on the real worker, the worker's push job posts to
a push service on 127.0.0.1 (a small HTTP server in this process), and the test decrypts what
arrived with the subscription's private key (RFC 8291) and checks the VAPID token (RFC 8292).

Outcomes asserted: the request the push service received (headers, VAPID JWT, decrypted
packet), the push job's result in RQ, and the `push_subscriptions` rows afterwards.
"""
from __future__ import annotations

import base64
import json
import os
import queue
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import http_ece
import jwt
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from rq.job import Job
from rq.results import Result

from app import create_app
from app.events import keys_for, publish_event
from app.models import PushSubscription
from app.services.push import push_job_id
from config import Config
from jobs.push import MAX_PAYLOAD_BYTES, payload_of, send_push
from tests.support import EventListener, database, random_bytes, sha256


# a push service on 127.0.0.1 -------------------------------------------------------------------
@dataclass
class Received:
    path: str
    headers: dict  # lower-case names
    body: bytes


class PushService:
    """Records every POST; answers 201, or what `answers[path]` says: a status or
    (status, headers)."""

    def __init__(self):
        self.received: queue.Queue[Received] = queue.Queue()
        self.answers: dict[str, int | tuple[int, dict]] = {}
        service = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                service.received.put(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                answer = service.answers.get(self.path, 201)
                status, headers = answer if isinstance(answer, tuple) else (answer, {})
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.origin = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def endpoint(self) -> str:
        return f"{self.origin}/push/{uuid.uuid4().hex}"

    def next(self, timeout: float = 30.0) -> Received:
        try:
            return self.received.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the push service received nothing within {timeout}s") from None

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def push_service():
    service = PushService()
    yield service
    service.close()


# a browser's side ----------------------------------------------------------------------------
def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Browser:
    """What a browser keeps for one subscription: its private key and auth secret."""

    endpoint: str
    private_key: ec.EllipticCurvePrivateKey
    auth: bytes

    @classmethod
    def new(cls, endpoint: str) -> "Browser":
        return cls(endpoint, ec.generate_private_key(ec.SECP256R1()), os.urandom(16))

    def subscription(self) -> dict:
        point = self.private_key.public_key().public_bytes(serialization.Encoding.X962,
                                                           serialization.PublicFormat.UncompressedPoint)
        return {"endpoint": self.endpoint, "expirationTime": None,
                "keys": {"p256dh": b64url(point), "auth": b64url(self.auth)}}

    def decrypt(self, body: bytes) -> dict:
        return json.loads(http_ece.decrypt(body, private_key=self.private_key, auth_secret=self.auth,
                                           version="aes128gcm"))


def subscribe(api, endpoint: str) -> Browser:
    browser = Browser.new(endpoint)
    created = api.post("/push/subscriptions", json=browser.subscription())
    assert created.status_code == 201, created.get_json()
    return browser


def push_result(redis, account_id, event_id: int, timeout: int = 20) -> Result:
    """The result of the push job of that event, waiting for it if need be."""
    result = Job(push_job_id(account_id, event_id), connection=redis).latest_result(timeout=timeout)
    assert result is not None, f"the push job of event {event_id} did not finish within {timeout}s"
    return result


def subscriptions(app, account_id) -> dict[str, PushSubscription]:
    with database(app) as session:
        found = list(session.scalars(sa.select(PushSubscription).where(PushSubscription.account_id == account_id)))
        session.expunge_all()
    return {row.endpoint: row for row in found}


def check_vapid(received: Received, settings, service: PushService) -> None:
    scheme, _, params = received.headers["authorization"].partition(" ")
    assert scheme == "vapid"
    parts = dict(part.split("=", 1) for part in params.split(","))
    assert set(parts) == {"t", "k"}
    assert parts["k"] == settings["VAPID_PUBLIC_KEY"]
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64url(parts["k"]))
    assert jwt.get_unverified_header(parts["t"])["alg"] == "ES256"
    claims = jwt.decode(parts["t"], key=public, algorithms=["ES256"], audience=service.origin,
                        options={"require": ["aud", "exp", "sub"]})
    assert claims["sub"] == "mailto:admin@localhost"
    assert time.time() < claims["exp"] <= time.time() + 24 * 3600  # RFC 8292: at most a day ahead


# end to end ----------------------------------------------------------------------------------
def test_a_completed_upload_is_pushed_encrypted_and_signed(app, api, make_api, redis, settings, worker,
                                                           push_service):
    browser = subscribe(api, push_service.endpoint())
    bystander = subscribe(make_api(), push_service.endpoint())  # another account's browser
    listener = EventListener(redis, api.account_id)
    data = random_bytes(70_000)
    try:
        completed = api.upload(data, name="holiday.jpg")
        assert completed.status_code == 200, completed.get_json()
        packet = listener.until("upload.completed")[-1]
    finally:
        listener.close()

    received = push_service.next()
    assert received.path == browser.endpoint.removeprefix(push_service.origin)
    assert received.headers["ttl"] == "86400"
    assert received.headers["content-encoding"] == "aes128gcm"
    check_vapid(received, settings, push_service)
    pushed = browser.decrypt(received.body)
    assert pushed == packet
    assert pushed["type"] == "upload.completed"
    assert pushed["data"]["fileId"] == completed.get_json()["id"]
    assert pushed["data"]["fileName"] == "holiday.jpg" and pushed["data"]["fileSize"] == len(data)

    result = push_result(redis, api.account_id, packet["id"])
    assert result.type == Result.Type.SUCCESSFUL
    assert result.return_value == {"sent": 1, "dropped": 0, "failed": 0}
    # one push for the upload (progress events are not pushed), none to the other account's browser
    assert push_service.received.empty(), push_service.received.get().path
    assert bystander.endpoint != browser.endpoint


def test_a_failed_upload_is_pushed(api, redis, worker, push_service):
    browser = subscribe(api, push_service.endpoint())
    listener = EventListener(redis, api.account_id)
    data = random_bytes(5000)
    try:
        answer = api.upload(data, hash=sha256(b"something else"))
        assert answer.status_code == 400 and answer.get_json()["code"] == "UPLOAD_FAILED", answer.get_json()
        packet = listener.until("upload.failed")[-1]
    finally:
        listener.close()

    pushed = browser.decrypt(push_service.next().body)
    assert pushed == packet
    assert pushed["type"] == "upload.failed" and "SHA-256 mismatch" in pushed["data"]["errorMessage"]
    assert push_result(redis, api.account_id, packet["id"]).type == Result.Type.SUCCESSFUL


def test_subscriptions_the_push_service_calls_gone_are_deleted(app, api, redis, worker, push_service):
    gone, missing, alive = (subscribe(api, push_service.endpoint()) for _ in range(3))
    push_service.answers[gone.endpoint.removeprefix(push_service.origin)] = 410
    push_service.answers[missing.endpoint.removeprefix(push_service.origin)] = 404
    listener = EventListener(redis, api.account_id)
    try:
        assert api.upload(random_bytes(3000)).status_code == 200
        packet = listener.until("upload.completed")[-1]
    finally:
        listener.close()

    result = push_result(redis, api.account_id, packet["id"])
    assert result.type == Result.Type.SUCCESSFUL
    assert result.return_value == {"sent": 1, "dropped": 2, "failed": 0}
    paths = sorted(push_service.next().path for _ in range(3))
    assert paths == sorted(b.endpoint.removeprefix(push_service.origin) for b in (gone, missing, alive))
    assert list(subscriptions(app, api.account_id)) == [alive.endpoint]
    assert [s["endpoint"] for s in api.get("/push/subscriptions").get_json()] == [alive.endpoint]


def test_other_failures_are_recorded_and_fail_the_job_after_every_subscription_was_tried(
        app, api, redis, worker, push_service):
    broken, redirecting, alive = (subscribe(api, push_service.endpoint()) for _ in range(3))
    broken_path = broken.endpoint.removeprefix(push_service.origin)
    push_service.answers[broken_path] = 500
    # a push service never redirects; the worker must not follow one (to `alive`, here)
    push_service.answers[redirecting.endpoint.removeprefix(push_service.origin)] = (307, {"Location": alive.endpoint})
    listener = EventListener(redis, api.account_id)
    try:
        assert api.upload(random_bytes(3000)).status_code == 200
        packet = listener.until("upload.completed")[-1]
    finally:
        listener.close()

    result = push_result(redis, api.account_id, packet["id"])
    assert result.type == Result.Type.FAILED
    assert "PushDeliveryFailed" in result.exc_string and "2 of 3" in result.exc_string
    received = [push_service.next() for _ in range(3)]
    assert sorted(r.path for r in received) == sorted(
        b.endpoint.removeprefix(push_service.origin) for b in (broken, redirecting, alive))
    assert push_service.received.empty()  # the redirect was not followed
    assert alive.decrypt(next(r for r in received if r.path == alive.endpoint.removeprefix(push_service.origin)).body) \
        == packet
    rows = subscriptions(app, api.account_id)
    assert set(rows) == {broken.endpoint, redirecting.endpoint, alive.endpoint}  # kept: they may recover
    assert rows[broken.endpoint].last_error == "push service answered 500 Internal Server Error"
    assert rows[redirecting.endpoint].last_error.startswith("push service answered 307")
    assert rows[alive.endpoint].last_error is None
    listed = {s["endpoint"]: s["lastError"] for s in api.get("/push/subscriptions").get_json()}
    assert listed[broken.endpoint] == rows[broken.endpoint].last_error

    # the service recovers: the next event reaches it and clears the error
    push_service.answers.clear()
    with app.app_context():
        event_id = publish_event(api.account_id, "task.completed", {"taskId": "t-1"})
    assert push_result(redis, api.account_id, event_id).return_value == {"sent": 3, "dropped": 0, "failed": 0}
    assert all(row.last_error is None for row in subscriptions(app, api.account_id).values())
    assert broken.decrypt(next(r for r in (push_service.next() for _ in range(3)) if r.path == broken_path).body) \
        == {"id": event_id, "type": "task.completed", "data": {"taskId": "t-1"}}


def test_an_account_without_subscriptions_sends_nothing(api, make_api, redis, worker, push_service):
    subscribe(make_api(), push_service.endpoint())  # another account's browser, on the same service
    listener = EventListener(redis, api.account_id)
    try:
        assert api.upload(random_bytes(3000)).status_code == 200
        packet = listener.until("upload.completed")[-1]
    finally:
        listener.close()
    result = push_result(redis, api.account_id, packet["id"])
    assert result.type == Result.Type.SUCCESSFUL
    assert result.return_value == {"sent": 0, "dropped": 0, "failed": 0}
    assert push_service.received.empty(), push_service.received.get()


def test_an_expired_subscription_is_dropped_unsent(app, api, redis, worker, push_service):
    expired = Browser.new(push_service.endpoint())
    body = dict(expired.subscription(), expirationTime=int((time.time() - 60) * 1000))
    assert api.post("/push/subscriptions", json=body).status_code == 201
    with app.app_context():
        event_id = publish_event(api.account_id, "upload.failed", {"taskId": "t-2"})
    assert push_result(redis, api.account_id, event_id).return_value == {"sent": 0, "dropped": 1, "failed": 0}
    assert push_service.received.empty()
    assert subscriptions(app, api.account_id) == {}


# the hook and the job's edges ----------------------------------------------------------------
def test_only_terminal_events_are_pushed(app, api, redis, worker, push_service):
    subscribe(api, push_service.endpoint())
    with app.app_context():
        progress = publish_event(api.account_id, "upload.progress", {"taskId": "t-3"})
        cancelled = publish_event(api.account_id, "upload.cancelled", {"taskId": "t-3"})
        failed = publish_event(api.account_id, "task.failed", {"taskId": "t-4"})
    assert push_result(redis, api.account_id, failed).return_value["sent"] == 1
    for event_id in (progress, cancelled):
        assert not Job.exists(push_job_id(api.account_id, event_id), connection=redis)
    assert push_service.next().path and push_service.received.empty()


def test_without_a_vapid_key_nothing_is_enqueued_or_sent(settings, redis, api, push_service, caplog):
    subscribe(api, push_service.endpoint())
    disabled = create_app(Config.from_env(settings, TESTING=True, VAPID_PRIVATE_KEY="", VAPID_PUBLIC_KEY=""))
    with disabled.app_context():
        event_id = publish_event(api.account_id, "upload.completed", {"taskId": "t-5"})
        assert event_id is not None
        assert not Job.exists(push_job_id(api.account_id, event_id), connection=redis)
        packet = {"id": event_id, "type": "upload.completed", "data": {"taskId": "t-5"}}
        with caplog.at_level("INFO", logger="jobs.push"):
            assert send_push(str(api.account_id), packet) == {"sent": 0, "dropped": 0, "failed": 0, "disabled": True}
    assert "web push disabled (VAPID_PRIVATE_KEY is empty)" in caplog.text
    assert push_service.received.empty()


def test_a_failure_to_enqueue_never_breaks_publishing(settings, redis, caplog):
    # the app's own Redis (where jobs go) is unreachable; the events' Redis works
    cut_off = create_app(Config.from_env(settings, TESTING=True, REDIS_URL="unix:///nonexistent/drive-redis.sock"))
    account = uuid.uuid4()
    with cut_off.app_context(), caplog.at_level("WARNING", logger="app.events"):
        event_id = publish_event(account, "upload.completed", {"taskId": "t-6"}, redis=redis)
    assert event_id == 1
    assert f"could not enqueue the web push of upload.completed #1 for account {account}" in caplog.text
    stored = [json.loads(fields[b"packet"]) for _, fields in redis.xrange(keys_for(account)[1])]
    assert stored == [{"id": 1, "type": "upload.completed", "data": {"taskId": "t-6"}}]


def test_an_oversized_packet_keeps_its_ids_and_fits_a_push_message():
    packet = {"id": 7, "type": "upload.failed",
              "data": {"taskId": "t", "fileName": "f", "errorMessage": "x" * 10_000}}
    small = {"id": 8, "type": "upload.completed", "data": {"taskId": "t", "fileId": "f"}}
    assert json.loads(payload_of(small)) == small
    trimmed = json.loads(payload_of(packet))
    assert trimmed == {"id": 7, "type": "upload.failed", "data": {"taskId": "t", "truncated": True}}
    # the largest payload sent encrypts to exactly the 4096 bytes every push service accepts
    receiver = ec.generate_private_key(ec.SECP256R1())
    body = http_ece.encrypt(b"a" * MAX_PAYLOAD_BYTES, private_key=ec.generate_private_key(ec.SECP256R1()),
                            dh=receiver.public_key().public_bytes(serialization.Encoding.X962,
                                                                  serialization.PublicFormat.UncompressedPoint),
                            auth_secret=os.urandom(16), version="aes128gcm")
    assert len(body) == 4096
