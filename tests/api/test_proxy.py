"""X-Forwarded-* behind a trusted proxy (app/proxy.py): followed only as far as PROXY_FIX_X_*
says, by the links the API hands back, the client address the rate limiter and the audit log
use, and the request's scheme and host; ignored by default."""
from __future__ import annotations

import json
import uuid

import pytest

from config import Config
from tests.conftest import make_token
from tests.support import ApiClient, assert_error, create_task, random_bytes

TRUST_ONE_PROXY = {"PROXY_FIX_X_FOR": 1, "PROXY_FIX_X_PROTO": 1, "PROXY_FIX_X_HOST": 1, "PROXY_FIX_X_PREFIX": 1}
FORWARDED = {"X-Forwarded-For": "203.0.113.50", "X-Forwarded-Proto": "https",
             "X-Forwarded-Host": "drive.example.com", "X-Forwarded-Prefix": "/edge"}
# what the app sees of nginx on its own network (its own per run: counters are per address)
PROXY_IP = f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.2"
PROXY_ADDRESS = {"REMOTE_ADDR": PROXY_IP}


def build_app(settings, audit_path, **overrides):
    from app import create_app  # noqa: PLC0415

    application = create_app(Config.from_env(settings, TESTING=True, AUDIT_LOG_PATH=audit_path,
                                             RATELIMIT_READ="2/minute", **overrides))

    @application.get("/probe")
    def probe():  # the request as the app sees it, after ProxyFix
        from flask import request  # noqa: PLC0415

        return {"scheme": request.scheme, "host": request.host, "remoteAddr": request.remote_addr,
                "scriptRoot": request.script_root, "urlRoot": request.url_root}

    return application


@pytest.fixture(scope="module")
def trusting(app, settings, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("proxy") / "audit.log")
    return build_app(settings, path, **TRUST_ONE_PROXY), path


@pytest.fixture(scope="module")
def untrusting(app, settings, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("proxy") / "audit.log")
    return build_app(settings, path), path


def api_of(application):
    account = uuid.uuid4()
    return ApiClient(application.test_client(), make_token(application, account), account)


def audit_line(path, request_id) -> dict:
    with open(path, encoding="utf-8") as handle:
        [line] = [json.loads(text) for text in handle if f'"requestId":"{request_id}"' in text]
    return line


def test_a_trusted_proxy_sets_scheme_host_client_and_prefix(trusting):
    application, _ = trusting
    seen = application.test_client().get("/probe", headers=FORWARDED, environ_base=PROXY_ADDRESS).get_json()
    assert seen == {"scheme": "https", "host": "drive.example.com", "remoteAddr": "203.0.113.50",
                    "scriptRoot": "/edge", "urlRoot": "https://drive.example.com/edge/"}


def test_without_trust_forwarded_headers_change_nothing(untrusting):
    application, _ = untrusting
    seen = application.test_client().get("/probe", headers=FORWARDED, environ_base=PROXY_ADDRESS).get_json()
    assert seen == {"scheme": "http", "host": "localhost", "remoteAddr": PROXY_IP, "scriptRoot": "",
                    "urlRoot": "http://localhost/"}


@pytest.mark.parametrize("trusted", [True, False])
def test_links_handed_back_follow_the_trusted_prefix(trusting, untrusting, trusted):
    application, _ = trusting if trusted else untrusting
    api = api_of(application)
    task = create_task(api, random_bytes(1000))
    resume = api.get(f"/files/upload/resume/{task['taskId']}", headers=FORWARDED, environ_base=PROXY_ADDRESS)
    assert resume.status_code == 200
    root = "/edge/api" if trusted else "/api"
    body = resume.get_json()
    assert body["chunkUrlTemplate"] == f"{root}/files/upload/chunk/{task['taskId']}/{{chunkIndex}}"
    assert body["completeUrl"] == f"{root}/files/upload/complete/{task['taskId']}"
    spec = api.client.get("/api/openapi.json", headers=FORWARDED, environ_base=PROXY_ADDRESS).get_json()
    assert spec["servers"] == [{"url": root}]


def test_the_audit_log_records_the_forwarded_client_only_when_trusted(trusting, untrusting):
    for (application, path), expected in ((trusting, "203.0.113.50"), (untrusting, PROXY_IP)):
        request_id = f"req-{uuid.uuid4()}"
        api = api_of(application)
        answer = api.delete(f"/files/{uuid.uuid4()}", headers=dict(FORWARDED, **{"X-Request-ID": request_id}),
                            environ_base=PROXY_ADDRESS)
        assert_error(answer, 404, "FILE_NOT_FOUND")
        assert audit_line(path, request_id)["ip"] == expected


def test_only_the_address_the_proxy_appended_is_believed(trusting):
    application, path = trusting
    request_id = f"req-{uuid.uuid4()}"
    # the client sent its own X-Forwarded-For; nginx appended the address it saw
    headers = {"X-Forwarded-For": "1.2.3.4, 203.0.113.77", "X-Request-ID": request_id}
    answer = application.test_client().post("/api/files/upload/create", json={}, headers=headers,
                                            environ_base=PROXY_ADDRESS)
    assert_error(answer, 401, "UNAUTHORIZED")
    assert audit_line(path, request_id)["ip"] == "203.0.113.77"


def test_the_rate_limiter_keys_clients_by_their_forwarded_address(trusting, untrusting):
    def reads(application, address):
        headers = {"X-Forwarded-For": address}
        client = application.test_client()
        return [client.get("/api/openapi.json", headers=headers, environ_base=PROXY_ADDRESS).status_code
                for _ in range(3)]

    first, second = (f"2001:db8::{uuid.uuid4().hex[:4]}" for _ in range(2))
    application, _ = trusting
    assert reads(application, first) == [200, 200, 429]
    assert reads(application, second) == [200, 200, 429]  # another client behind the same proxy
    application, _ = untrusting
    proxy = {"REMOTE_ADDR": f"2001:db8::{uuid.uuid4().hex[:4]}:1"}
    client = application.test_client()
    statuses = [client.get("/api/openapi.json", headers={"X-Forwarded-For": f"198.51.100.{n}"},
                           environ_base=proxy).status_code for n in range(3)]
    assert statuses == [200, 200, 429]  # a forged X-Forwarded-For does not buy a fresh counter


def test_a_negative_count_is_refused(app, settings, tmp_path):
    with pytest.raises(ValueError, match="PROXY_FIX_X_FOR"):
        build_app(settings, str(tmp_path / "a.log"), PROXY_FIX_X_FOR=-1)
