"""Tenancy (invariant 5): account B, holding account A's ids, gets exactly what it would get for
ids that do not exist: a 404 whose text tells nothing of A, on every route, under /api and
/drive; and nothing B does changes A's data. B's lists, statistics, recent tasks, cleanup and
events never include A's tasks."""
from __future__ import annotations

import json
import secrets
import uuid
from dataclasses import dataclass

import pytest
import sqlalchemy as sa

from app.auth import issue_token
from app.events import read_events
from app.extensions import db
from app.models import Pool, UploadChunk, UploadTask
from app.storage import backend_for
from tests.support import MIB, ApiClient, random_bytes, sha256

ENVELOPE = {"code", "message", "status", "details"}
A_PASSWORD = "a's password"


@dataclass
class World:
    """What account A owns."""

    account_id: uuid.UUID
    token: str
    marker: str
    open_task: str            # InProgress, chunk 0 of 3 stored
    open_data: bytes
    done_task: str            # Completed
    failed_task: str          # Failed (SHA-256 mismatch)
    file_id: str
    file_data: bytes
    bundle_id: str
    pool_id: str              # a pool private to A
    secret_file_id: str       # an encrypted file

    def secrets(self) -> list[str]:
        """Strings of A that must never appear in a response to B."""
        return [str(self.account_id), self.marker, sha256(self.file_data), sha256(self.open_data)]


@pytest.fixture(scope="module")
def world(app, worker) -> World:
    account = uuid.uuid4()
    token = issue_token(account, app=app)
    a = ApiClient(app.test_client(), token, account)
    marker = "tenant-a-" + secrets.token_hex(6)

    bundle = a.post("/bundles", json={"name": f"{marker}-bundle", "description": f"{marker} notes"})
    assert bundle.status_code == 201, bundle.get_json()
    bundle_id = bundle.get_json()["id"]

    file_data = random_bytes(5000)
    created = a.create(file_data, name=f"{marker}-file.bin", bundleId=bundle_id)
    assert created.status_code == 200, created.get_json()
    done_task = created.get_json()["taskId"]
    assert a.send_chunk(done_task, 0, file_data).status_code == 200
    done = a.complete(done_task)
    assert done.status_code == 200, done.get_json()
    file_id = done.get_json()["id"]

    open_data = random_bytes(2 * MIB + 100)
    created = a.create(open_data, name=f"{marker}-open.bin", chunkSize=MIB)
    assert created.status_code == 200, created.get_json()
    open_task = created.get_json()["taskId"]
    assert a.send_chunk(open_task, 0, open_data[:MIB]).status_code == 200

    wrong = random_bytes(1000)
    created = a.create(wrong, name=f"{marker}-failed.bin", hash=sha256(b"something else"))
    assert created.status_code == 200, created.get_json()
    failed_task = created.get_json()["taskId"]
    assert a.send_chunk(failed_task, 0, wrong).status_code == 200
    failed = a.complete(failed_task)
    assert failed.status_code == 400 and failed.get_json()["code"] == "UPLOAD_FAILED", failed.get_json()

    secret_data = random_bytes(3000)
    created = a.create(secret_data, name=f"{marker}-secret.bin", encryptPassword=A_PASSWORD)
    assert created.status_code == 200, created.get_json()
    secret_task = created.get_json()["taskId"]
    assert a.send_chunk(secret_task, 0, secret_data).status_code == 200
    secret = a.complete(secret_task)
    assert secret.status_code == 200 and secret.get_json()["isEncrypted"] is True, secret.get_json()

    with app.app_context():
        pool = Pool(name=f"{marker}-pool", backend="local", config={}, account_id=account)
        db.session.add(pool)
        db.session.commit()
        pool_id = str(pool.id)

    return World(account, token, marker, open_task, open_data, done_task, failed_task, file_id, file_data,
                 bundle_id, pool_id, secret.get_json()["id"])


def a_client(app, world: World) -> ApiClient:
    return ApiClient(app.test_client(), world.token, world.account_id)


def stored_chunks(app, task_id: str) -> list[tuple[int, str, bool]]:
    with app.app_context():
        rows = db.session.execute(
            sa.select(UploadChunk.chunk_index, UploadChunk.storage_key, UploadTask.pool_id)
            .join(UploadTask, UploadTask.id == UploadChunk.task_id)
            .where(UploadTask.task_id == task_id).order_by(UploadChunk.chunk_index)).all()
        out = []
        for index, key, pool_id in rows:
            backend = backend_for(db.session.get(Pool, pool_id))
            out.append((index, key, backend.exists(key)))
        db.session.rollback()
        return out


def assert_a_untouched(app, world: World) -> None:
    a = a_client(app, world)
    resume = a.get(f"/files/upload/resume/{world.open_task}")
    assert resume.status_code == 200, resume.get_json()
    body = resume.get_json()
    assert body["status"] == "InProgress" and body["uploadedChunks"] == [0] and body["chunksUploaded"] == 1
    chunks = stored_chunks(app, world.open_task)
    assert [(index, exists) for index, _, exists in chunks] == [(0, True)], chunks

    assert a.get(f"/files/upload/progress/{world.done_task}").get_json()["status"] == "Completed"
    assert a.get(f"/files/upload/progress/{world.failed_task}").get_json()["status"] == "Failed"
    file = a.get(f"/files/{world.file_id}")
    assert file.status_code == 200 and file.get_json()["hash"] == sha256(world.file_data)
    download = a.get(f"/files/{world.file_id}/download")
    assert download.status_code == 200 and sha256(download.data) == sha256(world.file_data)
    bundle = a.get(f"/bundles/{world.bundle_id}")
    assert bundle.status_code == 200 and bundle.get_json()["name"] == f"{world.marker}-bundle"
    assert a.get(f"/files/{world.secret_file_id}").status_code == 200


def create_body(**extra) -> dict:
    body = {"fileName": "b.bin", "fileSize": 10, "contentType": "application/octet-stream", "hash": "ab" * 32}
    body.update(extra)
    return body


# name: (method, path, json body or None, raw chunk body?, expected code). {task} etc. are A's ids.
ROUTES = {
    "chunk (stored index)": ("POST", "/files/upload/chunk/{open_task}/0", None, True, "UPLOAD_NOT_FOUND"),
    "chunk (missing index)": ("POST", "/files/upload/chunk/{open_task}/1", None, True, "UPLOAD_NOT_FOUND"),
    "chunk (last index)": ("POST", "/files/upload/chunk/{open_task}/2", None, True, "UPLOAD_NOT_FOUND"),
    "chunk (index out of range)": ("POST", "/files/upload/chunk/{open_task}/99", None, True, "UPLOAD_NOT_FOUND"),
    "complete": ("POST", "/files/upload/complete/{open_task}", None, False, "UPLOAD_NOT_FOUND"),
    "complete (completed task)": ("POST", "/files/upload/complete/{done_task}", None, False, "UPLOAD_NOT_FOUND"),
    "complete (failed task)": ("POST", "/files/upload/complete/{failed_task}", None, False, "UPLOAD_NOT_FOUND"),
    "progress": ("GET", "/files/upload/progress/{open_task}", None, False, "UPLOAD_NOT_FOUND"),
    "progress (completed task)": ("GET", "/files/upload/progress/{done_task}", None, False, "UPLOAD_NOT_FOUND"),
    "resume": ("GET", "/files/upload/resume/{open_task}", None, False, "UPLOAD_NOT_FOUND"),
    "details": ("GET", "/files/upload/tasks/{open_task}/details", None, False, "UPLOAD_NOT_FOUND"),
    "details (completed task)": ("GET", "/files/upload/tasks/{done_task}/details", None, False, "UPLOAD_NOT_FOUND"),
    "cancel": ("DELETE", "/files/upload/task/{open_task}", None, False, "UPLOAD_NOT_FOUND"),
    "cancel (completed task)": ("DELETE", "/files/upload/task/{done_task}", None, False, "UPLOAD_NOT_FOUND"),
    "cancel (failed task)": ("DELETE", "/files/upload/task/{failed_task}", None, False, "UPLOAD_NOT_FOUND"),
    "get file": ("GET", "/files/{file_id}", None, False, "FILE_NOT_FOUND"),
    "download": ("GET", "/files/{file_id}/download", None, False, "FILE_NOT_FOUND"),
    "delete file": ("DELETE", "/files/{file_id}", None, False, "FILE_NOT_FOUND"),
    "get encrypted file": ("GET", "/files/{secret_file_id}", None, False, "FILE_NOT_FOUND"),
    # not 403 PASSWORD_REQUIRED: that would tell B the file exists
    "download encrypted file": ("GET", "/files/{secret_file_id}/download", None, False, "FILE_NOT_FOUND"),
    "download encrypted file with its password": ("GET", "/files/{secret_file_id}/download", None, False,
                                                  "FILE_NOT_FOUND"),
    "delete encrypted file": ("DELETE", "/files/{secret_file_id}", None, False, "FILE_NOT_FOUND"),
    "get bundle": ("GET", "/bundles/{bundle_id}", None, False, "BUNDLE_NOT_FOUND"),
    "create in A's bundle": ("POST", "/files/upload/create", {"bundleId": "{bundle_id}"}, False, "BUNDLE_NOT_FOUND"),
    "create in A's private pool": ("POST", "/files/upload/create", {"poolId": "{pool_id}"}, False, "POOL_NOT_FOUND"),
}


def ids_of(world: World) -> dict:
    return {"open_task": world.open_task, "done_task": world.done_task, "failed_task": world.failed_task,
            "file_id": world.file_id, "bundle_id": world.bundle_id, "pool_id": world.pool_id,
            "secret_file_id": world.secret_file_id}


def unknown_ids() -> dict:
    task = lambda: secrets.token_hex(16)  # noqa: E731 - the shape of a real task id
    return {"open_task": task(), "done_task": task(), "failed_task": task(), "file_id": str(uuid.uuid4()),
            "bundle_id": str(uuid.uuid4()), "pool_id": str(uuid.uuid4()), "secret_file_id": str(uuid.uuid4())}


def call(api: ApiClient, route: str, ids: dict):
    method, path, extra, raw, _ = ROUTES[route]
    path = path.format(**ids)
    if extra is not None:
        return api.request(method, path, json=create_body(**{k: v.format(**ids) for k, v in extra.items()}))
    if raw:
        return api.request(method, path, data=b"\0" * MIB, content_type="application/octet-stream")
    if route.endswith("with its password"):
        return api.request(method, path, headers={"X-Encrypt-Password": A_PASSWORD})
    return api.request(method, path)


def normalised(body: dict, ids: dict) -> str:
    """The response text with the ids B sent replaced by their names."""
    text = json.dumps(body, sort_keys=True)
    for name, value in ids.items():
        text = text.replace(value, f"<{name}>")
    return text


@pytest.mark.parametrize("prefix", ["/api", "/drive"])
@pytest.mark.parametrize("route", list(ROUTES))
def test_other_accounts_ids_are_404(app, world, make_api, route, prefix):
    b = make_api(prefix=prefix)
    response = call(b, route, ids_of(world))
    assert response.status_code == 404, (response.status_code, response.get_json())
    body = response.get_json()
    assert set(body) == ENVELOPE and body["status"] == 404 and body["code"] == ROUTES[route][4], body
    text = response.get_data(as_text=True)
    for secret in world.secrets():
        assert secret not in text, f"{secret!r} of account A leaked: {text}"

    # exactly what an id that does not exist gets
    unknown = unknown_ids()
    control = call(b, route, unknown)
    assert control.status_code == 404
    assert normalised(body, ids_of(world)) == normalised(control.get_json(), unknown)

    assert_a_untouched(app, world)


def test_dedup_never_crosses_accounts(app, world, make_api):
    """B declaring the SHA-256 of A's file gets a new task, not A's file."""
    b = make_api()
    created = b.create(world.file_data, name="mine.bin")
    assert created.status_code == 200, created.get_json()
    body = created.get_json()
    assert body["fileExists"] is False and "file" not in body and body["taskId"]
    assert str(world.account_id) not in created.get_data(as_text=True)
    assert b.send_chunk(body["taskId"], 0, world.file_data).status_code == 200
    done = b.complete(body["taskId"])
    assert done.status_code == 200, done.get_json()
    assert done.get_json()["id"] != world.file_id and done.get_json()["accountId"] == str(b.account_id)
    assert_a_untouched(app, world)


@pytest.mark.parametrize("prefix", ["/api", "/drive"])
def test_lists_stats_recent_and_cleanup_are_scoped(app, world, make_api, prefix):
    b = make_api(prefix=prefix)
    own = b.create(random_bytes(3000), name="b-own.bin")
    assert own.status_code == 200
    own_id = own.get_json()["taskId"]
    a_tasks = {world.open_task, world.done_task, world.failed_task}

    listed = b.get("/files/upload/tasks?limit=200")
    assert listed.status_code == 200
    assert [t["taskId"] for t in listed.get_json()] == [own_id] and listed.headers["X-Total"] == "1"
    for status in ("Failed", "Completed", "InProgress", "Failed,Completed,InProgress,Expired,Cancelled"):
        scoped = b.get(f"/files/upload/tasks?status={status}")
        assert not a_tasks & {t["taskId"] for t in scoped.get_json()}, status
        assert scoped.headers["X-Total"] == ("1" if "InProgress" in status else "0"), status

    recent = b.get("/files/upload/tasks/recent?limit=100")
    assert [t["taskId"] for t in recent.get_json()] == [own_id]

    stats = b.get("/files/upload/stats").get_json()
    assert stats["totalTasks"] == 1 and stats["inProgressTasks"] == 1
    assert stats["completedTasks"] == 0 and stats["failedTasks"] == 0
    assert stats["totalUploadedBytes"] == 0
    assert [t["taskId"] for t in stats["recentActivity"]] == [own_id]

    cleanup = b.delete("/files/upload/tasks/cleanup")
    assert cleanup.status_code == 200
    assert cleanup.get_json() == {"removedTasks": 0, "taskIds": []}

    bundles = b.get("/bundles").get_json()
    assert world.bundle_id not in {x["id"] for x in bundles}
    pools = b.get("/pools").get_json()
    assert world.pool_id not in {x["id"] for x in pools}

    everything = json.dumps([listed.get_json(), recent.get_json(), stats, bundles, pools])
    for secret in world.secrets() + list(a_tasks):
        assert secret not in everything
    for packet in read_events(b.account_id, redis=_redis(app)):
        assert not a_tasks & {packet["data"].get("taskId")}, packet

    assert_a_untouched(app, world)
    # A's failed task was there for B's cleanup to take, and is still A's to clean
    a = a_client(app, world)
    assert world.failed_task in {t["taskId"] for t in a.get("/files/upload/tasks?status=Failed").get_json()}


def _redis(app):
    from app.redis_client import get_redis  # noqa: PLC0415

    return get_redis(app)
