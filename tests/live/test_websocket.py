"""GET /ws, /api/ws, /drive/ws (app/live/routes.py) with a real WebSocket client against gunicorn.

Authentication in the three ways and each way it fails (close 4401 with the error code first in
the reason, 4400 for a bad ?since), the auth time-out, pings that keep an answering client and
drop a silent one, threads freed when clients vanish without a close frame, sockets served up
to the server's thread count, and messages a client sends after auth not kept by the server.
"""
from __future__ import annotations

import collections
import json
import time
from datetime import datetime, timedelta, timezone

import jwt
import pytest
import websocket

from app.auth import issue_token
from tests.live.clients import (
    close_frame,
    connect,
    decode_close,
    drop,
    expect_auth_ok,
    next_packet,
    open_socket,
    packets_until,
    port_of,
    serving_pid,
)
from tests.live.conftest import FAST_THREADS

PROGRESS = {"taskId": "t-1", "fileName": "document.pdf", "fileSize": 10485760, "chunksUploaded": 5,
            "chunksTotal": 10, "progress": 50.0, "status": "InProgress", "lastActivity": "2025-11-09T01:56:00Z"}


# authentication ---------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/ws", "/api/ws", "/drive/ws"])
@pytest.mark.parametrize("how", ["header", "query", "message"])
def test_each_way_of_authenticating_opens_the_accounts_stream(live_server, account, publish, path, how):
    ws = connect(live_server, account.token, how=how, path=path)
    try:
        expect_auth_ok(ws, account.id)
        event_id = publish(account.id, "upload.progress", **PROGRESS)
        assert next_packet(ws) == {"id": event_id, "type": "upload.progress", "data": PROGRESS}
    finally:
        ws.close()


def _token(app, account_id, **claims_overrides):
    now = datetime.now(timezone.utc)
    claims = {"sub": str(account_id), "iat": now, "exp": now + timedelta(hours=1)}
    claims.update(claims_overrides)
    secret = claims.pop("secret", app.config["JWT_SECRET"])
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, secret, algorithm="HS256")


# (how the client authenticates, what it sends, the error code expected first in the reason)
REFUSALS = {
    "garbage first message": ("raw", "hello, server", "UNAUTHORIZED"),
    "first message not JSON object": ("raw", json.dumps(["auth", "token"]), "UNAUTHORIZED"),
    "first message of another type": ("raw", "{type-subscribe}", "UNAUTHORIZED"),
    "first message with a numeric token": ("raw", json.dumps({"type": "auth", "token": 12345}), "UNAUTHORIZED"),
    "first message without a token": ("raw", json.dumps({"type": "auth"}), "UNAUTHORIZED"),
    "first message with a garbage token": ("message", "not-a-jwt", "INVALID_TOKEN"),
    "first message with an expired token": ("message", "{expired}", "TOKEN_EXPIRED"),
    "first message signed with another secret": ("message", "{foreign}", "INVALID_TOKEN"),
    "header with a garbage token": ("header", "not-a-jwt", "INVALID_TOKEN"),
    "header with an expired token": ("header", "{expired}", "TOKEN_EXPIRED"),
    "header with a token whose sub is no account": ("header", "{bad-sub}", "INVALID_TOKEN"),
    "query with a foreign token": ("query", "{foreign}", "INVALID_TOKEN"),
    "query with a token without exp": ("query", "{no-exp}", "INVALID_TOKEN"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_bad_or_missing_token_closes_with_4401_and_the_error_code(app, live_server, account, publish, case):
    how, sent, code = REFUSALS[case]
    tokens = {
        "{expired}": issue_token(account.id, app=app, ttl_hours=-1),
        "{foreign}": _token(app, account.id, secret="someone-else's-secret-" + "x" * 20),
        "{bad-sub}": _token(app, "not-a-uuid"),
        "{no-exp}": _token(app, account.id, exp=None),
        "{type-subscribe}": json.dumps({"type": "subscribe", "token": issue_token(account.id, app=app)}),
    }
    sent = tokens.get(sent, sent)
    if how == "raw":
        ws = connect(live_server, None, how="none")
        ws.send(sent)
    else:
        ws = connect(live_server, sent, how=how)
    publish(account.id, "upload.progress", **PROGRESS)  # nothing may reach a refused socket
    try:
        status, reason = close_frame(ws)  # fails if any message (auth.ok, an event) came first
    finally:
        ws.shutdown()
    assert status == 4401, (status, reason)
    assert reason.startswith(f"{code}: ") and len(reason) > len(code) + 2, reason


@pytest.mark.parametrize("since", ["abc", "-1", "1.5", "9" * 19])
def test_a_bad_since_closes_with_4400(live_server, account, since):
    ws = connect(live_server, account.token, since=since)
    try:
        status, reason = close_frame(ws)
    finally:
        ws.shutdown()
    assert (status, reason.split(":")[0]) == (4400, "INVALID_EVENT_ID"), (status, reason)


def test_no_auth_message_within_the_time_limit_closes_with_4401(fast_server):
    """fast_server: LIVE_AUTH_TIMEOUT_SECONDS=1.5."""
    ws = connect(fast_server, None, how="none")
    opened = time.monotonic()  # the handshake is answered by the thread that then waits
    try:
        status, reason = close_frame(ws)
    finally:
        ws.shutdown()
    waited = time.monotonic() - opened
    assert status == 4401 and reason.startswith("UNAUTHORIZED: "), (status, reason)
    assert 0.9 <= waited < 10, waited


# heartbeats -------------------------------------------------------------------------------
def test_pings_keep_an_answering_client_connected(fast_server, account, publish):
    """fast_server pings every second and drops a client that missed a pong: a client that
    answers each ping outlives several intervals and still delivers."""
    ws = connect(fast_server, account.token, how="message")
    try:
        expect_auth_ok(ws, account.id)
        pings = 0
        while pings < 3:
            frame = ws.recv_frame()
            assert frame.opcode == websocket.ABNF.OPCODE_PING, (frame.opcode, decode_close(frame.data))
            ws.pong(frame.data)  # as websocket-client (and every browser) does by itself
            pings += 1
        event_id = publish(account.id, "upload.progress", **PROGRESS)
        assert next_packet(ws) == {"id": event_id, "type": "upload.progress", "data": PROGRESS}
    finally:
        ws.close()


def test_a_client_that_never_answers_pings_is_closed_and_its_thread_freed(fast_server, new_account, publish):
    """fast_server has one process of FAST_THREADS threads. As many silent clients (reading
    frames raw, so no pong is ever sent) each hold one; each is closed by the server (1008
    after a missed pong, then the TCP connection ends). Then as many new sockets are served
    and deliver: the silent clients' threads were all freed."""
    account = new_account()
    silent = [connect(fast_server, account.token) for _ in range(FAST_THREADS)]
    try:
        for ws in silent:
            first = ws.recv_frame()  # the raw frame: recv_frame never answers a ping
            assert json.loads(first.data)["type"] == "auth.ok"
            pings = 0
            frame = ws.recv_frame()
            while frame.opcode == websocket.ABNF.OPCODE_PING:
                pings += 1
                frame = ws.recv_frame()
            assert frame.opcode == websocket.ABNF.OPCODE_CLOSE, frame
            assert pings >= 1
            assert decode_close(frame.data) == (1008, "Ping/Pong timeout")
            with pytest.raises(websocket.WebSocketConnectionClosedException):
                ws.recv_frame()  # and the server hung up
    finally:
        for ws in silent:
            ws.shutdown()

    fresh = [open_socket(fast_server, account.token, account.id, how="message") for _ in range(FAST_THREADS)]
    try:
        event_id = publish(account.id)
        assert [next_packet(ws)["id"] for ws in fresh] == [event_id] * FAST_THREADS
    finally:
        for ws in fresh:
            ws.close()


# clients that vanish ---------------------------------------------------------------------
def test_clients_that_vanish_free_their_threads_and_others_keep_receiving(live_server, account, publish):
    """40 sockets, one after the other, authenticate and then vanish without a close frame
    (half with a TCP reset, half with a bare FIN). The server has 3 x 8 threads and each
    socket holds one until the server notices its client left: were they never freed, a
    process would run out and a later socket would never be answered. A socket of the same
    account that stays receives every event published meanwhile, and new sockets are served."""
    witness = open_socket(live_server, account.token, account.id)
    published = []
    try:
        for n in range(40):
            ws = open_socket(live_server, account.token, account.id, how=("header", "query", "message")[n % 3])
            drop(ws, reset=n % 2 == 0)
            if n % 10 == 9:
                published.append(publish(account.id, "test.event", n=n))
        assert [p["id"] for p in packets_until(witness, published[-1])] == published

        late = [open_socket(live_server, account.token, account.id) for _ in range(3)]
        event_id = publish(account.id, "test.event", n="late")
        assert [next_packet(ws)["id"] for ws in [witness, *late]] == [event_id] * 4
        for ws in late:
            ws.close()
    finally:
        witness.close()


def test_every_socket_is_served_while_the_server_has_free_threads(socket_server, account, publish):
    """A socket holds a thread. socket_server is deployed as the README says for the live
    routes: 3 processes x 8 threads with --worker-connections = --threads, 24 threads in all.
    23 sockets held at once must all be served (without that setting a socket accepted by a
    process whose threads are all taken waits, however many threads the others have free)."""
    live_server = socket_server
    port = port_of(live_server)
    held = []
    try:
        for n in range(23):
            try:
                # a socket stuck in a full process waits for ever; 30 s leaves room for a busy
                # machine's processes to finish loading the app (gunicorn logs "Booting worker"
                # before that, so the fixture does not wait for it)
                held.append(open_socket(live_server, account.token, account.id, timeout=30))
            except websocket.WebSocketTimeoutException:
                per_process = collections.Counter(serving_pid(port, ws.sock) for ws in held)
                pytest.fail(f"socket {n + 1} of 23 got no answer in 30 s although the server has 24 threads; "
                            f"sockets served per process: {dict(per_process)}")
        event_id = publish(account.id)
        assert [next_packet(ws)["id"] for ws in held] == [event_id] * len(held)
    finally:
        for ws in held:
            ws.close()


def _rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def test_messages_a_client_sends_after_auth_are_not_hoarded(live_server, account, publish):
    """The protocol has no client message after auth. A client that sends 60 MB of them anyway
    (each under the 64 KiB message limit) must not make the server process hold them: its
    resident memory may not grow by anywhere near that much. A ping sent last is answered only
    once the server has read everything before it."""
    ws = open_socket(live_server, account.token, account.id)
    try:
        pid = serving_pid(port_of(live_server), ws.sock)
        before = _rss_bytes(pid)
        blob = "x" * 60_000
        for _ in range(1000):
            ws.send(blob)
        ws.ping(b"done?")
        frame = ws.recv_frame()
        while frame.opcode != websocket.ABNF.OPCODE_PONG:
            assert frame.opcode == websocket.ABNF.OPCODE_PING, frame
            ws.pong(frame.data)
            frame = ws.recv_frame()
        grown = _rss_bytes(pid) - before
        event_id = publish(account.id)
        assert next_packet(ws)["id"] == event_id  # the socket still works
    finally:
        ws.close()
    assert grown < 20 * 1024 * 1024, f"the server process grew by {grown / 2**20:.0f} MiB"
