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
    stats = api.get("/tasks/stats").get_json()  # the upload of x.bin is a FileUpload task
    assert stats["totalTasks"] == 2 and stats["byStatus"]["Completed"] == 2
    assert stats["byType"] == {"FileCompress": 1, "FileUpload": 1}
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


def test_uploads_are_tasks_of_type_file_upload(api, make_api, worker):
    """An upload shows in the task list (filtered, sorted and paged with the generic tasks)
    and by its taskId, as a task of type FileUpload with the upload's progress."""
    done_id = stored_file(api, random_bytes(3000), "done.bin")
    open_task = api.create(random_bytes(2 * MIB), name="open.bin", chunkSize=MIB).get_json()
    assert api.send_chunk(open_task["taskId"], 0, b"\0" * MIB).status_code == 200
    listed = api.get("/tasks?type=FileUpload&sortBy=name&sortDescending=false")
    assert listed.headers["X-Total"] == "2"
    rows = listed.get_json()
    assert [r["name"] for r in rows] == ["done.bin", "open.bin"]
    assert [r["status"] for r in rows] == ["Completed", "InProgress"]
    assert rows[0]["results"]["fileId"] == done_id and rows[0]["progress"] == 100.0
    assert rows[1]["progress"] == 50.0 and rows[1]["parameters"]["chunksCount"] == 2
    assert api.get("/tasks?status=InProgress").get_json()[0]["taskId"] == open_task["taskId"]
    page = api.get("/tasks?limit=1&offset=1&sortBy=name&sortDescending=false")
    assert page.headers["X-Total"] == "2" and page.get_json()[0]["name"] == "open.bin"
    shown = api.get(f"/tasks/{open_task['taskId']}").get_json()
    assert shown["type"] == "FileUpload" and shown["taskId"] == open_task["taskId"]
    assert_error(make_api().get(f"/tasks/{open_task['taskId']}"), 404, "TASK_NOT_FOUND")


def test_a_worker_takes_higher_priority_bands_first(app, settings, tmp_path):
    """Tasks queued while no worker listens (their own QUEUE_PREFIX) run high, then default,
    then low, whatever order they were created in, when one worker comes."""
    from app import create_app
    from app.auth import issue_token
    from config import Config
    from tests.conftest import process_env
    from tests.support import flask_command, start_process

    prefix = f"prio-{uuid.uuid4().hex[:8]}-"
    other = create_app(Config.from_env(settings, QUEUE_PREFIX=prefix))
    account = uuid.uuid4()
    headers = {"Authorization": f"Bearer {issue_token(account, app=other)}"}
    client = other.test_client()
    created = []
    for priority in (10, 50, 90, 20, 70, 40):
        body = {"type": "Shout", "name": f"p{priority}", "priority": priority, "parameters": {"text": "hi"}}
        response = client.post("/api/tasks", json=body, headers=headers)
        assert response.status_code == 201, response.get_json()
        created.append(response.get_json()["taskId"])
    worker = start_process(flask_command("worker", "--burst", "--without-scheduler"),
                           process_env(settings, QUEUE_PREFIX=prefix), str(tmp_path / "worker.log"),
                           ready_marker="Listening on")
    assert worker.proc.wait(60) == 0
    rows = [client.get(f"/api/tasks/{t}", headers=headers).get_json() for t in created]
    assert all(r["status"] == "Completed" for r in rows), rows
    order = [r["name"] for r in sorted(rows, key=lambda r: r["startedAt"])]
    assert order[:2] in (["p90", "p70"], ["p70", "p90"])   # high band first
    assert sorted(order[2:4]) == ["p40", "p50"]            # then default
    assert sorted(order[4:]) == ["p10", "p20"]             # then low


def test_compress_puts_the_archive_in_the_bundle_given(api, redis, worker):
    bundle = api.post("/bundles", json={"name": "backups"}).get_json()["id"]
    file_id = stored_file(api, random_bytes(10_000), "x.bin")
    task, _ = run_task(api, redis, {"type": "FileCompress", "parameters": {"fileIds": [file_id], "bundleId": bundle}})
    assert task["status"] == "Completed", task
    assert api.get(f"/files/{task['results']['resultFileId']}").get_json()["bundleId"] == bundle
