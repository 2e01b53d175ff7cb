"""The long-running RQ processes (`flask worker`, `flask scheduler`), made to outlive a Redis
outage: Redis holds only queues, events and caches, so losing it for a while, or for good
(a restart without persistence), must not stop the processes that need it.

- RQ's worker waits for Redis while it is idle, but quits on an error elsewhere in its loop,
  and after a restart of an empty Redis it is no longer listed among the workers (so health
  reported none, and recovery saw none). `run_worker` starts it again after such an exit, and
  `DriveWorker` registers itself again when its record is gone.
- RQ's cron scheduler quits on the first Redis error. `run_scheduler` starts it again, so the
  periodic jobs (and recovery first of all: every interval job runs at once on a start) go on.
Both wait 1 s, then twice as long each time up to 30 s, between starts; a stop signal ends
them at once.
"""
from __future__ import annotations

import logging
import signal
import time
from typing import Callable

from redis.exceptions import RedisError
from rq import Worker
from rq.cron import CronScheduler
from rq.exceptions import StopRequested
from rq.worker_registration import register

log = logging.getLogger(__name__)

FIRST_DELAY, MAX_DELAY = 1.0, 30.0
STEADY_SECONDS = 60  # a process that ran this long starts again after the first delay


class DriveWorker(Worker):
    """RQ's worker, remembering a stop signal (to tell a stop from a failure) and registering
    itself again when Redis has lost its record."""

    stop_signalled = False

    def request_stop(self, signum, frame):
        self.stop_signalled = True
        super().request_stop(signum, frame)

    def heartbeat(self, timeout: int | None = None, pipeline=None):
        super().heartbeat(timeout, pipeline)
        if pipeline is None and self.birth_date is not None \
                and not self.connection.sismember(self.redis_workers_keys, self.key):
            self.log.warning("Worker %s: Redis lost this worker's record; registering again", self.name)
            with self.connection.pipeline() as again:
                again.hset(self.key, mapping=self.serialize())
                register(self, again)
                again.expire(self.key, timeout or self.worker_ttl + 60)
                again.execute()


class DriveCronScheduler(CronScheduler):
    """RQ's cron scheduler, remembering a stop signal: on its way out it registers its death
    in Redis, and with Redis down that error would hide the stop (and start it again)."""

    stop_signalled = False

    def _request_stop(self, signum, frame):
        self.stop_signalled = True
        super()._request_stop(signum, frame)


def run_worker(make_worker: Callable[[], DriveWorker], burst: bool, **work_options) -> None:
    """Run a worker until a stop signal (or, in burst mode, until the queues are empty)."""

    def once() -> bool:
        worker = make_worker()
        try:
            worker.work(burst=burst, **work_options)
        except (RedisError, ValueError):  # before its loop began: registering its birth
            # (ValueError: a Redis that kept its data still holds the record of this --name from
            # before the outage; it expires within the worker TTL)
            log.warning("worker could not start: Redis is unavailable", exc_info=True)
        return burst or worker.stop_signalled

    _keep_running(once, "worker")


def run_scheduler(make_scheduler: Callable[[], DriveCronScheduler]) -> None:
    """Run the cron scheduler until a stop signal, starting it again after a Redis failure."""

    def once() -> bool:
        scheduler = make_scheduler()
        try:
            scheduler.start()  # returns on a stop signal
            return True
        except (RedisError, OSError):
            if not scheduler.stop_signalled:
                log.warning("scheduler lost Redis", exc_info=True)
            # read after the log line: a stop signal landing in it raises inside `logging`, which
            # swallows the StopRequested; also, stopped, it may have failed to tell a Redis that is down
            return scheduler.stop_signalled

    _keep_running(once, "scheduler")


def _keep_running(run_once: Callable[[], bool], what: str) -> None:
    """Call `run_once` until it returns True (done) or a stop signal comes, waiting longer
    after each failure. Outside RQ's own loops a signal raises StopRequested, through RQ's
    handlers (left installed) or the one set here, which also remembers it: a StopRequested
    raised while a log line is written is swallowed by `logging`, and must still stop us."""
    stopping = []

    def stop(signum, _frame):
        stopping.append(signum)
        raise StopRequested()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    delay = FIRST_DELAY
    try:
        while True:
            started = time.monotonic()
            if run_once() or stopping:
                return
            if time.monotonic() - started > STEADY_SECONDS:
                delay = FIRST_DELAY
            log.warning("%s stopped without being asked to; starting again in %.0f s", what, delay)
            time.sleep(delay)
            delay = min(delay * 2, MAX_DELAY)
    except StopRequested:
        return
