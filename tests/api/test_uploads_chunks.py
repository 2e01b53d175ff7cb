"""POST /api/files/upload/chunk/{taskId}/{index}: receiving one chunk.

Outcomes asserted: the response or error envelope, the `upload_chunks` row, the stored object's
bytes (read back through the pool's backend) and their SHA-256, that a refused chunk leaves no
row and no file (not even a temporary one) under STORAGE_UPLOADS_PATH/uploads/<taskId>/, and
the upload.progress events received from Redis.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from datetime import timedelta
from io import BytesIO

import pytest
import sqlalchemy as sa

from app.events import keys_for
from app.extensions import db
from app.models import Pool, UploadChunk, UploadStatus, UploadTask
from app.models.types import utcnow
from app.storage import backend_for

from tests.support import MIB, ApiClient, EventListener, assert_error, random_bytes, sha256

RECEIPT_KEYS = {"taskId", "chunkIndex", "size", "sha256", "chunksUploaded", "chunksCount", "progress"}
PROGRESS_KEYS = {"taskId", "fileName", "fileSize", "chunksUploaded", "chunksTotal", "progress", "status",
                 "lastActivity"}


# helpers -----------------------------------------------------------------------------------
def new_task(api, size: int, chunk_size: int = MIB, name: str = "file.bin") -> tuple[str, bytes]:
    """Create a task for `size` random bytes; (taskId, the bytes)."""
    data = random_bytes(size)
    created = api.create(data, name=name, chunkSize=chunk_size)
    assert created.status_code == 200, created.get_json()
    assert created.get_json()["chunkSize"] == min(chunk_size, size)
    return created.get_json()["taskId"], data


def piece(data: bytes, index: int, chunk_size: int = MIB) -> bytes:
    return data[index * chunk_size:(index + 1) * chunk_size]


def chunk_url(task_id, index) -> str:
    return f"/files/upload/chunk/{task_id}/{index}"


def form_body(payload: bytes, name: str = "chunk", boundary: str = "drive-test-boundary-7f3a") -> tuple[bytes, str]:
    """A multipart/form-data body with one file part; (body, content type)."""
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="blob"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    return head + payload + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def send(api, task_id, index, payload: bytes, multipart: bool = False, headers=None):
    """Send a chunk raw, or as the multipart field `chunk` (built by `form_body`)."""
    if not multipart:
        return api.send_chunk(task_id, index, payload, headers=headers)
    body, content_type = form_body(payload)
    return api.post(chunk_url(task_id, index), data=body, content_type=content_type, headers=headers)


def task_row(app, task_id: str) -> dict:
    with app.app_context():
        task = db.session.scalar(sa.select(UploadTask).where(UploadTask.task_id == task_id))
        return {attr.key: getattr(task, attr.key) for attr in sa.inspect(task).mapper.column_attrs}


def update_task(app, task_id: str, **values) -> None:
    with app.app_context():
        db.session.execute(sa.update(UploadTask).where(UploadTask.task_id == task_id).values(**values))
        db.session.commit()


def stored_chunks(app, task_id: str) -> dict[int, dict]:
    """{index: row fields + the stored object's bytes}, read through the pool's backend."""
    with app.app_context():
        task = db.session.scalar(sa.select(UploadTask).where(UploadTask.task_id == task_id))
        backend = backend_for(db.session.get(Pool, task.pool_id))
        out = {}
        for row in db.session.scalars(sa.select(UploadChunk).where(UploadChunk.task_id == task.id)):
            with backend.open_read(row.storage_key) as handle:
                content = handle.read()
            out[row.chunk_index] = {"size": row.size, "sha256": row.sha256, "key": row.storage_key,
                                    "bytes": content}
        return out


def files_on_disk(app, task_id: str) -> list[str]:
    """Every file (temporary ones included) under STORAGE_UPLOADS_PATH/uploads/<taskId>/."""
    folder = os.path.join(app.config["STORAGE_UPLOADS_PATH"], "uploads", task_id)
    found = []
    for root, _, names in os.walk(folder):
        found += [os.path.relpath(os.path.join(root, name), folder) for name in names]
    return sorted(found)


def assert_nothing_stored(app, task_id: str) -> None:
    assert stored_chunks(app, task_id) == {}
    assert files_on_disk(app, task_id) == []
    row = task_row(app, task_id)
    assert row["chunks_uploaded"] == 0 and row["bytes_uploaded"] == 0


def subscribe(redis, account_id) -> EventListener:
    """An EventListener whose subscription the server already counts (so no event is missed)."""
    listener = EventListener(redis, account_id)
    channel = keys_for(account_id)[2]
    deadline = time.monotonic() + 10
    while redis.pubsub_numsub(channel)[0][1] < 1:
        assert time.monotonic() < deadline, "the subscription was not registered"
    return listener


# storing chunks ----------------------------------------------------------------------------
def test_raw_chunk_is_stored(app, api):
    task_id, data = new_task(api, 2 * MIB + MIB // 2)
    before = task_row(app, task_id)["last_activity"]
    payload = piece(data, 0)

    response = send(api, task_id, 0, payload)

    assert response.status_code == 200, response.get_json()
    receipt = response.get_json()
    assert set(receipt) == RECEIPT_KEYS
    assert receipt == {"taskId": task_id, "chunkIndex": 0, "size": MIB, "sha256": sha256(payload),
                       "chunksUploaded": 1, "chunksCount": 3, "progress": 33.33}
    chunks = stored_chunks(app, task_id)
    assert list(chunks) == [0]
    assert chunks[0]["size"] == MIB and chunks[0]["sha256"] == sha256(payload)
    assert chunks[0]["bytes"] == payload
    assert len(files_on_disk(app, task_id)) == 1
    row = task_row(app, task_id)
    assert row["chunks_uploaded"] == 1 and row["bytes_uploaded"] == MIB
    assert row["last_activity"] >= before


def test_multipart_chunk_is_stored(app, api):
    task_id, data = new_task(api, 2 * MIB + MIB // 2)
    payload = piece(data, 1)

    response = send(api, task_id, 1, payload, multipart=True)

    assert response.status_code == 200, response.get_json()
    receipt = response.get_json()
    assert set(receipt) == RECEIPT_KEYS
    assert (receipt["chunkIndex"], receipt["size"], receipt["sha256"]) == (1, MIB, sha256(payload))
    assert (receipt["chunksUploaded"], receipt["chunksCount"]) == (1, 3)
    chunks = stored_chunks(app, task_id)
    assert list(chunks) == [1]
    assert chunks[1]["bytes"] == payload and chunks[1]["sha256"] == sha256(payload)
    assert files_on_disk(app, task_id) == [os.path.basename(chunks[1]["key"])]


@pytest.mark.parametrize(
    "boundary",
    ["----WebKitFormBoundary7MA4YWxkTrZu0gW", "AaB03x", "drive-test-boundary-7f3a", "0123456789"],
    ids=["chrome-formdata", "rfc7578-example", "lower-case", "digits"],
)
def test_multipart_boundary_is_used_as_sent(app, api, boundary):
    """Boundaries are case-sensitive (RFC 2046 5.1.1) and browsers send mixed-case ones: the
    seed's client posts FormData, which Chrome delimits with '----WebKitFormBoundary<mixed case>'."""
    task_id, data = new_task(api, 1500)
    body, content_type = form_body(data, boundary=boundary)
    response = api.post(chunk_url(task_id, 0), data=body, content_type=content_type)
    assert response.status_code == 200, response.get_json()
    assert stored_chunks(app, task_id)[0]["bytes"] == data


def test_multipart_as_the_test_client_encodes_it(app, api):
    """ApiClient.send_chunk(multipart=True): werkzeug's encoder, a quoted mixed-case boundary."""
    task_id, data = new_task(api, MIB + 10)
    for index in range(2):
        response = api.send_chunk(task_id, index, piece(data, index), multipart=True)
        assert response.status_code == 200, response.get_json()
        assert response.get_json()["sha256"] == sha256(piece(data, index))
    chunks = stored_chunks(app, task_id)
    assert chunks[0]["bytes"] + chunks[1]["bytes"] == data


def test_hand_built_multipart_with_other_fields(app, api):
    """The `chunk` part is found among other parts, whatever their order."""
    task_id, data = new_task(api, 1500)
    boundary = "xyz-boundary"
    other = (f'--{boundary}\r\nContent-Disposition: form-data; name="note"\r\n\r\nhello\r\n').encode()
    chunk_part, content_type = form_body(data, boundary=boundary)
    response = api.post(chunk_url(task_id, 0), data=other + chunk_part, content_type=content_type)
    assert response.status_code == 200, response.get_json()
    assert stored_chunks(app, task_id)[0]["bytes"] == data


def test_all_chunks_in_any_order_and_either_encoding(app, api):
    size = 4 * MIB + 12_345
    task_id, data = new_task(api, size)
    order = [4, 1, 3, 0, 2]
    receipts = []
    for sent, index in enumerate(order, start=1):
        response = send(api, task_id, index, piece(data, index), multipart=index % 2 == 1)
        assert response.status_code == 200, response.get_json()
        receipts.append(response.get_json())
        assert receipts[-1]["chunksUploaded"] == sent
    assert receipts[0]["size"] == 12_345  # the last chunk is the short one
    assert receipts[-1]["progress"] == 100.0 and receipts[-1]["chunksCount"] == 5

    chunks = stored_chunks(app, task_id)
    assert sorted(chunks) == [0, 1, 2, 3, 4]
    joined = b"".join(chunks[i]["bytes"] for i in range(5))
    assert joined == data and hashlib.sha256(joined).hexdigest() == sha256(data)
    assert all(chunks[i]["sha256"] == sha256(piece(data, i)) for i in range(5))
    assert len(files_on_disk(app, task_id)) == 5
    assert not any(name.startswith(".") for name in files_on_disk(app, task_id))
    row = task_row(app, task_id)
    assert row["chunks_uploaded"] == 5 and row["bytes_uploaded"] == size


def test_single_chunk_small_file(app, api):
    task_id, data = new_task(api, 1)
    response = send(api, task_id, 0, data)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["progress"] == 100.0
    assert stored_chunks(app, task_id)[0]["bytes"] == data


def test_chunk_under_drive_prefix(app, make_api):
    drive = make_api(prefix="/drive")
    task_id, data = new_task(drive, MIB + 10)
    assert send(drive, task_id, 0, piece(data, 0)).status_code == 200
    assert send(drive, task_id, 1, piece(data, 1), multipart=True).status_code == 200
    chunks = stored_chunks(app, task_id)
    assert chunks[0]["bytes"] + chunks[1]["bytes"] == data


def test_chunk_needs_a_token(app, api, client):
    task_id, data = new_task(api, 1000)
    response = client.post("/api" + chunk_url(task_id, 0), data=data, content_type="application/octet-stream")
    assert_error(response, 401, "UNAUTHORIZED")
    assert_nothing_stored(app, task_id)


# sizes -------------------------------------------------------------------------------------
@pytest.mark.parametrize("multipart_body", [False, True], ids=["raw", "multipart"])
@pytest.mark.parametrize(
    ("index", "length"),
    [
        pytest.param(0, MIB - 1, id="short"),
        pytest.param(0, MIB + 1, id="long"),
        pytest.param(0, 0, id="empty"),
        pytest.param(2, MIB, id="last-sent-full-size"),
        pytest.param(2, 999, id="last-short"),
        pytest.param(2, 1001, id="last-long"),
    ],
)
def test_wrong_size_is_refused_and_nothing_is_stored(app, api, multipart_body, index, length):
    task_id, _ = new_task(api, 2 * MIB + 1000)
    payload = random_bytes(length)

    response = send(api, task_id, index, payload, multipart=multipart_body)

    error = assert_error(response, 400, "CHUNK_SIZE_MISMATCH")
    expected = MIB if index < 2 else 1000
    assert error["details"]["chunkIndex"] == index
    assert error["details"]["expectedSize"] == expected
    if length < expected or not multipart_body:
        assert error["details"]["receivedSize"] == length
    else:  # a stream is stopped as soon as it is too long
        assert error["details"]["receivedSize"] > expected
    assert_nothing_stored(app, task_id)


def test_raw_body_cut_short_by_the_client(app, api):
    """Content-Length promises a whole chunk but the connection ends early."""
    task_id, data = new_task(api, 2 * MIB)
    headers = api.headers({"Content-Length": str(MIB), "Content-Type": "application/octet-stream"})
    response = api.client.post("/api" + chunk_url(task_id, 0), input_stream=BytesIO(piece(data, 0)[:1000]),
                               headers=headers)
    error = assert_error(response, 400, "CHUNK_SIZE_MISMATCH")
    assert error["details"]["receivedSize"] == 1000
    assert_nothing_stored(app, task_id)


@pytest.mark.parametrize("multipart_body", [False, True], ids=["raw", "multipart"])
@pytest.mark.parametrize("chunk_size", [16 * MIB, MIB], ids=["task-at-max", "task-1MiB"])
def test_chunk_larger_than_the_maximum_is_413(app, api, multipart_body, chunk_size):
    maximum = app.config["UPLOAD_MAX_CHUNK_SIZE"]
    assert maximum == 16 * MIB
    created = api.post("/files/upload/create", json={
        "fileName": "big.bin", "fileSize": 40 * MIB, "contentType": "application/octet-stream",
        "hash": "cd" * 32, "chunkSize": chunk_size})
    assert created.status_code == 200, created.get_json()
    task_id = created.get_json()["taskId"]

    response = send(api, task_id, 0, b"\x01" * (maximum + 1), multipart=multipart_body)

    if multipart_body and chunk_size < maximum:
        # a multipart stream has no length up front; it is stopped as soon as it passes the chunk size
        error = assert_error(response, 400, "CHUNK_SIZE_MISMATCH")
    else:
        error = assert_error(response, 413, "CHUNK_TOO_LARGE")
        assert error["details"]["maxChunkSize"] == maximum
    assert error["details"]["expectedSize"] == chunk_size
    assert_nothing_stored(app, task_id)


# checksums ---------------------------------------------------------------------------------
@pytest.mark.parametrize("multipart_body", [False, True], ids=["raw", "multipart"])
def test_checksum_header_is_checked(app, api, multipart_body):
    task_id, data = new_task(api, 2 * MIB + 10)

    good = send(api, task_id, 0, piece(data, 0), multipart=multipart_body,
                          headers={"X-Chunk-SHA256": sha256(piece(data, 0))})
    assert good.status_code == 200, good.get_json()
    upper = send(api, task_id, 2, piece(data, 2), multipart=multipart_body,
                           headers={"X-Chunk-SHA256": sha256(piece(data, 2)).upper()})
    assert upper.status_code == 200, upper.get_json()

    wrong = send(api, task_id, 1, piece(data, 1), multipart=multipart_body,
                           headers={"X-Chunk-SHA256": sha256(piece(data, 0))})
    error = assert_error(wrong, 400, "CHUNK_CHECKSUM_MISMATCH")
    assert error["details"]["chunkIndex"] == 1
    assert error["details"]["expected"] == sha256(piece(data, 0))
    assert error["details"]["actual"] == sha256(piece(data, 1))
    garbage = send(api, task_id, 1, piece(data, 1), multipart=multipart_body,
                             headers={"X-Chunk-SHA256": "not-a-digest"})
    assert "not-a-digest" not in str(assert_error(garbage, 400, "CHUNK_CHECKSUM_INVALID"))

    chunks = stored_chunks(app, task_id)
    assert sorted(chunks) == [0, 2]
    assert len(files_on_disk(app, task_id)) == 2
    assert task_row(app, task_id)["chunks_uploaded"] == 2

    # a refused chunk does not block the right one
    retry = send(api, task_id, 1, piece(data, 1), multipart=multipart_body,
                           headers={"X-Chunk-SHA256": sha256(piece(data, 1))})
    assert retry.status_code == 200, retry.get_json()
    chunks = stored_chunks(app, task_id)
    assert b"".join(chunks[i]["bytes"] for i in range(3)) == data


def test_corrupted_chunk_is_caught_by_the_checksum(app, api):
    """The bytes that arrive differ from what the client hashed (a flipped bit on the way)."""
    task_id, data = new_task(api, MIB)
    corrupted = bytearray(data)
    corrupted[MIB // 2] ^= 0x01
    response = send(api, task_id, 0, bytes(corrupted), headers={"X-Chunk-SHA256": sha256(data)})
    assert_error(response, 400, "CHUNK_CHECKSUM_MISMATCH")
    assert_nothing_stored(app, task_id)


# indices -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw_index", "code"),
    [
        ("3", "CHUNK_INDEX_OUT_OF_RANGE"),
        ("4", "CHUNK_INDEX_OUT_OF_RANGE"),
        ("-1", "CHUNK_INDEX_OUT_OF_RANGE"),
        ("99999999999999999999999999", "CHUNK_INDEX_OUT_OF_RANGE"),
        ("abc", "CHUNK_INDEX_INVALID"),
        ("1.0", "CHUNK_INDEX_INVALID"),
        ("1e0", "CHUNK_INDEX_INVALID"),
        ("0x1", "CHUNK_INDEX_INVALID"),
        ("one", "CHUNK_INDEX_INVALID"),
    ],
)
def test_bad_chunk_index(app, api, raw_index, code):
    task_id, data = new_task(api, 2 * MIB + 10)
    response = send(api, task_id, raw_index, piece(data, 0))
    error = assert_error(response, 400, code)
    if code == "CHUNK_INDEX_OUT_OF_RANGE":
        assert error["details"]["chunksCount"] == 3
    assert_nothing_stored(app, task_id)


@pytest.mark.parametrize("raw_index", ["+1", "0_1", "%201", "\u0661", "\uff11"],
                         ids=["plus", "underscore", "space", "arabic-indic-1", "fullwidth-1"])
def test_chunk_index_is_plain_decimal_digits(app, api, raw_index):
    """One chunk has one URL: the index is ASCII digits in canonical form, not anything int() takes."""
    task_id, data = new_task(api, 2 * MIB + 10)
    response = send(api, task_id, raw_index, piece(data, 1))
    assert_error(response, 400, "CHUNK_INDEX_INVALID")
    assert_nothing_stored(app, task_id)


# repeats -----------------------------------------------------------------------------------
def test_a_stored_chunk_is_never_overwritten(app, api):
    task_id, data = new_task(api, 2 * MIB + 10)
    original = piece(data, 0)
    assert send(api, task_id, 0, original).status_code == 200
    stored_before = stored_chunks(app, task_id)
    files_before = files_on_disk(app, task_id)

    attempts = [
        send(api, task_id, 0, original),                           # the same bytes again
        send(api, task_id, 0, random_bytes(MIB)),                  # other bytes, right size
        send(api, task_id, 0, random_bytes(MIB), multipart=True),  # other bytes, multipart
        send(api, task_id, 0, b"short"),                           # a wrong size
    ]
    for response in attempts:
        error = assert_error(response, 409, "CHUNK_ALREADY_UPLOADED")
        assert error["details"]["chunkIndex"] == 0
        assert error["details"]["size"] == MIB
        assert error["details"]["sha256"] == sha256(original)

    assert stored_chunks(app, task_id) == stored_before
    assert stored_chunks(app, task_id)[0]["bytes"] == original
    assert files_on_disk(app, task_id) == files_before
    row = task_row(app, task_id)
    assert row["chunks_uploaded"] == 1 and row["bytes_uploaded"] == MIB


def test_same_chunk_sent_concurrently_is_stored_once(app, api):
    task_id, _ = new_task(api, 3 * MIB)
    copies = [random_bytes(MIB) for _ in range(6)]
    barrier = threading.Barrier(len(copies))
    results: list = [None] * len(copies)

    def push(slot):
        own = ApiClient(app.test_client(), api.token, api.account_id)
        barrier.wait()
        response = send(own, task_id, 1, copies[slot])
        results[slot] = (response.status_code, response.get_json())

    threads = [threading.Thread(target=push, args=(slot,)) for slot in range(len(copies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    statuses = sorted(status for status, _ in results)
    assert statuses == [200] + [409] * (len(copies) - 1), results
    winner = next(slot for slot, (status, _) in enumerate(results) if status == 200)
    for status, payload in results:
        if status == 409:
            assert payload["code"] == "CHUNK_ALREADY_UPLOADED"
            assert payload["details"]["sha256"] == sha256(copies[winner])
    chunks = stored_chunks(app, task_id)
    assert list(chunks) == [1] and chunks[1]["bytes"] == copies[winner]
    assert files_on_disk(app, task_id) == [os.path.basename(chunks[1]["key"])]
    assert task_row(app, task_id)["chunks_uploaded"] == 1


def test_different_chunks_sent_concurrently_are_all_recorded(app, api):
    count = 8
    task_id, data = new_task(api, count * MIB - 7)
    barrier = threading.Barrier(count)
    statuses: list = [None] * count

    def push(index):
        own = ApiClient(app.test_client(), api.token, api.account_id)
        barrier.wait()
        statuses[index] = send(own, task_id, index, piece(data, index), multipart=index % 2 == 0).status_code

    threads = [threading.Thread(target=push, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert statuses == [200] * count
    chunks = stored_chunks(app, task_id)
    assert b"".join(chunks[i]["bytes"] for i in range(count)) == data
    row = task_row(app, task_id)
    assert row["chunks_uploaded"] == count and row["bytes_uploaded"] == len(data)


# malformed bodies --------------------------------------------------------------------------
def test_multipart_without_a_chunk_field(app, api):
    task_id, data = new_task(api, 2 * MIB)
    for name in ("file", "chunks", "Chunk"):
        body, content_type = form_body(piece(data, 0), name=name)
        response = api.post(chunk_url(task_id, 0), data=body, content_type=content_type)
        assert_error(response, 400, "CHUNK_MISSING")
    assert_nothing_stored(app, task_id)


def test_multipart_without_a_boundary(app, api):
    task_id, data = new_task(api, 2 * MIB)
    body, _ = form_body(piece(data, 0))
    response = api.post(chunk_url(task_id, 0), data=body, content_type="multipart/form-data")
    assert_error(response, 400, "INVALID_MULTIPART")
    assert_nothing_stored(app, task_id)


@pytest.mark.parametrize(
    ("cut", "code"),
    [
        pytest.param("no-closing-boundary", "INCOMPLETE_BODY", id="no-closing-boundary"),
        pytest.param("half-the-payload", "INCOMPLETE_BODY", id="half-the-payload"),
        pytest.param("in-the-closing-boundary", "INCOMPLETE_BODY", id="in-the-closing-boundary"),
        pytest.param("in-the-part-headers", "CHUNK_MISSING", id="in-the-part-headers"),
    ],
)
def test_truncated_multipart_stores_nothing(app, api, cut, code):
    task_id, data = new_task(api, 2 * MIB)
    payload = piece(data, 0)
    body, content_type = form_body(payload)
    head_length = len(body) - len(payload) - len(b"\r\n--drive-test-boundary-7f3a--\r\n")
    ends = {
        "no-closing-boundary": head_length + len(payload),
        "half-the-payload": head_length + len(payload) // 2,
        "in-the-closing-boundary": head_length + len(payload) + 8,
        "in-the-part-headers": head_length // 2,
    }
    response = api.post(chunk_url(task_id, 0), data=body[:ends[cut]], content_type=content_type)
    assert_error(response, 400, code)
    assert_nothing_stored(app, task_id)


@pytest.mark.parametrize("content_type", ["text/plain", "application/json", "image/png",
                                          "application/x-www-form-urlencoded"])
def test_unsupported_content_type_is_415(app, api, content_type):
    task_id, data = new_task(api, 2 * MIB)
    response = api.post(chunk_url(task_id, 0), data=piece(data, 0), content_type=content_type)
    assert_error(response, 415, "UNSUPPORTED_CHUNK_ENCODING")
    assert_nothing_stored(app, task_id)


def test_unsupported_content_type_is_415_whatever_the_size(app, api):
    """The encoding is judged before the length: a text/plain body of the wrong size is a 415."""
    task_id, _ = new_task(api, 2 * MIB)
    response = api.post(chunk_url(task_id, 0), data=b"hello", content_type="text/plain")
    assert_error(response, 415, "UNSUPPORTED_CHUNK_ENCODING")
    assert_nothing_stored(app, task_id)


# tasks that cannot take the chunk ----------------------------------------------------------
def test_unknown_task_is_404(app, api):
    for task_id in ["0" * 32, "no-such-task", "x" * 200]:
        response = send(api, task_id, 0, b"data")
        error = assert_error(response, 404, "UPLOAD_NOT_FOUND")
        assert error["details"].get("taskId", task_id[:100]) == task_id[:100]
    assert not os.path.exists(os.path.join(app.config["STORAGE_UPLOADS_PATH"], "uploads", "0" * 32))


def test_another_accounts_task_is_404_and_untouched(app, api, make_api):
    task_id, data = new_task(api, 2 * MIB)
    intruder = make_api()
    for multipart_body in (False, True):
        response = send(intruder, task_id, 0, piece(data, 0), multipart=multipart_body)
        error = assert_error(response, 404, "UPLOAD_NOT_FOUND")
        missing = assert_error(send(intruder, "f" * 32, 0, piece(data, 0)), 404, "UPLOAD_NOT_FOUND")
        assert error["message"] == missing["message"]
        assert str(api.account_id) not in response.get_data(as_text=True)
    assert_nothing_stored(app, task_id)
    assert send(api, task_id, 0, piece(data, 0)).status_code == 200


@pytest.mark.parametrize("change", ["expired_at", "last_activity", "status"])
def test_expired_task_is_410(app, api, change):
    task_id, data = new_task(api, 2 * MIB)
    now = utcnow()
    stale = timedelta(hours=app.config["UPLOAD_STALE_THRESHOLD_HOURS"], minutes=1)
    values = {
        "expired_at": {"expired_at": now - timedelta(seconds=1)},
        "last_activity": {"last_activity": now - stale},
        "status": {"status": UploadStatus.Expired},
    }[change]
    update_task(app, task_id, **values)
    response = send(api, task_id, 0, piece(data, 0))
    error = assert_error(response, 410, "UPLOAD_EXPIRED")
    assert error["details"]["taskId"] == task_id
    assert_nothing_stored(app, task_id)


def test_task_still_fresh_is_not_expired(app, api):
    """The stale threshold is a bound, not a hair-trigger: activity an hour ago is fine."""
    task_id, data = new_task(api, 2 * MIB)
    update_task(app, task_id, last_activity=utcnow() - timedelta(hours=1),
                expired_at=utcnow() + timedelta(minutes=5))
    assert send(api, task_id, 0, piece(data, 0)).status_code == 200


def test_chunk_after_complete_was_requested_is_409(app, api):
    task_id, data = new_task(api, 2 * MIB)
    assert send(api, task_id, 0, piece(data, 0)).status_code == 200
    update_task(app, task_id, finalize_requested_at=utcnow())
    response = send(api, task_id, 1, piece(data, 1))
    assert_error(response, 409, "UPLOAD_FINALIZING")
    assert sorted(stored_chunks(app, task_id)) == [0]
    assert len(files_on_disk(app, task_id)) == 1
    assert task_row(app, task_id)["chunks_uploaded"] == 1


def test_chunk_to_a_failed_task_is_409(app, api):
    task_id, data = new_task(api, 2 * MIB)
    update_task(app, task_id, status=UploadStatus.Failed, error_message="hash mismatch")
    response = send(api, task_id, 0, piece(data, 0))
    error = assert_error(response, 409, "UPLOAD_NOT_IN_PROGRESS")
    assert error["details"]["status"] == "Failed"
    assert_nothing_stored(app, task_id)


def test_chunk_after_the_upload_completed_is_409(app, api, worker):
    task_id, data = new_task(api, MIB + 100)
    for index in range(2):
        assert send(api, task_id, index, piece(data, index)).status_code == 200
    done = api.complete(task_id)
    assert done.status_code == 200, done.get_json()
    assert done.get_json()["hash"] == sha256(data)

    for index in range(2):
        response = send(api, task_id, index, piece(data, index))
        assert response.status_code == 409, response.get_json()
        assert response.get_json()["code"] in {"UPLOAD_NOT_IN_PROGRESS", "CHUNK_ALREADY_UPLOADED"}
    row = task_row(app, task_id)
    assert row["status"] == UploadStatus.Completed and row["chunks_uploaded"] == 2


def test_chunk_to_a_cancelled_task_is_404(app, api):
    task_id, data = new_task(api, 2 * MIB)
    assert send(api, task_id, 0, piece(data, 0)).status_code == 200
    assert len(files_on_disk(app, task_id)) == 1
    assert api.delete(f"/files/upload/task/{task_id}").status_code == 204
    assert files_on_disk(app, task_id) == []

    response = send(api, task_id, 1, piece(data, 1))
    assert_error(response, 404, "UPLOAD_NOT_FOUND")
    assert files_on_disk(app, task_id) == []
    row = task_row(app, task_id)
    assert row["status"] == UploadStatus.Cancelled and row["chunks_uploaded"] == 1


# progress events ---------------------------------------------------------------------------
def test_progress_events_on_first_last_and_every_5_percent(app, api, redis):
    total = 40
    base = bytearray(random_bytes(MIB))
    chunks = []
    for index in range(total):
        base[0] = index
        chunks.append(bytes(base))
    file_hash = hashlib.sha256(b"".join(chunks)).hexdigest()
    created = api.post("/files/upload/create", json={
        "fileName": "forty.bin", "fileSize": total * MIB, "contentType": "application/octet-stream",
        "hash": file_hash, "chunkSize": MIB})
    assert created.status_code == 200, created.get_json()
    task_id = created.get_json()["taskId"]
    assert created.get_json()["chunksCount"] == total

    listener = subscribe(redis, api.account_id)
    try:
        for index in range(total):
            response = send(api, task_id, index, chunks[index], multipart=index % 3 == 0)
            assert response.status_code == 200, response.get_json()
        # a marker after the last request: everything published before it has arrived by then
        redis.publish(keys_for(api.account_id)[2], json.dumps({"type": "test.marker"}))
        packets = []
        while True:
            packet = listener.next(timeout=10)
            assert packet is not None, f"the marker did not arrive; got {packets}"
            if packet["type"] == "test.marker":
                break
            packets.append(packet)
    finally:
        listener.close()

    assert {packet["type"] for packet in packets} == {"upload.progress"}
    expected_counts = [1] + list(range(2, total + 1, 2))  # the first chunk, then every 5 % (2 chunks)
    assert [packet["data"]["chunksUploaded"] for packet in packets] == expected_counts
    ids = [packet["id"] for packet in packets]
    assert all(isinstance(i, int) for i in ids) and ids == sorted(set(ids))
    for packet in packets:
        data = packet["data"]
        assert set(data) == PROGRESS_KEYS
        assert data["taskId"] == task_id and data["fileName"] == "forty.bin"
        assert data["fileSize"] == total * MIB and data["chunksTotal"] == total
        assert data["progress"] == pytest.approx(100.0 * data["chunksUploaded"] / total)
        assert data["status"] == "InProgress"
        assert isinstance(data["lastActivity"], str) and data["lastActivity"].endswith("Z")
    assert packets[-1]["data"]["progress"] == 100.0
    assert packets[0]["data"]["progress"] == 2.5

    stored = stored_chunks(app, task_id)
    assert len(stored) == total
    assert hashlib.sha256(b"".join(stored[i]["bytes"] for i in range(total))).hexdigest() == file_hash


def test_refused_chunks_send_no_progress_event(app, api, redis):
    task_id, data = new_task(api, 2 * MIB)
    listener = subscribe(redis, api.account_id)
    try:
        assert send(api, task_id, 0, b"short").status_code == 400
        assert send(api, task_id, 0, piece(data, 0), headers={"X-Chunk-SHA256": "0" * 64}).status_code == 400
        assert send(api, task_id, 0, piece(data, 0)).status_code == 200
        assert send(api, task_id, 0, piece(data, 0)).status_code == 409
        redis.publish(keys_for(api.account_id)[2], json.dumps({"type": "test.marker"}))
        packets = listener.until("test.marker", timeout=10)
    finally:
        listener.close()
    progress = [p for p in packets if p["type"] == "upload.progress"]
    assert [p["data"]["chunksUploaded"] for p in progress] == [1]
    assert len(packets) == 2
