"""Fixtures of the fault tests: processes a test may kill, stop and start again.

- `web_servers`: start(port=None, **options) → a WebServer, a gunicorn of this test alone on
  the session's database, Redis and storage (finalizing is left to the session's `worker`).
  Started again on the same port after a crash, it is "the same server" to a client.
  Every server a test started is stopped when the test ends, however it ended.
- `make_client`: make_client(base_url) → a LiveClient (tests/support.py) of a new account.
- `rq_processes`, `redis_server`: RQ workers and schedulers, and a redis-server, of one test
  (tests/faults/processes.py).
"""
from __future__ import annotations

import os
import signal
import uuid
from dataclasses import dataclass

import pytest

from tests.conftest import make_token, process_env
from tests.support import (LiveClient, Process, children_of, free_port, gunicorn_command, kill_and_wait,
                           start_process, wait_until)


@dataclass
class WebServer:
    port: int
    process: Process

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def master_pid(self) -> int:
        return self.process.proc.pid

    def worker_pids(self) -> list[int]:
        return children_of(self.master_pid)

    def kill(self) -> None:
        """kill -9 of the master and all its workers, as a machine losing power would do:
        everything is frozen first (SIGSTOP), so no process sees another go and reacts."""
        os.kill(self.master_pid, signal.SIGSTOP)  # it can no longer replace a worker
        workers = self.worker_pids()
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)
        kill_and_wait([self.master_pid, *workers])
        self.process.proc.wait()

    def terminate(self) -> None:
        """SIGTERM to the master: gunicorn's graceful shutdown."""
        os.kill(self.master_pid, signal.SIGTERM)

    def wait_for_log(self, text: str, count: int = 1, timeout: float = 20) -> None:
        """Return once `count` lines of the server's output contain `text`."""
        wait_until(lambda: sum(text in line for line in list(self.process.lines)) >= count, timeout,
                   f"{count} x {text!r} in the server's output")


@pytest.fixture()
def web_servers(app, settings, tmp_path):
    """start(port=None, workers=2, threads=8, graceful_timeout=2, **env) → a running WebServer."""
    started: list[WebServer] = []

    def start(port: int | None = None, workers: int = 2, threads: int = 8, graceful_timeout: float = 2,
              **env) -> WebServer:
        port = port or free_port()
        log = str(tmp_path / f"gunicorn-{port}-{len(started)}.log")
        process = start_process(gunicorn_command(port, workers, threads, graceful_timeout),
                                process_env(settings, **env), log, ready_marker="Booting worker")
        server = WebServer(port, process)
        started.append(server)
        return server

    yield start
    for server in started:
        server.process.stop()


@pytest.fixture()
def make_client(app):
    """make_client(base_url) → a LiveClient of a new account."""

    def factory(base_url: str) -> LiveClient:
        account_id = uuid.uuid4()
        return LiveClient(base_url, make_token(app, account_id), account_id)

    return factory


@pytest.fixture()
def rq_processes(app, settings, tmp_path):
    """.worker(**env) / .scheduler(**env) → a `flask worker` / `flask scheduler` of this test
    with settings of its own (tests/faults/processes.py); all stopped when the test ends."""
    from tests.faults.processes import RqProcesses  # noqa: PLC0415

    processes = RqProcesses(settings, tmp_path)
    yield processes
    processes.stop_all()


@pytest.fixture()
def redis_server(tmp_path):
    """A redis-server of this test alone (not yet started), killed when the test ends."""
    from tests.faults.processes import RedisServer  # noqa: PLC0415

    server = RedisServer(tmp_path)
    yield server
    server.stop()
