"""The task routes of /files/upload: listing, recent, progress, resume, details, stats,
cancel and cleanup. Each test works in fresh accounts, so the numbers are exact."""
from __future__ import annotations

import os
import uuid
from datetime import datetime

import pytest
import sqlalchemy as sa


from tests.support import MIB, ApiClient, assert_error, create_task, database, quota_usage, random_bytes, send_chunks, sha256

TASK_FIELDS = {
    "taskId", "fileName", "fileSize", "contentType", "chunkSize", "chunksCount", "chunksUploaded",
    "bytesUploaded", "progress", "status", "poolId", "bundleId", "hash", "isEncrypted", "fileId",
    "errorMessage", "expiredAt", "lastActivity", "createdAt", "updatedAt",
}
PROGRESS_FIELDS = {"taskId", "fileName", "fileSize", "chunksUploaded", "chunksTotal", "bytesUploaded",
                   "progress", "status", "lastActivity"}


# helpers ---------------------------------------------------------------------------------
def stored_objects(app, prefix: str) -> set[str]:
    root = app.config["STORAGE_UPLOADS_PATH"]
    found = set()
    for folder, _, names in os.walk(os.path.join(root, prefix)):
        for name in names:
            found.add(os.path.relpath(os.path.join(folder, name), root))
    return found


def stored_events(app, account_id) -> list[dict]:
    from app.events import read_events  # noqa: PLC0415

    with app.app_context():
        return read_events(account_id)


def utc(value: str) -> datetime:
    assert isinstance(value, str) and value.endswith("Z"), value
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def completed_task(api, data: bytes, **fields) -> tuple[str, dict]:
    task = create_task(api, data, **fields)
    send_chunks(api, task, data)
    done = api.complete(task["taskId"])
    assert done.status_code == 200, done.get_json()
    return task["taskId"], done.get_json()


def failed_task(api, data: bytes, **fields) -> str:
    """A task whose declared hash is not its bytes' one: the worker fails it."""
    task = create_task(api, data, hash=sha256(data + b"?"), **fields)
    send_chunks(api, task, data)
    assert_error(api.complete(task["taskId"]), 400, "UPLOAD_FAILED")
    return task["taskId"]


def expire(app, task_id: str) -> None:
    """Expire an open task the way the cleanup job does."""
    from app.models import UploadTask  # noqa: PLC0415
    from app.services.cleanup import expire_task  # noqa: PLC0415

    with database(app) as session:
        task = session.scalar(sa.select(UploadTask).where(UploadTask.task_id == task_id))
        assert expire_task(task)


def new_account(app) -> ApiClient:
    """An ApiClient for a new account, for fixtures shared by a module's read-only tests."""
    from app.auth import issue_token  # noqa: PLC0415

    account_id = uuid.uuid4()
    return ApiClient(app.test_client(), issue_token(account_id, app=app), account_id)


def listed(api, **query) -> tuple[list[str], dict]:
    response = api.get("/files/upload/tasks", query_string=query)
    assert response.status_code == 200, response.get_json()
    return [t["taskId"] for t in response.get_json()], response


# GET /files/upload/tasks -----------------------------------------------------------------
@pytest.fixture(scope="module")
def mixed(app, worker):
    """(client, {status: task ids}): one fresh account with tasks of every status; the tests
    that use it only read."""
    api = new_account(app)
    running = create_task(api, random_bytes(2 * MIB, seed=1), name="running.bin", chunkSize=MIB)
    send_chunks(api, running, random_bytes(2 * MIB, seed=1), [1])
    idle = create_task(api, random_bytes(700, seed=2), name="idle.bin")
    done, _ = completed_task(api, random_bytes(900, seed=3), name="done.bin")
    bad = failed_task(api, random_bytes(800, seed=4), name="bad.bin")
    old = create_task(api, random_bytes(600, seed=5), name="old.bin")["taskId"]
    expire(app, old)
    return api, {"InProgress": {running["taskId"], idle["taskId"]}, "Completed": {done}, "Failed": {bad},
                 "Expired": {old}}


def test_list_shows_every_task_of_the_account(make_api, mixed):
    api, mixed_tasks = mixed
    stranger = make_api()
    create_task(stranger, random_bytes(100, seed=9))

    ids, response = listed(api)
    everything = set().union(*mixed_tasks.values())
    assert set(ids) == everything and len(ids) == len(everything)
    assert response.headers["X-Total"] == str(len(everything))
    for task in response.get_json():
        assert set(task) == TASK_FIELDS, sorted(task)
        assert "encryption" not in task
        for name in ("lastActivity", "createdAt", "updatedAt"):
            utc(task[name])
    statuses = {t["taskId"]: t["status"] for t in response.get_json()}
    for status, members in mixed_tasks.items():
        assert {statuses[m] for m in members} == {status}


@pytest.mark.parametrize("status, expected", [
    ("InProgress", ["InProgress"]),
    ("Completed", ["Completed"]),
    ("Failed", ["Failed"]),
    ("Expired", ["Expired"]),
    ("Failed,Expired", ["Failed", "Expired"]),
    ("Completed, InProgress", ["Completed", "InProgress"]),
    ("InProgress,Completed,Failed,Expired", ["InProgress", "Completed", "Failed", "Expired"]),
    ("Cancelled", []),
])
def test_list_filters_by_status(mixed, status, expected):
    api, mixed_tasks = mixed
    ids, response = listed(api, status=status)
    wanted = set().union(*(mixed_tasks[s] for s in expected)) if expected else set()
    assert set(ids) == wanted and len(ids) == len(wanted)
    assert response.headers["X-Total"] == str(len(wanted))
    assert {t["status"] for t in response.get_json()} == set(expected)


@pytest.mark.parametrize("query", [
    {"status": "Bogus"},
    {"status": "inprogress"},
    {"status": "InProgress,Nope"},
    {"status": "InProgress,"},
    {"sortBy": "name"},
    {"sortBy": "fileName"},
    {"sortBy": "size; DROP TABLE upload_tasks"},
    {"sortDescending": "maybe"},
    {"offset": "-1"},
    {"offset": "x"},
    {"limit": "0"},
    {"limit": "201"},
    {"limit": "ten"},
])
def test_list_rejects_bad_queries(api, query):
    body = assert_error(api.get("/files/upload/tasks", query_string=query), 400, "VALIDATION_ERROR")
    assert body["details"]["fields"]


@pytest.fixture(scope="module")
def sortable(app):
    """(client, {name: task id}): four tasks in a fresh account whose orders by name, size,
    creation, update and activity all differ; the tests that use it only read.

    created: bravo, delta, alpha, charlie; then delta gets its chunk (latest activity), then
    charlie expires (latest update, but no activity)."""
    api = new_account(app)
    specs = [("bravo.txt", 3000), ("delta.txt", 1000), ("alpha.txt", 2000), ("charlie.txt", 4000)]
    tasks = {}
    for name, size in specs:
        data = random_bytes(size, seed=size)
        tasks[name] = (create_task(api, data, name=name), data)
    send_chunks(api, *tasks["delta.txt"])
    expire(app, tasks["charlie.txt"][0]["taskId"])
    return api, {name: task["taskId"] for name, (task, _) in tasks.items()}


@pytest.mark.parametrize("sort_by, ascending", [
    ("filename", ["alpha.txt", "bravo.txt", "charlie.txt", "delta.txt"]),
    ("filesize", ["delta.txt", "alpha.txt", "bravo.txt", "charlie.txt"]),
    ("createdAt", ["bravo.txt", "delta.txt", "alpha.txt", "charlie.txt"]),
    ("updatedAt", ["bravo.txt", "alpha.txt", "delta.txt", "charlie.txt"]),
    ("lastActivity", ["bravo.txt", "alpha.txt", "charlie.txt", "delta.txt"]),
])
def test_list_sorts_by_each_allowed_field(sortable, sort_by, ascending):
    api, four_tasks = sortable
    names = {task_id: name for name, task_id in four_tasks.items()}
    up, _ = listed(api, sortBy=sort_by, sortDescending="false")
    assert [names[i] for i in up] == ascending
    down, _ = listed(api, sortBy=sort_by, sortDescending="true")
    assert [names[i] for i in down] == ascending[::-1]
    default_direction, _ = listed(api, sortBy=sort_by)
    assert default_direction == down


def test_list_default_order_is_latest_activity_first(sortable):
    api, four_tasks = sortable
    ids, _ = listed(api)
    assert ids[0] == four_tasks["delta.txt"]
    assert ids == listed(api, sortBy="lastActivity", sortDescending="true")[0]


def test_list_pages_with_offset_and_limit(sortable):
    api, four_tasks = sortable
    everything, _ = listed(api, sortBy="createdAt", sortDescending="false")
    pages = []
    for offset in (0, 1, 2, 3, 4, 9):
        ids, response = listed(api, sortBy="createdAt", sortDescending="false", offset=offset, limit=2)
        assert response.headers["X-Total"] == "4"
        assert ids == everything[offset:offset + 2]
        pages.append(ids)
    assert pages[0] + pages[2] == everything
    assert pages[-1] == []
    ids, _ = listed(api, status="InProgress", sortBy="createdAt", sortDescending="false", limit=1)
    assert ids == [four_tasks["bravo.txt"]]


# GET /files/upload/tasks/recent ----------------------------------------------------------
def test_recent_returns_latest_activity_first(make_api, sortable):
    api, four_tasks = sortable
    response = api.get("/files/upload/tasks/recent", query_string={"limit": 2})
    assert response.status_code == 200
    assert [t["taskId"] for t in response.get_json()] == [four_tasks["delta.txt"], four_tasks["charlie.txt"]]
    everything = api.get("/files/upload/tasks/recent").get_json()
    assert [t["taskId"] for t in everything] == listed(api, sortBy="lastActivity")[0]
    assert set(everything[0]) == TASK_FIELDS
    assert make_api().get("/files/upload/tasks/recent").get_json() == []
    for bad in ("0", "101", "x"):
        assert_error(api.get("/files/upload/tasks/recent", query_string={"limit": bad}), 400, "VALIDATION_ERROR")


# GET /files/upload/progress/{id} ---------------------------------------------------------
def test_progress_of_a_task(api, make_api):
    data = random_bytes(4 * MIB, seed=31)
    task = create_task(api, data, name="half.bin", chunkSize=MIB)
    url = f"/files/upload/progress/{task['taskId']}"
    start = api.get(url).get_json()
    assert set(start) == PROGRESS_FIELDS
    assert (start["chunksUploaded"], start["bytesUploaded"], start["progress"]) == (0, 0, 0.0)

    send_chunks(api, task, data, [3, 1])
    progress = api.get(url)
    assert progress.status_code == 200
    body = progress.get_json()
    assert body["taskId"] == task["taskId"] and body["fileName"] == "half.bin"
    assert body["fileSize"] == len(data)
    assert body["chunksUploaded"] == 2 and body["chunksTotal"] == 4
    assert body["bytesUploaded"] == 2 * MIB
    assert body["progress"] == 50.0
    assert body["status"] == "InProgress"
    assert utc(body["lastActivity"]) >= utc(start["lastActivity"])

    assert_error(api.get("/files/upload/progress/nope"), 404, "UPLOAD_NOT_FOUND")
    assert_error(make_api().get(url), 404, "UPLOAD_NOT_FOUND")


# GET /files/upload/resume/{id} -----------------------------------------------------------
def test_resume_lists_sorted_chunks_and_urls_under_the_prefix_asked(app, api, make_api, worker):
    data = random_bytes(4 * MIB + 10, seed=41)
    task = create_task(api, data, chunkSize=MIB)
    task_id, size = task["taskId"], task["chunkSize"]
    send_chunks(api, task, data, [3, 0, 2])

    resume = api.get(f"/files/upload/resume/{task_id}")
    assert resume.status_code == 200
    body = resume.get_json()
    assert set(body) == TASK_FIELDS | {"uploadedChunks", "missingChunks", "chunkUrlTemplate", "completeUrl"}
    assert body["uploadedChunks"] == [0, 2, 3]
    assert body["missingChunks"] == [1, 4]
    assert body["chunksCount"] == 5 and body["chunksUploaded"] == 3
    assert body["chunkUrlTemplate"] == f"/api/files/upload/chunk/{task_id}/{{chunkIndex}}"
    assert body["completeUrl"] == f"/api/files/upload/complete/{task_id}"

    gateway = make_api(api.account_id, prefix="/drive")
    via_drive = gateway.get(f"/files/upload/resume/{task_id}").get_json()
    assert via_drive["chunkUrlTemplate"] == f"/drive/files/upload/chunk/{task_id}/{{chunkIndex}}"
    assert via_drive["completeUrl"] == f"/drive/files/upload/complete/{task_id}"
    assert via_drive["uploadedChunks"] == body["uploadedChunks"]

    # the URLs given work as they are
    for index, template in ((1, body["chunkUrlTemplate"]), (4, via_drive["chunkUrlTemplate"])):
        sent = api.client.post(template.replace("{chunkIndex}", str(index)), headers=api.headers(),
                               data=data[index * size:(index + 1) * size], content_type="application/octet-stream")
        assert sent.status_code == 200, sent.get_json()
    after = api.get(f"/files/upload/resume/{task_id}").get_json()
    assert after["uploadedChunks"] == [0, 1, 2, 3, 4] and after["missingChunks"] == []
    done = api.client.post(via_drive["completeUrl"], headers=api.headers())
    assert done.status_code == 200, done.get_json()
    assert done.get_json()["hash"] == sha256(data)

    assert_error(make_api().get(f"/files/upload/resume/{task_id}"), 404, "UPLOAD_NOT_FOUND")


# GET /files/upload/tasks/{id}/details ----------------------------------------------------
def test_details_show_pool_bundle_speed_and_time_left(app, api, make_api, worker):
    bundle = api.post("/bundles", json={"name": "Holiday", "description": "pictures"})
    assert bundle.status_code == 201, bundle.get_json()
    bundle = bundle.get_json()
    data = random_bytes(4 * MIB, seed=51)
    task = create_task(api, data, chunkSize=MIB, bundleId=bundle["id"])
    url = f"/files/upload/tasks/{task['taskId']}/details"

    before = api.get(url)
    assert before.status_code == 200
    body = before.get_json()
    assert body["taskId"] == task["taskId"]
    assert body["pool"]["id"] == body["poolId"]
    assert body["pool"]["name"] == "default"
    assert "config" not in body["pool"]
    assert body["bundle"]["id"] == bundle["id"] and body["bundle"]["name"] == "Holiday"
    assert body["bundleId"] == bundle["id"]
    assert body["speedBytesPerSecond"] == 0.0
    assert body["estimatedSecondsRemaining"] is None
    assert body["missingChunks"] == [0, 1, 2, 3]

    send_chunks(api, task, data, [0, 1])
    during = api.get(url).get_json()
    speed = during["speedBytesPerSecond"]
    assert speed > 0
    assert during["uploadedChunks"] == [0, 1]
    remaining = len(data) - 2 * MIB
    assert during["estimatedSecondsRemaining"] > 0
    assert during["estimatedSecondsRemaining"] == pytest.approx(remaining / speed, abs=0.1)

    send_chunks(api, task, data, [2, 3])
    assert api.complete(task["taskId"]).status_code == 200
    finished = api.get(url).get_json()
    assert finished["status"] == "Completed"
    assert finished["estimatedSecondsRemaining"] == 0.0
    assert finished["fileId"]

    plain = create_task(api, random_bytes(500, seed=52))
    assert api.get(f"/files/upload/tasks/{plain['taskId']}/details").get_json()["bundle"] is None
    assert_error(make_api().get(url), 404, "UPLOAD_NOT_FOUND")


def test_create_with_another_accounts_bundle_is_404(api, make_api):
    other = make_api()
    bundle = other.post("/bundles", json={"name": "theirs"}).get_json()
    assert_error(api.create(random_bytes(100, seed=53), bundleId=bundle["id"]), 404, "BUNDLE_NOT_FOUND")


# GET /files/upload/stats -----------------------------------------------------------------
def test_stats_of_a_known_set_of_tasks(app, api, make_api, worker):
    fresh = make_api().get("/files/upload/stats").get_json()
    assert fresh["totalTasks"] == 0 and fresh["averageProgress"] == 0.0 and fresh["recentActivity"] == []

    quarter_data = random_bytes(4 * MIB, seed=61)
    quarter = create_task(api, quarter_data, name="quarter.bin", chunkSize=MIB)
    send_chunks(api, quarter, quarter_data, [2])                         # InProgress, 25 %, 1 MiB
    untouched = create_task(api, random_bytes(1000, seed=62), name="untouched.bin")  # InProgress, 0 %
    completed_task(api, random_bytes(1500, seed=63), name="done-1.bin")  # Completed, 1500 bytes
    completed_task(api, random_bytes(1200, seed=64), name="done-2.bin")  # Completed, 1200 bytes
    failed_task(api, random_bytes(2000, seed=65), name="failed.bin")     # Failed, 2000 bytes received
    gone = create_task(api, random_bytes(3000, seed=66), name="expired.bin")
    expire(app, gone["taskId"])                                          # Expired, nothing received
    cancelled = create_task(api, random_bytes(5000, seed=67), name="cancelled.bin")
    send_chunks(api, cancelled, random_bytes(5000, seed=67))
    assert api.delete(f"/files/upload/task/{cancelled['taskId']}").status_code == 204  # not counted
    make_api().upload(random_bytes(4000, seed=68))                       # another account's

    response = api.get("/files/upload/stats")
    assert response.status_code == 200
    stats = response.get_json()
    assert {"totalTasks", "inProgressTasks", "completedTasks", "failedTasks", "expiredTasks",
            "totalUploadedBytes", "averageProgress", "recentActivity"} <= set(stats)
    assert stats["totalTasks"] == 6
    assert stats["inProgressTasks"] == 2
    assert stats["completedTasks"] == 2
    assert stats["failedTasks"] == 1
    assert stats["expiredTasks"] == 1
    assert stats["totalUploadedBytes"] == MIB + 1500 + 1200 + 2000

    recent = stats["recentActivity"]
    assert len(recent) == 5
    expected = api.get("/files/upload/tasks/recent", query_string={"limit": 5}).get_json()
    assert [r["taskId"] for r in recent] == [t["taskId"] for t in expected]
    assert [utc(r["lastActivity"]) for r in recent] == sorted((utc(r["lastActivity"]) for r in recent), reverse=True)
    for item, task in zip(recent, expected):
        assert {"taskId", "fileName", "status", "progress", "lastActivity"} <= set(item)
        assert (item["fileName"], item["status"], item["progress"]) == (task["fileName"], task["status"],
                                                                      task["progress"])
    assert cancelled["taskId"] not in {r["taskId"] for r in recent}
    assert untouched["taskId"] in {t["taskId"] for t in api.get("/files/upload/tasks").get_json()}

    # averageProgress is that of the uploads still in progress, as in the original system: the
    # seed's example (20 of 25 tasks completed, average 67.5) cannot be an average over every task
    assert stats["averageProgress"] == pytest.approx((25.0 + 0.0) / 2)


# DELETE /files/upload/task/{id} ----------------------------------------------------------
def test_cancel_removes_chunks_releases_quota_and_forgets_the_task(app, api, make_api):
    data = random_bytes(3 * MIB, seed=71)
    task = create_task(api, data, chunkSize=MIB)
    task_id = task["taskId"]
    send_chunks(api, task, data, [0, 2])
    assert len(stored_objects(app, f"uploads/{task_id}")) == 2
    assert quota_usage(app, api.account_id)["reserved"] == len(data)

    # another account cannot cancel it, nor learn that it exists
    assert_error(make_api().delete(f"/files/upload/task/{task_id}"), 404, "UPLOAD_NOT_FOUND")
    assert len(stored_objects(app, f"uploads/{task_id}")) == 2

    cancelled = api.delete(f"/files/upload/task/{task_id}")
    assert cancelled.status_code == 204
    assert cancelled.data == b""
    assert stored_objects(app, f"uploads/{task_id}") == set()
    usage = quota_usage(app, api.account_id)
    assert usage["used"] == 0 and usage["reserved"] == 0

    assert_error(api.get(f"/files/upload/progress/{task_id}"), 404, "UPLOAD_NOT_FOUND")
    assert_error(api.get(f"/files/upload/resume/{task_id}"), 404, "UPLOAD_NOT_FOUND")
    assert_error(api.delete(f"/files/upload/task/{task_id}"), 404, "UPLOAD_NOT_FOUND")
    assert_error(api.send_chunk(task_id, 1, data[MIB:2 * MIB]), 404, "UPLOAD_NOT_FOUND")
    assert_error(api.complete(task_id), 404, "UPLOAD_NOT_FOUND")
    assert task_id not in listed(api)[0]
    events = [e for e in stored_events(app, api.account_id) if e["type"] == "upload.cancelled"]
    assert [e["data"]["taskId"] for e in events] == [task_id]

    assert_error(api.delete("/files/upload/task/not-a-task"), 404, "UPLOAD_NOT_FOUND")


def test_cancel_of_a_completed_task_is_409_and_keeps_the_file(app, api, worker):
    data = random_bytes(MIB + 1, seed=72)
    task_id, file = completed_task(api, data, chunkSize=MIB)
    refused = assert_error(api.delete(f"/files/upload/task/{task_id}"), 409, "UPLOAD_ALREADY_COMPLETED")
    assert refused["details"]["fileId"] == file["id"]
    assert api.get(f"/files/upload/progress/{task_id}").get_json()["status"] == "Completed"
    downloaded = api.get(f"/files/{file['id']}/download")
    assert downloaded.status_code == 200 and sha256(downloaded.data) == sha256(data)
    assert quota_usage(app, api.account_id)["used"] == len(data)


# DELETE /files/upload/tasks/cleanup ------------------------------------------------------
def test_cleanup_forgets_failed_and_expired_tasks_of_the_account_only(app, api, make_api, worker):
    bad = failed_task(api, random_bytes(900, seed=81), name="bad.bin")
    old = create_task(api, random_bytes(800, seed=82), name="old.bin")["taskId"]
    expire(app, old)
    running = create_task(api, random_bytes(700, seed=83), name="running.bin")["taskId"]
    done, file = completed_task(api, random_bytes(600, seed=84), name="done.bin")
    neighbour = make_api()
    their_bad = failed_task(neighbour, random_bytes(500, seed=85))

    response = api.delete("/files/upload/tasks/cleanup")
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["removedTasks"] == 2
    assert sorted(body["taskIds"]) == sorted([bad, old])

    ids, listing = listed(api)
    assert set(ids) == {running, done}
    assert listing.headers["X-Total"] == "2"
    for gone in (bad, old):
        assert_error(api.get(f"/files/upload/progress/{gone}"), 404, "UPLOAD_NOT_FOUND")
    assert api.get(f"/files/{file['id']}").status_code == 200

    # the neighbour's failed task is untouched
    assert listed(neighbour, status="Failed")[0] == [their_bad]

    again = api.delete("/files/upload/tasks/cleanup").get_json()
    assert again == {"removedTasks": 0, "taskIds": []}
