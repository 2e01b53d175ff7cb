"""GET /metrics (app/metrics.py) against real multi-process gunicorns.

Requests are sent to a chosen gunicorn worker: a new connection is kept only if that worker
accepted it (read from /proc, as the live tests find a socket's process). So the uploads land
on every process, each process answers scrapes, and every answer must be the exact sum.
Scrapes are parsed with prometheus_client's own parser.
"""
from __future__ import annotations

import http.client
import json
import os
import signal
import time
import uuid

import pytest
import sqlalchemy as sa

from config import Config
from tests.conftest import make_token, process_env
from tests.live.clients import EventStream, open_socket, port_of, serving_pid
from tests.support import (MIB, assert_error, database, free_port, gunicorn_command, random_bytes, sha256, start_process,
                           wait_until)

PROCESS_WAIT = 20  # seconds to find a connection accepted by a given process, or for a gauge to settle


# talking to one process -----------------------------------------------------------------------
class Server:
    """A gunicorn whose worker processes are addressed one by one."""

    def __init__(self, base: str, processes: int):
        self.base = base
        self.port = port_of(base)
        self.pids = self._discover(processes)

    def _accepting_pid(self, conn) -> int:
        """The worker that accepted `conn` (gthread accepts at once, once a worker has booted)."""
        deadline = time.monotonic() + PROCESS_WAIT
        while True:
            try:
                return serving_pid(self.port, conn.sock)
            except AssertionError:
                if time.monotonic() > deadline:
                    raise

    def _connect(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        conn.connect()
        return conn, self._accepting_pid(conn)

    def _discover(self, count: int) -> list[int]:
        pids = set()
        deadline = time.monotonic() + PROCESS_WAIT
        while len(pids) < count and time.monotonic() < deadline:
            conn, pid = self._connect()
            conn.close()
            pids.add(pid)
        assert len(pids) == count, f"found only the processes {pids}"
        return sorted(pids)

    def connection_to(self, pid: int):
        deadline = time.monotonic() + PROCESS_WAIT
        while time.monotonic() < deadline:
            conn, holder = self._connect()
            if holder == pid:
                return conn
            conn.close()
        raise AssertionError(f"process {pid} accepted no connection within {PROCESS_WAIT}s")

    def send(self, pid: int | None, method: str, path: str, body=None, headers=None):
        """(status, headers, body) of one request served by process `pid` (None: any)."""
        headers = dict(headers or {})
        if isinstance(body, dict):
            body = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60) if pid is None else \
            self.connection_to(pid)
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def scrape(self, pid: int) -> dict:
        status, headers, body = self.send(pid, "GET", "/metrics")
        assert status == 200, body
        assert headers["Content-Type"].startswith("text/plain; version="), headers
        return parse(body.decode())


def parse(text: str) -> dict:
    """{(sample name, sorted labels): value}, with prometheus_client's parser (imported here:
    the app sets prometheus_client's multiprocess directory before its first import)."""
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples: dict, name: str, **labels) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def settles(server: Server, read, expected, what: str):
    """Scrape every process in turn until `read(samples)` is `expected` on all of them."""
    deadline = time.monotonic() + PROCESS_WAIT
    while True:
        seen = [read(server.scrape(pid)) for pid in server.pids]
        if all(v == expected for v in seen) or time.monotonic() > deadline:
            assert seen == [expected] * len(seen), f"{what}: {seen}, expected {expected}"
            return


# an upload, one request per chosen process ---------------------------------------------------
class Uploader:
    def __init__(self, server: Server, token: str):
        self.server = server
        self.auth = {"Authorization": f"Bearer {token}"}

    def call(self, pid, method, path, body=None, headers=None):
        status, _, raw = self.server.send(pid, method, "/api" + path, body, dict(self.auth, **(headers or {})))
        return status, json.loads(raw) if raw else None

    def create(self, data: bytes, declared_hash: str | None = None) -> dict:
        status, task = self.call(None, "POST", "/files/upload/create", {
            "fileName": "m.bin", "fileSize": len(data), "contentType": "application/octet-stream",
            "hash": declared_hash or sha256(data), "chunkSize": MIB})
        assert status == 200 and task["fileExists"] is False, task
        return task

    def chunk(self, pid, task: dict, data: bytes, index: int):
        return self.call(pid, "POST", f"/files/upload/chunk/{task['taskId']}/{index}",
                         data[index * MIB:(index + 1) * MIB], {"Content-Type": "application/octet-stream"})

    def complete(self, task: dict):
        return self.call(None, "POST", f"/files/upload/complete/{task['taskId']}")


def upload_counts(app) -> dict:
    """Upload tasks by status name, from the rows."""
    from app.models import UploadStatus, UploadTask  # noqa: PLC0415

    with database(app) as session:
        rows = dict(session.execute(sa.select(UploadTask.status, sa.func.count())
                                    .where(UploadTask.deleted_at.is_(None)).group_by(UploadTask.status)).all())
    return {status.name: float(rows.get(status.value, 0)) for status in UploadStatus}


def scraped_uploads(samples: dict) -> dict:
    return {dict(labels)["status"]: v for (name, labels), v in samples.items() if name == "drive_uploads"}


def finalize_count(samples: dict, outcome: str) -> float:
    return value(samples, "drive_upload_finalize_duration_seconds_count", outcome=outcome)


# counters, summed over processes ----------------------------------------------------------------
def test_every_process_reports_the_exact_sums_of_all_processes(app, live_server):
    """Chunks of three uploads go round-robin to live_server's three processes, one repeated
    chunk is refused by each, one upload fails its hash check and one stays open. Every process
    then reports the same totals: bytes and chunks stored exactly as sent, refusals by code,
    uploads by status as the rows say, and the finalize histogram counts the new runs."""
    server = Server(live_server, processes=3)
    pids = server.pids
    uploader = Uploader(server, make_token(app, uuid.uuid4()))
    before = [server.scrape(pid) for pid in pids]
    refused = ("drive_upload_chunks_refused_total", (("code", "CHUNK_ALREADY_UPLOADED"),))

    files = [random_bytes(3 * MIB + 5 + n) for n in range(3)]
    bad, open_one = random_bytes(MIB + 1), random_bytes(2 * MIB)
    sends = [(uploader.create(data), data) for data in files]
    sends.append((uploader.create(bad, declared_hash=sha256(b"other")), bad))
    open_task = uploader.create(open_one)
    turn = 0
    for task, data in sends:
        for index in range(task["chunksCount"]):
            status, receipt = uploader.chunk(pids[turn % 3], task, data, index)
            assert status == 200, receipt
            turn += 1
    assert uploader.chunk(pids[2], open_task, open_one, 0)[0] == 200
    for pid in pids:
        status, error = uploader.chunk(pid, sends[0][0], files[0], 0)
        assert status == 409 and error["code"] == "CHUNK_ALREADY_UPLOADED", error
    for task, data in sends:
        status, body = uploader.complete(task)
        expected = (400, "UPLOAD_FAILED") if data is bad else (200, sha256(data))
        assert (status, body["code"] if data is bad else body["hash"]) == expected, body

    stored_bytes = sum(len(data) for data in files) + len(bad) + MIB
    stored_chunks = sum(task["chunksCount"] for task, _ in sends) + 1
    assert turn == 4 * 3 + 2 and stored_chunks == 15
    after = [server.scrape(pid) for pid in pids]
    for old, new in zip(before, after):
        assert (value(new, "drive_upload_received_bytes_total") - value(old, "drive_upload_received_bytes_total"),
                value(new, "drive_upload_chunks_stored_total") - value(old, "drive_upload_chunks_stored_total"),
                new[refused] - old.get(refused, 0.0)) == (stored_bytes, stored_chunks, 3)

    settles(server, scraped_uploads, upload_counts(app), "uploads by status")
    assert upload_counts(app)["Completed"] >= scraped_uploads(before[0])["Completed"] + 3

    # the worker observes after publishing: the count may trail the complete's answer a little
    base = {o: finalize_count(before[0], o) for o in ("completed", "failed")}
    deadline = time.monotonic() + PROCESS_WAIT
    while True:
        samples = server.scrape(pids[turn % 3])
        turn += 1
        grown = {o: finalize_count(samples, o) - base[o] for o in base}
        if (grown["completed"] >= 3 and grown["failed"] >= 1) or time.monotonic() > deadline:
            break
    assert grown["completed"] >= 3 and grown["failed"] >= 1, grown
    assert_histogram(samples, "drive_upload_finalize_duration_seconds", outcome="completed")
    assert value(samples, "drive_upload_finalize_duration_seconds_sum", outcome="completed") > \
        value(before[0], "drive_upload_finalize_duration_seconds_sum", outcome="completed")
    assert {value(samples, "drive_metrics_source_up", source=s) for s in ("database", "redis")} == {1.0}


def assert_histogram(samples: dict, name: str, **labels) -> None:
    """Cumulative buckets that never decrease, ending at +Inf with the count."""
    buckets = sorted(((float(dict(k[1])["le"]), v) for k, v in samples.items()
                      if k[0] == name + "_bucket" and all(dict(k[1]).get(a) == b for a, b in labels.items())))
    counts = [v for _, v in buckets]
    assert counts == sorted(counts) and buckets[-1][0] == float("inf"), buckets
    assert counts[-1] == value(samples, name + "_count", **labels)


# open sockets, and a worker that dies ------------------------------------------------------------
@pytest.fixture()
def own_server(settings, tmp_path):
    """A gunicorn of this test alone (2 processes): it kills one of its workers. An SSE stream
    learns that its client left when it next writes: a keep-alive every second here."""
    port = free_port()
    process = start_process(
        gunicorn_command(port, workers=2, threads=8),
        process_env(settings, LIVE_SSE_KEEPALIVE_SECONDS="1"), str(tmp_path / "gunicorn.log"),
        ready_marker="Booting worker")
    yield process, f"http://127.0.0.1:{port}"
    process.stop()


def booted_workers(directory: str, count: int) -> list[int]:
    """The workers whose app is loaded: each made its metric files then (post_worker_init)."""
    def pids():
        return sorted(int(name[8:-3]) for name in os.listdir(directory) if name.startswith("counter_"))

    wait_until(lambda: len(pids()) >= count, PROCESS_WAIT, f"{count} workers booted")
    assert len(pids()) == count, pids()
    return pids()


def live_connections(samples: dict) -> tuple:
    return tuple(value(samples, "drive_live_connections", transport=t) for t in ("websocket", "sse"))


def test_open_sockets_are_counted_across_processes_and_a_killed_worker_stops_counting(app, settings, own_server):
    """Three WebSockets on each of two processes and one SSE stream: every process reports 6
    and 1. Closed ones drop out; a worker killed with SIGKILL takes its sockets out of the
    count (gunicorn's child_exit hook). The server's metrics directory, made empty at its start,
    is gone once it stops."""
    process, base = own_server
    directory = os.path.join(Config.from_env(settings).to_flask("/")["METRICS_DIR"], f"gunicorn-{process.proc.pid}")
    assert os.path.isdir(directory)
    workers = booted_workers(directory, 2)
    server = Server(base, processes=2)
    assert server.pids == workers
    account = uuid.uuid4()
    token = make_token(app, account)
    sockets = {pid: [] for pid in server.pids}
    stream = None
    try:
        while any(len(held) < 3 for held in sockets.values()):
            ws = open_socket(base, token, account)
            held = sockets[serving_pid(server.port, ws.sock)]
            if len(held) < 3:
                held.append(ws)
            else:
                ws.close()
        stream = EventStream(base, token).wait_connected()
        settles(server, live_connections, (6.0, 1.0), "6 sockets and a stream open")

        stream.close()
        for held in sockets.values():
            held.pop().close()
        settles(server, live_connections, (4.0, 0.0), "one socket per process and the stream closed")

        victim, survivor = server.pids
        os.kill(victim, signal.SIGKILL)
        for ws in sockets.pop(victim):
            ws.shutdown()
        server.pids = [survivor]
        settles(server, live_connections, (2.0, 0.0), "the killed worker's sockets")
        for ws in sockets.pop(survivor):
            ws.close()
        settles(server, live_connections, (0.0, 0.0), "every socket closed")
    finally:
        for ws in (ws for held in sockets.values() for ws in held):
            ws.close()
        if stream is not None:
            stream.close()
    process.stop()
    assert not os.path.exists(directory)


# access, and what is read at scrape time ------------------------------------------------------------
def app_with(settings, **overrides):
    from app import create_app  # noqa: PLC0415

    return create_app(Config.from_env(settings, TESTING=True, **overrides))


@pytest.mark.parametrize("overrides, headers, status, code", [
    ({}, {}, 200, None),
    ({"METRICS_TOKEN": "s3cret"}, {"Authorization": "Bearer s3cret"}, 200, None),
    ({"METRICS_TOKEN": "s3cret"}, {}, 401, "UNAUTHORIZED"),
    ({"METRICS_TOKEN": "s3cret"}, {"Authorization": "Basic s3cret"}, 401, "UNAUTHORIZED"),
    ({"METRICS_TOKEN": "s3cret"}, {"Authorization": "Bearer s3cre"}, 401, "INVALID_TOKEN"),
    ({"METRICS_ENABLED": False}, {}, 404, "NOT_FOUND"),
])
def test_access_to_metrics(settings, overrides, headers, status, code):
    response = app_with(settings, **overrides).test_client().get("/metrics", headers=headers)
    if code is None:
        assert response.status_code == 200
        assert "drive_uploads" in {name for name, _ in parse(response.get_data(as_text=True))}
    else:
        assert_error(response, status, code)
        assert status != 401 or response.headers["WWW-Authenticate"] == 'Bearer realm="metrics"'


def test_queue_depth_is_read_from_redis_when_scraped(settings):
    """Jobs waiting in queues no worker listens to (a QUEUE_PREFIX of this test's own)."""
    app = app_with(settings, QUEUE_PREFIX=f"metrics-{uuid.uuid4().hex[:8]}-")
    from jobs.queues import QUEUE_NAMES, get_queue  # noqa: PLC0415

    with app.app_context():
        queues = {name: get_queue(name) for name in QUEUE_NAMES}
        try:
            for name, count in (("high", 1), ("low", 2)):
                for _ in range(count):
                    queues[name].enqueue("builtins.len", "waiting")
            samples = parse(app.test_client().get("/metrics").get_data(as_text=True))
        finally:
            for queue in queues.values():
                queue.empty()
    assert {name: value(samples, "drive_queue_depth", queue=name) for name in QUEUE_NAMES} == \
        {"high": 1.0, "default": 0.0, "low": 2.0}
    assert finalize_count(samples, "completed") == finalize_count(samples, "failed") == 0.0


@pytest.mark.parametrize("source, overrides", [
    ("redis", {"REDIS_URL": "redis://127.0.0.1:{port}/0"}),
    ("database", {"DATABASE_URL": "sqlite:////nonexistent-drive-dir/drive.sqlite3"}),
])
def test_a_source_that_is_down_is_reported_and_the_rest_served(settings, source, overrides):
    overrides = {k: v.format(port=free_port()) for k, v in overrides.items()}
    response = app_with(settings, **overrides).test_client().get("/metrics")
    assert response.status_code == 200, response.get_data(as_text=True)
    samples = parse(response.get_data(as_text=True))
    other = {"redis": "database", "database": "redis"}[source]
    assert (value(samples, "drive_metrics_source_up", source=source),
            value(samples, "drive_metrics_source_up", source=other)) == (0.0, 1.0)
    names = {name for name, _ in samples}
    assert ("drive_uploads" in names, "drive_queue_depth" in names) == (source == "redis", source == "database")
