"""Hash-ahead (app/services/file_hash.py): the whole file's SHA-256 advanced by the web
process as chunks are stored, in index order whatever order they arrive in; finalize takes
it up only for exactly the chunks it covers, and still checks the declared hash."""
from __future__ import annotations

import hashlib
import random
import uuid
from concurrent.futures import ThreadPoolExecutor

import sqlalchemy as sa

from app import resumable_sha256
from app.models import UploadStatus, UploadTask
from app.services import file_hash
from tests.support import MIB, EventListener, create_task, database, random_bytes, send_chunks, sha256

def task_pk(app, task_id: str) -> uuid.UUID:
    with database(app) as session:
        return session.scalar(sa.select(UploadTask.id).where(UploadTask.task_id == task_id))


def saved(app, redis, task_id: str) -> tuple[int, str | None]:
    """(chunks covered, hex digest of exactly those bytes) of the saved state; (0, None) if none."""
    state = redis.hgetall(file_hash._key(task_pk(app, task_id)))
    if not state:
        return 0, None
    return int(state[b"next"]), resumable_sha256.ResumableSha256(state[b"state"]).hexdigest()


def prefix_sha(data: bytes, chunks: int, chunk_size: int = MIB) -> str:
    return hashlib.sha256(data[:chunks * chunk_size]).hexdigest()


def test_in_order_chunks_are_hashed_as_they_arrive(app, api, redis, worker):
    data = random_bytes(4 * MIB + 99, seed=31)
    task = create_task(api, data, chunkSize=MIB)
    for index in range(task["chunksCount"]):
        send_chunks(api, task, data, [index])
        assert saved(app, redis, task["taskId"]) == (index + 1, prefix_sha(data, index + 1))
    assert saved(app, redis, task["taskId"])[1] == sha256(data)

    done = api.complete(task["taskId"])
    assert done.status_code == 200, done.get_json()
    assert done.get_json()["hash"] == sha256(data)
    assert redis.exists(file_hash._key(task_pk(app, task["taskId"]))) == 0  # forgotten once stored


def test_a_gap_waits_and_the_chunk_that_fills_it_hashes_what_follows(app, api, redis, worker):
    data = random_bytes(6 * MIB, seed=32)
    task = create_task(api, data, chunkSize=MIB)
    send_chunks(api, task, data, [2, 3, 5])
    assert saved(app, redis, task["taskId"]) == (0, None)
    send_chunks(api, task, data, [0])
    assert saved(app, redis, task["taskId"]) == (1, prefix_sha(data, 1))
    send_chunks(api, task, data, [1])
    assert saved(app, redis, task["taskId"]) == (4, prefix_sha(data, 4))
    send_chunks(api, task, data, [4])
    assert saved(app, redis, task["taskId"]) == (6, sha256(data))
    assert api.complete(task["taskId"]).get_json()["hash"] == sha256(data)


def test_one_request_hashes_at_most_its_budget(app, api, redis, worker, monkeypatch):
    monkeypatch.setattr(file_hash, "HASH_AHEAD_MAX_BYTES", 2 * MIB)
    data = random_bytes(7 * MIB, seed=33)
    task = create_task(api, data, chunkSize=MIB)
    send_chunks(api, task, data, [1, 2, 3, 4, 5, 6])
    send_chunks(api, task, data, [0])
    assert saved(app, redis, task["taskId"]) == (2, prefix_sha(data, 2))
    # finalize hashes the rest itself
    done = api.complete(task["taskId"])
    assert done.status_code == 200 and done.get_json()["hash"] == sha256(data)


def test_shuffled_upload_completes_with_the_declared_hash(app, api, redis, worker):
    data = random_bytes(9 * MIB + 5, seed=34)
    task = create_task(api, data, chunkSize=MIB)
    order = list(range(task["chunksCount"]))
    random.Random(9).shuffle(order)
    send_chunks(api, task, data, order)
    assert saved(app, redis, task["taskId"]) == (10, sha256(data))
    assert api.complete(task["taskId"]).get_json()["hash"] == sha256(data)


def test_a_state_that_does_not_name_these_chunks_is_not_used(app, api, redis, worker):
    """A state whose fingerprint is not that of the task's chunk rows (another upload's, or
    left from chunks since removed) is ignored: finalize hashes from the start."""
    data = random_bytes(3 * MIB, seed=35)
    task = create_task(api, data, chunkSize=MIB)
    send_chunks(api, task, data)
    other = resumable_sha256.ResumableSha256()
    other.update(b"x" * MIB)
    key = file_hash._key(task_pk(app, task["taskId"]))
    redis.hset(key, mapping={"next": 1, "state": other.state(), "fingerprint": "0" * 64})

    done = api.complete(task["taskId"])
    assert done.status_code == 200, done.get_json()
    assert done.get_json()["hash"] == sha256(data)


def test_a_wrong_state_for_the_right_chunks_still_fails_the_hash_check(app, api, redis, worker):
    """finalize trusts the state only as far as its arithmetic: the result is still compared
    with the declared SHA-256, so a corrupted state makes the upload fail, never publish."""
    data = random_bytes(3 * MIB, seed=36)
    task = create_task(api, data, chunkSize=MIB)
    send_chunks(api, task, data)
    key = file_hash._key(task_pk(app, task["taskId"]))
    assert int(redis.hget(key, "next")) == 3
    wrong = resumable_sha256.ResumableSha256()
    wrong.update(data[:3 * MIB - 1] + b"!")
    redis.hset(key, "state", wrong.state())
    listener = EventListener(redis, api.account_id)
    try:
        done = api.complete(task["taskId"])
        assert done.status_code == 400 and done.get_json()["code"] == "UPLOAD_FAILED", done.get_json()
        assert "SHA-256 mismatch" in listener.until("upload.failed")[-1]["data"]["errorMessage"]
    finally:
        listener.close()
    with database(app) as session:
        row = session.scalar(sa.select(UploadTask).where(UploadTask.task_id == task["taskId"]))
        assert row.status == UploadStatus.Failed and row.file_id is None


def test_switched_off_nothing_is_saved_and_finalize_hashes_everything(app, api, redis, worker, monkeypatch):
    monkeypatch.setitem(app.config, "UPLOAD_HASH_AHEAD", False)
    data = random_bytes(2 * MIB + 1, seed=37)
    task = create_task(api, data, chunkSize=MIB)
    send_chunks(api, task, data)
    assert saved(app, redis, task["taskId"]) == (0, None)
    assert api.complete(task["taskId"]).get_json()["hash"] == sha256(data)


def test_parallel_chunks_through_gunicorn_leave_a_state_true_to_its_prefix(app, redis, live_client):
    """8 threads, chunks in shuffled order, over 3 gunicorn processes: whatever the lock and
    the compare-and-set let through, the saved state is the hash of exactly the chunks it
    says it covers (in practice all of them), and the file completes."""
    data = random_bytes(24 * MIB + 3, seed=38)
    task = live_client.create(data, chunkSize=MIB)
    count = task["chunksCount"]
    order = list(range(count))
    random.Random(38).shuffle(order)
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(
            lambda i: live_client.send_raw(task["taskId"], i, data[i * MIB:(i + 1) * MIB]).status_code, order))
    assert statuses == [200] * count
    covered, digest = saved(app, redis, task["taskId"])
    assert 1 <= covered <= count and digest == prefix_sha(data, covered), (covered, count)
    assert live_client.complete(task["taskId"])["hash"] == sha256(data)

