"""What a running task reports through: one throttled reporter that saves progress and the
checkpoint, publishes `task.progress` on each 5 % step, and honours pause and cancel.

A job calls `ctx.step(progress, checkpoint)` between units of work. At most every
STEP_WRITE_INTERVAL seconds (and always when forced or on a 5 % step) that writes progress,
checkpoint and a heartbeat to the task's row and reads back its `control`; a requested pause
or cancel then raises TaskPaused or TaskCancelled, after the checkpoint is saved, so the
engine can stop the job cleanly.
"""
from __future__ import annotations

import time
import uuid
from typing import Callable

import sqlalchemy as sa

from app.events import iso, publish_event
from app.extensions import db
from app.models import Task, TaskStatus
from app.models.types import utcnow

STEP_WRITE_INTERVAL = 0.5
PROGRESS_STEPS = 20  # task.progress on each 5 % step


class TaskPaused(Exception):
    pass


class TaskCancelled(Exception):
    pass


class TaskFailed(Exception):
    """A failure the task type recognised (bad input met while working): the message is shown
    to the user, and the job is not retried."""


class TaskContext:
    def __init__(self, task: Task):
        self.task_pk: uuid.UUID = task.id
        self.task_id: str = task.task_id
        self.account_id: uuid.UUID = task.account_id
        self.name: str = task.name
        self.type: str = task.type
        self.parameters: dict = dict(task.parameters or {})
        self.checkpoint: dict = dict(task.checkpoint or {})
        self.results: dict = dict(task.results or {})
        self.progress: float = task.progress or 0.0
        self._last_write = 0.0
        self._last_bucket = int(self.progress * PROGRESS_STEPS // 100)
        self._cleanups: list[Callable] = []

    def on_cancel(self, cleanup: Callable) -> None:
        """Run `cleanup` if the task is cancelled (undo partial outputs)."""
        self._cleanups.append(cleanup)

    def run_cleanups(self) -> None:
        for cleanup in reversed(self._cleanups):
            cleanup()

    def step(self, progress: float, checkpoint: dict | None = None, *, force: bool = False) -> None:
        """Report progress (0..100) and, if given, the new checkpoint; stop if asked to."""
        self.progress = max(0.0, min(100.0, float(progress)))
        if checkpoint is not None:
            self.checkpoint = checkpoint
        bucket = int(self.progress * PROGRESS_STEPS // 100)
        now = time.monotonic()
        if not force and bucket == self._last_bucket and now - self._last_write < STEP_WRITE_INTERVAL:
            return
        self._last_write = now
        moment = utcnow()
        control = db.session.execute(
            sa.update(Task).where(Task.id == self.task_pk)
            .values(progress=self.progress, checkpoint=self.checkpoint, results=self.results,
                    last_activity=moment, updated_at=moment)
            .returning(Task.control)
        ).scalar_one_or_none()
        db.session.commit()
        if bucket != self._last_bucket:
            self._last_bucket = bucket
            publish_event(self.account_id, "task.progress", {
                "taskId": self.task_id, "name": self.name, "type": self.type,
                "progress": round(self.progress, 2), "status": TaskStatus.InProgress.name,
                "lastActivity": iso(moment),
            })
        if control == "cancel":
            raise TaskCancelled()
        if control == "pause":
            raise TaskPaused()
