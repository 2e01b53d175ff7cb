"""Removing old generic tasks: Completed, Failed, Cancelled and Expired tasks whose end (or
last change) is older than TASK_RETENTION_DAYS (30) are deleted. Run daily by the scheduler
and by `flask tasks cleanup`. The same pass erases secrets sealed for a worker (parameter keys
starting with "_sealed") from any finished task that still holds one, e.g. a FileDecrypt task
cancelled before it ever ran."""
from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from flask import current_app

from app.extensions import db
from app.models import FINISHED, Task
from app.models.types import utcnow

DELETE_BATCH = 500
SEALING_TYPES = ("FileDecrypt",)


def purge_finished_tasks(days: int | None = None, dry_run: bool = False) -> dict:
    days = current_app.config["TASK_RETENTION_DAYS"] if days is None else days
    if days < 0:
        raise ValueError("days must be 0 or more")
    cutoff = utcnow() - timedelta(days=days)
    ended = sa.func.coalesce(Task.completed_at, Task.updated_at)
    ids = list(db.session.scalars(sa.select(Task.task_id).where(Task.status.in_(FINISHED), ended < cutoff)
                                  .order_by(ended, Task.task_id)))
    erased = []
    if not dry_run:
        for start in range(0, len(ids), DELETE_BATCH):
            db.session.execute(sa.delete(Task).where(Task.task_id.in_(ids[start:start + DELETE_BATCH]),
                                                      Task.status.in_(FINISHED)))
            db.session.commit()
        erased = erase_sealed_secrets()
    db.session.rollback()
    return {"removedTasks": ids, "days": days, "dryRun": dry_run, "secretsErased": erased}


def erase_sealed_secrets() -> list[str]:
    """Finished tasks that still hold a sealed secret lose it; their task ids."""
    erased = []
    for task in db.session.scalars(sa.select(Task).where(Task.status.in_(FINISHED), Task.type.in_(SEALING_TYPES))):
        parameters = task.parameters or {}
        if any(key.startswith("_sealed") for key in parameters):
            task.parameters = {k: v for k, v in parameters.items() if not k.startswith("_sealed")}
            erased.append(task.task_id)
    db.session.commit()
    return erased
