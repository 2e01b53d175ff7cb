"""FileMove with a real worker: bytes copied between pools verified by SHA-256, the old
objects removed, bundle-only moves, validation and tenancy."""
import os
import uuid

import pytest

from app.extensions import db
from app.models import Bundle, CloudFile, Pool
from app.storage import backend_for
from tests.api.test_tasks import run_task, stored_file
from tests.support import generic_task_count, MIB, assert_error, random_bytes, sha256

PASSWORD = "move me, keep me secret"


def make_pool(app, root, **policy) -> str:
    with app.app_context():
        pool = Pool(name=f"pool-{uuid.uuid4().hex[:10]}", backend="local", config={"root": str(root)}, **policy)
        db.session.add(pool)
        db.session.commit()
        return str(pool.id)


def make_bundle(app, account_id) -> str:
    with app.app_context():
        bundle = Bundle(account_id=account_id, name="b-" + uuid.uuid4().hex[:6])
        db.session.add(bundle)
        db.session.commit()
        return str(bundle.id)


def objects_under(root) -> list[str]:
    found = []
    for folder, _, names in os.walk(root):
        found += [os.path.relpath(os.path.join(folder, n), root) for n in names]
    return sorted(found)


def file_row(app, file_id) -> dict:
    with app.app_context():
        file = db.session.get(CloudFile, uuid.UUID(file_id))
        pool = db.session.get(Pool, file.pool_id)
        return {"pool_id": str(file.pool_id), "key": file.storage_key,
                "bundle_id": file.bundle_id and str(file.bundle_id),
                "exists": backend_for(pool).exists(file.storage_key), "encryption": file.encryption}


def object_exists(app, pool_id, key) -> bool:
    with app.app_context():
        return backend_for(db.session.get(Pool, uuid.UUID(pool_id))).exists(key)


def test_move_across_pools_keeps_every_byte(api, app, redis, worker, tmp_path):
    plain, small = random_bytes(2 * MIB + 12345), b"tiny file"
    secret = random_bytes(MIB + 7)
    ids = [stored_file(api, plain, "big.bin"), stored_file(api, small, "tiny.txt")]
    done = api.upload(secret, name="secret.bin", encryptPassword=PASSWORD)
    assert done.status_code == 200, done.get_json()
    ids.append(done.get_json()["id"])
    before = {i: file_row(app, i) for i in ids}
    target_root = tmp_path / "target"
    target = make_pool(app, target_root)
    bundle = make_bundle(app, api.account_id)

    task, packets = run_task(api, redis, {"type": "FileMove", "parameters": {
        "fileIds": ids, "targetPoolId": target, "targetBundleId": bundle}})

    assert task["status"] == "Completed", task
    results = task["results"]
    assert results["filesProcessed"] == 3 and sorted(results["movedFileIds"]) == sorted(ids)
    with app.app_context():
        stored = sum(db.session.get(CloudFile, uuid.UUID(i)).stored_size for i in ids)
    assert results["bytesCopied"] == stored
    assert packets[-1]["type"] == "task.completed"
    for file_id, data in zip(ids, (plain, small)):
        assert sha256(api.get(f"/files/{file_id}/download").data) == sha256(data)
    download = api.get(f"/files/{ids[2]}/download", headers={"X-Encrypt-Password": PASSWORD})
    assert download.status_code == 200 and sha256(download.data) == sha256(secret)
    for file_id in ids:
        after = file_row(app, file_id)
        assert after["pool_id"] == target and after["bundle_id"] == bundle and after["exists"]
        assert not object_exists(app, before[file_id]["pool_id"], before[file_id]["key"])  # old object gone
        assert after["encryption"] == before[file_id]["encryption"]
        shown = api.get(f"/files/{file_id}").get_json()
        assert shown["poolId"] == target and shown["bundleId"] == bundle
    assert objects_under(target_root) == sorted(file_row(app, i)["key"] for i in ids)  # nothing else left


def test_a_bundle_only_move_changes_only_the_row(api, app, redis, worker):
    data = random_bytes(100_000)
    file_id = stored_file(api, data, "b.bin")
    before = file_row(app, file_id)
    bundle = make_bundle(app, api.account_id)
    task, _ = run_task(api, redis, {"type": "FileMove", "parameters": {"fileIds": [file_id], "targetBundleId": bundle}})
    assert task["status"] == "Completed", task
    assert task["results"] == {"filesProcessed": 1, "movedFileIds": [], "bytesCopied": 0}
    after = file_row(app, file_id)
    assert after["bundle_id"] == bundle and (after["pool_id"], after["key"]) == (before["pool_id"], before["key"])
    assert sha256(api.get(f"/files/{file_id}/download").data) == sha256(data)


def test_moving_to_the_pool_it_is_in_copies_nothing(api, app, redis, worker, tmp_path):
    data = b"stay" * 1000
    file_id = stored_file(api, data, "s.bin")
    before = file_row(app, file_id)
    task, _ = run_task(api, redis, {"type": "FileMove", "parameters": {"fileIds": [file_id],
                                                                        "targetPoolId": before["pool_id"]}})
    assert task["status"] == "Completed" and task["results"]["bytesCopied"] == 0, task
    assert file_row(app, file_id)["key"] == before["key"]


@pytest.mark.parametrize("parameters, status, code", [
    ({}, 400, "VALIDATION_ERROR"),
    ({"fileIds": []}, 400, "VALIDATION_ERROR"),
    ({"fileIds": ["FILE"]}, 400, "VALIDATION_ERROR"),  # no target
    ({"fileIds": ["FILE"], "targetPoolId": "nope"}, 400, "VALIDATION_ERROR"),
    ({"fileIds": ["FILE"], "targetPoolId": str(uuid.uuid4())}, 404, "POOL_NOT_FOUND"),
    ({"fileIds": ["FILE"], "targetPoolId": "PRIVATE"}, 404, "POOL_NOT_FOUND"),
    ({"fileIds": ["FILE"], "targetBundleId": str(uuid.uuid4())}, 404, "BUNDLE_NOT_FOUND"),
    ({"fileIds": ["FILE"], "targetBundleId": "THEIR_BUNDLE"}, 404, "BUNDLE_NOT_FOUND"),
    ({"fileIds": [str(uuid.uuid4())], "targetBundleId": "BUNDLE"}, 404, "FILE_NOT_FOUND"),
    ({"fileIds": ["THEIR_FILE"], "targetBundleId": "BUNDLE"}, 404, "FILE_NOT_FOUND"),
    ({"fileIds": ["FILE"], "targetPoolId": "SMALL"}, 413, "FILE_TOO_LARGE"),
])
def test_invalid_moves_are_refused_before_anything_is_queued(api, make_api, app, worker, tmp_path,
                                                             parameters, status, code):
    other = make_api()
    names = {
        "FILE": stored_file(api, b"mine" * 100, "m.txt"),
        "THEIR_FILE": stored_file(other, b"theirs" * 100, "t.txt"),
        "PRIVATE": make_pool(app, tmp_path / "private", account_id=other.account_id),
        "SMALL": make_pool(app, tmp_path / "small", max_file_size=10),
        "BUNDLE": make_bundle(app, api.account_id),
        "THEIR_BUNDLE": make_bundle(app, other.account_id),
    }

    def fill(value):
        if isinstance(value, list):
            return [fill(v) for v in value]
        return names.get(value, value)

    body = {key: fill(value) for key, value in parameters.items()}
    assert_error(api.post("/tasks", json={"type": "FileMove", "parameters": body}), status, code)
    assert generic_task_count(api) == 0


def test_an_encrypted_file_does_not_go_to_a_pool_refusing_encryption(api, app, worker, tmp_path):
    done = api.upload(random_bytes(1000), name="e.bin", encryptPassword=PASSWORD)
    file_id = done.get_json()["id"]
    plain_only = make_pool(app, tmp_path / "plain", allow_encryption=False)
    response = api.post("/tasks", json={"type": "FileMove", "parameters": {"fileIds": [file_id],
                                                                             "targetPoolId": plain_only}})
    assert_error(response, 400, "ENCRYPTION_NOT_ALLOWED")
