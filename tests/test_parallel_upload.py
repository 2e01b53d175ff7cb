"""Invariant 1 through a real gunicorn (3 processes x 8 threads): chunks of one task arrive
from many client threads in any order, and every chunk is sent twice at the same moment. The
database's unique constraint decides: per chunk exactly one 200 and one 409, one row, one
stored object; the file completes and hashes to what was declared.

The racing sends each use a connection of their own; what becomes of a kept-alive connection
after a chunk is refused early is the subject of its own test at the end."""
from __future__ import annotations

import http.client
import random
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from app.auth import issue_token
from tests.support import MIB, LiveClient, chunk_rows, random_bytes, sha256, stored_objects

TIMEOUT = 60


@pytest.fixture()
def live_client(app, live_server):
    account = uuid.uuid4()
    with app.app_context():
        token = issue_token(account)
    return LiveClient(live_server, token)


def test_parallel_shuffled_upload_with_a_duplicate_race_per_chunk(app, live_client):
    size, chunk_size = 20 * MIB, MIB
    data = random_bytes(size)
    task = live_client.create(data, chunkSize=chunk_size)
    task_id = task["taskId"]
    assert task["chunkSize"] == chunk_size and task["chunksCount"] == 20
    pieces = [data[i * chunk_size:(i + 1) * chunk_size] for i in range(20)]

    order = list(range(20))
    random.Random(2024).shuffle(order)
    # two sends of each chunk meet at a barrier, then post at once; the pairs are queued next to
    # each other, so a free thread always picks up the partner of a waiting one
    barriers = {index: threading.Barrier(2, timeout=TIMEOUT) for index in order}
    results: dict[int, list] = {index: [] for index in order}

    def send(index: int):
        barriers[index].wait()
        response = live_client.send_raw(task_id, index, pieces[index], fresh=True)
        results[index].append((response.status_code, response.json()))

    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(send, index) for index in order for _ in range(2)]
        for future in futures:
            future.result()

    for index in range(20):
        outcomes = sorted(results[index], key=lambda r: r[0])
        assert [status for status, _ in outcomes] == [200, 409], (index, outcomes)
        (_, stored), (_, refused) = outcomes
        assert stored["sha256"] == sha256(pieces[index]) and stored["size"] == chunk_size, stored
        assert stored["chunkIndex"] == index and stored["taskId"] == task_id
        assert refused["code"] == "CHUNK_ALREADY_UPLOADED" and refused["status"] == 409, refused
        assert refused["details"]["sha256"] == sha256(pieces[index]), refused
        assert refused["details"]["chunkIndex"] == index and refused["details"]["size"] == chunk_size
    # each 200 counted one more chunk: the counters were never lost to a race
    assert sorted(body["chunksUploaded"] for index in range(20)
                  for status, body in results[index] if status == 200) == list(range(1, 21))

    resume = live_client.get(f"/files/upload/resume/{task_id}")
    assert resume.status_code == 200
    assert resume.json()["uploadedChunks"] == list(range(20)) and resume.json()["missingChunks"] == []
    assert resume.json()["chunksUploaded"] == 20 and resume.json()["bytesUploaded"] == size

    rows = chunk_rows(app, task_id)
    assert [row[0] for row in rows] == list(range(20))
    assert [(row[1], row[2]) for row in rows] == [(chunk_size, sha256(piece)) for piece in pieces]
    # the losers' objects were removed: storage holds exactly the recorded chunks
    assert stored_objects(app, task_id) == {row[3] for row in rows}

    file = live_client.complete(task_id)
    assert file["hash"] == sha256(data) and file["size"] == size
    assert live_client.download_sha256(file["id"]) == (sha256(data), size)
    progress = live_client.get(f"/files/upload/progress/{task_id}").json()
    assert progress["status"] == "Completed"


def test_parallel_multipart_upload(app, live_client):
    data = random_bytes(5 * MIB + 17)
    task = live_client.create(data, chunkSize=MIB, fileName="multi.bin")
    task_id, count = task["taskId"], task["chunksCount"]
    assert count == 6
    pieces = [data[i * MIB:(i + 1) * MIB] for i in range(count)]
    order = list(range(count))
    random.Random(7).shuffle(order)

    def send(index: int):
        response = live_client.send_multipart(task_id, index, pieces[index], checksum=sha256(pieces[index]))
        return index, (response.status_code, response.json())

    with ThreadPoolExecutor(max_workers=6) as pool:
        outcomes = dict(pool.map(send, order))
    for index in range(count):
        status, body = outcomes[index]
        assert status == 200, (index, body)
        assert body["sha256"] == sha256(pieces[index]) and body["size"] == len(pieces[index])

    again = live_client.send_multipart(task_id, 3, pieces[3], fresh=True)
    assert again.status_code == 409 and again.json()["details"]["sha256"] == sha256(pieces[3])
    rows = chunk_rows(app, task_id)
    assert [(row[0], row[1], row[2]) for row in rows] == [(i, len(p), sha256(p)) for i, p in enumerate(pieces)]
    assert stored_objects(app, task_id) == {row[3] for row in rows}

    file = live_client.complete(task_id)
    assert file["hash"] == sha256(data) and file["size"] == len(data) and file["name"] == "multi.bin"
    assert live_client.download_sha256(file["id"]) == (sha256(data), len(data))


@pytest.mark.parametrize("case", ["duplicate", "unknown task", "wrong size"])
def test_a_refused_chunk_leaves_the_keep_alive_connection_usable(live_server, live_client, case):
    """A client sends a whole chunk and reads the refusal (409 / 404 / 400), then sends its next
    request on the same kept-alive connection, as browsers and requests.Session do. The response
    announced keep-alive, so the connection must serve that next request."""
    data = random_bytes(2 * MIB)
    task_id = live_client.create(data, chunkSize=MIB)["taskId"]
    assert live_client.send_raw(task_id, 0, data[:MIB], fresh=True).status_code == 200
    target, body, expected = {
        "duplicate": (task_id, data[:MIB], 409),
        "unknown task": ("f" * 32, data[:MIB], 404),
        "wrong size": (task_id, data[MIB:] + b"x", 400),
    }[case]
    index = 0 if case == "duplicate" else 1
    host, port = live_server.rsplit("//", 1)[1].split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT)
    try:
        connection.request("POST", f"/api/files/upload/chunk/{target}/{index}", body=body,
                           headers=dict(live_client.headers, **{"Content-Type": "application/octet-stream"}))
        refused = connection.getresponse()
        refused.read()
        assert refused.status == expected
        assert refused.getheader("Connection", "keep-alive").lower() != "close"
        try:
            connection.request("GET", f"/api/files/upload/progress/{task_id}", headers=live_client.headers)
            following = connection.getresponse()
            payload = following.read()
        except (http.client.RemoteDisconnected, ConnectionError) as error:
            raise AssertionError(f"the server closed the kept-alive connection after the {expected}: "
                                 f"{error!r}") from error
        assert following.status == 200, payload
    finally:
        connection.close()
