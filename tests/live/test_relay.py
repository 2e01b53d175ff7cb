"""What the relay carries (app/live/*, app/events.py): a real upload's events in order with the
seed's payloads, one account's events and nothing of another's, every socket of an account on
every gunicorn process, and the same sequence by WebSocket and by SSE.

Uploads go through the API in-process (`make_api`); their events reach Redis from the request
(upload.progress) and from the real RQ worker (upload.completed / upload.failed), and the live
gunicorn relays them. Replay is in test_replay.py.
"""
from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from itertools import cycle

import requests

from tests.live.clients import (
    SEED_COMPLETED_KEYS,
    SEED_FAILED_KEYS,
    SEED_PROGRESS_KEYS,
    EventStream,
    next_packet,
    open_socket,
    packets_until,
    port_of,
    serving_pid,
    stored_events,
)
from tests.support import MIB, create_task, random_bytes, send_chunks, sha256


def assert_utc(value: str) -> None:
    assert isinstance(value, str) and value.endswith("Z"), value
    assert datetime.fromisoformat(value.replace("Z", "+00:00")).utcoffset().total_seconds() == 0


def progress_points(chunks: int) -> list[int]:
    """Chunk counts at which upload.progress is due: the first chunk, the last, and each
    chunk that reaches or passes a multiple of 5 %."""
    return [n for n in range(1, chunks + 1)
            if n in (1, chunks) or any(20 * (n - 1) < k * chunks <= 20 * n for k in range(1, 21))]


# a real upload ----------------------------------------------------------------------------
def test_a_real_upload_arrives_in_order_with_the_seed_fields(app, live_server, account, make_api, publish):
    """30 chunks (raw and multipart, as the seed's client sends them): upload.progress at the
    first chunk, at each 5 % step and at the last chunk (not at every chunk), then
    upload.completed naming the file complete returned; nothing of this upload after it."""
    api = make_api(account.id)
    ws = open_socket(live_server, account.token, account.id, how="message")
    try:
        data = random_bytes(29 * MIB + 12345, seed=7)
        task = create_task(api, data, name="document.pdf", content_type="application/pdf", chunkSize=MIB)
        chunks = task["chunksCount"]
        assert chunks == 30
        for index in range(chunks):
            piece = data[index * MIB:(index + 1) * MIB]
            sent = api.send_chunk(task["taskId"], index, piece, multipart=index % 2 == 1)
            assert sent.status_code == 200, sent.get_json()
        done = api.complete(task["taskId"])
        assert done.status_code == 200, done.get_json()
        file = done.get_json()

        points = progress_points(chunks)
        assert 1 < len(points) < chunks  # throttled: some chunks announce nothing
        packets = [next_packet(ws) for _ in range(len(points) + 1)]
        sentinel = publish(account.id, "test.sentinel")
        assert next_packet(ws)["id"] == sentinel  # nothing else came between (no late progress)
    finally:
        ws.close()

    first = packets[0]["id"]
    assert [p["id"] for p in packets] == list(range(first, first + len(points) + 1))
    assert [p["type"] for p in packets] == ["upload.progress"] * len(points) + ["upload.completed"]

    progress = [p["data"] for p in packets[:-1]]
    assert [p["chunksUploaded"] for p in progress] == points
    for event in progress:
        assert set(event) == SEED_PROGRESS_KEYS, event
        assert (event["taskId"], event["fileName"], event["fileSize"]) == (task["taskId"], "document.pdf", len(data))
        assert event["chunksTotal"] == chunks and event["status"] == "InProgress"
        assert abs(event["progress"] - 100.0 * event["chunksUploaded"] / chunks) < 0.01
        assert_utc(event["lastActivity"])
    assert progress[-1]["progress"] == 100.0
    assert [e["lastActivity"] for e in progress] == sorted(e["lastActivity"] for e in progress)

    completed = packets[-1]["data"]
    assert set(completed) == SEED_COMPLETED_KEYS, completed
    assert completed == {"taskId": task["taskId"], "fileId": file["id"], "fileName": "document.pdf",
                         "fileSize": len(data), "completedAt": completed["completedAt"]}
    assert_utc(completed["completedAt"])
    assert file["hash"] == sha256(data)


def test_a_failed_upload_is_announced_with_the_seed_fields(live_server, account, make_api):
    api = make_api(account.id)
    ws = open_socket(live_server, account.token, account.id)
    try:
        data = random_bytes(2 * MIB + 5, seed=8)
        task = create_task(api, data, name="liar.bin", chunkSize=MIB, hash=sha256(b"other bytes"))
        send_chunks(api, task, data)
        assert api.complete(task["taskId"]).status_code == 400
        packets = [next_packet(ws) for _ in range(4)]  # progress at chunks 1, 2, 3 (all of them), then failed
    finally:
        ws.close()
    assert [p["type"] for p in packets] == ["upload.progress"] * 3 + ["upload.failed"]
    failed = packets[-1]["data"]
    assert set(failed) == SEED_FAILED_KEYS, failed
    assert (failed["taskId"], failed["fileName"], failed["fileSize"]) == (task["taskId"], "liar.bin", len(data))
    assert failed["errorMessage"]
    assert_utc(failed["failedAt"])


def test_a_parallel_upload_announces_each_step_once_and_completion_last(live_server, account, make_api, publish):
    """The chunks of one upload sent at once from six connections to gunicorn: chunk requests
    may finish in any order, but each progress point (first chunk, each 5 % step, last chunk) is
    announced exactly once, and upload.completed comes after all of them."""
    api = make_api(account.id)
    data = random_bytes(24 * MIB + 99, seed=9)
    task = create_task(api, data, name="parallel.bin", chunkSize=MIB)
    chunks = task["chunksCount"]
    headers = {"Authorization": f"Bearer {account.token}", "Content-Type": "application/octet-stream"}
    ws = open_socket(live_server, account.token, account.id)
    try:
        def send(index: int) -> int:
            with requests.Session() as session:
                return session.post(f"{live_server}/api/files/upload/chunk/{task['taskId']}/{index}", headers=headers,
                                    data=data[index * MIB:(index + 1) * MIB], timeout=30).status_code

        with ThreadPoolExecutor(6) as pool:
            assert set(pool.map(send, range(chunks))) == {200}
        assert api.complete(task["taskId"]).status_code == 200
        points = progress_points(chunks)
        packets = [next_packet(ws) for _ in range(len(points) + 1)]
        sentinel = publish(account.id, "test.sentinel")
        assert next_packet(ws)["id"] == sentinel
    finally:
        ws.close()
    assert [p["type"] for p in packets] == ["upload.progress"] * len(points) + ["upload.completed"]
    assert sorted(p["data"]["chunksUploaded"] for p in packets[:-1]) == points
    assert packets[-1]["data"]["taskId"] == task["taskId"]


# isolation -------------------------------------------------------------------------------
def test_an_account_receives_its_own_events_and_nothing_of_another(app, live_server, fast_server, new_account,
                                                                    make_api, publish):
    a, b = new_account(), new_account()
    sockets = {a.id: open_socket(live_server, a.token, a.id, how="message"),
               b.id: open_socket(live_server, b.token, b.id, how="query")}
    streams = {a.id: EventStream(fast_server, a.token).wait_connected(),
               b.id: EventStream(fast_server, b.token, how="query").wait_connected()}
    try:
        apis = {a.id: make_api(a.id), b.id: make_api(b.id)}
        tasks = {}
        for account in (a, b):  # both upload, in turn, and each gets synthetic events too
            data = random_bytes(MIB + 17)
            tasks[account.id] = create_task(apis[account.id], data, name=f"{account.id}.bin", chunkSize=MIB)
            send_chunks(apis[account.id], tasks[account.id], data)
            publish(account.id, "test.event", owner=str(account.id))
        for account in (a, b):
            assert apis[account.id].complete(tasks[account.id]["taskId"]).status_code == 200
        ends = {account.id: publish(account.id, "test.end") for account in (a, b)}

        for account, other in ((a, b), (b, a)):
            history = stored_events(app, account.id)
            by_socket = packets_until(sockets[account.id], ends[account.id])
            by_stream = streams[account.id].packets_until(ends[account.id])
            assert by_socket == by_stream == history  # every event of the account, nothing else
            assert [p["type"] for p in history] == ["upload.progress"] * 2 + ["test.event", "upload.completed",
                                                                           "test.end"]
            text = json.dumps(by_socket) + json.dumps(by_stream)
            assert str(other.id) not in text and tasks[other.id]["taskId"] not in text
            assert str(account.id) in text

        # replaying the whole history of b gives b's events only
        again = open_socket(live_server, b.token, b.id, since=0)
        try:
            assert packets_until(again, ends[b.id]) == stored_events(app, b.id)
        finally:
            again.close()
    finally:
        for ws in sockets.values():
            ws.close()
        for stream in streams.values():
            stream.close()


# several processes ------------------------------------------------------------------------
def test_every_socket_of_an_account_on_every_process_receives_every_event(app, live_server, account, make_api,
                                                                          publish):
    """Six sockets of one account, two on each of live_server's three processes (which process
    serves a socket is read from /proc; sockets beyond two on a process are closed and opened
    again). Events published here, by the chunk requests and by the RQ worker reach all six,
    in the same order."""
    port = port_of(live_server)
    kept: dict[int, list] = {}
    ways = cycle(("header", "query", "message"))
    deadline = time.monotonic() + 20
    try:
        while sum(len(s) for s in kept.values()) < 6 and time.monotonic() < deadline:
            ws = open_socket(live_server, account.token, account.id, how=next(ways))
            pid = serving_pid(port, ws.sock)
            if len(kept.get(pid, [])) >= 2:
                ws.close()
                continue
            kept.setdefault(pid, []).append(ws)
        assert sorted(len(s) for s in kept.values()) == [2, 2, 2], {pid: len(s) for pid, s in kept.items()}

        published = [publish(account.id, "test.event", n=n) for n in range(10)]
        api = make_api(account.id)
        assert api.upload(random_bytes(2 * MIB + 3), chunk_size=MIB).status_code == 200
        last = publish(account.id, "test.end")
        expected = stored_events(app, account.id, since=published[0] - 1)
        assert [p["type"] for p in expected][10:] == ["upload.progress"] * 3 + ["upload.completed", "test.end"]
        for sockets in kept.values():
            for ws in sockets:
                assert packets_until(ws, last) == expected
    finally:
        for sockets in kept.values():
            for ws in sockets:
                ws.close()


def test_sse_and_websocket_carry_the_same_sequence(app, live_server, fast_server, account, make_api, publish):
    ws = open_socket(live_server, account.token, account.id)
    stream = EventStream(fast_server, account.token, path="/drive/events").wait_connected()
    try:
        api = make_api(account.id, prefix="/drive")
        publish(account.id, "test.event", n=1)
        assert api.upload(random_bytes(4 * MIB + 1), chunk_size=MIB, name="same.bin").status_code == 200
        data = random_bytes(MIB + 1)
        assert api.upload(data, chunk_size=MIB, hash=sha256(b"not it")).status_code == 400
        last = publish(account.id, "test.event", n=2)
        by_socket = packets_until(ws, last)
        by_stream = stream.packets_until(last)
    finally:
        ws.close()
        stream.close()
    assert by_socket == by_stream == stored_events(app, account.id)
    assert [p["type"] for p in by_socket] == (["test.event"] + ["upload.progress"] * 5 + ["upload.completed"]
                                              + ["upload.progress"] * 2 + ["upload.failed", "test.event"])
