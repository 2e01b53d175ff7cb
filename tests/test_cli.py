"""Operator commands (`flask tokens|pools|quotas|uploads ...`) through app.test_cli_runner().

Most tests run inside `app_context`; `test_commands_need_no_outer_app_context` checks that the
commands also work the way Flask's testing docs invoke them, without one. On SQLite every
transaction takes the write lock (BEGIN IMMEDIATE), so the test's own reads end with a rollback
before a request or a command writes.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa

from app.auth import decode_token
from app.events import read_events
from app.extensions import db
from app.models import UploadChunk, UploadTask
from app.models.types import utcnow
from app.services.pools import ensure_default_pool
from app.storage import backend_for
from tests.support import MIB, ROOT, assert_clean_error, flask_command, invoke, random_bytes

GIB = 1024 * MIB


def fetch(statement):
    """Rows of a query, the transaction ended at once (see the module docstring)."""
    rows = db.session.execute(statement).all()
    db.session.rollback()
    return rows


# tokens ---------------------------------------------------------------------------------
@pytest.mark.parametrize("extra,admin,ttl_hours", [((), False, 24.0), (("--admin",), True, 24.0),
                                                   (("--ttl", "0.5"), False, 0.5),
                                                   (("--admin", "--ttl", "720"), True, 720.0)])
def test_tokens_create(app_context, runner, extra, admin, ttl_hours):
    account = uuid.uuid4()
    result = invoke(runner, "tokens", "create", account, *extra)
    assert result.exit_code == 0, result.output
    token = result.output.strip()
    assert token.count(".") == 2 and "\n" not in token
    sub, claims = decode_token(token)
    assert sub == account
    assert claims.get("admin", False) is admin
    assert claims["exp"] - claims["iat"] == pytest.approx(ttl_hours * 3600, abs=1)
    # and the API takes it
    response = app_context.test_client().get("/api/files/upload/stats",
                                             headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.get_json()


@pytest.mark.parametrize("args,fragment", [
    (("not-a-uuid",), "not a UUID"),
    (("12345",), "not a UUID"),
    ((str(uuid.uuid4()), "--ttl", "0"), "--ttl"),
    ((str(uuid.uuid4()), "--ttl", "-3"), "--ttl"),
    ((str(uuid.uuid4()), "--ttl", "soon"), "--ttl"),
])
def test_tokens_create_refuses_bad_input(app_context, runner, args, fragment):
    result = invoke(runner, "tokens", "create", *args)
    assert_clean_error(result, fragment)
    assert "eyJ" not in result.output  # no token printed


def test_tokens_create_with_the_flask_command(settings, app_context):
    """The operator's path: a real `flask tokens create` process."""
    account = uuid.uuid4()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(settings, PYTHONPATH=ROOT)
    done = subprocess.run(flask_command("tokens", "create", str(account), "--admin"), env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    sub, claims = decode_token(done.stdout.strip().splitlines()[-1])
    assert sub == account and claims["admin"] is True


@pytest.mark.parametrize("args", [
    ("tokens", "create", "{account}"),
    ("pools", "list"),
    ("quotas", "show", "{account}"),
    ("uploads", "cleanup", "--dry-run"),
], ids=["tokens", "pools", "quotas", "uploads"])
def test_commands_need_no_outer_app_context(runner, args):
    """app.test_cli_runner().invoke(...) as Flask's testing docs use it: the command itself
    must provide the app context (as `flask.cli.AppGroup` commands do)."""
    account = str(uuid.uuid4())
    result = invoke(runner, *[a.format(account=account) for a in args])
    assert result.exit_code == 0, f"{result.output}{result.exception!r}"
    assert result.output.strip()


# pools ----------------------------------------------------------------------------------
def test_pools_create_and_list(app_context, runner, make_api):
    owner = uuid.uuid4()
    name = f"images-{uuid.uuid4().hex[:8]}"
    result = invoke(runner, "pools", "create", name, "--max-file-size", "10MiB", "--accept", "image/*",
                    "--account", owner)
    assert result.exit_code == 0, result.output
    pool_id = uuid.UUID(result.output.strip())

    listed = invoke(runner, "pools", "list")
    assert listed.exit_code == 0, listed.output
    line = next(line for line in listed.output.splitlines() if name in line)
    assert str(pool_id) in line and "max=10485760" in line and "types=image/*" in line

    as_json = invoke(runner, "pools", "list", "--json")
    assert as_json.exit_code == 0, as_json.output
    entry = next(p for p in json.loads(as_json.output) if p["name"] == name)
    assert entry == {"id": str(pool_id), "name": name, "backend": "local", "account": str(owner),
                     "maxFileSize": 10 * MIB, "acceptedTypes": ["image/*"], "allowEncryption": True,
                     "defaultChunkSize": None}

    # the policy is what the API applies
    api = make_api(owner)
    small = random_bytes(1000, seed=1)
    assert api.create(small, content_type="image/png", poolId=str(pool_id)).status_code == 200
    refused = api.create(small, content_type="text/plain", poolId=str(pool_id))
    assert refused.status_code == 400 and refused.get_json()["code"] == "CONTENT_TYPE_NOT_ALLOWED"
    too_big = api.post("/files/upload/create", json={
        "fileName": "big.png", "fileSize": 10 * MIB + 1, "contentType": "image/png", "hash": "0" * 64,
        "poolId": str(pool_id)})
    assert too_big.status_code == 413 and too_big.get_json()["code"] == "FILE_TOO_LARGE"
    # private to its account
    stranger = make_api().create(small, content_type="image/png", poolId=str(pool_id))
    assert stranger.status_code == 404 and stranger.get_json()["code"] == "POOL_NOT_FOUND"


def test_pools_create_refuses_a_duplicate_name(app_context, runner):
    name = f"dup-{uuid.uuid4().hex[:8]}"
    first = invoke(runner, "pools", "create", name, "--account", uuid.uuid4())
    assert first.exit_code == 0, first.output
    second = invoke(runner, "pools", "create", name, "--account", uuid.uuid4())
    assert_clean_error(second, name, "exists")
    listed = json.loads(invoke(runner, "pools", "list", "--json").output)
    assert [p["id"] for p in listed if p["name"] == name] == [first.output.strip()]


@pytest.mark.parametrize("args,fragment", [
    (("--max-file-size", "10XB"), "10XB"),
    (("--max-file-size", "lots"), "LOTS"),
    (("--chunk-size", "-1MiB"), "-1MIB"),
    (("--account", "nobody"), "not a UUID"),
    (("--backend", "floppy"), "floppy"),
])
def test_pools_create_refuses_bad_options(app_context, runner, args, fragment):
    name = f"bad-{uuid.uuid4().hex[:8]}"
    result = invoke(runner, "pools", "create", name, *args)
    assert_clean_error(result, fragment)
    listed = json.loads(invoke(runner, "pools", "list", "--json").output)
    assert name not in [p["name"] for p in listed]


# quotas ---------------------------------------------------------------------------------
def test_quotas_set_and_show(app_context, runner, make_api):
    account = uuid.uuid4()
    result = invoke(runner, "quotas", "set", account, "1GiB")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"accountId": str(account), "limit": GIB, "used": 0, "files": 0,
                                         "reserved": 0}

    api = make_api(account)
    data = random_bytes(2 * MIB, seed=5)
    assert api.create(data, chunkSize=MIB).status_code == 200
    shown = invoke(runner, "quotas", "show", account)
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output) == {"accountId": str(account), "limit": GIB, "used": 2 * MIB, "files": 0,
                                        "reserved": 2 * MIB}

    # a limit below what is reserved refuses the next create
    assert invoke(runner, "quotas", "set", account, "3MiB").exit_code == 0
    refused = api.create(random_bytes(2 * MIB, seed=6), chunkSize=MIB)
    assert refused.status_code == 403 and refused.get_json()["code"] == "QUOTA_EXCEEDED"
    unlimited = invoke(runner, "quotas", "set", account, "--unlimited")
    assert unlimited.exit_code == 0 and json.loads(unlimited.output)["limit"] is None
    assert api.create(random_bytes(2 * MIB, seed=6), chunkSize=MIB).status_code == 200


@pytest.mark.parametrize("args,fragment", [
    (("{account}",), "exactly one"),
    (("{account}", "1GiB", "--unlimited"), "exactly one"),
    (("{account}", "plenty"), "PLENTY"),
    (("nobody", "1GiB"), "not a UUID"),
])
def test_quotas_set_refuses_bad_input(app_context, runner, args, fragment):
    account = str(uuid.uuid4())
    result = invoke(runner, "quotas", "set", *[a.format(account=account) for a in args])
    assert_clean_error(result, fragment)
    shown = json.loads(invoke(runner, "quotas", "show", account).output)
    assert shown["limit"] is None or shown["limit"] != GIB


def test_quotas_show_refuses_a_bad_account(app_context, runner):
    assert_clean_error(invoke(runner, "quotas", "show", "nobody"), "not a UUID")


# uploads cleanup ------------------------------------------------------------------------
def write_object(backend, key: str, data: bytes, age_seconds: float) -> None:
    writer = backend.open_writer(key)
    writer.write(data)
    writer.commit()
    moment = time.time() - age_seconds
    os.utime(backend.path(key), (moment, moment))  # the local backend's path: this is its test


def test_uploads_cleanup(app_context, runner, make_api):
    account = uuid.uuid4()
    api = make_api(account)
    data = random_bytes(2 * MIB + 10, seed=9)
    created = api.create(data, chunkSize=MIB)
    assert created.status_code == 200, created.get_json()
    task_id = created.get_json()["taskId"]
    for index in (0, 1):
        assert api.send_chunk(task_id, index, data[index * MIB:(index + 1) * MIB]).status_code == 200
    fresh = api.create(random_bytes(1000, seed=10))  # recent: cleanup leaves it alone
    assert fresh.status_code == 200
    fresh_id = fresh.get_json()["taskId"]

    backend = backend_for(ensure_default_pool())
    db.session.rollback()
    chunk_keys = [key for (key,) in fetch(
        sa.select(UploadChunk.storage_key).join(UploadTask, UploadTask.id == UploadChunk.task_id)
        .where(UploadTask.task_id == task_id))]
    assert len(chunk_keys) == 2 and all(backend.exists(k) for k in chunk_keys)
    db.session.execute(sa.update(UploadTask).where(UploadTask.task_id == task_id)
                       .values(last_activity=utcnow() - timedelta(hours=48)))
    db.session.commit()

    orphans = [f"uploads/orphan-{uuid.uuid4().hex}/00000000.abcdef", f"files/{uuid.uuid4()}"]
    for key in orphans:
        write_object(backend, key, b"left behind", age_seconds=3 * 3600)
    young = f"files/{uuid.uuid4()}"
    write_object(backend, young, b"a write in flight", age_seconds=0)
    quota_before = json.loads(invoke(runner, "quotas", "show", account).output)
    assert quota_before["reserved"] == len(data) + 1000
    events_before = {p["id"] for p in read_events(account)}

    # --dry-run lists, changes nothing
    dry = invoke(runner, "uploads", "cleanup", "--dry-run")
    assert dry.exit_code == 0, dry.output
    report = json.loads(dry.output)
    assert report["dryRun"] is True
    assert task_id in report["expiredTasks"] and fresh_id not in report["expiredTasks"]
    for key in orphans:
        assert any(entry.endswith(":" + key) for entry in report["orphanedObjects"]), (key, report)
    assert not any(entry.endswith(":" + young) for entry in report["orphanedObjects"])
    assert not any(entry.endswith(":" + k) for k in chunk_keys for entry in report["orphanedObjects"])
    progress = api.get(f"/files/upload/progress/{task_id}").get_json()
    assert progress["status"] == "InProgress" and progress["chunksUploaded"] == 2
    assert all(backend.exists(k) for k in chunk_keys + orphans + [young])
    assert json.loads(invoke(runner, "quotas", "show", account).output) == quota_before
    assert {p["id"] for p in read_events(account)} == events_before

    # the real run
    real = invoke(runner, "uploads", "cleanup")
    assert real.exit_code == 0, real.output
    report = json.loads(real.output)
    assert report["dryRun"] is False
    assert task_id in report["expiredTasks"] and fresh_id not in report["expiredTasks"]
    for key in orphans:
        assert any(entry.endswith(":" + key) for entry in report["orphanedObjects"]), (key, report)

    progress = api.get(f"/files/upload/progress/{task_id}").get_json()
    assert progress["status"] == "Expired"
    assert api.get(f"/files/upload/progress/{fresh_id}").get_json()["status"] == "InProgress"
    assert not any(backend.exists(k) for k in chunk_keys)
    assert list(backend.list_objects(f"uploads/{task_id}")) == []
    assert not any(backend.exists(k) for k in orphans)
    assert backend.exists(young)
    quota_after = json.loads(invoke(runner, "quotas", "show", account).output)
    assert quota_after["used"] == 1000 and quota_after["reserved"] == 1000
    failed = [p for p in read_events(account) if p["id"] not in events_before]
    assert [p["type"] for p in failed] == ["upload.failed"]
    assert failed[0]["data"]["taskId"] == task_id and failed[0]["data"]["errorMessage"]
    # the expired task takes no more chunks
    late = api.send_chunk(task_id, 2, data[2 * MIB:])
    assert late.status_code == 410 and late.get_json()["code"] == "UPLOAD_EXPIRED"

    # a second run finds nothing more of this
    again = json.loads(invoke(runner, "uploads", "cleanup").output)
    assert task_id not in again["expiredTasks"]
    assert not any(entry.endswith(":" + key) for key in orphans for entry in again["orphanedObjects"])
    backend.delete(young)


def test_preferred_remote_names_the_default_pool(app, settings):
    """With STORAGE_PREFERRED_REMOTE set, `pools ensure-default` creates the pool with that
    id, and creates without a poolId go to it."""
    import uuid as uuid_module

    from app import create_app
    from app.models import Pool
    from app.extensions import db
    from config import Config

    preferred = str(uuid_module.uuid4())
    other = create_app(Config.from_env(settings, STORAGE_PREFERRED_REMOTE=preferred))
    result = other.test_cli_runner().invoke(args=["pools", "ensure-default"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == preferred
    with other.app_context():
        pool = db.session.get(Pool, uuid_module.UUID(preferred))
        assert pool is not None and pool.backend == "local"
    account = uuid_module.uuid4()
    from app.auth import issue_token

    token = issue_token(account, app=other)
    created = other.test_client().post("/api/files/upload/create", headers={"Authorization": f"Bearer {token}"},
                                       json={"fileName": "a.bin", "fileSize": 10, "contentType": "application/octet-stream",
                                             "hash": "0" * 64})
    assert created.status_code == 200, created.get_json()
    details = other.test_client().get(f"/api/files/upload/tasks/{created.get_json()['taskId']}/details",
                                      headers={"Authorization": f"Bearer {token}"}).get_json()
    assert details["poolId"] == preferred


def test_uploads_cleanup_removes_files_past_their_expiry(app, runner, make_api, worker):
    """A file whose expiredAt has passed is deleted by cleanup: row, bytes and quota."""
    from app.models import CloudFile
    from tests.support import database, quota_usage

    api = make_api()
    done = api.upload(random_bytes(3000), name="old.bin")
    assert done.status_code == 200, done.get_json()
    file_id = done.get_json()["id"]
    with database(app) as session:
        row = session.get(CloudFile, uuid.UUID(file_id))
        row.expired_at = utcnow() - timedelta(minutes=1)
        key, pool_id = row.storage_key, row.pool_id
        session.commit()
    assert quota_usage(app, api.account_id)["used"] == 3000
    dry = invoke(runner, "uploads", "cleanup", "--dry-run")
    assert file_id in json.loads(dry.output)["expiredFiles"]
    assert api.get(f"/files/{file_id}").status_code == 200  # a dry run changes nothing
    result = invoke(runner, "uploads", "cleanup")
    assert result.exit_code == 0, result.output
    assert file_id in json.loads(result.output)["expiredFiles"]
    assert api.get(f"/files/{file_id}").status_code == 404
    assert quota_usage(app, api.account_id)["used"] == 0
    with app.app_context():
        from app.models import Pool

        assert not backend_for(db.session.get(Pool, pool_id)).exists(key)
