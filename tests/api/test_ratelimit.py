"""Rate limits per route group (app/ratelimit.py), on apps of their own with tiny limits: 429 in
the envelope with Retry-After, groups and keys counted apart, chunks counted per request, a
refused chunk that keeps its keep-alive connection (real gunicorn), Redis down never a 500."""
from __future__ import annotations

import http.client
import json
import logging
import time
import uuid

import pytest
import websocket

from config import Config
from tests.conftest import make_token, process_env
from tests.support import (
    MIB,
    ApiClient,
    assert_error,
    create_task,
    free_port,
    gunicorn_command,
    random_bytes,
    sha256,
    start_process,
)

LIMITS = {"RATELIMIT_CREATE": "2/minute", "RATELIMIT_CHUNK": "3/minute", "RATELIMIT_WRITE": "2/minute",
          "RATELIMIT_READ": "4/minute", "RATELIMIT_LIVE": "1/minute"}


def build_app(settings, **overrides):
    from app import create_app  # noqa: PLC0415

    return create_app(Config.from_env(settings, TESTING=True, **overrides))


@pytest.fixture(scope="module")
def limited(app, settings):
    """An app with tiny limits (on the session's database and Redis)."""
    return build_app(settings, **LIMITS)


@pytest.fixture()
def limited_api(limited):
    """limited_api() → an ApiClient of a new account on the limited app."""
    client = limited.test_client()

    def factory(account_id=None, prefix="/api"):
        account_id = account_id or uuid.uuid4()
        return ApiClient(client, make_token(limited, account_id), account_id, prefix)

    return factory


def an_ip() -> dict:
    """A client address of its own (IP-keyed counters must not meet those of other tests)."""
    return {"REMOTE_ADDR": f"2001:db8::{uuid.uuid4().hex[:4]}:{uuid.uuid4().hex[:4]}"}


def assert_rate_limited(response, group: str, limit: int) -> dict:
    payload = assert_error(response, 429, "RATE_LIMITED")
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= 60, response.headers
    assert payload["details"] == {"group": group, "limit": f"{limit} per 1 minute", "retryAfter": retry_after}
    assert response.headers["X-RateLimit-Limit"] == str(limit)
    assert response.headers["X-RateLimit-Remaining"] == "0"
    assert 0 < int(response.headers["X-RateLimit-Reset"]) - time.time() <= 61
    assert response.headers["X-Request-ID"]
    return payload


def test_creates_over_the_limit_are_refused_and_create_nothing(limited_api):
    api = limited_api()
    data = random_bytes(1000)
    for _ in range(2):
        assert api.create(data, name=f"{uuid.uuid4().hex}.bin").status_code == 200
    assert_rate_limited(api.create(data, name="third.bin"), "create", 2)
    # the same counter under /drive, and POST /tasks is a create too
    drive = ApiClient(api.client, api.token, api.account_id, "/drive")
    assert_rate_limited(drive.create(data, name="fourth.bin"), "create", 2)
    assert_rate_limited(api.post("/tasks", json={"type": "Shout", "parameters": {"text": "x"}}), "create", 2)
    listed = api.get("/files/upload/tasks")
    assert listed.status_code == 200 and listed.headers["X-Total"] == "2"
    assert "third.bin" not in [t["fileName"] for t in listed.get_json()]


def test_groups_and_accounts_are_counted_apart(limited_api):
    api, other = limited_api(), limited_api()
    data = random_bytes(2 * MIB + 10)
    task = create_task(api, data, chunkSize=MIB)
    create_task(api, random_bytes(100))
    assert_rate_limited(api.create(random_bytes(10)), "create", 2)
    # creates are spent; chunks, reads and another account's creates are not
    size = task["chunkSize"]
    for index in range(3):
        sent = api.send_chunk(task["taskId"], index, data[index * size:(index + 1) * size])
        assert sent.status_code == 200, sent.get_json()
    assert api.get(f"/files/upload/progress/{task['taskId']}").get_json()["chunksUploaded"] == 3
    assert other.create(random_bytes(10)).status_code == 200


def test_chunks_count_per_request_and_a_refused_one_is_not_stored(limited_api):
    api = limited_api()
    data = random_bytes(4 * MIB)
    task = create_task(api, data, chunkSize=MIB)  # 4 chunks of 1 MiB: a count per byte would refuse the first
    for index in range(3):
        assert api.send_chunk(task["taskId"], index, data[index * MIB:(index + 1) * MIB]).status_code == 200
    assert_rate_limited(api.send_chunk(task["taskId"], 3, data[3 * MIB:]), "chunk", 3)
    resume = api.get(f"/files/upload/resume/{task['taskId']}").get_json()
    assert resume["uploadedChunks"] == [0, 1, 2] and resume["missingChunks"] == [3]


def test_writes_and_reads_have_their_own_limits(limited_api):
    api = limited_api()
    for _ in range(2):
        assert api.delete("/files/upload/tasks/cleanup").status_code == 200
    assert_rate_limited(api.post(f"/files/upload/complete/{uuid.uuid4()}"), "write", 2)
    for _ in range(4):
        assert api.get("/files/upload/stats").status_code == 200
    assert_rate_limited(api.get("/bundles"), "read", 4)


def test_without_a_valid_token_the_client_address_is_the_key(limited):
    client = limited.test_client()
    here, there = an_ip(), an_ip()
    for token in (None, "garbage"):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        answer = client.post("/api/files/upload/create", json={}, headers=headers, environ_base=here)
        assert_error(answer, 401, "UNAUTHORIZED" if token is None else "INVALID_TOKEN")
    # limited before authentication: a flood of bad tokens costs no decoding past the limit
    assert_rate_limited(client.post("/api/tasks", json={}, environ_base=here), "create", 2)
    assert_error(client.post("/api/tasks", json={}, environ_base=there), 401, "UNAUTHORIZED")
    # a valid token from the same address has the account's own counter
    account = uuid.uuid4()
    token = make_token(limited, account)
    created = client.post("/api/tasks", json={"type": "Shout", "parameters": {"text": "hi"}},
                          headers={"Authorization": f"Bearer {token}"}, environ_base=here)
    assert created.status_code == 201, created.get_json()


def test_live_connections_are_limited_per_account(limited):
    client = limited.test_client()
    account = uuid.uuid4()
    token = make_token(limited, account)
    stream = client.get(f"/api/events?token={token}", buffered=False)
    assert stream.status_code == 200 and stream.mimetype == "text/event-stream"
    stream.close()
    assert_rate_limited(client.get(f"/drive/events?token={token}", buffered=False), "live", 1)
    other = client.get(f"/api/events?token={make_token(limited, uuid.uuid4())}", buffered=False)
    assert other.status_code == 200
    other.close()


def test_preflights_health_and_docs_assets_are_not_limited(limited):
    client = limited.test_client()
    here = an_ip()
    for _ in range(6):
        answer = client.options("/api/files/upload/create", environ_base=here)
        assert answer.status_code == 200 and "POST" in answer.headers["Allow"]
        assert client.get("/api/docs/assets/swagger-ui.css", environ_base=here).status_code == 200
        assert client.get("/health/uploads", environ_base=here).status_code in (200, 503)


def test_retry_after_is_when_the_window_reopens(settings, app):
    short = build_app(settings, RATELIMIT_READ="2/second")
    client = short.test_client()
    here = an_ip()
    for _ in range(2):
        assert client.get("/api/openapi.json", environ_base=here).status_code == 200
    refused = client.get("/api/openapi.json", environ_base=here)
    assert_error(refused, 429, "RATE_LIMITED")
    retry_after = int(refused.headers["Retry-After"])
    assert retry_after == 1
    refused_at = time.monotonic()
    deadline = refused_at + retry_after + 2
    while client.get("/api/openapi.json", environ_base=here).status_code == 429:
        assert time.monotonic() < deadline, "still refused well after Retry-After"
    assert time.monotonic() - refused_at <= retry_after + 1


def test_redis_down_is_no_500_and_is_logged(settings, app, caplog):
    cut_off = build_app(settings, REDIS_URL="unix:///nonexistent/drive-redis.sock", RATELIMIT_READ="3/minute")
    api = ApiClient(cut_off.test_client(), make_token(cut_off, uuid.uuid4()), None)
    with caplog.at_level(logging.WARNING, logger="flask-limiter"):
        answers = [api.get("/files/upload/tasks") for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]  # counted in memory meanwhile
    assert any("storage unreachable" in r.getMessage() for r in caplog.records if r.name == "flask-limiter")


def test_settings_are_checked_when_the_app_is_built(settings, app):
    with pytest.raises(ValueError, match="RATELIMIT_CHUNK"):
        build_app(settings, RATELIMIT_CHUNK="lots")
    unlimited = build_app(settings, RATELIMIT_ENABLED=False, RATELIMIT_READ="1/minute")
    client = unlimited.test_client()
    here = an_ip()
    assert [client.get("/api/openapi.json", environ_base=here).status_code for _ in range(3)] == [200] * 3
    no_reads = build_app(settings, RATELIMIT_READ="", RATELIMIT_CREATE="1/minute")
    client = no_reads.test_client()
    assert [client.get("/api/openapi.json", environ_base=here).status_code for _ in range(3)] == [200] * 3


# -- a real gunicorn: keep-alive after a refused chunk, a refused WebSocket upgrade ----------
@pytest.fixture(scope="module")
def limited_server(app, settings, tmp_path_factory):
    port = free_port()
    log = str(tmp_path_factory.mktemp("logs") / "gunicorn-limited.log")
    process = start_process(
        gunicorn_command(port, workers=1, threads=4),
        process_env(settings, **LIMITS), log, ready_marker="Booting worker",
    )
    yield port
    process.stop()


def call(conn, method, path, token, body=None, content_type="application/json"):
    headers = {"Authorization": f"Bearer {token}"}
    if body is not None:
        headers["Content-Type"] = content_type
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    return response, response.read()


def test_a_refused_chunk_keeps_the_connection_open(app, limited_server):
    data = random_bytes(4 * MIB)
    token = make_token(app, uuid.uuid4())
    conn = http.client.HTTPConnection("127.0.0.1", limited_server, timeout=30)
    created, raw = call(conn, "POST", "/api/files/upload/create", token, json.dumps({
        "fileName": "a.bin", "fileSize": len(data), "contentType": "application/octet-stream",
        "hash": sha256(data), "chunkSize": MIB}))
    assert created.status == 200, raw
    task_id = json.loads(raw)["taskId"]
    local = conn.sock.getsockname()
    for index in range(3):
        sent, raw = call(conn, "POST", f"/api/files/upload/chunk/{task_id}/{index}", token,
                         data[index * MIB:(index + 1) * MIB], "application/octet-stream")
        assert sent.status == 200, raw
    refused, raw = call(conn, "POST", f"/api/files/upload/chunk/{task_id}/3", token, data[3 * MIB:],
                        "application/octet-stream")
    assert refused.status == 429 and json.loads(raw)["code"] == "RATE_LIMITED"
    assert int(refused.getheader("Retry-After")) >= 1 and not refused.will_close
    resumed, raw = call(conn, "GET", f"/api/files/upload/resume/{task_id}", token)
    assert resumed.status == 200 and json.loads(raw)["missingChunks"] == [3]
    assert conn.sock is not None and conn.sock.getsockname() == local  # the same connection throughout
    conn.close()


def test_a_websocket_over_the_limit_is_refused_before_the_upgrade(app, limited_server):
    token = make_token(app, uuid.uuid4())
    url = f"ws://127.0.0.1:{limited_server}/api/ws"
    first = websocket.create_connection(url, header=[f"Authorization: Bearer {token}"], timeout=10)
    assert json.loads(first.recv())["type"] == "auth.ok"
    first.close()
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(url, header=[f"Authorization: Bearer {token}"], timeout=10)
    assert refused.value.status_code == 429
    assert json.loads(refused.value.resp_body)["code"] == "RATE_LIMITED"
