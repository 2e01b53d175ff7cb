"""Fixtures of the live-relay tests.

- `live_server` (tests/conftest.py): the session's gunicorn, 3 processes x 8 threads.
- `fast_server`: one more gunicorn on the same database and Redis, 1 process x 4 threads, whose
  timers are short (auth 1.5 s, WebSocket ping 1 s, SSE keep-alive 1 s, idle check 1 s), for the
  tests of heartbeats, time-outs and freed threads. Only those tests use it: a client there
  must answer pings within about two seconds.
- `socket_server`: a gunicorn set up as the README says for the live routes: 3 processes x 8
  threads with --worker-connections 8, so a process whose threads are all taken by sockets
  stops accepting and the next socket goes to another process.
- `account`: a fresh account id and its token; `publish`: publish_event as the services do.
"""
from __future__ import annotations

import os
import sys
import uuid
from dataclasses import dataclass

import pytest

from app.auth import issue_token
from app.events import publish_event
from tests.conftest import process_env
from tests.support import free_port, start_process

FAST_ENV = {
    # not a multiple of the ping interval: a ping sent as the auth time-out closes the socket
    # can race simple-websocket's close frame off the wire
    "LIVE_AUTH_TIMEOUT_SECONDS": "1.5",
    "LIVE_PING_INTERVAL_SECONDS": "1",
    "LIVE_SSE_KEEPALIVE_SECONDS": "1",
    "LIVE_IDLE_CHECK_SECONDS": "1",
}
FAST_THREADS = 4


@pytest.fixture(scope="session")
def fast_server(app, settings, tmp_path_factory):
    port = free_port()
    log = str(tmp_path_factory.mktemp("logs") / "gunicorn-fast.log")
    process = start_process(
        [os.path.join(os.path.dirname(sys.executable), "gunicorn"), "--workers", "1", "--worker-class", "gthread",
         "--threads", str(FAST_THREADS), "--bind", f"127.0.0.1:{port}", "--timeout", "120",
         "--graceful-timeout", "2", "wsgi:app"],
        process_env(settings, **FAST_ENV), log, ready_marker="Booting worker",
    )
    yield f"http://127.0.0.1:{port}"
    process.stop()


@pytest.fixture(scope="session")
def socket_server(app, settings, tmp_path_factory):
    port = free_port()
    log = str(tmp_path_factory.mktemp("logs") / "gunicorn-sockets.log")
    process = start_process(
        [os.path.join(os.path.dirname(sys.executable), "gunicorn"), "--workers", "3",
         "--worker-class", "app.gunicorn_worker.DriveThreadWorker", "--threads", "8", "--worker-connections", "8",
         "--bind", f"127.0.0.1:{port}", "--timeout", "120", "--graceful-timeout", "2", "wsgi:app"],
        process_env(settings), log, ready_marker="Booting worker",
    )
    yield f"http://127.0.0.1:{port}"
    process.stop()


@dataclass
class Account:
    id: uuid.UUID
    token: str


@pytest.fixture()
def new_account(app):
    """new_account() → a fresh Account (id and a valid token)."""

    def factory() -> Account:
        account_id = uuid.uuid4()
        return Account(account_id, issue_token(account_id, app=app))

    return factory


@pytest.fixture()
def account(new_account) -> Account:
    return new_account()


@pytest.fixture()
def publish(app):
    """publish(account_id, type="test.event", **data) → the event's id, published the way the
    services and jobs publish (app.events.publish_event, into the session's Redis)."""

    def _publish(account_id, event_type: str = "test.event", **data) -> int:
        with app.app_context():
            event_id = publish_event(account_id, event_type, data)
        assert event_id is not None, "Redis refused the event"
        return event_id

    return _publish
