"""Chunk bodies read straight off gunicorn's socket (app/services/chunk_body.py SocketBody),
through a real gunicorn: bytes gunicorn had already read with the headers, a pipelined next
request behind the body, `Expect: 100-continue`, and a client that goes away mid-body."""
from __future__ import annotations

import http.client
import socket
from urllib.parse import urlparse

import pytest

from tests.support import MIB, LiveClient, chunk_rows, random_bytes, sha256, stored_objects, wait_until

TIMEOUT = 30


@pytest.fixture()
def connect(live_server):
    url = urlparse(live_server)
    opened = []

    def open_connection() -> socket.socket:
        sock = socket.create_connection((url.hostname, url.port), timeout=TIMEOUT)
        opened.append(sock)
        return sock

    yield open_connection
    for sock in opened:
        sock.close()


def chunk_request(client: LiveClient, task_id: str, index: int, body: bytes, extra: str = "",
                  length: int | None = None) -> bytes:
    head = (f"POST /api/files/upload/chunk/{task_id}/{index} HTTP/1.1\r\nHost: test\r\n"
            f"{next(iter(client.headers))}: {next(iter(client.headers.values()))}\r\n"
            f"Content-Type: application/octet-stream\r\n"
            f"Content-Length: {len(body) if length is None else length}\r\n{extra}\r\n")
    return head.encode() + body


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    response = http.client.HTTPResponse(sock)
    response.begin()
    return response.status, response.read()


def test_pipelined_chunks_on_one_connection_are_each_stored_whole(app, live_client, connect):
    """Both requests leave in one send: gunicorn reads the start of the first body, maybe the
    second request too, with the first headers; each body must end exactly at its length."""
    data = random_bytes(3 * MIB + 11, seed=41)
    task = live_client.create(data, chunkSize=MIB)
    pieces = [data[i * MIB:(i + 1) * MIB] for i in range(4)]
    sock = connect()
    sock.sendall(b"".join(chunk_request(live_client, task["taskId"], i, pieces[i]) for i in (1, 0, 3)))
    answers = [read_response(sock) for _ in range(3)]
    assert [status for status, _ in answers] == [200, 200, 200], answers
    sock.sendall(chunk_request(live_client, task["taskId"], 2, pieces[2]))  # the connection lives on
    assert read_response(sock)[0] == 200

    rows = chunk_rows(app, task["taskId"])
    assert [(row[0], row[1], row[2]) for row in rows] == [(i, len(p), sha256(p)) for i, p in enumerate(pieces)]
    file = live_client.complete(task["taskId"])
    assert live_client.download_sha256(file["id"]) == (sha256(data), len(data))


def test_a_small_body_that_came_with_the_headers(app, live_client, connect):
    data = b"tiny file, one chunk"
    task = live_client.create(data)
    sock = connect()
    sock.sendall(chunk_request(live_client, task["taskId"], 0, data))
    status, body = read_response(sock)
    assert status == 200, body
    assert [(row[1], row[2]) for row in chunk_rows(app, task["taskId"])] == [(len(data), sha256(data))]


def test_expect_100_continue(app, live_client, connect):
    data = random_bytes(MIB + 5, seed=42)
    task = live_client.create(data, chunkSize=MIB)
    sock = connect()
    sock.sendall(chunk_request(live_client, task["taskId"], 1, b"", "Expect: 100-continue\r\n", length=5))
    interim = b"HTTP/1.1 100 Continue\r\n\r\n"
    received = b""
    while len(received) < len(interim):  # the server asks for the body before it is sent
        received += sock.recv(len(interim) - len(received))
    assert received == interim
    sock.sendall(data[MIB:])
    status, body = read_response(sock)
    assert status == 200, body
    assert [(row[0], row[2]) for row in chunk_rows(app, task["taskId"])] == [(1, sha256(data[MIB:]))]


def test_a_client_gone_mid_body_leaves_nothing_and_the_chunk_can_be_sent_again(app, live_client, connect):
    data = random_bytes(2 * MIB, seed=43)
    task = live_client.create(data, chunkSize=MIB)
    piece = data[:MIB]
    sock = connect()
    sock.sendall(chunk_request(live_client, task["taskId"], 0, piece[:MIB // 2], length=MIB))
    sock.close()

    again = live_client.send_raw(task["taskId"], 0, piece, fresh=True)
    assert again.status_code == 200, again.text  # not 409: the cut copy was never recorded
    (row,) = chunk_rows(app, task["taskId"])
    assert row[1:3] == (MIB, sha256(piece))
    # the cut copy's temporary file goes too (its thread may still be finishing: poll)
    wait_until(lambda: stored_objects(app, task["taskId"]) == {row[3]}, TIMEOUT,
               "the cut copy's temporary file removed")
