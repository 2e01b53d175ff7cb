"""Prometheus metrics: recorded where things happen, kept so that GET /metrics
(app/api/metrics.py) is right however many gunicorn processes answer.

- What happens in a web process (a chunk stored or refused, a live connection opened or
  closed) is counted where it happens, by prometheus_client in multiprocess mode: every
  process writes its own memory-mapped files into its server's directory, and a scrape, which
  any process may answer, adds them all up.
- What the database and Redis already know (uploads by status, queue depth) is read when
  scraped, so it cannot drift.
- Finalize durations are observed in RQ work-horses, a new process for every job: files per
  process would pile up by one set per upload, so they go into a Redis hash instead.

Directories: a gunicorn server has `METRICS_DIR/gunicorn-<master pid>`, made empty by its
master when it starts (gunicorn.conf.py) and removed when it stops; a worker that dies has its
live gauges dropped (`child_exit`), its counters kept. Any other process (tests, the CLI, a
dev server) records into `METRICS_DIR/process-<pid>`, made when it first records. Two servers
on one host therefore never count each other's requests. prometheus_client picks its mode
from PROMETHEUS_MULTIPROC_DIR when it is first imported, so the factory sets that variable
and only then is prometheus_client imported, lazily.
"""
from __future__ import annotations

import functools
import logging
import os
import re
import shutil
import sys
import threading
import time

from flask import current_app

log = logging.getLogger(__name__)

ENV = "PROMETHEUS_MULTIPROC_DIR"
TRANSPORTS = ("websocket", "sse")
FINALIZE_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
FINALIZE_OUTCOMES = ("completed", "failed")
_OWNED = re.compile(r"(gunicorn|process)-([0-9]+)")

_lock = threading.Lock()
_state = {"enabled": False, "instruments": None}


# setting up ---------------------------------------------------------------------------------
def init_metrics(app) -> None:
    """Serve /metrics and record, unless METRICS_ENABLED is off. Keeps the directory a
    gunicorn master chose for its workers; otherwise this process gets one of its own."""
    if not app.config["METRICS_ENABLED"]:
        return
    root = app.config["METRICS_DIR"]
    current = os.environ.get(ENV, "")
    if os.path.dirname(current) != root:
        if "prometheus_client" in sys.modules:  # too late: it has chosen its mode already
            log.warning("prometheus_client was imported before the app set %s; /metrics may miss "
                        "what other processes count", ENV)
        else:
            os.environ[ENV] = os.path.join(root, f"process-{os.getpid()}")
    _state["enabled"] = True
    from app.api.metrics import metrics  # noqa: PLC0415 - the route, only when it is on

    app.register_blueprint(metrics)


def settings_from_env() -> dict:
    """The settings `create_app()` would read, for gunicorn's master (which builds no app)."""
    from config import Config  # noqa: PLC0415

    config = Config.from_env()
    return config.to_flask(os.path.abspath(config.INSTANCE_PATH or "instance"))


def start_server() -> None:
    """gunicorn's master, before it forks: an empty directory of its own for its workers to
    inherit, and the directories of processes that are gone removed."""
    settings = settings_from_env()
    if not settings["METRICS_ENABLED"]:
        return
    root = settings["METRICS_DIR"]
    os.makedirs(root, exist_ok=True)
    for name in os.listdir(root):
        owned = _OWNED.fullmatch(name)
        if owned and not _alive(int(owned.group(2))):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
    directory = os.path.join(root, f"gunicorn-{os.getpid()}")
    shutil.rmtree(directory, ignore_errors=True)  # a pid reused after a crash
    os.makedirs(directory)
    os.environ[ENV] = directory


def stop_server() -> None:
    """gunicorn's master, after its workers stopped: its directory goes."""
    directory = os.environ.get(ENV, "")
    if os.path.basename(directory) == f"gunicorn-{os.getpid()}":
        shutil.rmtree(directory, ignore_errors=True)


def forget_process(pid: int) -> None:
    """gunicorn's master, when a worker ended (however): its live gauges stop counting; what
    its counters counted stays in the sums."""
    directory = os.environ.get(ENV)
    if directory and os.path.isdir(directory):
        from prometheus_client.multiprocess import mark_process_dead  # noqa: PLC0415

        mark_process_dead(pid, directory)


def open_process_metrics() -> None:
    """A gunicorn worker, once its app is loaded: make its files now, with every series at
    zero, rather than on the first chunk (the pages are mapped while there is space)."""
    _instruments()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Instruments:
    """This process's counters and gauges (created once: a second set would overwrite the
    first's values in the same file)."""

    def __init__(self):
        from prometheus_client import Counter, Gauge  # noqa: PLC0415

        self.received_bytes = Counter("drive_upload_received_bytes", "Bytes of upload chunks stored",
                                      registry=None)
        self.chunks_stored = Counter("drive_upload_chunks_stored", "Upload chunks stored", registry=None)
        self.chunks_refused = Counter("drive_upload_chunks_refused", "Upload chunks refused, by error code",
                                      ["code"], registry=None)
        self.live_connections = Gauge("drive_live_connections", "Open WebSocket and SSE connections",
                                      ["transport"], multiprocess_mode="livesum", registry=None)
        for transport in TRANSPORTS:
            self.live_connections.labels(transport)


def _instruments() -> _Instruments | None:
    """This process's instruments, made on first use; None while no app of this process has
    metrics on."""
    if _state["instruments"] is None and _state["enabled"]:
        with _lock:
            directory = os.environ.get(ENV)
            if _state["instruments"] is None and directory:
                os.makedirs(directory, exist_ok=True)
                _state["instruments"] = _Instruments()
    return _state["instruments"]


def _record(action) -> None:
    try:
        instruments = _instruments()
        if instruments is not None:
            action(instruments)
    except Exception:  # noqa: BLE001 - a metric never fails a request
        log.warning("could not record a metric", exc_info=True)


# recording ----------------------------------------------------------------------------------
def chunk_stored(size: int) -> None:
    _record(lambda m: (m.received_bytes.inc(size), m.chunks_stored.inc()))


def chunk_refused(code: str) -> None:
    _record(lambda m: m.chunks_refused.labels(code).inc())


def live_connection_opened(transport: str) -> None:
    _record(lambda m: m.live_connections.labels(transport).inc())


def live_connection_closed(transport: str) -> None:
    _record(lambda m: m.live_connections.labels(transport).dec())


def timed_finalize(func):
    """Observe how long finalizing took: `completed` when a file was published, `failed` when
    the run raised (a rejected upload, or an error RQ may retry); nothing when another run
    had published the file already."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        started = time.monotonic()
        try:
            result = func(*args, **kwargs)
        except BaseException:
            observe_finalize(time.monotonic() - started, "failed")
            raise
        if result is not None:
            observe_finalize(time.monotonic() - started, "completed")
        return result

    return wrapper


def observe_finalize(seconds: float, outcome: str) -> None:
    """One observation into the Redis hash the scrape reads (one MULTI, so a scrape never sees
    a count without its sum). Redis down loses the observation, never the job."""
    if not current_app.config["METRICS_ENABLED"]:
        return
    from app.redis_client import get_redis  # noqa: PLC0415

    bound = next((_le(b) for b in FINALIZE_BUCKETS if seconds <= b), "+Inf")
    try:
        pipe = get_redis().pipeline(transaction=True)
        pipe.hincrby(_finalize_key(), f"{outcome}:le:{bound}", 1)
        pipe.hincrby(_finalize_key(), f"{outcome}:count", 1)
        pipe.hincrbyfloat(_finalize_key(), f"{outcome}:sum", seconds)
        pipe.execute()
    except Exception:  # noqa: BLE001
        log.warning("could not record the finalize duration", exc_info=True)


def _finalize_key() -> str:
    return current_app.config["QUEUE_PREFIX"] + "drive:metrics:finalize"


def _le(bound: float) -> str:
    """A bucket's `le` label, as Prometheus writes it ("0.5", "10.0"). Not prometheus_client's
    floatToGoString: importing that in every forked work-horse took ~17 % of a finalize job."""
    return repr(float(bound))


def finalize_histogram(redis) -> dict:
    """{outcome: ([(le, cumulative count), ..., ("+Inf", count)], sum)} from the Redis hash."""
    stored = {k.decode(): float(v) for k, v in redis.hgetall(_finalize_key()).items()}
    histogram = {}
    for outcome in FINALIZE_OUTCOMES:
        cumulative, buckets = 0.0, []
        for bound in map(_le, FINALIZE_BUCKETS):
            cumulative += stored.get(f"{outcome}:le:{bound}", 0.0)
            buckets.append((bound, cumulative))
        buckets.append(("+Inf", stored.get(f"{outcome}:count", 0.0)))
        histogram[outcome] = (buckets, stored.get(f"{outcome}:sum", 0.0))
    return histogram
