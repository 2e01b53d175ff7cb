"""POST /files/upload/complete/{taskId} against a real rq worker: the stored file, its bytes,
idempotence, the failures (missing chunks, wrong hash), the events, encryption and dedup."""
from __future__ import annotations

import io
import json
import os
import random
import threading
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

from app.extensions import db

from tests.support import MIB, ApiClient, EventListener, assert_error, create_task, database, quota_usage, random_bytes, send_chunks, sha256

FILE_FIELDS = {
    "id", "name", "description", "mimeType", "size", "hash", "fileMeta", "userMeta", "isEncrypted",
    "poolId", "bundleId", "accountId", "expiredAt", "uploadedAt", "createdAt", "updatedAt",
}
SECRET_FIELDS = {"encryption", "storageKey", "storage_key", "storedSize", "config", "encryptPassword",
                 "password"}


# helpers ---------------------------------------------------------------------------------
def file_rows(app, account_id) -> list[dict]:
    """The account's rows of `files` (deleted ones too), as plain dicts."""
    from app.models import CloudFile  # noqa: PLC0415

    with database(app) as session:
        rows = session.scalars(sa.select(CloudFile).where(CloudFile.account_id == account_id)
                               .order_by(CloudFile.created_at))
        return [{"id": str(r.id), "storage_key": r.storage_key, "encryption": r.encryption,
                 "deleted_at": r.deleted_at} for r in rows]


def stored_objects(app, prefix: str) -> set[str]:
    """Every object (temporary ones included) under `prefix` of the default local pool."""
    root = os.path.join(app.config["STORAGE_UPLOADS_PATH"], prefix)
    found = set()
    for folder, _, names in os.walk(root):
        for name in names:
            found.add(os.path.relpath(os.path.join(folder, name), app.config["STORAGE_UPLOADS_PATH"]))
    return found


def object_exists(app, storage_key: str) -> bool:
    """Whether the default pool's backend holds `storage_key` (whatever its layout on disk)."""
    from app.services.pools import ensure_default_pool  # noqa: PLC0415
    from app.storage import backend_for  # noqa: PLC0415

    with database(app):
        return backend_for(ensure_default_pool()).exists(storage_key)


def raw_bytes_on_disk(app, storage_key: str) -> bytes:
    """Every byte of every file the local backend keeps for `storage_key` (a file, or a folder
    of parts), concatenated: what someone reading the disk would see."""
    path = os.path.join(app.config["STORAGE_UPLOADS_PATH"], *storage_key.split("/"))
    if os.path.isfile(path):
        with open(path, "rb") as handle:
            return handle.read()
    out = b""
    for folder, _, names in sorted(os.walk(path)):
        for name in sorted(names):
            with open(os.path.join(folder, name), "rb") as handle:
                out += handle.read()
    return out


def stored_events(app, account_id) -> list[dict]:
    from app.events import read_events  # noqa: PLC0415

    with app.app_context():
        return read_events(account_id)


def assert_utc(value: str) -> datetime:
    assert isinstance(value, str) and value.endswith("Z"), value
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert moment.utcoffset() == timedelta(0)
    return moment


def assert_file_shape(file: dict) -> None:
    assert set(file) == FILE_FIELDS, sorted(file)
    assert not SECRET_FIELDS & set(file)
    for name in ("uploadedAt", "createdAt", "updatedAt"):
        assert_utc(file[name])


# the happy path --------------------------------------------------------------------------
def test_complete_returns_the_cloud_file_and_its_bytes(app, api, worker):
    data = random_bytes(3 * MIB + 4321, seed=11)
    expires = (datetime.now(timezone.utc) + timedelta(days=3)).replace(microsecond=0)
    task = create_task(api, data, name="report.pdf", content_type="application/pdf", chunkSize=MIB,
                       expiredAt=expires.isoformat().replace("+00:00", "Z"))
    assert task["chunksCount"] == 4
    send_chunks(api, task, data)

    done = api.complete(task["taskId"])
    assert done.status_code == 200, done.get_json()
    file = done.get_json()
    assert_file_shape(file)
    assert file["name"] == "report.pdf"
    assert file["mimeType"] == "application/pdf"
    assert file["size"] == len(data)
    assert file["hash"] == sha256(data)
    assert file["isEncrypted"] is False
    assert file["accountId"] == str(api.account_id)
    assert file["bundleId"] is None
    assert file["userMeta"] == {} and file["fileMeta"] == {}
    assert assert_utc(file["expiredAt"]) == expires

    shown = api.get(f"/files/{file['id']}")
    assert shown.status_code == 200
    assert shown.get_json() == file

    downloaded = api.get(f"/files/{file['id']}/download")
    assert downloaded.status_code == 200
    assert sha256(downloaded.data) == sha256(data)

    progress = api.get(f"/files/upload/progress/{task['taskId']}").get_json()
    assert progress["status"] == "Completed" and progress["progress"] == 100.0
    # the chunks are gone once the file is stored; the file is the only object left
    assert stored_objects(app, f"uploads/{task['taskId']}") == set()
    (row,) = file_rows(app, api.account_id)
    assert row["id"] == file["id"] and object_exists(app, row["storage_key"])
    usage = quota_usage(app, api.account_id)
    assert usage["used"] == len(data) and usage["files"] == len(data) and usage["reserved"] == 0


def test_chunks_sent_in_shuffled_order_assemble_in_index_order(app, api, worker):
    data = random_bytes(5 * MIB + 77, seed=12)
    task = create_task(api, data, chunkSize=MIB)
    order = list(range(task["chunksCount"]))
    random.Random(5).shuffle(order)
    assert order != sorted(order)
    send_chunks(api, task, data, order)

    done = api.complete(task["taskId"])
    assert done.status_code == 200, done.get_json()
    file = done.get_json()
    assert file["hash"] == sha256(data)
    downloaded = api.get(f"/files/{file['id']}/download")
    assert sha256(downloaded.data) == sha256(data)


def test_complete_of_an_unknown_or_foreign_task_is_404(app, api, make_api, worker):
    data = random_bytes(1000, seed=13)
    task = create_task(api, data)
    send_chunks(api, task, data)

    assert_error(api.complete("0" * 32), 404, "UPLOAD_NOT_FOUND")
    stranger = make_api()
    assert_error(stranger.complete(task["taskId"]), 404, "UPLOAD_NOT_FOUND")
    assert file_rows(app, stranger.account_id) == []

    done = api.complete(task["taskId"])
    assert done.status_code == 200, done.get_json()
    assert done.get_json()["accountId"] == str(api.account_id)


def test_complete_works_under_the_drive_prefix(app, make_api, worker):
    gateway = make_api(prefix="/drive")
    data = random_bytes(2 * MIB + 1, seed=14)
    done = gateway.upload(data, chunk_size=MIB)
    assert done.status_code == 200, done.get_json()
    assert done.get_json()["hash"] == sha256(data)


# missing chunks --------------------------------------------------------------------------
def test_missing_chunks_are_listed_and_nothing_is_deleted(app, api, worker):
    data = random_bytes(4 * MIB + 10, seed=21)
    task = create_task(api, data, chunkSize=MIB)
    assert task["chunksCount"] == 5
    send_chunks(api, task, data, [0, 2, 3])
    before = stored_objects(app, f"uploads/{task['taskId']}")
    assert len(before) == 3

    missing = assert_error(api.complete(task["taskId"]), 400, "CHUNKS_MISSING")
    assert missing["details"]["missingChunks"] == [1, 4]
    assert missing["details"]["missingCount"] == 2
    assert missing["details"]["taskId"] == task["taskId"]

    # nothing was removed or finalized: the same chunks are stored and recorded
    assert stored_objects(app, f"uploads/{task['taskId']}") == before
    resume = api.get(f"/files/upload/resume/{task['taskId']}").get_json()
    assert resume["uploadedChunks"] == [0, 2, 3]
    assert resume["missingChunks"] == [1, 4]
    assert resume["status"] == "InProgress"
    assert file_rows(app, api.account_id) == []
    assert quota_usage(app, api.account_id)["reserved"] == len(data)

    # asking again changes nothing either
    again = assert_error(api.complete(task["taskId"]), 400, "CHUNKS_MISSING")
    assert again["details"]["missingChunks"] == [1, 4]

    # the upload continues and completes
    send_chunks(api, task, data, [4, 1])
    done = api.complete(task["taskId"])
    assert done.status_code == 200, done.get_json()
    file = done.get_json()
    assert sha256(api.get(f"/files/{file['id']}/download").data) == sha256(data)


def test_complete_with_no_chunks_lists_every_index(app, api, worker):
    data = random_bytes(2 * MIB + 5, seed=22)
    task = create_task(api, data, chunkSize=MIB)
    missing = assert_error(api.complete(task["taskId"]), 400, "CHUNKS_MISSING")
    assert missing["details"]["missingChunks"] == [0, 1, 2]
    assert api.get(f"/files/upload/progress/{task['taskId']}").get_json()["status"] == "InProgress"


# a declared hash that does not match -----------------------------------------------------
def test_hash_mismatch_fails_the_upload_and_publishes_nothing(app, api, redis, worker):
    data = random_bytes(2 * MIB + 999, seed=31)
    declared = sha256(b"something else entirely")
    listener = EventListener(redis, api.account_id)
    files_before = stored_objects(app, "files")
    try:
        task = create_task(api, data, name="liar.bin", chunkSize=MIB, hash=declared)
        send_chunks(api, task, data)
        assert quota_usage(app, api.account_id)["reserved"] == len(data)

        failed = assert_error(api.complete(task["taskId"]), 400, "UPLOAD_FAILED")
        assert failed["details"]["taskId"] == task["taskId"]
        assert failed["details"]["error"]
        packets = listener.until("upload.failed")
    finally:
        listener.close()

    event = packets[-1]["data"]
    assert event["taskId"] == task["taskId"]
    assert event["fileName"] == "liar.bin" and event["fileSize"] == len(data)
    assert event["errorMessage"] and "SHA-256" in event["errorMessage"]
    assert_utc(event["failedAt"])
    assert not [p for p in packets if p["type"] == "upload.completed"]

    progress = api.get(f"/files/upload/progress/{task['taskId']}")
    assert progress.status_code == 200
    assert progress.get_json()["status"] == "Failed"
    listed = api.get("/files/upload/tasks", query_string={"status": "Failed"}).get_json()
    assert [t["taskId"] for t in listed] == [task["taskId"]]
    assert listed[0]["errorMessage"] == event["errorMessage"]
    assert listed[0]["fileId"] is None

    # no file: no row, no object (not even a temporary one), chunks dropped, quota released
    assert file_rows(app, api.account_id) == []
    assert stored_objects(app, "files") == files_before
    assert stored_objects(app, f"uploads/{task['taskId']}") == set()
    usage = quota_usage(app, api.account_id)
    assert usage["used"] == 0 and usage["reserved"] == 0

    # asking again gives the same answer and starts nothing
    assert_error(api.complete(task["taskId"]), 400, "UPLOAD_FAILED")
    assert file_rows(app, api.account_id) == []


# idempotence -----------------------------------------------------------------------------
def test_completing_twice_returns_the_same_file(app, api, worker):
    data = random_bytes(2 * MIB + 3, seed=41)
    task = create_task(api, data, chunkSize=MIB)
    send_chunks(api, task, data)

    first = api.complete(task["taskId"])
    second = api.complete(task["taskId"])
    assert first.status_code == 200 and second.status_code == 200, (first.get_json(), second.get_json())
    assert first.get_json() == second.get_json()
    rows = file_rows(app, api.account_id)
    assert [r["id"] for r in rows] == [first.get_json()["id"]]
    assert quota_usage(app, api.account_id)["used"] == len(data)


def test_concurrent_completes_publish_one_file(app, api, worker):
    data = random_bytes(3 * MIB + 17, seed=42)
    task = create_task(api, data, chunkSize=MIB)
    send_chunks(api, task, data)

    callers = 4
    barrier = threading.Barrier(callers)
    results: list = [None] * callers

    def complete(slot: int) -> None:
        client = ApiClient(app.test_client(), api.token, api.account_id)
        barrier.wait(timeout=30)
        response = client.complete(task["taskId"])
        results[slot] = (response.status_code, response.get_json())

    threads = [threading.Thread(target=complete, args=(slot,)) for slot in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert all(result is not None for result in results), results
    assert [status for status, _ in results] == [200] * callers, results
    ids = {body["id"] for _, body in results}
    assert len(ids) == 1, results

    rows = file_rows(app, api.account_id)
    assert [r["id"] for r in rows] == list(ids)
    completed = [e for e in stored_events(app, api.account_id)
                 if e["type"] == "upload.completed" and e["data"]["taskId"] == task["taskId"]]
    assert len(completed) == 1
    assert sha256(api.get(f"/files/{rows[0]['id']}/download").data) == sha256(data)


# events ----------------------------------------------------------------------------------
def test_completed_event_has_the_seed_fields_and_follows_the_last_progress(app, api, redis, worker):
    data = random_bytes(4 * MIB + 100, seed=51)
    listener = EventListener(redis, api.account_id)
    try:
        task = create_task(api, data, name="movie.mp4", content_type="video/mp4", chunkSize=MIB)
        send_chunks(api, task, data)
        done = api.complete(task["taskId"])
        assert done.status_code == 200, done.get_json()
        packets = listener.until("upload.completed")
    finally:
        listener.close()
    file = done.get_json()

    completed = packets[-1]
    assert completed["type"] == "upload.completed"
    assert set(completed["data"]) == {"taskId", "fileId", "fileName", "fileSize", "completedAt"}
    assert completed["data"]["taskId"] == task["taskId"]
    assert completed["data"]["fileId"] == file["id"]
    assert completed["data"]["fileName"] == "movie.mp4"
    assert completed["data"]["fileSize"] == len(data)
    assert_utc(completed["data"]["completedAt"])

    progress = [p for p in packets if p["type"] == "upload.progress"]
    assert progress, packets
    assert progress[-1]["data"]["chunksUploaded"] == progress[-1]["data"]["chunksTotal"] == task["chunksCount"]
    assert progress[-1]["data"]["progress"] == 100.0
    assert all(p["id"] < completed["id"] for p in progress)

    # the account's stored stream says the same: nothing about this task after the completion
    history = [e for e in stored_events(app, api.account_id) if e["data"].get("taskId") == task["taskId"]]
    assert history[-1]["type"] == "upload.completed"
    assert [e["id"] for e in history] == sorted(e["id"] for e in history)


# file metadata ---------------------------------------------------------------------------
def test_image_upload_gets_width_and_height(app, api, worker):
    from PIL import Image  # noqa: PLC0415

    buffer = io.BytesIO()
    Image.new("RGB", (37, 23), (200, 30, 90)).save(buffer, format="PNG")
    data = buffer.getvalue()

    done = api.upload(data, name="pixel.png", content_type="image/png")
    assert done.status_code == 200, done.get_json()
    file = done.get_json()
    assert file["mimeType"] == "image/png"
    assert file["fileMeta"]["width"] == 37
    assert file["fileMeta"]["height"] == 23
    assert api.get(f"/files/{file['id']}").get_json()["fileMeta"] == file["fileMeta"]


# encryption ------------------------------------------------------------------------------
def test_encrypted_upload_round_trip(app, api, worker):
    from app.models import UploadTask  # noqa: PLC0415

    password = "correct horse battery staple"
    data = random_bytes(2 * MIB + 12345, seed=61)
    task = create_task(api, data, name="secret.bin", chunkSize=MIB, encryptPassword=password)
    send_chunks(api, task, data)
    done = api.complete(task["taskId"])
    assert done.status_code == 200, done.get_json()
    file = done.get_json()
    assert_file_shape(file)
    assert file["isEncrypted"] is True
    assert file["size"] == len(data) and file["hash"] == sha256(data)

    # at rest: not the plaintext, and no part of it
    (row,) = file_rows(app, api.account_id)
    assert object_exists(app, row["storage_key"])
    at_rest = raw_bytes_on_disk(app, row["storage_key"])
    assert at_rest != data
    assert len(at_rest) > len(data)
    assert data[:64] not in at_rest and data[MIB:MIB + 64] not in at_rest and data[-64:] not in at_rest

    # the password is stored nowhere and sent nowhere
    with database(app) as session:
        task_row = session.scalar(sa.select(UploadTask).where(UploadTask.task_id == task["taskId"]))
        assert password not in json.dumps(task_row.encryption)
    assert password not in json.dumps(row["encryption"])
    assert password not in json.dumps(stored_events(app, api.account_id))

    url = f"/files/{file['id']}/download"
    assert_error(api.get(url), 403, "PASSWORD_REQUIRED")
    assert_error(api.get(url, headers={"X-Encrypt-Password": "not it"}), 403, "WRONG_PASSWORD")
    right = {"X-Encrypt-Password": password}
    plain = api.get(url, headers=right)
    assert plain.status_code == 200
    assert plain.data == data

    # ranges across the 1 MiB segment boundaries decrypt only what is asked for
    for start, end in ((MIB - 50, MIB + 49), (2 * MIB - 1, 2 * MIB), (MIB - 1, 2 * MIB + 10)):
        part = api.get(url, headers=dict(right, Range=f"bytes={start}-{end}"))
        assert part.status_code == 206, part.get_json()
        assert part.headers["Content-Range"] == f"bytes {start}-{end}/{len(data)}"
        assert part.data == data[start:end + 1]
    tail = api.get(url, headers=dict(right, Range="bytes=-100"))
    assert tail.status_code == 206 and tail.data == data[-100:]


def test_dedup_returns_only_unencrypted_files(app, api, worker):
    plain_data = random_bytes(MIB + 500, seed=71)
    plain = api.upload(plain_data, chunk_size=MIB, name="plain.bin")
    assert plain.status_code == 200, plain.get_json()

    again = api.create(plain_data, name="plain-again.bin")
    assert again.status_code == 200
    body = again.get_json()
    assert body["fileExists"] is True
    assert body["file"]["id"] == plain.get_json()["id"]
    assert "taskId" not in body or body["taskId"] is None
    assert api.get("/files/upload/tasks").headers["X-Total"] == "1"

    secret_data = random_bytes(MIB + 600, seed=72)
    secret = api.upload(secret_data, chunk_size=MIB, name="secret.bin", encryptPassword="pw-1")
    assert secret.status_code == 200, secret.get_json()
    assert secret.get_json()["isEncrypted"] is True

    for extra in ({}, {"encryptPassword": "pw-1"}):
        fresh = api.create(secret_data, name="secret-again.bin", **extra)
        assert fresh.status_code == 200
        assert fresh.get_json()["fileExists"] is False, fresh.get_json()
        assert fresh.get_json()["taskId"]
        assert api.delete(f"/files/upload/task/{fresh.get_json()['taskId']}").status_code == 204

    # and an encrypted upload of bytes already stored in plain is not short-cut either
    encrypted_copy = api.create(plain_data, name="plain-encrypted.bin", encryptPassword="pw-2")
    assert encrypted_copy.get_json()["fileExists"] is False


def test_dedup_never_crosses_accounts(app, api, make_api, worker):
    data = random_bytes(1500, seed=73)
    assert api.upload(data).status_code == 200
    other = make_api()
    created = other.create(data)
    assert created.status_code == 200
    assert created.get_json()["fileExists"] is False


# still finalizing ------------------------------------------------------------------------
def test_complete_answers_202_while_finalizing_then_200(app, api, settings, worker):
    from app import create_app  # noqa: PLC0415
    from config import Config  # noqa: PLC0415

    impatient_app = create_app(Config.from_env(settings, TESTING=True, UPLOAD_COMPLETE_WAIT_SECONDS=0))
    impatient = ApiClient(impatient_app.test_client(), api.token, api.account_id)
    try:
        data = random_bytes(3 * MIB + 31, seed=81)
        task = create_task(api, data, chunkSize=MIB)
        send_chunks(api, task, data)

        pending = impatient.complete(task["taskId"])
        assert pending.status_code == 202, pending.get_json()
        assert int(pending.headers["Retry-After"]) > 0
        body = pending.get_json()
        assert body["taskId"] == task["taskId"]
        assert body["status"] == "InProgress"

        # once finalizing has begun the upload can no longer be cancelled
        refused = api.delete(f"/files/upload/task/{task['taskId']}")
        assert refused.status_code == 409
        assert refused.get_json()["code"] in ("UPLOAD_FINALIZING", "UPLOAD_ALREADY_COMPLETED")

        done = api.complete(task["taskId"])
        assert done.status_code == 200, done.get_json()
        file = done.get_json()
        assert file["hash"] == sha256(data)
        assert [r["id"] for r in file_rows(app, api.account_id)] == [file["id"]]
        # the impatient app, asked again, now has the file too
        later = impatient.complete(task["taskId"])
        assert later.status_code == 200 and later.get_json()["id"] == file["id"]
    finally:
        with impatient_app.app_context():
            db.engine.dispose()


def test_complete_restarts_a_finalize_job_whose_worker_died(api, app, redis, worker):
    """A finalize job left 'started' by a worker that no longer exists (SIGKILL) is run again
    by the next complete, and the upload finishes with one file."""
    import sqlalchemy as sa
    from rq.job import Job, JobStatus

    from app.models import CloudFile, UploadTask
    from app.models.types import utcnow
    from jobs.finalize import finalize_upload

    data = random_bytes(MIB + 5)
    task = create_task(api, data, chunkSize=MIB)
    send_chunks(api, task, data)
    with database(app) as session:
        row = session.scalar(sa.select(UploadTask).where(UploadTask.task_id == task["taskId"]))
        row.finalize_requested_at = utcnow()  # as if complete had enqueued the job before the crash
        pk = str(row.id)
        session.commit()
    with app.app_context():
        ghost = Job.create(finalize_upload, args=[pk], id=f"finalize-{task['taskId']}", connection=redis)
        ghost.set_status(JobStatus.STARTED)
        ghost.save()
    done = api.complete(task["taskId"])
    assert done.status_code == 200, done.get_json()
    assert sha256(api.get(f"/files/{done.get_json()['id']}/download").data) == sha256(data)
    with database(app) as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(CloudFile).where(
            CloudFile.account_id == api.account_id)) == 1
