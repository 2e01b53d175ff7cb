"""Long-running processes: the RQ worker, the scheduler, the embedded Redis."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import click
from flask.cli import AppGroup, with_appcontext
from flask import current_app

from app.embedded_redis import stop_embedded_redis
from app.redis_client import get_redis
from jobs.cleanup import cleanup_uploads
from jobs.processes import DriveCronScheduler, DriveWorker, run_scheduler, run_worker
from jobs.task_cleanup import cleanup_tasks
from jobs.queues import QUEUE_NAMES, get_queue
from jobs.recovery import recover_tasks
from jobs.upload_recovery import recover_uploads


@click.command("worker")
@with_appcontext
@click.option("--burst", is_flag=True, help="Stop when the queues are empty.")
@click.option("--name", help="Worker name.")
@click.option("--with-scheduler/--without-scheduler", default=True, show_default=True,
              help="Also run RQ's scheduler for delayed jobs and retries.")
@click.option("--queue", "queue_names", multiple=True, metavar="NAME",
              help="Listen to this queue instead (repeatable, in order); default: high, default, low.")
def worker(burst, name, with_scheduler, queue_names):
    """Run an RQ worker in the app context, on the queues high, default, low (in that order).
    It outlives a Redis outage (jobs/processes.py)."""
    queues = [get_queue(q) for q in (queue_names or QUEUE_NAMES)]
    _warm_up()
    run_worker(lambda: DriveWorker(queues, connection=get_redis(), name=name), burst,
               with_scheduler=with_scheduler, logging_level=current_app.config["LOG_LEVEL"].upper())


def _warm_up() -> None:
    """Do once, in the worker's own process, what every forked work-horse would otherwise
    repeat for each job: import the job modules RQ loads by name and configure the ORM's
    mappers (measured: mapper set-up was ~9 % of a finalize horse's CPU)."""
    import importlib  # noqa: PLC0415

    import sqlalchemy.orm  # noqa: PLC0415

    for module in ("jobs.finalize", "jobs.engine", "jobs.push", "jobs.cleanup", "jobs.task_cleanup"):
        importlib.import_module(module)
    sqlalchemy.orm.configure_mappers()


@click.command("scheduler")
@with_appcontext
def scheduler():
    """Run the periodic jobs (upload cleanup every UPLOAD_CLEANUP_INTERVAL_MINUTES, old tasks daily,
    abandoned tasks and lost finalize jobs every TASK_RECOVERY_INTERVAL_SECONDS). It outlives a
    Redis outage (jobs/processes.py)."""
    run_scheduler(_cron_scheduler)


def _cron_scheduler() -> DriveCronScheduler:
    config = current_app.config
    cron = DriveCronScheduler(connection=get_redis(), logging_level=config["LOG_LEVEL"].upper())
    low, high = get_queue("low").name, get_queue("high").name
    recovery = config["TASK_RECOVERY_INTERVAL_SECONDS"]
    cron.register(cleanup_uploads, queue_name=low, interval=config["UPLOAD_CLEANUP_INTERVAL_MINUTES"] * 60)
    cron.register(cleanup_tasks, queue_name=low, interval=24 * 3600)  # finished tasks > TASK_RETENTION_DAYS
    cron.register(recover_tasks, queue_name=high, interval=recovery)  # abandoned tasks, from their checkpoint
    cron.register(recover_uploads, queue_name=high, interval=recovery)  # finalize jobs lost or dead
    return cron


@click.group("redis", cls=AppGroup)
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


@click.command("serve")
@with_appcontext
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=lambda: int(os.environ.get("PORT", 8000)), show_default="PORT or 8000")
@click.option("--web-workers", type=int, default=lambda: int(os.environ.get("WEB_CONCURRENCY", 2)),
              show_default="WEB_CONCURRENCY or 2", help="gunicorn processes.")
@click.option("--threads", type=int, default=lambda: int(os.environ.get("WEB_THREADS", 32)),
              show_default="WEB_THREADS or 32", help="Threads per gunicorn process.")
def serve(host, port, web_workers, threads):
    """Run everything: gunicorn (web), one RQ worker and the scheduler. Ctrl-C stops them all,
    and the embedded Redis too when this command started it."""
    config = current_app.config
    embedded = not os.environ.get("REDIS_URL")
    env = dict(os.environ, REDIS_URL=config["REDIS_URL"], DATABASE_URL=config["DATABASE_URL"],
               INSTANCE_PATH=config["INSTANCE_PATH"], STORAGE_UPLOADS_PATH=config["STORAGE_UPLOADS_PATH"])
    bin_dir = os.path.dirname(sys.executable)
    gunicorn = os.path.join(bin_dir, "gunicorn") if os.path.exists(os.path.join(bin_dir, "gunicorn")) else "gunicorn"
    flask = [sys.executable, "-m", "flask", "--app", "wsgi"]
    commands = {
        "web": [gunicorn, "--workers", str(web_workers), "--worker-class", "app.gunicorn_worker.DriveThreadWorker",
                "--threads", str(threads),
                "--bind", f"{host}:{port}", "--timeout", "120", "--graceful-timeout", "30", "wsgi:app"],
        "worker": flask + ["worker"],
        "scheduler": flask + ["scheduler"],
    }
    children = {name: subprocess.Popen(cmd, env=env) for name, cmd in commands.items()}
    click.echo(f"Drive on http://{host}:{port}/api (Redis {config['REDIS_URL']}); Ctrl-C stops it.")

    stopping = []

    def on_signal(signum, _frame):
        stopping.append(signum)
        for child in children.values():
            if child.poll() is None:
                child.terminate()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    code = 0
    try:
        pid, _ = os.wait()  # returns when any child ends: then stop the rest
        if not stopping:
            ended = next((name for name, child in children.items() if child.pid == pid), str(pid))
            click.echo(f"{ended} stopped; stopping the others", err=True)
            code = 1
    finally:
        for child in children.values():
            if child.poll() is None:
                child.terminate()
        for child in children.values():
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
        if embedded:
            stop_embedded_redis(config["INSTANCE_PATH"])
    sys.exit(code)
