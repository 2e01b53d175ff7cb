"""Generic tasks: create (validated per type before anything is queued), look up, list,
pause, resume, cancel, delete, stats. The work itself is jobs/engine.py."""
from __future__ import annotations

import secrets
import uuid

import sqlalchemy as sa
from flask import current_app
from marshmallow import ValidationError
from redis.exceptions import RedisError
from rq import Retry

from app.errors import BadRequest, Conflict, ServiceUnavailable
from app.events import iso, publish_event
from app.extensions import db
from app.models import FINISHED, Task, TaskStatus
from app.models.types import utcnow
from app.services.task_views import UPLOAD_TYPE, find_upload_as_task, list_all_tasks, upload_counts
from app.services.tenancy import get_owned, is_token
from app.tasks.registry import get_task_type, task_types
from jobs.engine import job_id_for, run_task
from jobs.queues import get_queue, queue_for_priority


def get_task(task_id: str, account_id: uuid.UUID, for_update: bool = False) -> Task:
    return get_owned(Task, task_id, account_id, code="TASK_NOT_FOUND", what="Task", id_column="task_id",
                     for_update=for_update)


def enqueue_task(task: Task, queue_name: str | None = None) -> None:
    """Queue the run of a Pending task (on its priority's queue unless `queue_name` is given);
    503 QUEUE_UNAVAILABLE if Redis cannot take it (the task stays saved)."""
    config = current_app.config
    try:
        get_queue(queue_name or queue_for_priority(task.priority)).enqueue(
            run_task, str(task.id), job_id=job_id_for(task.task_id),
            job_timeout=config["TASK_JOB_TIMEOUT_SECONDS"], retry=Retry(max=2, interval=[2, 10]),
            result_ttl=3600, failure_ttl=7 * 24 * 3600, description=f"{task.type} {task.task_id}",
        )
    except RedisError as error:
        raise ServiceUnavailable("The job queue is unavailable; the task is saved and will start when resumed",
                                 code="QUEUE_UNAVAILABLE", headers={"Retry-After": "5"}) from error


_enqueue = enqueue_task  # the earlier name, still used by app/cli/tasks.py


def create_task(account_id: uuid.UUID, data: dict, queue_name: str | None = None) -> Task:
    task_type = get_task_type(data["type"])
    if task_type is None:
        raise BadRequest(f"Unknown task type {data['type']!r}", code="UNKNOWN_TASK_TYPE",
                         details={"type": data["type"], "known": sorted(task_types())})
    try:
        parameters = task_type.schema().load(data.get("parameters") or {})
    except ValidationError as error:
        raise BadRequest("The parameters are not valid for this task type", code="VALIDATION_ERROR",
                         details={"fields": {"parameters": error.messages}}) from error
    if task_type.prepare is not None:
        parameters = task_type.prepare(account_id, parameters)
    now = utcnow()
    task = Task(
        task_id=secrets.token_hex(16), name=data.get("name") or task_type.display_name,
        description=data.get("description"), type=task_type.name, status=TaskStatus.Pending,
        account_id=account_id, progress=0.0, parameters=parameters, results={}, checkpoint={},
        priority=data["priority"], estimated_duration_seconds=data.get("estimated_duration_seconds"),
        last_activity=now, created_at=now, updated_at=now,
    )
    db.session.add(task)
    db.session.commit()
    publish_event(account_id, "task.created", {"taskId": task.task_id, "name": task.name, "type": task.type,
                                               "createdAt": iso(now)})
    enqueue_task(task, queue_name)
    return task


def list_tasks(account_id: uuid.UUID, query: dict) -> tuple[list, int]:
    """The account's tasks, uploads (type FileUpload) included."""
    return list_all_tasks(account_id, query)


def show_task(task_id: str, account_id: uuid.UUID):
    """A generic task, or an upload shown as a FileUpload task; 404 TASK_NOT_FOUND."""
    upload = find_upload_as_task(task_id, account_id) if is_token(task_id) else None
    return upload if upload is not None else get_task(task_id, account_id)


def _conflict(task: Task, wanted: str) -> Conflict:
    return Conflict(f"A {task.status_name} task cannot be {wanted}", code="INVALID_TASK_TRANSITION",
                    details={"taskId": task.task_id, "status": task.status_name, "requested": wanted})


def pause_task(task_id: str, account_id: uuid.UUID) -> Task:
    """A queued task is Paused at once; a running one stops at its next step."""
    task = get_task(task_id, account_id, for_update=True)
    now = utcnow()
    if task.status == TaskStatus.Pending:
        task.status, task.control, task.updated_at = TaskStatus.Paused, None, now
        db.session.commit()
        publish_event(account_id, "task.paused", {"taskId": task.task_id, "name": task.name, "type": task.type,
                                                  "pausedAt": iso(now)})
    elif task.status == TaskStatus.InProgress and task.control != "cancel":
        task.control, task.updated_at = "pause", now
        db.session.commit()
    elif task.status != TaskStatus.Paused:
        raise _conflict(task, "paused")
    return task


def resume_task(task_id: str, account_id: uuid.UUID) -> Task:
    task = get_task(task_id, account_id, for_update=True)
    now = utcnow()
    if task.status == TaskStatus.InProgress and task.control == "pause":
        task.control, task.updated_at = None, now  # the pause had not happened yet
        db.session.commit()
        return task
    if task.status != TaskStatus.Paused:
        raise _conflict(task, "resumed")
    task.status, task.control, task.updated_at, task.last_activity = TaskStatus.Pending, None, now, now
    task.attempts = 0  # crash recovery counts the runs since the user last started it
    db.session.commit()
    publish_event(account_id, "task.resumed", {"taskId": task.task_id, "name": task.name, "type": task.type,
                                               "resumedAt": iso(now)})
    enqueue_task(task)
    return task


def cancel_task(task_id: str, account_id: uuid.UUID) -> Task:
    """A queued or paused task is Cancelled at once (it never starts again); a running one
    stops at its next step and its partial outputs are removed."""
    task = get_task(task_id, account_id, for_update=True)
    now = utcnow()
    task_type = get_task_type(task.type)
    if task.status == TaskStatus.Paused and task.checkpoint and task_type is not None and task_type.discard:
        # a paused run left outputs: the worker undoes them, then marks the task Cancelled
        task.status, task.control, task.updated_at = TaskStatus.Pending, "cancel", now
        db.session.commit()
        enqueue_task(task)
    elif task.status in (TaskStatus.Pending, TaskStatus.Paused):
        task.status, task.control, task.completed_at, task.updated_at = TaskStatus.Cancelled, None, now, now
        # a task that will never run again keeps no secret sealed for its worker
        task.parameters = {k: v for k, v in (task.parameters or {}).items() if not k.startswith("_sealed")}
        db.session.commit()
        publish_event(account_id, "task.cancelled", {"taskId": task.task_id, "name": task.name, "type": task.type,
                                                     "cancelledAt": iso(now)})
    elif task.status == TaskStatus.InProgress:
        task.control, task.updated_at = "cancel", now
        db.session.commit()
    else:
        raise _conflict(task, "cancelled")
    return task


def delete_task(task_id: str, account_id: uuid.UUID) -> None:
    task = get_task(task_id, account_id, for_update=True)
    if task.status not in FINISHED:
        raise Conflict("Only a finished task can be deleted; cancel it first", code="TASK_NOT_FINISHED",
                       details={"taskId": task.task_id, "status": task.status_name})
    db.session.delete(task)
    db.session.commit()


def task_stats(account_id: uuid.UUID) -> dict:
    rows = db.session.execute(
        sa.select(Task.status, Task.type, sa.func.count(), sa.func.coalesce(sa.func.sum(Task.progress), 0))
        .where(Task.account_id == account_id).group_by(Task.status, Task.type)
    ).all()
    rows = list(rows) + [(status, UPLOAD_TYPE, count, progress) for status, count, progress in upload_counts(account_id)]
    by_status = {s.name: 0 for s in TaskStatus}
    by_type: dict[str, int] = {}
    total, running, running_progress = 0, 0, 0.0
    for status, type_name, count, progress in rows:
        by_status[TaskStatus(status).name] += count
        by_type[type_name] = by_type.get(type_name, 0) + count
        total += count
        if status == TaskStatus.InProgress:
            running += count
            running_progress += float(progress)
    return {"total_tasks": total, "by_status": by_status, "by_type": by_type,
            "average_progress": round(running_progress / running, 2) if running else 0.0}
