"""run_task: the one RQ job behind every generic task type.

Safe to run twice: only a Pending (or crashed InProgress) task is started, by a conditional
UPDATE. The type's function works in steps through the TaskContext, which saves a checkpoint
and honours pause and cancel. Pause ends the job (the task is Paused and keeps its
checkpoint; resume enqueues it again). Cancel runs the type's cleanups and ends Cancelled.
A TaskFailed is the type's own verdict (Failed at once, not retried); any other exception is
retried by RQ and, on the last try, marks the task Failed, publishes, and re-raises.
"""
from __future__ import annotations

import logging
import uuid

import sqlalchemy as sa
from rq import get_current_job

from app.events import iso, publish_event
from app.extensions import db
from app.models import Task, TaskStatus
from app.models.types import utcnow
from app.tasks.context import TaskCancelled, TaskContext, TaskFailed, TaskPaused
from app.tasks.registry import get_task_type
from jobs.context import with_app

log = logging.getLogger(__name__)


def job_id_for(task_id: str) -> str:
    return f"task-{task_id}"


@with_app
def run_task(task_pk: str):
    pk = uuid.UUID(task_pk)
    now = utcnow()
    started = db.session.execute(
        sa.update(Task)
        .where(Task.id == pk, Task.status.in_([TaskStatus.Pending, TaskStatus.InProgress]),
               sa.or_(Task.control.is_(None), Task.control != "cancel"))
        .values(status=TaskStatus.InProgress, started_at=sa.func.coalesce(Task.started_at, now),
                attempts=Task.attempts + 1, last_activity=now, updated_at=now)
    ).rowcount
    db.session.commit()
    task = db.session.get(Task, pk)
    if task is None:
        return None
    if not started:
        if task.status == TaskStatus.Pending and task.control == "cancel":
            # cancelled while paused: the type undoes what the paused run left behind
            task_type = get_task_type(task.type)
            ctx = TaskContext(task)
            if task_type is not None and task_type.discard is not None:
                task_type.discard(ctx)
            _finish(db.session.get(Task, pk), TaskStatus.Cancelled, "task.cancelled", {"cancelledAt": iso(now)},
                    ctx=ctx)
        return None
    task_type = get_task_type(task.type)
    ctx = TaskContext(task)
    try:
        if task_type is None:
            raise TaskFailed(f"Unknown task type {task.type!r} on this worker")
        task_type.run(ctx)
    except TaskPaused:
        _finish(db.session.get(Task, pk), TaskStatus.Paused, "task.paused", {"pausedAt": iso(utcnow())},
                ctx=ctx, finished=False)
        return None
    except TaskCancelled:
        db.session.rollback()
        ctx.run_cleanups()
        _finish(db.session.get(Task, pk), TaskStatus.Cancelled, "task.cancelled", {"cancelledAt": iso(utcnow())},
                ctx=ctx)
        return None
    except TaskFailed as error:
        db.session.rollback()
        ctx.run_cleanups()
        _fail(pk, ctx, str(error))
        return None
    except Exception as error:
        db.session.rollback()
        job = get_current_job()
        if job is None or not job.retries_left:
            ctx.run_cleanups()
            _fail(pk, ctx, f"The task failed: {type(error).__name__}: {error}"[:500])
        raise
    task = db.session.get(Task, pk)
    now = utcnow()
    task.status, task.progress, task.results = TaskStatus.Completed, 100.0, ctx.results
    task.checkpoint, task.control, task.completed_at = ctx.checkpoint, None, now
    task.last_activity = task.updated_at = now
    db.session.commit()
    publish_event(task.account_id, "task.completed", {
        "taskId": task.task_id, "name": task.name, "type": task.type, "completedAt": iso(now),
        "results": ctx.results,
    })
    return ctx.results


def _finish(task: Task, status: TaskStatus, event: str, extra: dict, ctx: TaskContext | None = None,
            finished: bool = True) -> None:
    now = utcnow()
    task.status, task.control = status, None
    if ctx is not None:
        task.checkpoint, task.progress, task.results = ctx.checkpoint, ctx.progress, ctx.results
    if finished:
        task.completed_at = now
    task.last_activity = task.updated_at = now
    db.session.commit()
    publish_event(task.account_id, event, dict({"taskId": task.task_id, "name": task.name, "type": task.type}, **extra))


def _fail(pk: uuid.UUID, ctx: TaskContext, message: str) -> None:
    task = db.session.get(Task, pk)
    task.error_message = message
    _finish(task, TaskStatus.Failed, "task.failed", {"failedAt": iso(utcnow()), "errorMessage": message}, ctx=ctx)
    log.info("task %s failed: %s", task.task_id, message)
