"""`flask tasks list|show|cancel|retry|cleanup`: generic tasks of every account, for operators."""
from __future__ import annotations

import json

import click
import sqlalchemy as sa
from flask.cli import AppGroup
from redis.exceptions import RedisError
from rq.exceptions import NoSuchJobError
from rq.job import Job

from app.cli.common import account_uuid
from app.errors import ApiError
from app.events import iso, publish_event
from app.extensions import db
from app.models import Task, TaskStatus
from app.models.types import utcnow
from app.redis_client import get_redis
from app.schemas.tasks import TaskSchema
from app.services import tasks as task_service
from app.services.task_cleanup import purge_finished_tasks
from jobs.engine import job_id_for


@click.group(cls=AppGroup)
def tasks():
    """Generic background tasks of all accounts."""


def _status(value: str | None) -> TaskStatus | None:
    if value is None:
        return None
    try:
        return TaskStatus[value]
    except KeyError as error:
        raise click.BadParameter(f"{value!r} is not a status; one of {', '.join(s.name for s in TaskStatus)}",
                                 param_hint="--status") from error


def _find(task_id: str) -> Task:
    task = db.session.scalar(sa.select(Task).where(Task.task_id == task_id))
    if task is None:
        raise click.ClickException(f"no task {task_id!r}")
    return task


def _describe(task: Task) -> dict:
    out = TaskSchema().dump(task)
    out.update(attempts=task.attempts, checkpoint=task.checkpoint, control=task.control)
    return out


@tasks.command("list")
@click.option("--account", help="Only this account's tasks (UUID).")
@click.option("--status", help="Only tasks with this status (Pending, InProgress, Paused, Completed, ...).")
@click.option("--type", "type_name", help="Only tasks of this type (e.g. FileCompress).")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON array instead of lines.")
def list_tasks(account, status, type_name, limit, as_json):
    """List tasks, most recently active first: id, status, type, progress, account, name."""
    query = sa.select(Task).order_by(Task.last_activity.desc(), Task.id).limit(limit)
    if account:
        query = query.where(Task.account_id == account_uuid(account))
    if status:
        query = query.where(Task.status == _status(status))
    if type_name:
        query = query.where(Task.type == type_name)
    rows = list(db.session.scalars(query))
    db.session.rollback()
    if as_json:
        click.echo(json.dumps(TaskSchema(many=True).dump(rows), indent=2))
        return
    for task in rows:
        click.echo(f"{task.task_id}  {task.status_name:<10} {task.type:<16} {task.progress:6.1f}%  "
                   f"{task.account_id}  {iso(task.last_activity)}  {task.name}")


@tasks.command("show")
@click.argument("task_id")
def show_task(task_id):
    """Show TASK_ID as JSON (with its checkpoint, attempts and pending control; never a secret)."""
    task = _find(task_id)
    click.echo(json.dumps(_describe(task), indent=2))
    db.session.rollback()


@tasks.command("cancel")
@click.argument("task_id")
def cancel_task(task_id):
    """Cancel TASK_ID: a queued or paused task at once, a running one at its next step."""
    task = _find(task_id)
    account_id = task.account_id
    db.session.rollback()
    try:
        task = task_service.cancel_task(task_id, account_id)
    except ApiError as error:
        raise click.ClickException(error.message) from error
    click.echo("cancelled" if task.status == TaskStatus.Cancelled
               else "cancel requested: the task stops at its next step")


@tasks.command("retry")
@click.argument("task_id")
def retry_task(task_id):
    """Run a Failed or Cancelled TASK_ID again, from its checkpoint."""
    task = db.session.scalar(sa.select(Task).where(Task.task_id == task_id).with_for_update())
    if task is None:
        raise click.ClickException(f"no task {task_id!r}")
    if task.status not in (TaskStatus.Failed, TaskStatus.Cancelled):
        status = task.status_name
        db.session.rollback()
        raise click.ClickException(f"a {status} task cannot be retried (only Failed or Cancelled)")
    now = utcnow()
    task.status, task.control, task.error_message, task.completed_at = TaskStatus.Pending, None, None, None
    task.last_activity = task.updated_at = now
    task.attempts = 0  # as resume does: crash recovery counts the runs since the last start
    db.session.commit()
    try:  # the previous run's job (failed, or still queued if cancelled before it started) goes
        Job.fetch(job_id_for(task.task_id), connection=get_redis()).delete()
    except NoSuchJobError:
        pass
    except RedisError as error:
        raise click.ClickException(f"the job queue is unavailable: {error}") from error
    publish_event(task.account_id, "task.resumed", {"taskId": task.task_id, "name": task.name, "type": task.type,
                                                    "resumedAt": iso(now)})
    try:
        task_service.enqueue_task(task)
    except ApiError as error:
        raise click.ClickException(error.message) from error
    click.echo(f"queued {task.task_id} (from checkpoint {json.dumps(task.checkpoint or {})})")


@tasks.command("cleanup")
@click.option("--days", type=click.IntRange(min=0), default=None,
              help="Remove finished tasks older than this many days (default TASK_RETENTION_DAYS, 30).")
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
def cleanup(days, dry_run):
    """Remove Completed, Failed, Cancelled and Expired tasks older than --days (and erase any
    sealed secret a finished task still holds)."""
    click.echo(json.dumps(purge_finished_tasks(days, dry_run), indent=2))
