"""Invariant 6, web side: `kill -9` of the gunicorn master and all its workers while 8 clients
are each in the middle of a chunk loses nothing that was stored and counts nothing that was
not. After a restart on the same address every client asks /resume, sends what is missing,
completes, and downloads exactly its bytes."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from tests.faults.clients import (
    PartialChunk,
    assert_rows_match_storage,
    partial_writes,
    resume_all,
    wait_until_mid_chunk,
)
from tests.support import MIB, quota_usage, random_bytes, sha256, stored_objects

CLIENTS = 8
# A chunk larger than one read of the server (1 MiB), cut after 1.25 MiB: at the kill, the start
# of each cut chunk is on disk in its temporary file and the rest is in flight.
CHUNK = 3 * MIB // 2
SIZE = 3 * CHUNK - 1000  # three chunks, the last one shorter
CUT_INDEX, CUT_AFTER = 1, 5 * MIB // 4


def piece(data: bytes, index: int) -> bytes:
    return data[index * CHUNK:(index + 1) * CHUNK]


def start_upload(client, data: bytes) -> str:
    """Create the task and store its first and last chunks; its id."""
    task = client.create(data, chunkSize=CHUNK)
    assert task["chunksCount"] == 3
    for index in (0, 2):
        assert client.send_raw(task["taskId"], index, piece(data, index)).status_code == 200
    return task["taskId"]


def test_kill_9_of_gunicorn_mid_chunk_loses_nothing_and_every_client_finishes(
        app, worker, web_servers, make_client):
    server = web_servers()
    clients = [make_client(server.url) for _ in range(CLIENTS)]
    files = [random_bytes(SIZE) for _ in clients]
    with ThreadPoolExecutor(CLIENTS) as pool:
        task_ids = list(pool.map(start_upload, clients, files))

    cut = [PartialChunk(client, task_id, CUT_INDEX, piece(data, CUT_INDEX), CUT_AFTER)
           for client, task_id, data in zip(clients, task_ids, files)]
    for task_id in task_ids:
        wait_until_mid_chunk(app, task_id)
    server.kill()

    for request in cut:
        assert request.response() is None  # the connection ended without an answer
    for client, task_id, data in zip(clients, task_ids, files):
        # the crash left the cut chunk's first bytes in a temporary file; no row counts them
        written = list(partial_writes(app, task_id).values())
        assert len(written) == 1 and 0 < written[0] <= CUT_AFTER, written
        assert_rows_match_storage(app, task_id, data, CHUNK, [0, 2])
        usage = quota_usage(app, client.account_id)
        assert (usage["used"], usage["reserved"], usage["files"]) == (SIZE, SIZE, 0)

    restarted = web_servers(port=server.port)
    assert restarted.url == server.url

    finished = resume_all(clients, task_ids, files, CHUNK)
    for client, task_id, data, (state, file) in zip(clients, task_ids, files, finished):
        assert (state["uploadedChunks"], state["missingChunks"]) == ([0, 2], [CUT_INDEX]), state
        assert (state["chunksUploaded"], state["bytesUploaded"]) == (2, SIZE - CHUNK), state
        assert (file["hash"], file["size"]) == (sha256(data), SIZE)
        assert client.download_sha256(file["id"]) == (sha256(data), SIZE)
        usage = quota_usage(app, client.account_id)
        assert (usage["used"], usage["reserved"], usage["files"]) == (SIZE, 0, SIZE)
        assert stored_objects(app, task_id) == set()  # chunks and the crash's leftovers are gone
