"""recover_uploads: uploads whose finalize was requested but whose job is lost or died with its
worker are finalized again, without the client calling complete (the scheduler runs it every
TASK_RECOVERY_INTERVAL_SECONDS; complete does the same for its own task via ensure_finalize).

After complete, an upload stays InProgress until its finalize job publishes the file or fails
it. Nothing would ever end it if the job is gone (Redis lost it, or the enqueue failed), dead
(RQ failed it after its work-horse was killed on its last try), or left 'started' by a worker
that no longer exists (a SIGKILLed or lost worker never reports the job's end; RQ would only
notice after the job's timeout, an hour). Such a job is deleted and enqueued again. Two runs at
once are harmless: each run is a numbered attempt and only the latest can publish
(jobs/finalize_attempts.py). An upload whose finalize has started TASK_MAX_ATTEMPTS times
without finishing ends Failed instead, so a file that kills its worker is not retried forever.
"""
from __future__ import annotations

import logging
from datetime import timedelta

import sqlalchemy as sa
from flask import current_app
from redis.exceptions import RedisError
from rq import Retry
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from app.extensions import db
from app.models import UploadStatus, UploadTask
from app.models.types import utcnow
from app.redis_client import get_redis
from jobs.context import with_app
from jobs.finalize import fail_upload, finalize_upload
from jobs.queues import get_queue
from jobs.recovery import WAITING, jobs_of_live_workers

log = logging.getLogger(__name__)

ENQUEUE_GRACE_SECONDS = 10  # a complete enqueues the job just after its claim commits: no job yet is no loss


def finalize_job_id(task: UploadTask) -> str:
    return f"finalize-{task.task_id}"


def enqueue_finalize(task: UploadTask) -> None:
    config = current_app.config
    get_queue("high").enqueue(
        finalize_upload, str(task.id), job_id=finalize_job_id(task),
        job_timeout=config["UPLOAD_FINALIZE_TIMEOUT_SECONDS"], retry=Retry(max=2, interval=[2, 10]),
        result_ttl=3600, failure_ttl=7 * 24 * 3600,
        description=f"finalize upload {task.task_id}",
    )


def ensure_finalize(task: UploadTask, redis=None) -> bool:
    """Enqueue the task's finalize again unless its job is waiting or being run by a live
    worker; True if it did (or, after TASK_MAX_ATTEMPTS runs, failed the upload). RedisError
    when Redis is unreachable."""
    redis = redis or get_redis()
    try:
        job = Job.fetch(finalize_job_id(task), connection=redis)
        status = job.get_status(refresh=False)
    except NoSuchJobError:
        job, status = None, None
    if status in WAITING:
        return False
    # read after the job's status: a worker records its current job as it starts it
    if status == JobStatus.STARTED and job.id in jobs_of_live_workers(redis):
        return False
    # FINISHED: a run that postponed (full disk) left its job; a new claim is being queued
    if status in (None, JobStatus.CREATED, JobStatus.FINISHED) and _just_requested(task):
        return False
    runs = task.finalize_attempts
    if runs >= current_app.config["TASK_MAX_ATTEMPTS"]:
        fail_upload(str(task.id), f"Finalizing started {runs} times without finishing (its worker died "
                                  f"or lost it); it was not started again", runs)
        return True
    if job is not None:
        job.delete()  # its run is over: RQ's later clean-up of it must not touch the new job
    enqueue_finalize(task)
    log.info("upload %s: finalize queued again (job %s)", task.task_id, status or "lost")
    return True


def _just_requested(task: UploadTask) -> bool:
    return task.finalize_requested_at > utcnow() - timedelta(seconds=ENQUEUE_GRACE_SECONDS)


@with_app
def recover_uploads() -> list[str]:
    """Finalize again (or fail) the uploads whose finalize job is lost or dead; their task ids."""
    tasks = list(db.session.scalars(sa.select(UploadTask).where(
        UploadTask.status == UploadStatus.InProgress, UploadTask.deleted_at.is_(None),
        UploadTask.finalize_requested_at.is_not(None))))
    db.session.expunge_all()  # keep their loaded fields; hold no transaction while Redis answers
    db.session.rollback()
    acted = []
    try:
        redis = get_redis()
        for task in tasks:
            if ensure_finalize(task, redis):
                acted.append(task.task_id)
    except RedisError:
        log.warning("upload recovery stopped: Redis is unavailable", exc_info=True)
    return acted
