"""What the fault tests look at: a chunk request cut in the middle of its body (a raw socket, so
the test decides when the rest is sent), the chunk store as it is on disk, and whether the
rows agree with it.

Nothing here sleeps blindly: waits poll a real condition against a deadline (wait_until), or
block on a socket with a time-out.
"""
from __future__ import annotations

import http.client
import socket
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from tests.support import HTTP_TIMEOUT, LiveClient, chunk_rows, sha256, task_backend, wait_until

WAIT_SECONDS = 20  # longest any condition below is waited for; all is well far sooner


class PartialChunk:
    """A raw `application/octet-stream` chunk request of which only the first `sent` bytes of
    the body have gone out: the server is in the middle of that chunk until `finish()` sends the
    rest, or until the connection is cut on either side."""

    def __init__(self, client: LiveClient, task_id: str, index: int, payload: bytes, sent: int):
        url = urlsplit(client.base)
        self.payload, self.sent = payload, sent
        self.sock = socket.create_connection((url.hostname, url.port), timeout=HTTP_TIMEOUT)
        head = (f"POST {url.path}/files/upload/chunk/{task_id}/{index} HTTP/1.1\r\n"
                f"Host: {url.netloc}\r\nAuthorization: {client.headers['Authorization']}\r\n"
                f"Content-Type: application/octet-stream\r\nContent-Length: {len(payload)}\r\n"
                "Connection: close\r\n\r\n")
        self.sock.sendall(head.encode() + payload[:sent])

    def finish(self) -> tuple[int, bytes] | None:
        """Send the rest of the body; the response, or None if the connection was cut."""
        try:
            self.sock.sendall(self.payload[self.sent:])
        except OSError:
            pass  # the server went away: its answer (if any) is still readable below
        return self.response()

    def response(self) -> tuple[int, bytes] | None:
        """(status, body) of the answer, or None when the connection ended without one."""
        response = http.client.HTTPResponse(self.sock)
        try:
            response.begin()
            return response.status, response.read()
        except (http.client.RemoteDisconnected, http.client.IncompleteRead, ConnectionError):
            return None
        finally:
            self.sock.close()


def partial_writes(app, task_id: str) -> dict[str, int]:
    """Temporary files (chunks still being written, or cut) under a task's chunks: key → bytes."""
    from app.storage.local import TMP_PREFIX  # noqa: PLC0415

    backend = task_backend(app, task_id)
    return {key: backend.size(key) for key, _ in backend.list_objects(f"uploads/{task_id}")
            if key.rsplit("/", 1)[-1].startswith(TMP_PREFIX)}


def wait_until_mid_chunk(app, task_id: str) -> None:
    """Return once the server is writing a chunk of the task: a temporary file has bytes."""
    wait_until(lambda: any(partial_writes(app, task_id).values()), WAIT_SECONDS,
               f"a chunk of {task_id} being written")


def assert_rows_match_storage(app, task_id: str, data: bytes, chunk_size: int, indices: list[int]) -> None:
    """Exactly the chunks `indices` are recorded, each row's size and SHA-256 are those of the
    bytes stored under its key, and those bytes are the client's."""
    backend = task_backend(app, task_id)
    rows = chunk_rows(app, task_id)
    assert [row[0] for row in rows] == indices, rows
    for index, size, digest, key in rows:
        with backend.open_read(key) as stored:
            content = stored.read()
        piece = data[index * chunk_size:(index + 1) * chunk_size]
        assert (len(content), sha256(content)) == (size, digest) == (len(piece), sha256(piece)), key


def resume_and_finish(client: LiveClient, task_id: str, data: bytes, chunk_size: int) -> tuple[dict, dict]:
    """What a client does after an outage: ask /resume, send the chunks it lists as missing,
    complete. (the /resume answer, the completed file)."""
    resume = client.get(f"/files/upload/resume/{task_id}")
    assert resume.status_code == 200, resume.text
    state = resume.json()
    for index in state["missingChunks"]:
        sent = client.send_raw(task_id, index, data[index * chunk_size:(index + 1) * chunk_size])
        assert sent.status_code == 200, sent.text
    return state, client.complete(task_id)


def resume_all(clients: list[LiveClient], task_ids: list[str], files: list[bytes],
               chunk_size: int) -> list[tuple[dict, dict]]:
    """resume_and_finish for every client at once, as clients coming back after a restart do."""
    with ThreadPoolExecutor(len(clients)) as pool:
        return list(pool.map(resume_and_finish, clients, task_ids, files, [chunk_size] * len(clients)))
