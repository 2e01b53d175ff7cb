"""POST /api/files/upload/create (and /drive/...): the task a client sends chunks to.

Outcomes asserted: the response, the error envelope, the `upload_tasks` row, the account's
quota reservation, and that dedup answers only with the caller's own file.
"""
from __future__ import annotations

import json
import re
import uuid

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import Pool, UploadStatus, UploadTask
from app.services import quotas
from app.services.pools import ensure_default_pool

from tests.support import MIB, assert_error, random_bytes, sha256

CREATE = "/files/upload/create"
HASH = "ab" * 32
CREATED_KEYS = {"fileExists", "taskId", "chunkSize", "chunksCount"}


# helpers -----------------------------------------------------------------------------------
def body(**fields) -> dict:
    """A valid create body for a 12 MiB file; keyword arguments override or add fields."""
    data = {"fileName": "movie.mp4", "fileSize": 12 * MIB, "contentType": "video/mp4", "hash": HASH}
    data.update(fields)
    return data


def task_row(app, task_id: str) -> dict | None:
    with app.app_context():
        task = db.session.scalar(sa.select(UploadTask).where(UploadTask.task_id == task_id))
        if task is None:
            return None
        return {attr.key: getattr(task, attr.key) for attr in sa.inspect(task).mapper.column_attrs}


def task_count(app, account_id) -> int:
    with app.app_context():
        return db.session.scalar(
            sa.select(sa.func.count()).select_from(UploadTask).where(UploadTask.account_id == account_id))


def make_pool(app, **policy) -> uuid.UUID:
    with app.app_context():
        pool = Pool(name=f"test-{uuid.uuid4().hex}", backend="local", config={}, **policy)
        db.session.add(pool)
        db.session.commit()
        return pool.id


def default_pool_id(app) -> uuid.UUID:
    with app.app_context():
        return ensure_default_pool().id


def usage(app, account_id) -> dict:
    with app.app_context():
        return quotas.usage(account_id)


def set_limit(app, account_id, limit: int | None) -> None:
    with app.app_context():
        quotas.set_limit(account_id, limit)


def make_bundle(api) -> str:
    created = api.post("/bundles", json={"name": "holiday"})
    assert created.status_code == 201, created.get_json()
    return created.get_json()["id"]


# happy path --------------------------------------------------------------------------------
def test_create_answers_a_new_task_and_records_it(app, api):
    upper_hash = ("0123456789ABCDEF" * 4)
    response = api.post(CREATE, json=body(fileSize=12 * MIB + 5, hash=upper_hash, contentType="Video/MP4"))

    assert response.status_code == 200, response.get_json()
    created = response.get_json()
    assert set(created) == CREATED_KEYS
    assert created["fileExists"] is False
    assert re.fullmatch(r"[0-9a-f]{32}", created["taskId"])
    assert created["chunkSize"] == 5 * MIB
    assert created["chunksCount"] == 3

    row = task_row(app, created["taskId"])
    assert row is not None
    assert row["account_id"] == api.account_id
    assert row["file_name"] == "movie.mp4"
    assert row["file_size"] == 12 * MIB + 5
    assert row["content_type"] == "video/mp4"
    assert row["hash"] == upper_hash.lower()
    assert row["chunk_size"] == 5 * MIB and row["chunks_count"] == 3
    assert row["chunks_uploaded"] == 0 and row["bytes_uploaded"] == 0
    assert row["status"] == UploadStatus.InProgress
    assert row["pool_id"] == default_pool_id(app)
    assert row["bundle_id"] is None and row["encryption"] is None and row["expired_at"] is None
    assert row["quota_reserved"] == 12 * MIB + 5
    assert row["deleted_at"] is None and row["finalize_requested_at"] is None


def test_each_create_opens_its_own_task(app, api):
    first = api.post(CREATE, json=body())
    second = api.post(CREATE, json=body())
    assert first.status_code == second.status_code == 200
    assert first.get_json()["taskId"] != second.get_json()["taskId"]
    assert task_count(app, api.account_id) == 2


@pytest.mark.parametrize(
    ("file_size", "chunk_size", "expected_chunk", "expected_count"),
    [
        (12 * MIB, None, 5 * MIB, 3),             # the default, 5 MiB
        (5 * MIB, None, 5 * MIB, 1),              # exactly one default chunk
        (5 * MIB + 1, None, 5 * MIB, 2),          # one byte over: a 1-byte last chunk
        (1000, None, 1000, 1),                    # a small file: the chunk is the file
        (1000, MIB, 1000, 1),                     # a requested chunk clamps to the file size
        (1000, 1000, 1000, 1),                    # below 1 MiB is fine when it is the whole file
        (2 * MIB, 8 * MIB, 2 * MIB, 1),           # a requested chunk larger than the file
        (10 * MIB, MIB, MIB, 10),                 # the minimum
        (40 * MIB, 16 * MIB, 16 * MIB, 3),        # the maximum (UPLOAD_MAX_CHUNK_SIZE)
        (3 * MIB, 3 * MIB // 2, 3 * MIB // 2, 2),  # any size in between
    ],
)
def test_chunk_size_default_and_clamping(app, api, file_size, chunk_size, expected_chunk, expected_count):
    fields = {"fileSize": file_size}
    if chunk_size is not None:
        fields["chunkSize"] = chunk_size
    response = api.post(CREATE, json=body(**fields))
    assert response.status_code == 200, response.get_json()
    created = response.get_json()
    assert (created["chunkSize"], created["chunksCount"]) == (expected_chunk, expected_count)
    row = task_row(app, created["taskId"])
    assert (row["chunk_size"], row["chunks_count"]) == (expected_chunk, expected_count)


def test_null_optional_fields_are_accepted(api):
    response = api.post(CREATE, json=body(poolId=None, bundleId=None, chunkSize=None, expiredAt=None,
                                          encryptPassword=None))
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["chunkSize"] == 5 * MIB


def test_create_under_drive_prefix(app, make_api):
    drive = make_api(prefix="/drive")
    response = drive.post(CREATE, json=body(fileSize=3 * MIB, chunkSize=MIB))
    assert response.status_code == 200, response.get_json()
    created = response.get_json()
    assert set(created) == CREATED_KEYS and created["fileExists"] is False
    assert (created["chunkSize"], created["chunksCount"]) == (MIB, 3)
    assert task_row(app, created["taskId"])["account_id"] == drive.account_id
    # the same account sees the task under /api too
    same = make_api(drive.account_id)
    assert same.get(f"/files/upload/progress/{created['taskId']}").status_code == 200


def test_create_with_bundle_and_expiry(app, api):
    bundle_id = make_bundle(api)
    response = api.post(CREATE, json=body(bundleId=bundle_id, expiredAt="2999-01-02T03:04:05+02:00"))
    assert response.status_code == 200, response.get_json()
    row = task_row(app, response.get_json()["taskId"])
    assert str(row["bundle_id"]) == bundle_id
    assert row["expired_at"].isoformat() == "2999-01-02T01:04:05+00:00"


def test_file_name_of_255_utf8_bytes_is_accepted(app, api):
    name = "é" * 127 + "a"  # 255 bytes
    response = api.post(CREATE, json=body(fileName=name))
    assert response.status_code == 200, response.get_json()
    assert task_row(app, response.get_json()["taskId"])["file_name"] == name


def test_create_needs_a_token(client):
    response = client.post("/api" + CREATE, json=body())
    assert_error(response, 401, "UNAUTHORIZED")


# validation --------------------------------------------------------------------------------
def _without(field):
    data = body()
    del data[field]
    return data


BAD_BODIES = [
    # missing required fields
    pytest.param(_without("fileName"), "fileName", id="missing-fileName"),
    pytest.param(_without("fileSize"), "fileSize", id="missing-fileSize"),
    pytest.param(_without("contentType"), "contentType", id="missing-contentType"),
    pytest.param(_without("hash"), "hash", id="missing-hash"),
    pytest.param(body(fileName=None), "fileName", id="null-fileName"),
    pytest.param(body(fileSize=None), "fileSize", id="null-fileSize"),
    # fileName
    pytest.param(body(fileName="a/b.txt"), "fileName", id="name-slash"),
    pytest.param(body(fileName="../etc/passwd"), "fileName", id="name-traversal"),
    pytest.param(body(fileName="a\\b.txt"), "fileName", id="name-backslash"),
    pytest.param(body(fileName="a\x00b.txt"), "fileName", id="name-nul"),
    pytest.param(body(fileName="a\nb.txt"), "fileName", id="name-newline"),
    pytest.param(body(fileName="a\tb.txt"), "fileName", id="name-tab"),
    pytest.param(body(fileName="a\x1bb.txt"), "fileName", id="name-escape"),
    pytest.param(body(fileName="a\x7fb.txt"), "fileName", id="name-del"),
    pytest.param(body(fileName="a\x85b.txt"), "fileName", id="name-c1-next-line"),
    pytest.param(body(fileName="a\x9b31mb.txt"), "fileName", id="name-c1-csi"),
    pytest.param(body(fileName=".."), "fileName", id="name-dotdot"),
    pytest.param(body(fileName="."), "fileName", id="name-dot"),
    pytest.param(body(fileName=""), "fileName", id="name-empty"),
    pytest.param(body(fileName="   "), "fileName", id="name-blank"),
    pytest.param(body(fileName="a" * 256), "fileName", id="name-256-ascii"),
    pytest.param(body(fileName="é" * 128), "fileName", id="name-256-utf8-bytes"),
    pytest.param(body(fileName=123), "fileName", id="name-number"),
    # fileSize
    pytest.param(body(fileSize=0), "fileSize", id="size-zero"),
    pytest.param(body(fileSize=-1), "fileSize", id="size-negative"),
    pytest.param(body(fileSize="1024"), "fileSize", id="size-string"),
    pytest.param(body(fileSize=1024.5), "fileSize", id="size-float"),
    pytest.param(body(fileSize=1024.0), "fileSize", id="size-integral-float"),
    pytest.param(body(fileSize=True), "fileSize", id="size-bool"),
    pytest.param(body(fileSize=2**63), "fileSize", id="size-2**63"),
    pytest.param(body(fileSize=2**70), "fileSize", id="size-2**70"),
    pytest.param(body(fileSize=[1]), "fileSize", id="size-list"),
    # contentType
    pytest.param(body(contentType="video"), "contentType", id="type-no-slash"),
    pytest.param(body(contentType=""), "contentType", id="type-empty"),
    pytest.param(body(contentType="video/"), "contentType", id="type-no-subtype"),
    pytest.param(body(contentType="vi deo/mp4"), "contentType", id="type-space"),
    pytest.param(body(contentType="video/mp4\r\nX-Evil: 1"), "contentType", id="type-header-injection"),
    pytest.param(body(contentType="a/" + "b" * 300), "contentType", id="type-too-long"),
    pytest.param(body(contentType=7), "contentType", id="type-number"),
    # hash
    pytest.param(body(hash="ab" * 31 + "a"), "hash", id="hash-63"),
    pytest.param(body(hash="ab" * 32 + "a"), "hash", id="hash-65"),
    pytest.param(body(hash="zz" * 32), "hash", id="hash-not-hex"),
    pytest.param(body(hash=""), "hash", id="hash-empty"),
    pytest.param(body(hash=" " + "ab" * 32), "hash", id="hash-space"),
    pytest.param(body(hash=12345), "hash", id="hash-number"),
    # ids, chunkSize, password, expiry of the wrong kind
    pytest.param(body(poolId="not-a-uuid"), "poolId", id="pool-not-uuid"),
    pytest.param(body(bundleId=42), "bundleId", id="bundle-number"),
    pytest.param(body(chunkSize=0), "chunkSize", id="chunk-zero"),
    pytest.param(body(chunkSize=-MIB), "chunkSize", id="chunk-negative"),
    pytest.param(body(chunkSize="1048576"), "chunkSize", id="chunk-string"),
    pytest.param(body(chunkSize=1.5 * MIB), "chunkSize", id="chunk-float"),
    pytest.param(body(encryptPassword=""), "encryptPassword", id="password-empty"),
    pytest.param(body(encryptPassword=123), "encryptPassword", id="password-number"),
    pytest.param(body(expiredAt="2999-01-01T00:00:00"), "expiredAt", id="expiry-no-timezone"),
    pytest.param(body(expiredAt="tomorrow"), "expiredAt", id="expiry-not-a-date"),
    pytest.param(body(expiredAt="2000-01-01T00:00:00Z"), "expiredAt", id="expiry-in-the-past"),
    pytest.param(body(expiredAt=1893456000), "expiredAt", id="expiry-number"),
    # fields the contract does not have
    pytest.param(body(unknownField=1), "unknownField", id="unknown-field"),
    pytest.param(body(fileExists=True), "fileExists", id="unknown-fileExists"),
    pytest.param(body(file_name="x.bin"), "file_name", id="unknown-snake-case"),
    pytest.param(body(accountId=str(uuid.uuid4())), "accountId", id="unknown-accountId"),
]


@pytest.mark.parametrize(("data", "field"), BAD_BODIES)
def test_invalid_bodies_are_refused(app, api, data, field):
    response = api.post(CREATE, json=data)
    assert_error(response, 400, "VALIDATION_ERROR", field)
    assert task_count(app, api.account_id) == 0


@pytest.mark.parametrize(
    ("file_size", "chunk_size"),
    [
        pytest.param(10 * MIB, MIB - 1, id="below-1MiB"),
        pytest.param(10 * MIB, 1, id="one-byte"),
        pytest.param(10 * MIB, 16 * MIB + 1, id="above-max"),
        pytest.param(1000, 16 * MIB + 1, id="above-max-for-a-small-file"),
        pytest.param(1000, 999, id="smaller-than-a-small-file"),
        pytest.param(2**40, MIB, id="more-than-a-million-chunks"),
    ],
)
def test_chunk_size_out_of_bounds(app, api, file_size, chunk_size):
    response = api.post(CREATE, json=body(fileSize=file_size, chunkSize=chunk_size))
    error = assert_error(response, 400, "CHUNK_SIZE_INVALID")
    assert error["details"]["chunkSize"] == chunk_size
    if "max" in error["details"]:
        assert error["details"]["max"] == app.config["UPLOAD_MAX_CHUNK_SIZE"]
    assert task_count(app, api.account_id) == 0


def test_body_that_is_not_json(app, api):
    response = api.post(CREATE, data=b"{not json", content_type="application/json")
    assert_error(response, 400, "INVALID_JSON")
    response = api.post(CREATE, data=b"", content_type="application/json")
    assert_error(response, 400, "INVALID_JSON")
    assert task_count(app, api.account_id) == 0


@pytest.mark.parametrize("payload", [[body()], "text", 12, None], ids=["array", "string", "number", "null"])
def test_json_that_is_not_an_object(app, api, payload):
    response = api.post(CREATE, data=json.dumps(payload), content_type="application/json")
    assert_error(response, 400, "INVALID_JSON")
    assert task_count(app, api.account_id) == 0


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_body_with_a_content_type_other_than_json(app, api, content_type):
    """A JSON text sent as something else is not read: 415 (unsupported media type)."""
    kwargs = {"data": json.dumps(body())}
    if content_type:
        kwargs["content_type"] = content_type
    response = api.post(CREATE, **kwargs)
    assert_error(response, 415, "INVALID_JSON")
    assert task_count(app, api.account_id) == 0


# pools and bundles -------------------------------------------------------------------------
def test_unknown_pool_is_404(app, api):
    pool_id = str(uuid.uuid4())
    response = api.post(CREATE, json=body(poolId=pool_id))
    error = assert_error(response, 404, "POOL_NOT_FOUND")
    assert error["details"].get("id", pool_id) == pool_id
    assert task_count(app, api.account_id) == 0


def test_unknown_bundle_is_404(app, api):
    response = api.post(CREATE, json=body(bundleId=str(uuid.uuid4())))
    assert_error(response, 404, "BUNDLE_NOT_FOUND")
    assert task_count(app, api.account_id) == 0


def test_another_accounts_bundle_is_404_like_a_missing_one(app, api, make_api):
    other = make_api()
    bundle_id = make_bundle(other)
    theirs = api.post(CREATE, json=body(bundleId=bundle_id))
    error = assert_error(theirs, 404, "BUNDLE_NOT_FOUND")
    missing_id = str(uuid.uuid4())
    missing = assert_error(api.post(CREATE, json=body(bundleId=missing_id)), 404, "BUNDLE_NOT_FOUND")
    assert error["message"] == missing["message"]
    assert set(error["details"]) == set(missing["details"])
    assert "holiday" not in theirs.get_data(as_text=True)
    assert str(other.account_id) not in theirs.get_data(as_text=True)
    assert task_count(app, api.account_id) == 0


def test_upload_into_a_chosen_pool(app, api):
    pool_id = make_pool(app, default_chunk_size=2 * MIB)
    response = api.post(CREATE, json=body(poolId=str(pool_id), fileSize=5 * MIB))
    assert response.status_code == 200, response.get_json()
    created = response.get_json()
    # the pool's default chunk size applies when the client names none
    assert (created["chunkSize"], created["chunksCount"]) == (2 * MIB, 3)
    assert task_row(app, created["taskId"])["pool_id"] == pool_id


def test_pool_max_file_size(app, api):
    pool_id = make_pool(app, max_file_size=10_000)
    fits = api.post(CREATE, json=body(poolId=str(pool_id), fileSize=10_000))
    assert fits.status_code == 200, fits.get_json()
    too_large = api.post(CREATE, json=body(poolId=str(pool_id), fileSize=10_001))
    error = assert_error(too_large, 413, "FILE_TOO_LARGE")
    assert error["details"]["fileSize"] == 10_001
    assert error["details"]["maxFileSize"] == 10_000
    assert task_count(app, api.account_id) == 1


def test_file_larger_than_the_service_accepts(app, api):
    limit = app.config["UPLOAD_MAX_FILE_SIZE"]
    response = api.post(CREATE, json=body(fileSize=2**63 - 1, chunkSize=16 * MIB))
    error = assert_error(response, 413, "FILE_TOO_LARGE")
    assert error["details"]["maxFileSize"] == limit
    assert task_count(app, api.account_id) == 0


@pytest.mark.parametrize(
    ("content_type", "allowed"),
    [
        ("image/png", True),
        ("IMAGE/JPEG", True),
        ("image/svg+xml", True),
        ("application/pdf", True),
        ("video/mp4", False),
        ("imagex/png", False),
        ("text/plain", False),
    ],
)
def test_pool_accepted_types(app, api, content_type, allowed):
    pool_id = make_pool(app, accepted_types=["image/*", "application/pdf"])
    response = api.post(CREATE, json=body(poolId=str(pool_id), contentType=content_type))
    if allowed:
        assert response.status_code == 200, response.get_json()
        assert task_row(app, response.get_json()["taskId"])["content_type"] == content_type.lower()
    else:
        error = assert_error(response, 400, "CONTENT_TYPE_NOT_ALLOWED")
        assert error["details"]["contentType"] == content_type
        assert task_count(app, api.account_id) == 0


def test_pool_that_refuses_encryption(app, api):
    pool_id = make_pool(app, allow_encryption=False)
    refused = api.post(CREATE, json=body(poolId=str(pool_id), encryptPassword="correct horse"))
    assert_error(refused, 400, "ENCRYPTION_NOT_ALLOWED")
    assert task_count(app, api.account_id) == 0
    plain = api.post(CREATE, json=body(poolId=str(pool_id)))
    assert plain.status_code == 200, plain.get_json()


def test_private_pools(app, api, make_api):
    other = make_api()
    theirs = make_pool(app, account_id=other.account_id)
    mine = make_pool(app, account_id=api.account_id)

    refused = api.post(CREATE, json=body(poolId=str(theirs)))
    error = assert_error(refused, 404, "POOL_NOT_FOUND")
    missing = assert_error(api.post(CREATE, json=body(poolId=str(uuid.uuid4()))), 404, "POOL_NOT_FOUND")
    assert error["message"] == missing["message"]
    assert str(other.account_id) not in refused.get_data(as_text=True)
    assert task_count(app, api.account_id) == 0

    accepted = api.post(CREATE, json=body(poolId=str(mine)))
    assert accepted.status_code == 200, accepted.get_json()
    assert task_row(app, accepted.get_json()["taskId"])["pool_id"] == mine
    assert other.post(CREATE, json=body(poolId=str(theirs))).status_code == 200


# quota -------------------------------------------------------------------------------------
def test_quota_is_reserved_at_create_and_released_on_cancel(app, api):
    set_limit(app, api.account_id, 10_000)

    first = api.post(CREATE, json=body(fileSize=6_000))
    assert first.status_code == 200, first.get_json()
    task_id = first.get_json()["taskId"]
    reserved = usage(app, api.account_id)
    assert reserved["limit"] == 10_000
    assert reserved["used"] == 6_000 and reserved["reserved"] == 6_000 and reserved["files"] == 0

    over = api.post(CREATE, json=body(fileSize=4_001))
    error = assert_error(over, 403, "QUOTA_EXCEEDED")
    assert error["details"]["used"] == 6_000
    assert error["details"]["limit"] == 10_000
    assert error["details"]["requested"] == 4_001
    assert task_count(app, api.account_id) == 1
    assert usage(app, api.account_id)["used"] == 6_000  # a refused create reserves nothing

    exactly = api.post(CREATE, json=body(fileSize=4_000))
    assert exactly.status_code == 200, exactly.get_json()
    assert usage(app, api.account_id)["used"] == 10_000
    assert_error(api.post(CREATE, json=body(fileSize=1)), 403, "QUOTA_EXCEEDED")

    cancelled = api.delete(f"/files/upload/task/{task_id}")
    assert cancelled.status_code == 204
    after = usage(app, api.account_id)
    assert after["used"] == 4_000 and after["reserved"] == 4_000
    assert task_row(app, task_id)["quota_reserved"] == 0

    again = api.post(CREATE, json=body(fileSize=6_000))
    assert again.status_code == 200, again.get_json()
    assert usage(app, api.account_id)["used"] == 10_000


def test_quota_of_one_account_does_not_limit_another(app, api, make_api):
    set_limit(app, api.account_id, 1_000)
    assert_error(api.post(CREATE, json=body(fileSize=1_001)), 403, "QUOTA_EXCEEDED")
    other = make_api()
    assert other.post(CREATE, json=body(fileSize=1_001)).status_code == 200
    assert usage(app, other.account_id)["used"] == 1_001
    assert usage(app, api.account_id)["used"] == 0


# dedup -------------------------------------------------------------------------------------
def test_dedup_answers_only_with_the_callers_own_file(app, api, make_api, worker):
    data = random_bytes(MIB + 17)
    done = api.upload(data, name="report.pdf", content_type="application/pdf")
    assert done.status_code == 200, done.get_json()
    stored = done.get_json()
    assert stored["hash"] == sha256(data)
    tasks_before = task_count(app, api.account_id)
    used_before = usage(app, api.account_id)["used"]

    again = api.create(data, name="copy.pdf", content_type="application/pdf")
    assert again.status_code == 200, again.get_json()
    answer = again.get_json()
    assert answer["fileExists"] is True
    assert "taskId" not in answer
    assert answer["file"]["id"] == stored["id"]
    assert answer["file"]["hash"] == sha256(data) and answer["file"]["size"] == len(data)
    assert answer["file"]["accountId"] == str(api.account_id)
    assert not {"storageKey", "encryption", "config", "storedSize"} & set(answer["file"])
    assert task_count(app, api.account_id) == tasks_before
    assert usage(app, api.account_id)["used"] == used_before

    # the same hash from another account: a task of its own, nothing of the first account
    other = make_api()
    theirs = other.create(data, name="copy.pdf", content_type="application/pdf")
    assert theirs.status_code == 200, theirs.get_json()
    created = theirs.get_json()
    assert set(created) == CREATED_KEYS and created["fileExists"] is False
    text = theirs.get_data(as_text=True)
    assert stored["id"] not in text and str(api.account_id) not in text
    assert task_count(app, other.account_id) == 1
    assert usage(app, other.account_id)["used"] == len(data)

    # with a password the upload is encrypted, so an existing plain file is not reused
    encrypted = api.create(data, encryptPassword="s3cret password")
    assert encrypted.status_code == 200, encrypted.get_json()
    assert encrypted.get_json()["fileExists"] is False
    assert task_count(app, api.account_id) == tasks_before + 1


# secrets -----------------------------------------------------------------------------------
def test_encrypt_password_is_never_stored_or_echoed(app, api, redis):
    password = "Tr0ub4dor&3-" + uuid.uuid4().hex
    response = api.post(CREATE, json=body(encryptPassword=password))
    assert response.status_code == 200, response.get_json()
    assert set(response.get_json()) == CREATED_KEYS
    assert password not in response.get_data(as_text=True)
    task_id = response.get_json()["taskId"]

    row = task_row(app, task_id)
    assert row["encryption"], "the task keeps the public parameters of its encryption"
    assert not any("password" in key.lower() for key in row["encryption"])
    with app.app_context():
        raw = db.session.execute(sa.text("SELECT * FROM upload_tasks WHERE task_id = :t"), {"t": task_id}).one()
    assert all(password not in str(value) for value in raw)
    assert password not in repr(row)

    cached = redis.get(f"drive:task-meta:{task_id}")
    assert cached is None or password.encode() not in cached
    for path in (f"/files/upload/progress/{task_id}", f"/files/upload/resume/{task_id}",
                 f"/files/upload/tasks/{task_id}/details", "/files/upload/tasks"):
        shown = api.get(path)
        assert shown.status_code == 200, (path, shown.get_json())
        assert password not in shown.get_data(as_text=True)
