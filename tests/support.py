"""Helpers for tests: an authenticated API client, file and chunk builders, event listeners,
and the real processes (rq worker, gunicorn) the integration tests talk to."""
from __future__ import annotations

import hashlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass

import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIB = 1024 * 1024
ENVELOPE_KEYS = {"code", "message", "status", "details"}
HTTP_TIMEOUT = 60  # seconds any one request to a real server may take


def assert_error(response, status: int, code: str, field: str | None = None) -> dict:
    """The one error envelope, with `status` and `code` (and `field` among the invalid fields)."""
    payload = response.get_json()
    assert response.status_code == status, payload
    assert payload is not None and set(payload) == ENVELOPE_KEYS, payload
    assert payload["status"] == status and payload["code"] == code, payload
    assert isinstance(payload["message"], str) and payload["message"]
    assert isinstance(payload["details"], dict)
    if field is not None:
        assert field in payload["details"]["fields"], payload
    return payload


@contextmanager
def database(app):
    """A short app context for rows; its transaction ends before any request is made."""
    from app.extensions import db  # noqa: PLC0415

    with app.app_context():
        try:
            yield db.session
        finally:
            db.session.rollback()


def quota_usage(app, account_id) -> dict:
    from app.services import quotas  # noqa: PLC0415

    with database(app):
        return quotas.usage(account_id)


def create_task(api, data: bytes, **fields) -> dict:
    """Create an upload task for `data` and return the create response's body."""
    created = api.create(data, **fields)
    assert created.status_code == 200, created.get_json()
    body = created.get_json()
    assert body["fileExists"] is False, body
    return body


def send_chunks(api, task: dict, data: bytes, indices=None) -> None:
    """Send the chunks of `data` (all, or those of `indices`) to a created task."""
    size = task["chunkSize"]
    for index in range(task["chunksCount"]) if indices is None else indices:
        sent = api.send_chunk(task["taskId"], index, data[index * size:(index + 1) * size])
        assert sent.status_code == 200, sent.get_json()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def random_bytes(size: int, seed: int | None = None) -> bytes:
    if seed is None:
        return os.urandom(size)
    import random  # noqa: PLC0415

    return random.Random(seed).randbytes(size)


class ApiClient:
    """Flask test client bound to one account (and one prefix: /api or /drive)."""

    def __init__(self, client, token: str | None, account_id: uuid.UUID | None, prefix: str = "/api"):
        self.client = client
        self.token = token
        self.account_id = account_id
        self.prefix = prefix

    def headers(self, extra=None):
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        headers.update(extra or {})
        return headers

    def request(self, method, path, **kwargs):
        kwargs["headers"] = self.headers(kwargs.get("headers"))
        return self.client.open(self.prefix + path, method=method, **kwargs)

    def get(self, path, **kwargs):
        return self.request("GET", path, **kwargs)

    def post(self, path, **kwargs):
        return self.request("POST", path, **kwargs)

    def delete(self, path, **kwargs):
        return self.request("DELETE", path, **kwargs)

    # the upload flow -------------------------------------------------------------------
    def create(self, data: bytes, name="file.bin", content_type="application/octet-stream", **fields):
        body = {"fileName": name, "fileSize": len(data), "contentType": content_type, "hash": sha256(data)}
        body.update(fields)
        return self.post("/files/upload/create", json=body)

    def send_chunk(self, task_id, index, payload: bytes, multipart=False, headers=None):
        if multipart:
            from io import BytesIO  # noqa: PLC0415

            return self.post(f"/files/upload/chunk/{task_id}/{index}", headers=headers,
                             data={"chunk": (BytesIO(payload), "blob")}, content_type="multipart/form-data")
        return self.post(f"/files/upload/chunk/{task_id}/{index}", data=payload, headers=headers,
                         content_type="application/octet-stream")

    def complete(self, task_id):
        return self.post(f"/files/upload/complete/{task_id}")

    def upload(self, data: bytes, chunk_size: int | None = None, **fields):
        """create → every chunk → complete; returns the complete response."""
        if chunk_size is not None:
            fields["chunkSize"] = chunk_size
        created = self.create(data, **fields)
        assert created.status_code == 200, created.get_json()
        body = created.get_json()
        if body["fileExists"]:
            return created
        size = body["chunkSize"]
        for index in range(body["chunksCount"]):
            sent = self.send_chunk(body["taskId"], index, data[index * size:(index + 1) * size])
            assert sent.status_code == 200, sent.get_json()
        return self.complete(body["taskId"])


class LiveClient:
    """requests against a real gunicorn (`live_server`, or a test's own) for one account, one
    Session per thread."""

    def __init__(self, base_url: str, token: str, account_id: uuid.UUID | None = None):
        self.base = base_url + "/api"
        self.headers = {"Authorization": f"Bearer {token}"}
        self.account_id = account_id
        self.local = threading.local()

    @property
    def session(self) -> requests.Session:
        if not hasattr(self.local, "session"):
            self.local.session = requests.Session()
        return self.local.session

    def create(self, data: bytes, **fields):
        body = {"fileName": "big.bin", "fileSize": len(data), "contentType": "application/octet-stream",
                "hash": sha256(data)}
        body.update(fields)
        response = self.post("/files/upload/create", json=body, headers=self.headers)
        assert response.status_code == 200, response.text
        return response.json()

    def post(self, path: str, fresh: bool = False, **kwargs):
        """`fresh`: on a connection of its own, closed after the response."""
        if fresh:
            with requests.Session() as session:
                return session.post(self.base + path, timeout=HTTP_TIMEOUT, **kwargs)
        return self.session.post(self.base + path, timeout=HTTP_TIMEOUT, **kwargs)

    def send_raw(self, task_id: str, index: int, payload: bytes, fresh: bool = False):
        return self.post(f"/files/upload/chunk/{task_id}/{index}", fresh, data=payload,
                         headers=dict(self.headers, **{"Content-Type": "application/octet-stream"}))

    def send_multipart(self, task_id: str, index: int, payload: bytes, checksum: str | None = None,
                       fresh: bool = False):
        headers = dict(self.headers)
        if checksum:
            headers["X-Chunk-SHA256"] = checksum
        return self.post(f"/files/upload/chunk/{task_id}/{index}", fresh, headers=headers,
                         files={"chunk": ("blob", payload, "application/octet-stream")})

    def get(self, path: str, **kwargs):
        return self.session.get(self.base + path, headers=self.headers, timeout=HTTP_TIMEOUT, **kwargs)

    def complete(self, task_id: str) -> dict:
        """Complete; a 202 (still finalizing) is answered by calling again, as a client would."""
        for _ in range(6):
            response = self.post(f"/files/upload/complete/{task_id}", headers=self.headers)
            if response.status_code != 202:
                assert response.status_code == 200, response.text
                return response.json()
        raise AssertionError(f"complete still pending: {response.text}")

    def download_sha256(self, file_id: str) -> tuple[str, int]:
        digest, size = hashlib.sha256(), 0
        with self.get(f"/files/{file_id}/download", stream=True) as response:
            assert response.status_code == 200, response.text
            for block in response.iter_content(1024 * 1024):
                digest.update(block)
                size += len(block)
        return digest.hexdigest(), size


def chunk_rows(app, task_id: str) -> list[tuple[int, int, str, str]]:
    """(index, size, sha256, storage key) of every chunk row of a task, by index."""
    import sqlalchemy as sa  # noqa: PLC0415

    from app.extensions import db  # noqa: PLC0415
    from app.models import UploadChunk, UploadTask  # noqa: PLC0415

    with app.app_context():
        rows = db.session.execute(
            sa.select(UploadChunk.chunk_index, UploadChunk.size, UploadChunk.sha256, UploadChunk.storage_key)
            .join(UploadTask, UploadTask.id == UploadChunk.task_id)
            .where(UploadTask.task_id == task_id).order_by(UploadChunk.chunk_index)).all()
        db.session.rollback()
        return [tuple(row) for row in rows]


def task_backend(app, task_id: str):
    """The storage backend of an upload task's pool."""
    import sqlalchemy as sa  # noqa: PLC0415

    from app.extensions import db  # noqa: PLC0415
    from app.models import Pool, UploadTask  # noqa: PLC0415
    from app.storage import backend_for  # noqa: PLC0415

    with app.app_context():
        pool_id = db.session.scalar(sa.select(UploadTask.pool_id).where(UploadTask.task_id == task_id))
        backend = backend_for(db.session.get(Pool, pool_id))
        db.session.rollback()
        return backend


def stored_objects(app, task_id: str) -> set[str]:
    """The keys of every object stored under a task's chunk prefix (temporary files too)."""
    return {key for key, _ in task_backend(app, task_id).list_objects(f"uploads/{task_id}")}


class EventListener:
    """Subscribes to an account's live channel (as the relay will) and collects packets.
    The constructor returns once Redis has confirmed the subscription, so nothing published
    after it can be missed."""

    def __init__(self, redis, account_id):
        from app.events import keys_for  # noqa: PLC0415

        self.pubsub = redis.pubsub()
        self.pubsub.subscribe(keys_for(account_id)[2])
        confirmation = self.pubsub.get_message(timeout=10)
        assert confirmation and confirmation["type"] == "subscribe", confirmation
        self.packets: list[dict] = []

    def next(self, timeout: float = 20.0) -> dict | None:
        """The next packet, or None if none came within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            message = self.pubsub.get_message(timeout=remaining)
            if message is not None and message["type"] == "message":
                packet = json.loads(message["data"])
                self.packets.append(packet)
                return packet

    def until(self, event_type: str, timeout: float = 30.0) -> list[dict]:
        """Collect packets until one of `event_type` arrives; return all collected."""
        while True:
            packet = self.next(timeout)
            assert packet is not None, f"no {event_type} within {timeout}s; got {self.packets}"
            if packet["type"] == event_type:
                return self.packets

    def close(self):
        self.pubsub.close()


def wait_until(condition, timeout: float, what: str, interval: float = 0.01):
    """Poll `condition` until it returns something true (returned), failing with `what` after
    `timeout` seconds: for states no process announces (a job's status, a row's column)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(interval)


def children_of(pid: int) -> list[int]:
    """The pids of a process's children (an RQ worker's: its work-horse and RQ's scheduler)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as listing:
            return [int(child) for child in listing.read().split()]
    except OSError:
        return []


def kill_and_wait(pids: list[int], timeout: float = 30) -> None:
    """SIGKILL every process of `pids` (children of ours or not) and return once all have ended."""
    handles = []
    for pid in pids:
        try:
            handles.append(os.pidfd_open(pid))
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
    try:
        for handle in handles:  # a pidfd is readable once its process has ended
            ready, _, _ = select.select([handle], [], [], timeout)
            assert ready, "a killed process did not end"
    finally:
        for handle in handles:
            os.close(handle)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Process:
    proc: subprocess.Popen
    log_path: str
    lines: list

    def stop(self, timeout: float = 10.0):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def start_process(args, env, log_path, ready_marker: str, timeout: float = 60.0) -> Process:
    """Start a process and return once `ready_marker` appears in its output (stdout+stderr).
    The output goes on being copied to `log_path` by a reader thread."""
    proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1)
    ready = threading.Event()
    lines: list[str] = []

    def pump():
        with open(log_path, "a") as log:
            for line in proc.stdout:
                log.write(line)
                log.flush()
                lines.append(line)
                if ready_marker in line:
                    ready.set()
        ready.set()

    threading.Thread(target=pump, daemon=True).start()
    if not ready.wait(timeout) or proc.poll() is not None:
        proc.kill()
        raise RuntimeError(f"{args[:3]} did not start; see {log_path}:\n{''.join(lines[-30:])}")
    return Process(proc, log_path, lines)


def flask_command(*args) -> list[str]:
    return [sys.executable, "-m", "flask", "--app", "wsgi", *args]


# shared servers: a schema of one PostgreSQL database, a database number of one Redis -----
def _engine(base_url: str):
    import sqlalchemy as sa  # noqa: PLC0415

    from config import Config  # noqa: PLC0415

    return sa.create_engine(Config(DATABASE_URL=base_url).to_flask("/tmp")["DATABASE_URL"])


def create_postgres_schema(base_url: str, schema: str) -> str:
    """Create `schema` in the database of `base_url`; the URL whose connections use it."""
    import sqlalchemy as sa  # noqa: PLC0415
    from urllib.parse import quote  # noqa: PLC0415

    engine = _engine(base_url)
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    engine.dispose()
    sep = "&" if "?" in base_url else "?"
    return f"{base_url}{sep}options={quote(f'-csearch_path={schema}')}"


def drop_postgres_schema(base_url: str, schema: str) -> None:
    import sqlalchemy as sa  # noqa: PLC0415

    engine = _engine(base_url)
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    engine.dispose()


def claim_redis_db(base_url: str, owner: str) -> str:
    """A database number of the server at `base_url` that no other test session or benchmark
    holds, flushed; its URL."""
    from redis import Redis  # noqa: PLC0415

    admin = Redis.from_url(base_url)
    for number in range(1, 16):
        if admin.set(f"drive:test-db-claim:{number}", owner, nx=True, ex=3 * 3600):
            url = base_url.rstrip("/")
            head, _, tail = url.rpartition("/")
            url = f"{head}/{number}" if tail.isdigit() and head.count("/") >= 2 else f"{url}/{number}"
            Redis.from_url(url).flushdb()
            return url
    raise RuntimeError("no free Redis database number (1..15 are all claimed)")


def release_redis_db(base_url: str, url: str) -> None:
    from redis import Redis  # noqa: PLC0415

    number = url.rsplit("/", 1)[1]
    Redis.from_url(url).flushdb()
    Redis.from_url(base_url).delete(f"drive:test-db-claim:{number}")


def generic_task_count(api) -> int:
    """How many generic tasks the account has (the task list also shows its uploads)."""
    return int(api.get("/tasks").headers["X-Total"]) - int(api.get("/tasks?type=FileUpload").headers["X-Total"])


def invoke(runner, *args):
    """Run a flask CLI command through app.test_cli_runner()."""
    return runner.invoke(args=[str(a) for a in args])


def assert_clean_error(result, *fragments):
    """A user error: non-zero exit, one readable message, no traceback."""
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output and "Error" in result.output
    for fragment in fragments:
        assert fragment in result.output, result.output


def gunicorn_command(port: int, workers: int, threads: int, graceful_timeout: float = 2) -> list[str]:
    """The Procfile's web command, sized for a test."""
    return [os.path.join(os.path.dirname(sys.executable), "gunicorn"), "--workers", str(workers),
            "--worker-class", "app.gunicorn_worker.DriveThreadWorker", "--threads", str(threads),
            "--bind", f"127.0.0.1:{port}", "--timeout", "120", "--graceful-timeout", str(graceful_timeout),
            "wsgi:app"]
