"""Generic tasks through the API with a real worker: create, run, list, pause/resume/cancel
transitions, delete, stats, events, tenancy."""
import io
import tarfile
import uuid
import zipfile

import pytest

from tests.support import MIB, EventListener, assert_error, random_bytes, sha256


def stored_file(api, data: bytes, name: str) -> str:
    done = api.upload(data, name=name)
    assert done.status_code == 200, done.get_json()
    return done.get_json()["id"]


def run_task(api, redis, body: dict) -> tuple[dict, list]:
    """Create a task and wait for its final event; the task as the API then shows it."""
    listener = EventListener(redis, api.account_id)
    created = api.post("/tasks", json=body)
    assert created.status_code == 201, created.get_json()
    task_id = created.get_json()["taskId"]
    packets = []
    while True:
        packet = listener.next(30)
        assert packet is not None, f"no end for {task_id}: {packets}"
        if packet["data"].get("taskId") == task_id:
            packets.append(packet)
            if packet["type"] in ("task.completed", "task.failed", "task.cancelled", "task.paused"):
                break
    listener.close()
    return api.get(f"/tasks/{task_id}").get_json(), packets


@pytest.mark.parametrize("fmt", ["zip", "tar.gz"])
def test_compress_makes_an_archive_of_the_files(api, redis, worker, fmt):
    a, b = random_bytes(300_000), b"hello " * 50_000
    ids = [stored_file(api, a, "a.bin"), stored_file(api, b, "b.txt")]
    task, packets = run_task(api, redis, {"type": "FileCompress", "priority": 80, "parameters": {
        "fileIds": ids, "compressionFormat": fmt, "compressionLevel": 9, "outputFileName": f"both.{fmt}"}})
    assert task["status"] == "Completed" and task["progress"] == 100.0, task
    assert [p["type"] for p in packets][0] == "task.created" and packets[-1]["type"] == "task.completed"
    assert packets[-1]["data"]["results"] == task["results"]
    results = task["results"]
    assert results["filesProcessed"] == 2 and results["compressedSize"] > 0
    archive = api.get(f"/files/{results['resultFileId']}/download")
    assert archive.status_code == 200 and len(archive.data) == results["compressedSize"]
    if fmt == "zip":
        with zipfile.ZipFile(io.BytesIO(archive.data)) as z:
            assert sorted(z.namelist()) == ["a.bin", "b.txt"]
            assert sha256(z.read("a.bin")) == sha256(a) and z.read("b.txt") == b
    else:
        with tarfile.open(fileobj=io.BytesIO(archive.data), mode="r:gz") as t:
            assert sorted(t.getnames()) == ["a.bin", "b.txt"]
            assert sha256(t.extractfile("a.bin").read()) == sha256(a) and t.extractfile("b.txt").read() == b
    assert results["compressionRatio"] == pytest.approx(results["compressedSize"] / (len(a) + len(b)), rel=1e-3)


@pytest.mark.parametrize("body, code", [
    ({"type": "Nope", "parameters": {}}, "UNKNOWN_TASK_TYPE"),
    ({"type": "FileCompress", "parameters": {}}, "VALIDATION_ERROR"),
    ({"type": "FileCompress", "parameters": {"fileIds": ["x"]}}, "VALIDATION_ERROR"),
    ({"type": "FileCompress", "parameters": {"fileIds": [str(uuid.uuid4())], "compressionFormat": "rar"}},
     "VALIDATION_ERROR"),
    ({"type": "FileCompress", "parameters": {"fileIds": [str(uuid.uuid4())], "compressionLevel": 10}},
     "VALIDATION_ERROR"),
    ({"type": "FileCompress", "priority": 101, "parameters": {"fileIds": [str(uuid.uuid4())]}}, "VALIDATION_ERROR"),
])
def test_invalid_tasks_are_refused_before_anything_is_queued(api, body, code):
    assert_error(api.post("/tasks", json=body), 400, code)
    assert api.get("/tasks").headers["X-Total"] == "0"


def test_another_accounts_files_are_not_found(api, make_api, worker):
    other = make_api()
    theirs = stored_file(other, b"secret" * 100, "s.txt")
    response = api.post("/tasks", json={"type": "FileCompress", "parameters": {"fileIds": [theirs]}})
    assert_error(response, 404, "FILE_NOT_FOUND")


def test_transitions_list_stats_delete_and_tenancy(api, make_api, redis, worker):
    data = random_bytes(50_000)
    file_id = stored_file(api, data, "x.bin")
    task, _ = run_task(api, redis, {"type": "FileCompress", "parameters": {"fileIds": [file_id]}})
    task_id = task["taskId"]
    for action in ("pause", "resume", "cancel"):
        body = assert_error(api.post(f"/tasks/{task_id}/{action}"), 409, "INVALID_TASK_TRANSITION")
        assert body["details"]["status"] == "Completed"
    listed = api.get("/tasks?type=FileCompress&status=Completed")
    assert listed.headers["X-Total"] == "1" and listed.get_json()[0]["taskId"] == task_id
    assert api.get("/tasks?status=Pending").headers["X-Total"] == "0"
    assert_error(api.get("/tasks?status=Nope"), 400, "VALIDATION_ERROR")
    stats = api.get("/tasks/stats").get_json()
    assert stats["totalTasks"] == 1 and stats["byStatus"]["Completed"] == 1 and stats["byType"] == {"FileCompress": 1}
    other = make_api()
    for method, path in [("GET", f"/tasks/{task_id}"), ("POST", f"/tasks/{task_id}/pause"),
                         ("POST", f"/tasks/{task_id}/resume"), ("POST", f"/tasks/{task_id}/cancel"),
                         ("DELETE", f"/tasks/{task_id}")]:
        assert_error(other.request(method, path), 404, "TASK_NOT_FOUND")
    assert other.get("/tasks").headers["X-Total"] == "0"
    assert api.delete(f"/tasks/{task_id}").status_code == 204
    assert_error(api.get(f"/tasks/{task_id}"), 404, "TASK_NOT_FOUND")


def test_a_paused_queued_task_never_starts_and_a_cancelled_one_neither(api, app, redis):
    """Without a worker consuming (the task waits in the queue), pause and cancel act at once."""
    from app.extensions import db
    from app.models import Task

    file_id = str(uuid.uuid4())
    with app.app_context():  # a file row is needed for create; make a real one without a worker
        from app.models import CloudFile
        from app.services.pools import ensure_default_pool

        pool = ensure_default_pool()
        db.session.add(CloudFile(id=uuid.UUID(file_id), name="q.bin", mime_type="application/octet-stream", size=1,
                                 hash="0" * 64, pool_id=pool.id, account_id=api.account_id, storage_key="files/none",
                                 stored_size=1))
        db.session.commit()
    created = api.post("/tasks", json={"type": "FileCompress", "priority": 10, "parameters": {"fileIds": [file_id]}})
    task_id = created.get_json()["taskId"]
    paused = api.post(f"/tasks/{task_id}/pause")
    assert paused.status_code == 200 and paused.get_json()["status"] == "Paused"
    resumed = api.post(f"/tasks/{task_id}/resume").get_json()
    assert resumed["status"] == "Pending"
    cancelled = api.post(f"/tasks/{task_id}/cancel").get_json()
    assert cancelled["status"] == "Cancelled"
    with app.app_context():
        row = db.session.query(Task).filter_by(task_id=task_id).one()
        assert row.status == 6 and row.started_at is None
    assert_error(api.post(f"/tasks/{task_id}/resume"), 409, "INVALID_TASK_TRANSITION")
