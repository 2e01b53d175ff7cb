"""The audit log (app/audit.py): the JSON lines an app of its own writes to AUDIT_LOG_PATH for
uploads, tasks, refusals and CLI changes, and those the session's worker writes (to its
stderr) for what it finished. Also: X-Request-ID on every kind of answer."""
from __future__ import annotations

import json
import re
import uuid

import pytest

from config import Config
from tests.conftest import make_token
from tests.support import (
    MIB,
    ApiClient,
    EventListener,
    assert_error,
    create_task,
    invoke,
    random_bytes,
    wait_until,
)

HEX32 = re.compile(r"[0-9a-f]{32}")


def build_app(settings, **overrides):
    from app import create_app  # noqa: PLC0415

    return create_app(Config.from_env(settings, TESTING=True, **overrides))


@pytest.fixture(scope="module")
def audit_path(tmp_path_factory):
    return str(tmp_path_factory.mktemp("audit") / "audit.log")


@pytest.fixture(scope="module")
def audited(app, settings, audit_path):
    application = build_app(settings, AUDIT_LOG_PATH=audit_path)

    @application.get("/boom")
    def boom():  # an unexpected failure, to see the 500's request id
        raise RuntimeError("internal detail")

    return application


@pytest.fixture()
def audited_api(audited):
    def factory(account_id=None):
        account_id = account_id or uuid.uuid4()
        return ApiClient(audited.test_client(), make_token(audited, account_id), account_id)

    return factory


def read_lines(path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def lines_of(path, account) -> list[dict]:
    return [line for line in read_lines(path) if line["account"] == str(account)]


def worker_line(worker, action: str, task_id: str, timeout: float = 15.0) -> dict:
    """The worker's audit line of `action` for `task_id` (its stderr is the worker log)."""
    def line():
        return next((text for text in list(worker.lines)
                     if text.startswith("{") and f'"{action}"' in text and task_id in text), None)

    return json.loads(wait_until(line, timeout, f"a {action} line for {task_id} in the worker's output"))


def test_an_upload_leaves_its_changes_and_refusals_not_its_reads(audited_api, audit_path, worker):
    api = audited_api()
    data = random_bytes(2 * MIB + 100)
    created = api.create(data, name="report.pdf", chunkSize=MIB)
    assert created.status_code == 200
    task_id = created.get_json()["taskId"]
    assert api.send_chunk(task_id, 0, data[:MIB]).status_code == 200
    assert_error(api.send_chunk(task_id, 1, data[MIB:MIB + 10]), 400, "CHUNK_SIZE_MISMATCH")
    for index in (1, 2):
        assert api.send_chunk(task_id, index, data[index * MIB:(index + 1) * MIB]).status_code == 200
    assert api.get(f"/files/upload/resume/{task_id}").status_code == 200
    done = api.complete(task_id)
    assert done.status_code == 200, done.get_json()
    file_id = done.get_json()["id"]
    request_id = f"req-{uuid.uuid4()}"
    assert api.delete(f"/files/{file_id}", headers={"X-Request-ID": request_id}).status_code == 204

    lines = lines_of(audit_path, api.account_id)
    assert [(line["action"], line["outcome"], line["status"]) for line in lines] == [
        ("upload.create", "ok", 200), ("upload.chunk", "refused", 400), ("upload.complete", "ok", 200),
        ("file.delete", "ok", 204)]
    create, refused, complete, delete = lines
    assert create["ids"] == {"taskId": task_id} and create["requestId"] == created.headers["X-Request-ID"]
    assert create["source"] == "web" and create["ip"] == "127.0.0.1" and create["method"] == "POST"
    assert create["path"] == "/api/files/upload/create" and create["code"] is None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", create["ts"])
    assert refused["code"] == "CHUNK_SIZE_MISMATCH" and refused["ids"] == {"taskId": task_id, "chunkIndex": "1"}
    assert complete["ids"] == {"taskId": task_id, "fileId": file_id}
    assert delete["ids"] == {"fileId": file_id} and delete["requestId"] == request_id
    assert "report.pdf" not in json.dumps(lines)  # ids, not names

    finished = worker_line(worker, "upload.completed", task_id)
    assert finished["source"] == "worker" and finished["outcome"] == "ok"
    assert finished["account"] == str(api.account_id)
    assert finished["ids"] == {"taskId": task_id, "fileId": file_id}


def test_a_failed_finalize_is_a_failed_line(audited_api, worker):
    api = audited_api()
    data = random_bytes(5000)
    task = create_task(api, data, hash="0" * 64)
    assert api.send_chunk(task["taskId"], 0, data).status_code == 200
    assert_error(api.complete(task["taskId"]), 400, "UPLOAD_FAILED")
    failed = worker_line(worker, "upload.failed", task["taskId"])
    assert failed["outcome"] == "failed" and failed["source"] == "worker" and "SHA-256" in failed["message"]


def test_task_actions_and_the_workers_outcome(audited_api, audit_path, redis, worker):
    api = audited_api()
    listener = EventListener(redis, api.account_id)
    created = api.post("/tasks", json={"type": "Shout", "parameters": {"text": "quiet"}})
    assert created.status_code == 201
    task_id = created.get_json()["taskId"]
    listener.until("task.completed")
    listener.close()
    assert_error(api.post(f"/tasks/{task_id}/pause"), 409, "INVALID_TASK_TRANSITION")
    assert api.delete(f"/tasks/{task_id}").status_code == 204
    lines = lines_of(audit_path, api.account_id)
    assert [(line["action"], line["outcome"], line["code"]) for line in lines] == [
        ("task.create", "ok", None), ("task.pause", "refused", "INVALID_TASK_TRANSITION"), ("task.delete", "ok", None)]
    assert all(line["ids"] == {"taskId": task_id} for line in lines)
    completed = worker_line(worker, "task.completed", task_id)
    assert completed["source"] == "worker" and completed["account"] == str(api.account_id)


def test_refused_before_authentication_the_line_has_the_address_not_an_account(audited, audit_path):
    client = audited.test_client()
    address = f"198.51.100.{uuid.uuid4().int % 250 + 1}"
    marker = f"req-{uuid.uuid4()}"
    answer = client.delete(f"/drive/files/{uuid.uuid4()}", headers={"Authorization": "Bearer garbage",
                                                                     "X-Request-ID": marker},
                           environ_base={"REMOTE_ADDR": address})
    assert_error(answer, 401, "INVALID_TOKEN")
    [line] = [line for line in read_lines(audit_path) if line["requestId"] == marker]
    assert line["action"] == "file.delete" and line["outcome"] == "refused" and line["account"] is None
    assert line["ip"] == address and line["path"].startswith("/drive/files/")


def test_every_write_route_has_an_action_name(audited):
    from app.audit import ACTIONS, API_BLUEPRINTS, MUTATING_METHODS  # noqa: PLC0415

    writes = {rule.endpoint.rsplit(".", 1)[-1] for rule in audited.url_map.iter_rules()
              if rule.endpoint.split(".", 1)[0] in API_BLUEPRINTS and rule.methods & MUTATING_METHODS}
    assert writes and writes <= set(ACTIONS), f"routes without an audit action: {writes - set(ACTIONS)}"


def test_chunks_stored_are_lines_only_when_asked(app, settings, tmp_path):
    path = str(tmp_path / "chunks.log")
    chatty = build_app(settings, AUDIT_LOG_PATH=path, AUDIT_LOG_CHUNKS=True)
    account = uuid.uuid4()
    api = ApiClient(chatty.test_client(), make_token(chatty, account), account)
    data = random_bytes(1000)
    task = create_task(api, data)
    assert api.send_chunk(task["taskId"], 0, data).status_code == 200
    assert [(line["action"], line["outcome"]) for line in lines_of(path, account)] == [
        ("upload.create", "ok"), ("upload.chunk", "ok")]


def test_cli_changes_are_lines_and_a_token_is_never_written(audited, audit_path):
    runner = audited.test_cli_runner()
    account = uuid.uuid4()
    issued = invoke(runner, "tokens", "create", account, "--ttl", 2)
    assert issued.exit_code == 0, issued.output
    assert invoke(runner, "quotas", "set", account, "1GiB").exit_code == 0
    pool_name = f"audited-{uuid.uuid4().hex[:8]}"
    made = invoke(runner, "pools", "create", pool_name, "--account", account)
    assert made.exit_code == 0, made.output
    lines = lines_of(audit_path, account)
    assert [(line["action"], line["source"]) for line in lines] == [
        ("token.issue", "cli"), ("quota.set", "cli"), ("pool.create", "cli")]
    assert lines[0]["ttlHours"] == 2 and lines[0]["admin"] is False
    assert lines[1]["limitBytes"] == 1024 ** 3
    assert lines[2]["ids"] == {"poolId": made.output.strip()} and lines[2]["name"] == pool_name
    with open(audit_path, encoding="utf-8") as handle:
        assert issued.output.strip() not in handle.read()


# X-Request-ID on every kind of answer ---------------------------------------------------------
def test_request_ids_on_streams_errors_and_failures(audited):
    client = audited.test_client()
    token = make_token(audited, uuid.uuid4())
    stream = client.get("/api/events", headers={"Authorization": f"Bearer {token}", "X-Request-ID": "sse-1"},
                        buffered=False)
    assert stream.status_code == 200 and stream.headers["X-Request-ID"] == "sse-1"
    stream.close()
    for answer, status in ((client.get("/api/no/such/route"), 404), (client.put("/api/files/upload/create"), 405)):
        assert_error(answer, status, "NOT_FOUND" if status == 404 else "METHOD_NOT_ALLOWED")
        assert HEX32.fullmatch(answer.headers["X-Request-ID"])
    failed = client.get("/boom", headers={"X-Request-ID": "boom-1"})
    payload = assert_error(failed, 500, "INTERNAL_ERROR")
    assert failed.headers["X-Request-ID"] == "boom-1" and payload["details"] == {"requestId": "boom-1"}
    assert "internal detail" not in failed.get_data(as_text=True)
