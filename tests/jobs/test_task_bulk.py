"""BulkOperation with a real worker: delete (confirm required, quota released), move to a
bundle, setExpiry; a result per item, another account's id failing alone."""
from __future__ import annotations

import uuid

import pytest

from app.models import CloudFile
from tests.support import generic_task_count, EventListener, assert_error, database, quota_usage, random_bytes


def stored_file(api, data: bytes, name: str) -> str:
    done = api.upload(data, name=name)
    assert done.status_code == 200, done.get_json()
    return done.get_json()["id"]


def run_task(api, redis, body: dict) -> dict:
    listener = EventListener(redis, api.account_id)
    created = api.post("/tasks", json=body)
    assert created.status_code == 201, created.get_json()
    task_id = created.get_json()["taskId"]
    while True:
        packet = listener.next(60)
        assert packet is not None, f"no end for {task_id}"
        if packet["data"].get("taskId") == task_id and packet["type"] in ("task.completed", "task.failed"):
            break
    listener.close()
    return api.get(f"/tasks/{task_id}").get_json()


def bulk(operation, ids, **options) -> dict:
    return {"type": "BulkOperation", "parameters": {"operationType": operation, "targetIds": ids,
                                                    "operationParameters": options}}


def files_of(api, count=3) -> list[str]:
    return [stored_file(api, random_bytes(1000 + n), f"f{n}.bin") for n in range(count)]


@pytest.mark.parametrize("options", [{}, {"confirm": False}, {"confirm": "yes"}])
def test_delete_needs_confirm(api, worker, options):
    ids = files_of(api, 1)
    response = api.post("/tasks", json=bulk("delete", ids, **options))
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["code"] in ("CONFIRMATION_REQUIRED", "VALIDATION_ERROR")
    assert generic_task_count(api) == 0
    assert api.get(f"/files/{ids[0]}").status_code == 200


def test_delete_with_confirm_and_a_foreign_id(api, make_api, app, redis, worker):
    other = make_api()
    theirs = stored_file(other, b"not yours" * 100, "t.bin")
    ids = files_of(api, 3)
    used = quota_usage(app, api.account_id)["used"]
    missing = str(uuid.uuid4())
    task = run_task(api, redis, bulk("delete", [ids[0], theirs, ids[1], missing, ids[2]], confirm=True))
    assert task["status"] == "Completed", task
    results = task["results"]
    assert results["items"] == [
        {"id": ids[0], "ok": True}, {"id": theirs, "ok": False, "error": "FILE_NOT_FOUND"},
        {"id": ids[1], "ok": True}, {"id": missing, "ok": False, "error": "FILE_NOT_FOUND"},
        {"id": ids[2], "ok": True}]
    assert (results["succeeded"], results["failed"]) == (3, 2)
    for file_id in ids:
        assert_error(api.get(f"/files/{file_id}"), 404, "FILE_NOT_FOUND")
    assert other.get(f"/files/{theirs}").status_code == 200  # the other account's file is untouched
    assert quota_usage(app, api.account_id)["used"] == used - sum(1000 + n for n in range(3))


def test_delete_older_than_days_skips_recent_files(api, redis, worker):
    ids = files_of(api, 2)
    task = run_task(api, redis, bulk("delete", ids, confirm=True, olderThanDays=1))
    assert task["results"]["items"] == [{"id": i, "ok": False, "error": "NOT_OLD_ENOUGH"} for i in ids]
    assert (task["results"]["succeeded"], task["results"]["skipped"], task["results"]["failed"]) == (0, 2, 0)
    assert all(api.get(f"/files/{i}").status_code == 200 for i in ids)


def test_move_to_a_bundle_and_out_again(api, make_api, app, redis, worker):
    bundle = api.post("/bundles", json={"name": "album"})
    assert bundle.status_code == 201, bundle.get_json()
    bundle_id = bundle.get_json()["id"]
    ids = files_of(api, 2)
    task = run_task(api, redis, bulk("move", ids + [str(uuid.uuid4())], targetBundleId=bundle_id))
    assert (task["results"]["succeeded"], task["results"]["failed"]) == (2, 1)
    assert [api.get(f"/files/{i}").get_json()["bundleId"] for i in ids] == [bundle_id] * 2
    task = run_task(api, redis, bulk("move", ids, targetBundleId=None))
    assert task["results"]["succeeded"] == 2
    assert [api.get(f"/files/{i}").get_json()["bundleId"] for i in ids] == [None, None]
    theirs = make_api().post("/bundles", json={"name": "theirs"}).get_json()["id"]
    assert_error(api.post("/tasks", json=bulk("move", ids, targetBundleId=theirs)), 404, "BUNDLE_NOT_FOUND")
    assert_error(api.post("/tasks", json=bulk("move", ids)), 400, "VALIDATION_ERROR")


def test_set_expiry_and_clear_it(api, app, redis, worker):
    ids = files_of(api, 2)
    task = run_task(api, redis, bulk("setExpiry", ids, expiredAt="2031-05-06T07:08:09+02:00"))
    assert task["results"]["succeeded"] == 2, task
    assert [api.get(f"/files/{i}").get_json()["expiredAt"] for i in ids] == ["2031-05-06T05:08:09Z"] * 2
    task = run_task(api, redis, bulk("setExpiry", ids[:1], expiredAt=None))
    assert task["results"]["succeeded"] == 1
    assert [api.get(f"/files/{i}").get_json()["expiredAt"] for i in ids] == [None, "2031-05-06T05:08:09Z"]
    with database(app) as session:
        assert session.get(CloudFile, uuid.UUID(ids[0])).expired_at is None


@pytest.mark.parametrize("parameters", [
    {"operationType": "explode", "targetIds": [str(uuid.uuid4())]},
    {"operationType": "delete", "targetIds": [], "operationParameters": {"confirm": True}},
    {"operationType": "delete", "targetIds": ["nope"], "operationParameters": {"confirm": True}},
    {"operationType": "delete", "targetIds": [str(uuid.uuid4())] * 10_001, "operationParameters": {"confirm": True}},
    {"operationType": "setExpiry", "targetIds": [str(uuid.uuid4())],
     "operationParameters": {"expiredAt": "2031-01-01T00:00:00"}},
    {"operationType": "delete", "targetIds": [str(uuid.uuid4())],
     "operationParameters": {"confirm": True, "surprise": 1}},
])
def test_invalid_parameters_are_400(api, parameters):
    assert_error(api.post("/tasks", json={"type": "BulkOperation", "parameters": parameters}), 400,
                 "VALIDATION_ERROR")
