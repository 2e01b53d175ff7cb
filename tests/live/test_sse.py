"""GET /api/events and /drive/events (app/live/routes.py): the account's events as server-sent
events, read with requests (stream=True) and parsed as an EventSource would.

The streams run on `fast_server` (keep-alive every second): a server notices a departed SSE
client only when it next writes, so there a closed stream frees its thread within a second or
two, where on `live_server` it would hold one for LIVE_SSE_KEEPALIVE_SECONDS (15 s). Refusals,
answered at once, run on `live_server`.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import jwt
import pytest
import requests

from app.auth import issue_token
from tests.live.clients import Burst, EventStream, raw_event_stream, reset
from tests.live.conftest import FAST_THREADS

PROGRESS = {"taskId": "t-9", "fileName": "document.pdf", "fileSize": 10485760, "chunksUploaded": 1,
            "chunksTotal": 10, "progress": 10.0, "status": "InProgress", "lastActivity": "2025-11-09T01:56:00Z"}
ENVELOPE = {"code", "message", "status", "details"}


@pytest.mark.parametrize("path", ["/api/events", "/drive/events"])
@pytest.mark.parametrize("how", ["header", "query"])
def test_the_stream_opens_with_a_bearer_header_or_a_token_parameter(fast_server, account, publish, path, how):
    stream = EventStream(fast_server, account.token, how=how, path=path)
    try:
        assert stream.response.headers["Content-Type"].startswith("text/event-stream")
        assert stream.response.headers["Cache-Control"] == "no-cache"
        stream.wait_connected()
        assert stream.retry == 3000
        first = publish(account.id, "upload.progress", **PROGRESS)
        second = publish(account.id, "upload.completed", taskId="t-9", fileId="f-1", fileName="document.pdf",
                         fileSize=10485760, completedAt="2025-11-09T01:57:00Z")
        assert stream.next_packet() == {"id": first, "type": "upload.progress", "data": PROGRESS}
        assert stream.next_packet()["id"] == second
        assert stream.last_event_id == str(second)
    finally:
        stream.close()


def _foreign(app, account_id):
    now = datetime.now(timezone.utc)
    return jwt.encode({"sub": str(account_id), "exp": now + timedelta(hours=1)}, "x" * 40, algorithm="HS256")


@pytest.mark.parametrize("path", ["/api/events", "/drive/events"])
@pytest.mark.parametrize("case, code", [
    ("none", "UNAUTHORIZED"),
    ("garbage header", "INVALID_TOKEN"),
    ("expired header", "TOKEN_EXPIRED"),
    ("foreign query", "INVALID_TOKEN"),
    ("expired query", "TOKEN_EXPIRED"),
])
def test_a_bad_or_missing_token_is_a_401_envelope(app, live_server, account, path, case, code):
    expired = issue_token(account.id, app=app, ttl_hours=-1)
    headers, params = {"Accept": "text/event-stream"}, {}
    if case == "garbage header":
        headers["Authorization"] = "Bearer not-a-jwt"
    elif case == "expired header":
        headers["Authorization"] = f"Bearer {expired}"
    elif case == "foreign query":
        params["token"] = _foreign(app, account.id)
    elif case == "expired query":
        params["token"] = expired
    response = requests.get(live_server + path, headers=headers, params=params, timeout=10)
    assert response.status_code == 401, response.text
    body = response.json()
    assert set(body) == ENVELOPE and body["status"] == 401 and body["code"] == code, body
    if case == "none":
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("last_event_id", ["abc", "-1", "1.5", "9" * 19])
def test_a_bad_last_event_id_is_a_400_envelope(live_server, account, last_event_id):
    response = requests.get(live_server + "/api/events", timeout=10, headers={
        "Authorization": f"Bearer {account.token}", "Last-Event-ID": last_event_id})
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "INVALID_EVENT_ID"


def test_keep_alive_comments_flow_while_the_stream_is_idle(fast_server, account, publish):
    """fast_server: LIVE_SSE_KEEPALIVE_SECONDS=1."""
    stream = EventStream(fast_server, account.token).wait_connected()
    try:
        idle = [stream.next_block() for _ in range(2)]
        assert [(b["comments"], b["data"], b["id"]) for b in idle] == [(["keep-alive"], None, None)] * 2
        event_id = publish(account.id)
        assert stream.next_packet()["id"] == event_id
    finally:
        stream.close()


def test_last_event_id_replays_the_missed_events_then_live_ones(fast_server, account, publish):
    stream = EventStream(fast_server, account.token).wait_connected()
    seen = [publish(account.id, "test.event", n=n) for n in range(3)]
    assert [p["id"] for p in stream.packets_until(seen[-1])] == seen
    stream.close()

    missed = [publish(account.id, "test.event", n=n) for n in range(3, 8)]
    stream = EventStream(fast_server, account.token, last_event_id=stream.last_event_id).wait_connected()
    try:
        replayed = stream.packets_until(missed[-1])
        assert [p["id"] for p in replayed] == missed
        assert [p["data"]["n"] for p in replayed] == [3, 4, 5, 6, 7]
        live = publish(account.id, "test.event", n=8)
        assert stream.next_packet()["id"] == live
    finally:
        stream.close()


def test_reconnecting_during_a_burst_loses_nothing_and_repeats_nothing(app, fast_server, account, publish):
    """Three times: a burst of 150 events is published from another thread while the client
    reads a part of it, leaves, and comes back with Last-Event-ID. Across all connections the
    client sees each id exactly once, in order."""
    received: list[dict] = []
    stream = EventStream(fast_server, account.token).wait_connected()
    try:
        for cycle in range(3):
            burst = Burst(app, account.id, 150)
            while len(received) < 150 * cycle + 40:
                received.append(stream.next_packet())
            stream.close()
            stream = EventStream(fast_server, account.token, last_event_id=received[-1]["id"]).wait_connected()
            burst.join()
        last = publish(account.id)
        received += stream.packets_until(last)
    finally:
        stream.close()
    assert [p["id"] for p in received] == list(range(1, last + 1))


def test_clients_that_vanish_free_their_threads(fast_server, account, publish):
    """fast_server has FAST_THREADS threads. Twice as many SSE clients, one after the other,
    open the stream (a thread serves each: it wrote the opening block) and vanish with a TCP
    reset. Were their threads not freed, the later ones would never be served."""
    for _ in range(2 * FAST_THREADS):
        reset(raw_event_stream(fast_server, account.token))
    stream = EventStream(fast_server, account.token).wait_connected()
    try:
        event_id = publish(account.id)
        assert stream.next_packet()["id"] == event_id
    finally:
        stream.close()
