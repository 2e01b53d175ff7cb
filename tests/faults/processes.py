"""RQ workers, schedulers and a redis-server that a fault test starts with settings of its own
(its own QUEUE_PREFIX, so the session's `worker` never takes its jobs; its own REDIS_URL),
kills and starts again. The fixtures `rq_processes` and `redis_server` (conftest.py) stop
whatever a test started when it ends."""
from __future__ import annotations

import os
import signal
import subprocess
import uuid

from redis import Redis
from redis.exceptions import RedisError

from tests.conftest import process_env
from tests.support import Process, children_of, flask_command, free_port, kill_and_wait, start_process, wait_until


class RqProcesses:
    def __init__(self, settings: dict, folder):
        self.settings = settings
        self.folder = folder
        self.started: list[Process] = []

    def _start(self, command: str, args: list[str], ready_marker: str, env: dict) -> Process:
        log = str(self.folder / f"{command}-{len(self.started)}.log")
        process = start_process(args, process_env(self.settings, **env), log, ready_marker=ready_marker)
        self.started.append(process)
        return process

    def worker(self, **env) -> Process:
        """A `flask worker`, listening once this returns."""
        name = f"fault-{uuid.uuid4().hex[:8]}"
        return self._start("worker", flask_command("worker", "--name", name), "Listening on", env)

    def scheduler(self, **env) -> Process:
        """A `flask scheduler`, its periodic jobs registered (the first run of each is queued at once)."""
        return self._start("scheduler", flask_command("scheduler"), "Registered", env)

    def stop_all(self) -> None:
        for process in self.started:
            process.stop()


def kill_worker(worker: Process) -> list[int]:
    """kill -9 of an RQ worker and its children (its work-horse, RQ's scheduler), as a lost
    machine would: all are frozen first, so none sees another go and reports it. Returns the
    children's pids once every process has ended."""
    children = children_of(worker.proc.pid)
    for pid in [worker.proc.pid, *children]:
        os.kill(pid, signal.SIGSTOP)
    kill_and_wait([worker.proc.pid, *children])
    worker.proc.wait()
    return children


class RedisServer:
    """A redis-server of one test on a port of its own, without persistence: a restart
    comes back empty, as a crashed cache server does."""

    def __init__(self, folder):
        from app.embedded_redis import redis_server_binary  # noqa: PLC0415

        self.binary = redis_server_binary()
        self.folder = folder
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = Redis.from_url(self.url, socket_timeout=1)
        wait_until(lambda: self._answers(client), 10, "redis-server answering")
        client.close()

    def stop(self) -> None:
        """kill -9: the server and everything it held are gone at once."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    @staticmethod
    def _answers(client: Redis) -> bool:
        try:
            return client.ping()
        except (RedisError, OSError):
            return False
