"""The scheduled removal of old generic tasks (see app/services/task_cleanup.py)."""
from __future__ import annotations

import logging

from app.services.task_cleanup import purge_finished_tasks
from jobs.context import with_app

log = logging.getLogger(__name__)


@with_app
def cleanup_tasks() -> dict:
    report = purge_finished_tasks()
    log.info("task cleanup: %d finished tasks older than %d days removed, %d sealed secrets erased",
             len(report["removedTasks"]), report["days"], len(report["secretsErased"]))
    return report
