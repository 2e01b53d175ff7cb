"""StorageMigration with real workers: every file verified, pause/resume equal to an
uninterrupted run, cancel leaving nothing behind, failures listed, and a worker killed with
SIGKILL mid-migration recovered from its checkpoint (jobs/recovery.py)."""
import os
import uuid

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import CloudFile, Task, TaskStatus
from app.services.tasks import create_task
from app.storage.local import TMP_PREFIX
from app.tasks.files import NewFile
from jobs.recovery import recover_tasks
from tests.conftest import make_token, process_env
from tests.jobs.test_task_move import make_pool, objects_under
from tests.support import (MIB, ApiClient, EventListener, assert_error, children_of, flask_command, kill_and_wait,
                           random_bytes, sha256, start_process)

FILES = 30
SIZE = 2 * MIB + 3  # large enough that a migration of FILES takes a while to pause mid-way
FINAL = ("task.completed", "task.failed", "task.cancelled", "task.paused")


def store_files(app, account_id, pool_id, count=FILES, size=SIZE, seed=0) -> dict[str, bytes]:
    """Files written straight into a pool (as a finished upload would leave them): {id: bytes}."""
    files = {}
    with app.app_context():
        from app.models import Pool  # noqa: PLC0415

        pool = db.session.get(Pool, uuid.UUID(pool_id))
        for number in range(count):
            data = random_bytes(size, seed=seed * 1000 + number)
            new = NewFile(account_id, pool)
            new.write(data)
            files[str(new.publish(f"f{number}.bin", "application/octet-stream").id)] = data
    return files


def wait_for(listener, task_id, types, timeout=60) -> dict:
    while True:
        packet = listener.next(timeout)
        assert packet is not None, f"no {types} for {task_id}: {listener.packets[-5:]}"
        if packet["data"].get("taskId") == task_id and packet["type"] in types:
            return packet


def start(api, redis, parameters) -> tuple[str, EventListener]:
    listener = EventListener(redis, api.account_id)
    created = api.post("/tasks", json={"type": "StorageMigration", "parameters": parameters})
    assert created.status_code == 201, created.get_json()
    return created.get_json()["taskId"], listener


def pools_of(app, ids) -> dict[str, str]:
    with app.app_context():
        rows = db.session.execute(sa.select(CloudFile.id, CloudFile.pool_id).where(
            CloudFile.id.in_([uuid.UUID(i) for i in ids]))).all()
        return {str(i): str(p) for i, p in rows}


def assert_intact(api, files: dict) -> None:
    for file_id, data in files.items():
        download = api.get(f"/files/{file_id}/download")
        assert download.status_code == 200 and sha256(download.data) == sha256(data), file_id


def no_temp_files(root) -> bool:
    return not [n for n in objects_under(root) if os.path.basename(n).startswith(TMP_PREFIX)]


def test_pause_then_resume_ends_as_an_uninterrupted_run(make_api, app, redis, worker, tmp_path):
    outcomes = []
    for run, interrupt in enumerate((False, True)):
        api = make_api()
        source, target = make_pool(app, tmp_path / f"a{run}"), make_pool(app, tmp_path / f"b{run}")
        files = store_files(app, api.account_id, source)
        task_id, listener = start(api, redis, {"sourcePoolId": source, "targetPoolId": target})
        if interrupt:
            wait_for(listener, task_id, ("task.progress",))
            assert api.post(f"/tasks/{task_id}/pause").status_code == 200
            assert wait_for(listener, task_id, FINAL)["type"] == "task.paused"
            paused = api.get(f"/tasks/{task_id}").get_json()
            assert paused["status"] == "Paused"
            moved = paused["results"]["filesMigrated"]
            assert 0 < moved < FILES, paused
            where = pools_of(app, files)
            assert sorted(where.values()).count(target) == moved  # the checkpoint says what moved
            assert len(objects_under(tmp_path / f"b{run}")) == moved  # no partial copy left
            assert len(objects_under(tmp_path / f"a{run}")) == FILES - moved
            assert api.post(f"/tasks/{task_id}/resume").status_code == 200
        assert wait_for(listener, task_id, FINAL)["type"] == "task.completed"
        listener.close()
        task = api.get(f"/tasks/{task_id}").get_json()
        assert set(pools_of(app, files).values()) == {target}
        assert_intact(api, files)
        assert objects_under(tmp_path / f"a{run}") == []
        assert len(objects_under(tmp_path / f"b{run}")) == FILES
        outcomes.append(task["results"])
    assert outcomes[0] == outcomes[1] == {"filesMigrated": FILES, "bytesCopied": FILES * SIZE, "failures": []}


def test_cancel_leaves_nothing_behind(api, app, redis, worker, tmp_path):
    source, target = make_pool(app, tmp_path / "a"), make_pool(app, tmp_path / "b")
    files = store_files(app, api.account_id, source, seed=7)
    task_id, listener = start(api, redis, {"sourcePoolId": source, "targetPoolId": target})
    wait_for(listener, task_id, ("task.progress",))
    assert api.post(f"/tasks/{task_id}/cancel").status_code == 200
    assert wait_for(listener, task_id, FINAL)["type"] == "task.cancelled"
    listener.close()
    task = api.get(f"/tasks/{task_id}").get_json()
    moved = task["results"]["filesMigrated"]
    assert task["status"] == "Cancelled" and 0 < moved < FILES, task
    where = pools_of(app, files)
    assert list(where.values()).count(target) == moved and list(where.values()).count(source) == FILES - moved
    with app.app_context():
        keys = {str(f.id): f.storage_key for f in db.session.scalars(
            sa.select(CloudFile).where(CloudFile.id.in_([uuid.UUID(i) for i in files])))}
    # exactly the objects the rows name: nothing half-copied, no temporary file
    assert objects_under(tmp_path / "b") == sorted(keys[i] for i, p in where.items() if p == target)
    assert objects_under(tmp_path / "a") == sorted(keys[i] for i, p in where.items() if p == source)
    assert_intact(api, files)


def test_a_file_that_does_not_verify_stays_and_is_listed(api, app, redis, worker, tmp_path):
    source, target = make_pool(app, tmp_path / "a"), make_pool(app, tmp_path / "b")
    files = store_files(app, api.account_id, source, count=3, size=100_000, seed=3)
    bad = sorted(files)[1]
    with open(tmp_path / "a" / "files" / bad, "r+b") as stored:  # bit rot in the source pool
        stored.write(b"X")
    task_id, listener = start(api, redis, {"sourcePoolId": source, "targetPoolId": target})
    assert wait_for(listener, task_id, FINAL)["type"] == "task.completed"
    task = api.get(f"/tasks/{task_id}").get_json()
    results = task["results"]
    assert results["filesMigrated"] == 2 and results["bytesCopied"] == 200_000
    assert [f["fileId"] for f in results["failures"]] == [bad] and "SHA-256" in results["failures"][0]["error"]
    where = pools_of(app, files)
    assert where[bad] == source and [p for i, p in where.items() if i != bad] == [target, target]
    assert objects_under(tmp_path / "a") == [f"files/{bad}"] and len(objects_under(tmp_path / "b")) == 2
    assert_intact(api, {i: d for i, d in files.items() if i != bad})


@pytest.mark.parametrize("parameters, status, code", [
    ({}, 400, "VALIDATION_ERROR"),
    ({"sourcePoolId": "A", "targetPoolId": "A"}, 400, "VALIDATION_ERROR"),
    ({"sourcePoolId": "A", "targetPoolId": "B", "scope": "everything"}, 400, "VALIDATION_ERROR"),
    ({"sourcePoolId": "A", "targetPoolId": str(uuid.uuid4())}, 404, "POOL_NOT_FOUND"),
    ({"sourcePoolId": "THEIRS", "targetPoolId": "B"}, 404, "POOL_NOT_FOUND"),
    ({"sourcePoolId": "A", "targetPoolId": "B", "scope": "all"}, 403, "ADMIN_REQUIRED"),
])
def test_invalid_migrations_are_refused(api, make_api, app, tmp_path, parameters, status, code):
    names = {"A": make_pool(app, tmp_path / "a"), "B": make_pool(app, tmp_path / "b"),
             "THEIRS": make_pool(app, tmp_path / "t", account_id=uuid.uuid4())}
    body = {k: names.get(v, v) for k, v in parameters.items()}
    assert_error(api.post("/tasks", json={"type": "StorageMigration", "parameters": body}), status, code)


def test_an_admin_migrates_every_accounts_files(make_api, app, client, redis, worker, tmp_path):
    admin_id = uuid.uuid4()
    admin = ApiClient(client, make_token(app, admin_id, admin=True), admin_id)
    owners = [make_api(), make_api()]
    source, target = make_pool(app, tmp_path / "a"), make_pool(app, tmp_path / "b")
    files = {owner.account_id: store_files(app, owner.account_id, source, count=2, size=1000, seed=n)
             for n, owner in enumerate(owners)}
    mine = make_api()  # scope "account" of another caller moves none of them
    task_id, listener = start(mine, redis, {"sourcePoolId": source, "targetPoolId": target})
    assert wait_for(listener, task_id, FINAL)["type"] == "task.completed"
    assert mine.get(f"/tasks/{task_id}").get_json()["results"]["filesMigrated"] == 0
    private = make_pool(app, tmp_path / "p", account_id=admin_id)
    refused = admin.post("/tasks", json={"type": "StorageMigration", "parameters": {
        "sourcePoolId": source, "targetPoolId": private, "scope": "all"}})
    assert_error(refused, 400, "POOL_NOT_SHARED")
    task_id, listener = start(admin, redis, {"sourcePoolId": source, "targetPoolId": target, "scope": "all"})
    assert wait_for(listener, task_id, FINAL)["type"] == "task.completed"
    assert admin.get(f"/tasks/{task_id}").get_json()["results"]["filesMigrated"] == 4
    for owner in owners:
        assert set(pools_of(app, files[owner.account_id]).values()) == {target}
        assert_intact(owner, files[owner.account_id])


def test_a_worker_killed_mid_migration_is_recovered_from_its_checkpoint(api, app, redis, settings, worker,
                                                                        tmp_path):
    source, target = make_pool(app, tmp_path / "a"), make_pool(app, tmp_path / "b")
    files = store_files(app, api.account_id, source, seed=11)
    queue = f"kill-{uuid.uuid4().hex[:8]}"  # only our own worker listens to it
    doomed = start_process(flask_command("worker", "--name", queue, "--queue", queue), process_env(settings),
                           str(tmp_path / "doomed.log"), ready_marker="Listening on")
    listener = EventListener(redis, api.account_id)
    try:
        with app.app_context():
            task_id = create_task(api.account_id, {"type": "StorageMigration", "priority": 50, "parameters": {
                "sourcePoolId": source, "targetPoolId": target}}, queue_name=queue).task_id
        wait_for(listener, task_id, ("task.progress",))
        children = children_of(doomed.proc.pid)  # the work-horse (and RQ's scheduler process)
        doomed.kill()  # SIGKILL: the worker first, so nothing reports the horse's death ...
        kill_and_wait(children)  # ... then the work-horse in the middle of a copy
    finally:
        doomed.kill()
    with app.app_context():
        row = db.session.scalar(sa.select(Task).where(Task.task_id == task_id))
        assert row.status == TaskStatus.InProgress and 0 < row.checkpoint["filesMigrated"] < FILES, row.checkpoint
        db.session.rollback()
    fresh = start_process(flask_command("worker", "--name", f"fresh-{uuid.uuid4().hex[:8]}"), process_env(settings),
                          str(tmp_path / "fresh.log"), ready_marker="Listening on")
    try:
        with app.app_context():
            # a live worker's task is never taken from it (the session worker may be busy meanwhile)
            assert task_id in recover_tasks(heartbeat_timeout=0)
        packet = wait_for(listener, task_id, FINAL)
    finally:
        fresh.stop()
        listener.close()
    assert packet["type"] == "task.completed", packet
    task = api.get(f"/tasks/{task_id}").get_json()
    assert task["results"] == {"filesMigrated": FILES, "bytesCopied": FILES * SIZE, "failures": []}, task
    assert set(pools_of(app, files).values()) == {target}
    assert_intact(api, files)
    assert objects_under(tmp_path / "a") == []
    # exactly one copy of each file; the killed writer's temporary file (if the kill hit one)
    # is no object and is swept by `flask uploads cleanup` after its grace time
    copies = [n for n in objects_under(tmp_path / "b") if not os.path.basename(n).startswith(TMP_PREFIX)]
    with app.app_context():
        keys = sorted(db.session.scalars(sa.select(CloudFile.storage_key).where(
            CloudFile.id.in_([uuid.UUID(i) for i in files]))))
    assert sorted(copies) == keys and len(keys) == FILES


def test_recovery_fails_a_task_that_keeps_dying(api, app, redis):
    source, target = make_pool(app, "/nonexistent-a"), make_pool(app, "/nonexistent-b")
    with app.app_context():
        task = create_task(api.account_id, {"type": "StorageMigration", "priority": 50, "parameters": {
            "sourcePoolId": source, "targetPoolId": target}}, queue_name=f"nobody-{uuid.uuid4().hex[:8]}")
        task_id = task.task_id
        # as a run that died on its third start leaves it: InProgress, its job gone with Redis
        db.session.execute(sa.update(Task).where(Task.task_id == task_id).values(
            status=TaskStatus.InProgress, attempts=3))
        db.session.commit()
        from rq.job import Job  # noqa: PLC0415

        from jobs.engine import job_id_for  # noqa: PLC0415

        Job.fetch(job_id_for(task_id), connection=redis).delete()
        listener = EventListener(redis, api.account_id)
        assert task_id in recover_tasks(heartbeat_timeout=0)
    packet = wait_for(listener, task_id, FINAL)
    listener.close()
    assert packet["type"] == "task.failed" and "3 times" in packet["data"]["errorMessage"]
    assert api.get(f"/tasks/{task_id}").get_json()["status"] == "Failed"
