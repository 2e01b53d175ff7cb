"""Redis killed and started again, empty, while uploads run against a gunicorn, a worker and a
scheduler pointed at it: while it is down every route of the upload flow answers from the
database (create, chunks, resume, progress, lists) or, for complete, 503 QUEUE_UNAVAILABLE with
Retry-After, never a 500; once it is back, completes succeed, the processes that need it are
still running, and sockets opened before the outage receive the new events.
"""
from __future__ import annotations

import os
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.live.clients import EventStream, next_packet, open_socket
from tests.support import ENVELOPE_KEYS, MIB, random_bytes, sha256, wait_until

CHUNK = MIB


def piece(data: bytes, index: int) -> bytes:
    return data[index * CHUNK:(index + 1) * CHUNK]


def assert_retryable(response, code: str) -> None:
    """503 in our envelope, with the code and a Retry-After."""
    assert response.status_code == 503, (response.status_code, response.text)
    body = response.json()
    assert set(body) == ENVELOPE_KEYS and body["status"] == 503 and body["code"] == code, body
    assert int(response.headers["Retry-After"]) > 0


def logged(process, text: str, after: str | None = None) -> bool:
    """Whether the process's output has a line with `text` (after the first with `after`)."""
    lines = list(process.lines)
    if after is not None:
        marks = [n for n, line in enumerate(lines) if after in line]
        lines = lines[marks[0]:] if marks else []
    return any(text in line for line in lines)


def stored_events(redis_url: str, account_id) -> list[dict]:
    """The account's events as the (restarted) Redis keeps them for replay."""
    from redis import Redis  # noqa: PLC0415

    from app.events import read_events  # noqa: PLC0415

    return read_events(account_id, redis=Redis.from_url(redis_url))


@pytest.fixture()
def stack(redis_server, web_servers, rq_processes):
    """gunicorn, a worker and a scheduler on a redis-server of the test's own (started at once)."""
    redis_server.start()
    env = {"REDIS_URL": redis_server.url, "TASK_RECOVERY_INTERVAL_SECONDS": "1"}
    with ThreadPoolExecutor(3) as starting:
        started = [starting.submit(web_servers, workers=1, **env), starting.submit(rq_processes.worker, **env),
                   starting.submit(rq_processes.scheduler, **env)]
    return [future.result() for future in started]


def test_uploads_go_on_through_a_redis_restart(app, stack, redis_server, make_client):
    server, worker, scheduler = stack
    client = make_client(server.url)
    token = client.headers["Authorization"].split()[1]
    socket = open_socket(server.url, token, client.account_id)
    stream = EventStream(server.url, token).wait_connected()
    first, second = random_bytes(3 * CHUNK + 5, seed=1), random_bytes(2 * CHUNK + 9, seed=2)
    a = client.create(first, chunkSize=CHUNK)["taskId"]
    assert client.send_raw(a, 0, piece(first, 0)).status_code == 200
    for read in (lambda: next_packet(socket), stream.next_packet):
        assert read()["type"] == "upload.progress"

    redis_server.stop()
    created = client.post("/files/upload/create", headers=client.headers, json={
        "fileName": "b.bin", "fileSize": len(second), "contentType": "application/octet-stream",
        "hash": sha256(second), "chunkSize": CHUNK})
    assert created.status_code == 200, created.text
    b = created.json()["taskId"]
    for index in (1, 2, 3):
        stored = client.send_raw(a, index, piece(first, index))
        assert stored.status_code == 200, stored.text
    assert client.send_raw(b, 0, piece(second, 0)).status_code == 200
    assert client.get(f"/files/upload/resume/{a}").json()["missingChunks"] == []
    assert client.get(f"/files/upload/progress/{a}").json()["progress"] == 100.0
    assert client.get(f"/files/upload/tasks/{a}/details").status_code == 200
    listed = client.get("/files/upload/tasks")
    assert listed.status_code == 200 and listed.headers["X-Total"] == "2"
    assert client.get("/files/upload/tasks/recent").status_code == 200
    assert client.get("/files/upload/stats").json()["inProgressTasks"] == 2
    for _ in range(2):  # the claim is given back each time: calling again is safe
        assert_retryable(client.post(f"/files/upload/complete/{a}", headers=client.headers), "QUEUE_UNAVAILABLE")
    health = client.session.get(server.url + "/health/uploads")
    assert health.status_code == 503 and health.json()["redis"]["status"] == "down"
    wait_until(lambda: logged(scheduler, "scheduler lost Redis"), 30, "the scheduler finding Redis gone")

    redis_server.start()  # empty: queues, events and caches are gone
    for index in (1, 2):
        assert client.send_raw(b, index, piece(second, index)).status_code == 200
    done_a, done_b = client.complete(a), client.complete(b)
    for done, data in ((done_a, first), (done_b, second)):
        assert client.download_sha256(done["id"]) == (sha256(data), len(data))
    # both clients connected before the outage receive every event published after it
    published = stored_events(redis_server.url, client.account_id)
    assert {(p["type"], p["data"]["taskId"]) for p in published} >= {("upload.completed", a),
                                                                    ("upload.completed", b)}
    for read in (lambda: next_packet(socket), stream.next_packet):
        assert [read() for _ in published] == published
    socket.close()
    stream.close()
    # the worker and the scheduler lived through it (the scheduler queues its jobs again), and
    # the worker is listed again
    assert worker.proc.poll() is None and scheduler.proc.poll() is None
    wait_until(lambda: logged(scheduler, "Enqueued job recover_uploads", after="scheduler lost Redis"), 30,
               "the scheduler at work again")
    wait_until(lambda: client.session.get(server.url + "/health/uploads").status_code == 200, 20,
               "health ok again (the worker registered again)")


def test_a_worker_whose_record_redis_lost_registers_again(app, redis):
    """After an empty restart a worker is no longer listed (so health saw none and recovery
    took its job for abandoned); its next heartbeat lists it again."""
    from rq import Worker  # noqa: PLC0415

    from jobs.processes import DriveWorker  # noqa: PLC0415
    from jobs.queues import get_queue  # noqa: PLC0415

    with app.app_context():
        worker = DriveWorker([get_queue(f"lost-{uuid.uuid4().hex[:8]}")], connection=redis)
    worker.register_birth()
    try:
        redis.delete(worker.key)  # what an empty restart leaves of it
        redis.srem(worker.redis_workers_keys, worker.key)
        assert worker.key not in {w.key for w in Worker.all(connection=redis)}
        worker.heartbeat()
        listed = {w.key: w for w in Worker.all(connection=redis)}
        assert worker.key in listed and listed[worker.key].pid == os.getpid()
    finally:
        worker.register_death()


def test_sigterm_stops_the_scheduler_while_redis_is_down(redis_server, rq_processes):
    """A stop while Redis is down ends the scheduler. On its way out RQ records its death in
    Redis; with Redis gone that error must not be taken for an outage to outlive (it would start
    again and ignore the SIGTERM)."""
    import signal  # noqa: PLC0415

    redis_server.start()
    scheduler = rq_processes.scheduler(REDIS_URL=redis_server.url)
    redis_server.stop()
    scheduler.proc.send_signal(signal.SIGTERM)
    assert scheduler.proc.wait(timeout=20) == 0
