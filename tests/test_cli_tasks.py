"""`flask tasks list|show|cancel|retry|cleanup` through app.test_cli_runner(). Rows are made
directly (each test its own accounts); retry runs on the real worker."""
from __future__ import annotations

import json
import secrets
import uuid
from datetime import timedelta


from app.models import Task, TaskStatus
from app.models.types import utcnow
from tests.support import EventListener, assert_clean_error, database, invoke, random_bytes


def make_task(app, account_id, status=TaskStatus.Completed, type_name="FileCompress", age_days=0.0,
              parameters=None, checkpoint=None) -> str:
    moment = utcnow() - timedelta(days=age_days)
    task_id = secrets.token_hex(16)
    finished = status in (TaskStatus.Completed, TaskStatus.Failed, TaskStatus.Cancelled, TaskStatus.Expired)
    with database(app) as session:
        session.add(Task(task_id=task_id, name="t", type=type_name, status=status, account_id=account_id,
                         parameters=parameters or {"fileIds": []}, results={}, checkpoint=checkpoint or {},
                         priority=50, last_activity=moment, created_at=moment, updated_at=moment,
                         completed_at=moment if finished else None))
        session.commit()
    return task_id


def row(app, task_id):
    with database(app) as session:
        task = session.query(Task).filter_by(task_id=task_id).one_or_none()
        return None if task is None else (task.status, dict(task.parameters), task.error_message)


def test_list_filters_by_account_status_and_type(app, runner):
    a, b = uuid.uuid4(), uuid.uuid4()
    done = make_task(app, a)
    failed = make_task(app, a, TaskStatus.Failed, type_name="BulkOperation")
    theirs = make_task(app, b, TaskStatus.Pending)
    result = invoke(runner, "tasks", "list", "--account", a)
    assert result.exit_code == 0, result.output
    assert done in result.output and failed in result.output and theirs not in result.output
    result = invoke(runner, "tasks", "list", "--account", a, "--status", "Failed")
    assert failed in result.output and done not in result.output
    result = invoke(runner, "tasks", "list", "--account", a, "--type", "FileCompress", "--json")
    assert [t["taskId"] for t in json.loads(result.output)] == [done]
    assert_clean_error(invoke(runner, "tasks", "list", "--status", "Sleeping"), "not a status")
    assert_clean_error(invoke(runner, "tasks", "list", "--account", "nope"), "not a UUID")


def test_show_hides_internal_parameters(app, runner):
    task_id = make_task(app, uuid.uuid4(), TaskStatus.Paused, type_name="FileDecrypt",
                        parameters={"fileIds": ["x"], "_sealedKeys": "v1.secret"}, checkpoint={"filesProcessed": 1})
    result = invoke(runner, "tasks", "show", task_id)
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["taskId"] == task_id and shown["status"] == "Paused" and shown["parameters"] == {"fileIds": ["x"]}
    assert shown["checkpoint"] == {"filesProcessed": 1} and "v1.secret" not in result.output
    assert_clean_error(invoke(runner, "tasks", "show", "nothing-here"), "no task")


def test_cancel(app, runner):
    task_id = make_task(app, uuid.uuid4(), TaskStatus.Paused)
    result = invoke(runner, "tasks", "cancel", task_id)
    assert result.exit_code == 0 and "cancelled" in result.output, result.output
    assert row(app, task_id)[0] == TaskStatus.Cancelled
    assert_clean_error(invoke(runner, "tasks", "cancel", task_id), "Cancelled task cannot be cancelled")
    assert_clean_error(invoke(runner, "tasks", "cancel", "nothing-here"), "no task")


def test_retry_runs_a_cancelled_task_again_on_the_worker(app, api, redis, runner, worker):
    data = random_bytes(20_000)
    file_id = api.upload(data, name="r.bin").get_json()["id"]
    task_id = make_task(app, api.account_id, TaskStatus.Cancelled, parameters={
        "fileIds": [file_id], "compressionFormat": "zip", "compressionLevel": 6, "outputFileName": "r.zip",
        "bundleId": None})
    listener = EventListener(redis, api.account_id)
    result = invoke(runner, "tasks", "retry", task_id)
    assert result.exit_code == 0 and "queued" in result.output, result.output
    while True:
        packet = listener.next(30)
        assert packet is not None, listener.packets
        if packet["data"].get("taskId") == task_id and packet["type"] in ("task.completed", "task.failed"):
            break
    listener.close()
    assert packet["type"] == "task.completed", packet
    task = api.get(f"/tasks/{task_id}").get_json()
    assert task["status"] == "Completed" and task["results"]["filesProcessed"] == 1
    assert_clean_error(invoke(runner, "tasks", "retry", task_id), "Completed task cannot be retried")
    assert_clean_error(invoke(runner, "tasks", "retry", "nothing-here"), "no task")


def test_cleanup_removes_only_old_finished_tasks(app, runner):
    account = uuid.uuid4()
    old = {status: make_task(app, account, status, age_days=31) for status in
           (TaskStatus.Completed, TaskStatus.Failed, TaskStatus.Cancelled, TaskStatus.Expired)}
    kept = [make_task(app, account, TaskStatus.Completed, age_days=29),
            make_task(app, account, TaskStatus.Paused, age_days=60),
            make_task(app, account, TaskStatus.InProgress, age_days=60)]
    sealed = make_task(app, account, TaskStatus.Cancelled, type_name="FileDecrypt", age_days=1,
                       parameters={"fileIds": [], "_sealedKeys": "v1.secret"})

    dry = json.loads(invoke(runner, "tasks", "cleanup", "--dry-run").output)
    assert dry["dryRun"] is True and set(old.values()) <= set(dry["removedTasks"])
    assert not set(kept) & set(dry["removedTasks"])
    assert all(row(app, t) is not None for t in old.values())

    result = invoke(runner, "tasks", "cleanup")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert set(old.values()) <= set(report["removedTasks"]) and report["days"] == 30
    assert all(row(app, t) is None for t in old.values())
    assert all(row(app, t) is not None for t in kept)
    assert sealed in report["secretsErased"] and row(app, sealed)[1] == {"fileIds": []}

    recent = kept[0]
    assert recent in json.loads(invoke(runner, "tasks", "cleanup", "--days", "28").output)["removedTasks"]
    assert row(app, recent) is None
    assert_clean_error(invoke(runner, "tasks", "cleanup", "--days", "-1"))


def test_the_scheduled_cleanup_job(app):
    from jobs.task_cleanup import cleanup_tasks

    task_id = make_task(app, uuid.uuid4(), TaskStatus.Failed, age_days=45)
    with app.app_context():
        report = cleanup_tasks()
    assert task_id in report["removedTasks"] and row(app, task_id) is None
