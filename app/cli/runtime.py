"""Long-running processes: the RQ worker, the scheduler, the embedded Redis."""
from __future__ import annotations

import click
from flask import current_app
from rq import Worker
from rq.cron import CronScheduler

from app.embedded_redis import stop_embedded_redis
from app.redis_client import get_redis
from jobs.cleanup import cleanup_uploads
from jobs.queues import QUEUE_NAMES, get_queue


@click.command("worker")
@click.option("--burst", is_flag=True, help="Stop when the queues are empty.")
@click.option("--name", help="Worker name.")
@click.option("--with-scheduler/--without-scheduler", default=True, show_default=True,
              help="Also run RQ's scheduler for delayed jobs and retries.")
def worker(burst, name, with_scheduler):
    """Run an RQ worker in the app context, on the queues high, default, low (in that order)."""
    queues = [get_queue(q) for q in QUEUE_NAMES]
    Worker(queues, connection=get_redis(), name=name).work(
        burst=burst, with_scheduler=with_scheduler, logging_level=current_app.config["LOG_LEVEL"].upper())


@click.command("scheduler")
def scheduler():
    """Run the periodic jobs (upload cleanup every UPLOAD_CLEANUP_INTERVAL_MINUTES)."""
    cron = CronScheduler(connection=get_redis(), logging_level=current_app.config["LOG_LEVEL"].upper())
    cron.register(cleanup_uploads, queue_name="low",
                  interval=current_app.config["UPLOAD_CLEANUP_INTERVAL_MINUTES"] * 60)
    cron.start()


@click.group("redis")
def redis_group():
    """The embedded Redis server (used when REDIS_URL is unset)."""


@redis_group.command("url")
def redis_url():
    """Print the Redis URL in use (starting the embedded server if needed)."""
    click.echo(current_app.config["REDIS_URL"])


@redis_group.command("stop")
def redis_stop():
    """Stop the embedded server of this instance."""
    stopped = stop_embedded_redis(current_app.config["INSTANCE_PATH"])
    click.echo("stopped" if stopped else "not running")
