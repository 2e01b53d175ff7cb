"""The scheduled cleanup (see app/services/cleanup.py)."""
from __future__ import annotations

import logging

from app.services.cleanup import run_cleanup
from jobs.context import with_app

log = logging.getLogger(__name__)


@with_app
def cleanup_uploads() -> dict:
    report = run_cleanup(dry_run=False)
    log.info("cleanup: %d tasks expired, %d files expired, %d orphaned objects removed",
             len(report["expiredTasks"]), len(report["expiredFiles"]), len(report["orphanedObjects"]))
    return report
