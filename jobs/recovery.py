"""recover_tasks: generic tasks whose run died with its process, started again from their
checkpoint (the scheduler runs it every TASK_RECOVERY_INTERVAL_SECONDS).

A running task writes `last_activity` at least every 0.5 s while it works (TaskContext.step,
which task types call per MiB). A task InProgress (or Pending) whose last_activity is older
than TASK_HEARTBEAT_TIMEOUT_SECONDS is abandoned unless its RQ job is still queued or being
executed by a live worker. A worker is live if, on this host, its process exists, and
elsewhere if its RQ heartbeat (sent every 30 s while it works) is under 90 s old, which is
also when RQ lets its key expire. RQ itself retries a job whose work-horse died under a live
worker; this covers the worker (or the machine) dying too, and Redis losing the job.

An abandoned task goes back to Pending and is queued again (its old job deleted first, so
RQ's own cleanup of the dead execution cannot fail or retry the new one); one that has
already started TASK_MAX_ATTEMPTS times is marked Failed with an error instead. The change
is a conditional UPDATE, so two schedulers cannot recover one task twice.
"""
from __future__ import annotations

import logging
import os
import socket
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa
from flask import current_app
from redis.exceptions import RedisError
from rq import Worker
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from app.errors import ApiError
from app.events import iso, publish_event
from app.extensions import db
from app.models import Task, TaskStatus
from app.models.types import utcnow
from app.redis_client import get_redis
from jobs.context import with_app
from jobs.engine import job_id_for

log = logging.getLogger(__name__)

WORKER_STALE_SECONDS = 90  # RQ: job_monitoring_interval (30 s) + 60 s, its worker key's TTL while working
WAITING = (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED)


@with_app
def recover_tasks(heartbeat_timeout: float | None = None) -> list[str]:
    """Re-queue (or fail) the abandoned tasks; the task ids acted on."""
    config = current_app.config
    timeout = config["TASK_HEARTBEAT_TIMEOUT_SECONDS"] if heartbeat_timeout is None else heartbeat_timeout
    cutoff = utcnow() - timedelta(seconds=timeout)
    candidates = list(db.session.scalars(sa.select(Task).where(
        Task.status.in_([TaskStatus.InProgress, TaskStatus.Pending]), Task.last_activity < cutoff)))
    db.session.rollback()
    if not candidates:
        return []
    redis = get_redis()
    try:
        working = jobs_of_live_workers(redis)
    except RedisError:
        log.warning("task recovery skipped: Redis is unavailable", exc_info=True)
        return []
    acted = []
    for task in candidates:
        job_id = job_id_for(task.task_id)
        try:
            job = Job.fetch(job_id, connection=redis)
            status = job.get_status()
        except NoSuchJobError:
            job, status = None, None
        if status in WAITING or (status == JobStatus.STARTED and job_id in working):
            continue
        if _recover(task, job, cutoff, config["TASK_MAX_ATTEMPTS"]):
            acted.append(task.task_id)
    return acted


def jobs_of_live_workers(redis) -> set[str]:
    """Ids of the jobs that live workers are executing now."""
    host = socket.gethostname()
    now = datetime.now(timezone.utc)
    jobs = set()
    for worker in Worker.all(connection=redis):
        job_id = worker.get_current_job_id()
        if not job_id:
            continue
        if worker.hostname == host:
            alive = _process_exists(worker.pid)
        else:
            beat = worker.last_heartbeat
            age = (now - beat.replace(tzinfo=timezone.utc)).total_seconds() if beat else None
            alive = age is not None and age < WORKER_STALE_SECONDS
        if alive:
            jobs.add(job_id)
    return jobs


def _process_exists(pid) -> bool:
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child not yet reaped by its parent is no worker
        with open(f"/proc/{int(pid)}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _recover(task: Task, job: Job | None, cutoff, max_attempts: int) -> bool:
    from app.services.tasks import enqueue_task  # noqa: PLC0415 - services import jobs.engine

    now = utcnow()
    seen = sa.and_(Task.id == task.id, Task.status == task.status, Task.last_activity < cutoff)
    if task.attempts >= max_attempts:
        message = (f"The task stopped without finishing {task.attempts} times "
                   f"(its worker died or lost it); it was not started again")
        changed = db.session.execute(sa.update(Task).where(seen).values(
            status=TaskStatus.Failed, control=None, error_message=message, completed_at=now,
            last_activity=now, updated_at=now)).rowcount
        db.session.commit()
        if changed:
            log.warning("task %s failed after %s attempts", task.task_id, task.attempts)
            publish_event(task.account_id, "task.failed", {"taskId": task.task_id, "name": task.name,
                                                           "type": task.type, "failedAt": iso(now),
                                                           "errorMessage": message})
        return bool(changed)
    if db.session.execute(sa.update(Task).where(seen).values(
            status=TaskStatus.Pending, last_activity=now, updated_at=now)).rowcount == 0:
        db.session.rollback()
        return False
    db.session.commit()
    task = db.session.get(Task, task.id)
    try:
        if job is not None:
            job.delete()
        enqueue_task(task)
    except (RedisError, ApiError):
        # stays Pending with no job: the next round finds it again (its last_activity ages)
        log.warning("task %s could not be queued again", task.task_id, exc_info=True)
        return False
    log.info("task %s queued again from its checkpoint (attempt %s)", task.task_id, task.attempts + 1)
    return True
