"""Graceful shutdown: SIGTERM to gunicorn's master while chunk bodies are in flight. A chunk
whose client goes on sending is stored (200); a chunk still incomplete when the graceful
timeout is about to run out is cut and leaves nothing behind (no row, no temporary file)
instead of being killed with its process. After a restart every upload resumes and finishes.
An RQ worker's SIGTERM is a warm shutdown: the job it runs finishes, and it takes no other."""
from __future__ import annotations

import signal
import uuid

from rq import Queue, get_current_job
from rq.job import JobStatus

from tests.faults.clients import (
    PartialChunk,
    assert_rows_match_storage,
    partial_writes,
    resume_all,
    wait_until_mid_chunk,
)
from tests.support import MIB, chunk_rows, random_bytes, sha256, wait_until

GRACE = 3  # --graceful-timeout of the server under test: stalled chunks are cut after 2 s
WORKERS = 2
CHUNK = 3 * MIB // 2
SIZE = 2 * CHUNK - 1000
CUT_AFTER = 5 * MIB // 4
FINISHING, STALLED = 2, 2  # clients that go on sending after the SIGTERM, and clients that stop


def piece(data: bytes, index: int) -> bytes:
    return data[index * CHUNK:(index + 1) * CHUNK]


def test_sigterm_stores_the_chunks_that_finish_and_leaves_nothing_of_the_others(
        app, worker, web_servers, make_client):
    server = web_servers(workers=WORKERS, graceful_timeout=GRACE)
    clients = [make_client(server.url) for _ in range(FINISHING + STALLED)]
    files = [random_bytes(SIZE) for _ in clients]
    task_ids = [client.create(data, chunkSize=CHUNK)["taskId"] for client, data in zip(clients, files)]
    in_flight = [PartialChunk(client, task_id, 0, piece(data, 0), CUT_AFTER)
                 for client, task_id, data in zip(clients, task_ids, files)]
    for task_id in task_ids:
        wait_until_mid_chunk(app, task_id)

    server.terminate()
    server.wait_for_log("Stopping gracefully", count=WORKERS)  # every worker has the SIGTERM
    for request in in_flight[:FINISHING]:
        answer = request.finish()
        assert answer is not None and answer[0] == 200, answer
    for request in in_flight[FINISHING:]:  # these never send the rest: the server cuts them
        answer = request.response()
        assert answer is None or answer[0] != 200, answer
    assert server.process.proc.wait(timeout=GRACE + 10) == 0

    for task_id, data in zip(task_ids[:FINISHING], files):
        assert_rows_match_storage(app, task_id, data, CHUNK, [0])
        assert partial_writes(app, task_id) == {}
    for task_id in task_ids[FINISHING:]:
        assert chunk_rows(app, task_id) == []
        assert partial_writes(app, task_id) == {}  # what the cut chunks had written is gone

    restarted = web_servers(port=server.port, workers=WORKERS, graceful_timeout=GRACE)
    assert restarted.url == server.url
    finished = resume_all(clients, task_ids, files, CHUNK)
    for number, (client, data, (state, file)) in enumerate(zip(clients, files, finished)):
        assert state["missingChunks"] == ([1] if number < FINISHING else [0, 1]), state
        assert client.download_sha256(file["id"]) == (sha256(data), SIZE)


HOLD_JOB = "tests.faults.test_graceful.hold_until_released"  # by name: the worker imports it so


def hold_until_released(key: str) -> str:
    """An RQ job that runs until the test pushes to the Redis list `key`."""
    return "released" if get_current_job().connection.blpop([key], timeout=60) else "timed out"


def test_sigterm_to_an_rq_worker_lets_its_job_finish_and_takes_no_other(redis, rq_processes):
    prefix = f"warm-{uuid.uuid4().hex[:8]}-"  # queues of this test's worker alone
    worker = rq_processes.worker(QUEUE_PREFIX=prefix)
    queue = Queue(prefix + "default", connection=redis)
    release = f"drive:test:release:{uuid.uuid4().hex}"
    running, waiting = queue.enqueue(HOLD_JOB, release), queue.enqueue(HOLD_JOB, release)
    wait_until(lambda: running.get_status(refresh=True) == JobStatus.STARTED, 20, "the first job running")

    worker.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: any("warm shut down requested" in line for line in list(worker.lines)), 20,
               "the worker acknowledging the SIGTERM")
    assert worker.proc.poll() is None  # it waits for its job
    redis.lpush(release, "go")
    assert worker.proc.wait(timeout=20) == 0
    assert running.get_status(refresh=True) == JobStatus.FINISHED and running.return_value() == "released"
    assert waiting.get_status(refresh=True) == JobStatus.QUEUED  # left for the next worker
