"""kill -9 of an RQ worker and its work-horse in the middle of finalizing a 200 MiB upload: the
scheduler's recovery finalizes it again on a new worker, without the client calling complete
again, within the bound the README states; one file row, one stored object.

The test runs its own web app, workers and scheduler on a QUEUE_PREFIX of its own, so the
session's worker never takes its jobs. While the test holds the upload's row locked the
finalize cannot finish (it needs the row to record its run), so the kill lands while the job
is provably running: RQ says 'started' and the worker's record names the job.
"""
from __future__ import annotations

import hashlib
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta

import pytest
import sqlalchemy as sa
from rq import Worker
from rq.job import Job, JobStatus

from app import create_app
from app.extensions import db
from app.models import CloudFile, UploadStatus, UploadTask
from app.models.types import utcnow
from app.redis_client import get_redis
from config import Config
from jobs.finalize_attempts import attempt_file_id
from jobs.upload_recovery import ensure_finalize, recover_uploads
from tests.conftest import make_token
from tests.faults.processes import kill_worker
from tests.jobs.test_task_move import make_pool
from tests.support import (
    MIB,
    ApiClient,
    EventListener,
    children_of,
    chunk_rows,
    create_task,
    database,
    quota_usage,
    random_bytes,
    send_chunks,
    sha256,
    task_backend,
    wait_until,
)

SIZE = 200 * MIB
RECOVERY_INTERVAL = 1  # TASK_RECOVERY_INTERVAL_SECONDS of this test's scheduler
FINALIZE_SECONDS = 10  # a 200 MiB finalize (hash + compose) takes well under 1 s here; room for a busy CI


def own_app(settings, prefix: str):
    """The web app of this test: its own queues, complete answers 202 at once, and chunks are
    not fsynced (their durability is not what this test is about)."""
    return create_app(Config.from_env(settings, TESTING=True, QUEUE_PREFIX=prefix, UPLOAD_COMPLETE_WAIT_SECONDS=0,
                                      STORAGE_FSYNC=False))


@contextmanager
def row_locked(app, task_pk: uuid.UUID):
    """Hold the upload's row: FOR UPDATE on PostgreSQL; on SQLite every transaction takes the
    database's write lock at BEGIN (app/database.py), which holds every writer off."""
    with app.app_context():
        with db.engine.connect() as connection, connection.begin():
            connection.execute(sa.select(UploadTask.id).where(UploadTask.id == task_pk).with_for_update())
            yield


def running(redis, job_id: str, worker_name: str) -> bool:
    """RQ says the job started, and the worker's record names it as its current job."""
    try:
        status = Job.fetch(job_id, connection=redis).get_status()
    except Exception:  # noqa: BLE001 - not created yet
        return False
    worker = Worker.find_by_key(Worker.redis_worker_namespace_prefix + worker_name, connection=redis)
    return status == JobStatus.STARTED and worker is not None and worker.get_current_job_id() == job_id


def worker_name(process) -> str:
    return process.proc.args[process.proc.args.index("--name") + 1]


def work_horses(process) -> list[int]:
    """The worker's children that lead a process group of their own: RQ's work-horse does."""
    return [pid for pid in children_of(process.proc.pid) if os.getpgid(pid) == pid]


def stored_sha256(backend, key: str) -> str:
    digest = hashlib.sha256()
    with backend.open_read(key) as stored:
        for block in iter(lambda: stored.read(8 * MIB), b""):
            digest.update(block)
    return digest.hexdigest()


def test_a_worker_killed_while_finalizing_is_replaced_and_the_upload_completes(
        app, settings, rq_processes, tmp_path):
    prefix = f"crash-{uuid.uuid4().hex[:8]}:"
    env = {"QUEUE_PREFIX": prefix, "TASK_RECOVERY_INTERVAL_SECONDS": str(RECOVERY_INTERVAL)}
    web = own_app(settings, prefix)
    account = uuid.uuid4()
    client = ApiClient(web.test_client(), make_token(app, account), account)
    pool_root = tmp_path / "pool"
    pool_id = make_pool(app, pool_root)
    redis = get_redis(app)
    listener = EventListener(redis, account)
    try:
        data = random_bytes(SIZE)
        digest = sha256(data)
        task = create_task(client, data, chunkSize=16 * MIB, poolId=pool_id)
        send_chunks(client, task, data)
        del data
        assert client.complete(task["taskId"]).status_code == 202  # queued; no worker of ours yet
        job_id = f"finalize-{task['taskId']}"
        with database(app) as session:
            row = session.scalar(sa.select(UploadTask).where(UploadTask.task_id == task["taskId"]))
            task_pk = row.id
            session.expunge(row)

        with row_locked(app, task_pk):
            doomed = rq_processes.worker(**env)
            horses = wait_until(lambda: running(redis, job_id, worker_name(doomed)) and work_horses(doomed), 30,
                                "the finalize job running in a work-horse")
            with web.app_context():
                assert ensure_finalize(row) is False  # recovery leaves a live worker's job alone
            with ThreadPoolExecutor(2) as starting:  # the replacement (idle) and the scheduler
                started = [starting.submit(rq_processes.worker, **env), starting.submit(rq_processes.scheduler, **env)]
            for process in started:
                process.result()
            assert set(horses) <= set(kill_worker(doomed))
        killed_at = time.monotonic()

        with database(app) as session:
            row = session.get(UploadTask, task_pk)
            assert row.status == UploadStatus.InProgress and row.file_id is None  # cut short, not done

        # no second complete: the scheduler finds the job on a dead worker and queues it again
        bound = RECOVERY_INTERVAL + FINALIZE_SECONDS
        packets = listener.until("upload.completed", timeout=bound + 30)
        elapsed = time.monotonic() - killed_at
    finally:
        listener.close()
        with web.app_context():
            db.engine.dispose()
    assert elapsed <= bound, f"completed {elapsed:.1f} s after the kill; the README promises {bound} s here"
    completed = packets[-1]["data"]
    assert completed["taskId"] == task["taskId"]

    with database(app) as session:
        row = session.get(UploadTask, task_pk)
        files = session.scalars(sa.select(CloudFile).where(CloudFile.account_id == account)).all()
        assert row.status == UploadStatus.Completed
        assert [str(f.id) for f in files] == [completed["fileId"]] == [str(row.file_id)]
        assert files[0].size == SIZE and files[0].hash == digest
        key = files[0].storage_key
    backend = task_backend(app, task["taskId"])
    assert [name for name, _ in backend.list_objects("files")] == [key]  # one stored object
    # and no chunk left: the worker removes them just after announcing the file
    wait_until(lambda: not list(backend.list_objects("uploads")), 10, "the chunks removed")
    assert stored_sha256(backend, key) == digest  # the bytes themselves


def leave_finalize_abandoned(app, redis, task_id: str, runs: int, job_status=JobStatus.STARTED):
    """The state a finalize whose worker was killed leaves: requested a minute ago, `runs`
    attempts taken, and its job (if any) 'started' by a worker that no longer exists."""
    from jobs.finalize import finalize_upload  # noqa: PLC0415

    with database(app) as session:
        session.execute(sa.update(UploadTask).where(UploadTask.task_id == task_id).values(
            finalize_requested_at=utcnow() - timedelta(minutes=1), finalize_attempts=runs))
        session.commit()
        row = session.scalar(sa.select(UploadTask).where(UploadTask.task_id == task_id))
        session.expunge(row)
    if job_status is not None:
        with app.app_context():
            ghost = Job.create(finalize_upload, args=[str(row.id)], id=f"finalize-{task_id}", connection=redis)
            ghost.set_status(job_status)
            ghost.save()
    return row


@pytest.mark.parametrize("job_status", [JobStatus.STARTED, None], ids=["started-by-a-dead-worker", "lost-by-redis"])
def test_a_new_attempt_deletes_the_file_a_killed_attempt_stored(app, api, redis, worker, tmp_path, job_status):
    """A run killed after storing the whole file, before publishing it, leaves an object that no
    row names; the sweep queues the job again (left 'started' by a worker that is gone, or lost
    with Redis), and the run that takes over deletes that object: one file, one object."""
    pool_id = make_pool(app, tmp_path / "pool")
    data = random_bytes(3 * MIB + 7, seed=5)
    task = create_task(api, data, chunkSize=MIB, poolId=pool_id)
    send_chunks(api, task, data)
    row = leave_finalize_abandoned(app, redis, task["taskId"], runs=1, job_status=job_status)
    backend = task_backend(app, task["taskId"])
    chunk_keys = [key for *_, key in chunk_rows(app, task["taskId"])]
    dead_key = f"files/{attempt_file_id(row.id, 1)}"
    backend.compose(chunk_keys, dead_key)  # what attempt 1 had stored when it was killed
    listener = EventListener(redis, api.account_id)
    try:
        with app.app_context():
            assert task["taskId"] in recover_uploads()  # the scheduler's sweep
        packet = listener.until("upload.completed")[-1]
    finally:
        listener.close()
    assert packet["data"]["fileId"] == str(attempt_file_id(row.id, 2))
    file = api.get(f"/files/{packet['data']['fileId']}").get_json()
    assert file["hash"] == sha256(data)
    assert [key for key, _ in backend.list_objects("files")] == [f"files/{file['id']}"]
    with database(app) as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(CloudFile).where(
            CloudFile.account_id == api.account_id)) == 1


def test_an_upload_whose_finalize_keeps_dying_ends_failed(app, api, redis, settings):
    """After TASK_MAX_ATTEMPTS runs without an end (a file that kills its worker each time),
    recovery fails the upload instead of starting it again: reservation released, chunks gone."""
    data = random_bytes(MIB + 3, seed=6)
    task = create_task(api, data, chunkSize=MIB)
    send_chunks(api, task, data)
    leave_finalize_abandoned(app, redis, task["taskId"], runs=app.config["TASK_MAX_ATTEMPTS"],
                             job_status=JobStatus.FAILED)  # RQ failed it: its horse died on the last retry
    listener = EventListener(redis, api.account_id)
    try:
        with app.app_context():
            assert task["taskId"] in recover_uploads()
        packet = listener.until("upload.failed", timeout=10)[-1]
    finally:
        listener.close()
    assert "3 times" in packet["data"]["errorMessage"]
    assert api.get(f"/files/upload/progress/{task['taskId']}").get_json()["status"] == "Failed"
    assert quota_usage(app, api.account_id)["used"] == 0
    assert chunk_rows(app, task["taskId"]) and not list(
        task_backend(app, task["taskId"]).list_objects(f"uploads/{task['taskId']}"))
    with app.app_context():
        assert task["taskId"] not in recover_uploads()  # done with it


def test_a_claim_being_queued_is_left_alone_beside_the_finished_job_of_a_postponed_run(app, api, redis):
    """A run that postponed (full disk) ends its job FINISHED; a complete then claims the upload
    again and is about to queue a new job. Recovery, or a second complete, looking in that gap
    must not take the old job for a dead one (with TASK_MAX_ATTEMPTS runs counted it would fail
    the upload and delete its chunks)."""
    data = random_bytes(MIB + 5, seed=7)
    task = create_task(api, data, chunkSize=MIB)
    send_chunks(api, task, data)
    leave_finalize_abandoned(app, redis, task["taskId"], runs=app.config["TASK_MAX_ATTEMPTS"],
                             job_status=JobStatus.FINISHED)
    with database(app) as session:  # claimed just now
        session.execute(sa.update(UploadTask).where(UploadTask.task_id == task["taskId"]).values(
            finalize_requested_at=utcnow()))
        session.commit()
        row = session.scalar(sa.select(UploadTask).where(UploadTask.task_id == task["taskId"]))
        session.expunge(row)
    with app.app_context():
        assert ensure_finalize(row) is False
    assert api.get(f"/files/upload/progress/{task['taskId']}").get_json()["status"] == "InProgress"
    assert len(chunk_rows(app, task["taskId"])) == 2
