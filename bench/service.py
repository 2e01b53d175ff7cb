"""The machinery the benchmarks share: the real service (gunicorn + an rq worker on a fresh
SQLite database or PostgreSQL schema and a claimed Redis database, in a temp instance), child
processes stopped by pid, /proc bookkeeping of process trees (RSS, PSS, CPU, threads), and the
main() wrapper that cleans up on every exit path (normal end, error, Ctrl-C, SIGTERM).

Used by bench/upload_throughput.py and bench/event_latency.py. Not a test (no test_ names).
"""
from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import resource
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, ".venv", "bin")
PYTHON = os.path.join(BIN, "python") if os.path.exists(os.path.join(BIN, "python")) else sys.executable
FLASK = ([os.path.join(BIN, "flask")] if os.path.exists(os.path.join(BIN, "flask"))
         else [PYTHON, "-m", "flask"]) + ["--app", "wsgi"]
GUNICORN = os.path.join(BIN, "gunicorn") if os.path.exists(os.path.join(BIN, "gunicorn")) else "gunicorn"
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.support import (  # noqa: E402 - shared with the tests: claiming a schema and a Redis db
    claim_redis_db,
    create_postgres_schema,
    drop_postgres_schema,
    release_redis_db,
)

KIB, MIB, GIB = 1024, 1024 ** 2, 1024 ** 3
WORKER_CLASS = "app.gunicorn_worker.DriveThreadWorker"  # gthread with Drive's additions, as in production
MB = 10 ** 6


# ---------------------------------------------------------------------------------------------
# small helpers

def parse_size(text: str) -> int:
    units = {"": 1, "B": 1, "K": KIB, "KB": 10 ** 3, "KIB": KIB, "M": MIB, "MB": MB, "MIB": MIB,
             "G": GIB, "GB": 10 ** 9, "GIB": GIB}
    match = re.fullmatch(r"\s*([0-9.]+)\s*([A-Za-z]*)\s*", text)
    if not match or match.group(2).upper() not in units:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 256MiB, 1GiB, 1048576)")
    return int(float(match.group(1)) * units[match.group(2).upper()])


def human(n: float) -> str:
    for unit, size in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:.0f} B"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_T0 = time.monotonic()


def log(message: str) -> None:
    print(f"[bench {time.monotonic() - _T0:7.1f}s] {message}", file=sys.stderr, flush=True)


class BenchError(RuntimeError):
    pass


# ---------------------------------------------------------------------------------------------
# process bookkeeping: RSS and CPU of a process tree

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name: [state, ppid, ...]."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _proc_status_rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * KIB
    except OSError:
        pass
    return 0


def _proc_pss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * KIB
    except OSError:
        pass
    return _proc_status_rss(pid)


def tree_pids(root_pids) -> list[int]:
    """The processes and all their live descendants (one pass over /proc/*/stat)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields_ = _stat_fields(int(entry))
            if fields_ is not None:
                children.setdefault(int(fields_[1]), []).append(int(entry))
    pids, todo = [], [pid for pid in root_pids if os.path.exists(f"/proc/{pid}")]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo.extend(children.get(pid, ()))
    return pids


def tree_rss(root_pids, pids=None) -> int:
    """Sum of VmRSS (/proc/<pid>/status) of the processes and all their descendants."""
    return sum(_proc_status_rss(pid) for pid in (pids if pids is not None else tree_pids(root_pids)))


def tree_pss(root_pids, pids=None) -> int:
    """Sum of PSS (/proc/<pid>/smaps_rollup): unlike RSS, pages shared by forked processes
    (gunicorn workers, the RQ work horse) are counted once in total."""
    return sum(_proc_pss(pid) for pid in (pids if pids is not None else tree_pids(root_pids)))


def tree_cpu(root_pids, kernel_only: bool = False) -> float:
    """CPU seconds (user+system; with `kernel_only`, system) of the live processes of the
    trees, plus what the roots' reaped children used (the RQ work horse that ran finalize is
    reaped by the worker)."""
    total = 0
    for pid in tree_pids(root_pids):
        fields_ = _stat_fields(pid)
        if fields_ is None:
            continue
        total += int(fields_[12]) + (0 if kernel_only else int(fields_[11]))
        if pid in root_pids:
            total += int(fields_[14]) + (0 if kernel_only else int(fields_[13]))
    return total / CLOCK_TICKS


def tree_minflt(root_pids) -> int:
    """Minor page faults of the live processes of the trees (each fresh page a process touches)."""
    total = 0
    for pid in tree_pids(root_pids):
        fields_ = _stat_fields(pid)
        if fields_ is not None:
            total += int(fields_[7])
    return total


def machine_cpu() -> tuple[float, float, float]:
    """(busy, iowait, total) CPU seconds of the whole machine so far, all cores (/proc/stat)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (values + [0] * 8)[:8]
    busy = user + nice + system + irq + softirq + steal
    return busy / CLOCK_TICKS, iowait / CLOCK_TICKS, (busy + idle + iowait) / CLOCK_TICKS


class PeakSampler:
    """Samples the trees' memory every 100 ms in a thread: .peak_rss is the highest RSS sum
    seen, .peak_pss the highest PSS sum (a fork's shared pages counted once)."""

    def __init__(self, root_pids):
        self.root_pids = root_pids
        self.pss_before = tree_pss(root_pids)
        self.peak_rss = 0
        self.peak_pss = 0
        self.cpu = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self):
        pids = tree_pids(self.root_pids)
        self.peak_rss = max(self.peak_rss, tree_rss(self.root_pids, pids))
        self.peak_pss = max(self.peak_pss, tree_pss(self.root_pids, pids))

    def _run(self):
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(0.1)
        self.cpu = time.thread_time()  # the sampler's own CPU, not the client's

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample()


@dataclass
class Child:
    name: str
    proc: subprocess.Popen
    log_path: str

    def tail(self, lines: int = 40) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM this process (it stops its own children: gunicorn its workers, rq its horse),
        then SIGKILL it and any descendants still alive, each by pid."""
        if self.proc.poll() is not None:
            return
        descendants = [pid for pid in tree_pids([self.proc.pid]) if pid != self.proc.pid]
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        deadline = time.monotonic() + 5
        for pid in descendants:  # normally gone with their parent; else killed, by pid
            while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
                fields_ = _stat_fields(pid)
                if fields_ is None or fields_[0] == "Z":
                    break
                time.sleep(0.05)
            fields_ = _stat_fields(pid)
            if fields_ is not None and fields_[0] != "Z" and int(fields_[1]) in (1, self.proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def start_child(name: str, args, env, folder: str) -> Child:
    log_path = os.path.join(folder, f"{name}.log")
    out = open(log_path, "ab")
    # own session: a Ctrl-C in the terminal reaches the benchmark only, which stops them in order
    proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    out.close()
    return Child(name, proc, log_path)



def json_request(port: int, method: str, path: str, token: str | None, payload=None,
                 timeout: float = 600) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        body = None
        if payload is not None:
            body = json.dumps(payload).encode()
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        raw = response.read()
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            data = {}
        return response.status, data, raw
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------
# the service

class Service:
    """The real processes in a temp instance; every start registers its own undo on `stack`.

    gunicorn runs `web_workers` workers of `threads` threads each (WORKER_CLASS, as the Procfile
    does), plus `gunicorn_args`
    (e.g. ["--worker-connections", "1200"]); `settings` are more environment variables for every
    process of the service (e.g. {"LIVE_PING_INTERVAL_SECONDS": "25"}).
    """

    def __init__(self, stack: contextlib.ExitStack, folder: str, *, web_workers: int = 2, threads: int = 8,
                 gunicorn_args=(), fsync: bool = True, settings: dict | None = None):
        self.stack = stack
        self.folder = folder
        self.web_workers = web_workers
        self.threads = threads
        self.gunicorn_args = list(gunicorn_args)
        self.fsync = fsync
        self.settings = dict(settings or {})
        self.instance = os.path.join(folder, "instance")
        self.storage = os.path.join(folder, "storage")
        os.makedirs(self.instance, exist_ok=True)
        self.env_settings: dict = {}
        self.database_label = ""
        self.redis_label = ""
        self.web: Child | None = None
        self.worker: Child | None = None
        self.port = 0
        self.idle_worker_tree: set = set()

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        env.update(self.env_settings)
        env["PYTHONPATH"] = ROOT
        return env

    def prepare(self) -> None:
        settings = {
            "INSTANCE_PATH": self.instance,
            "STORAGE_UPLOADS_PATH": self.storage,
            "JWT_SECRET": "bench-secret-" + secrets.token_hex(24),
            "LOG_LEVEL": "WARNING",
        }
        if not self.fsync:
            settings["STORAGE_FSYNC"] = "0"
        settings.update(self.settings)
        base_db = os.environ.get("DATABASE_URL")
        if base_db:
            schema = "bench_" + secrets.token_hex(6)
            settings["DATABASE_URL"] = create_postgres_schema(base_db, schema)
            self.stack.callback(drop_postgres_schema, base_db, schema)
            self.database_label = f"PostgreSQL {re.sub(r'//[^@/]*@', '//', base_db)}, fresh schema {schema}"
        else:
            path = os.path.join(self.folder, "drive.sqlite3")
            settings["DATABASE_URL"] = "sqlite:///" + path
            self.database_label = f"SQLite {path} (fresh)"
        base_redis = os.environ.get("REDIS_URL")
        if base_redis:
            url = claim_redis_db(base_redis, f"bench-{os.getpid()}")
            self.stack.callback(release_redis_db, base_redis, url)
            settings["REDIS_URL"] = url
            self.redis_label = f"{url} (claimed database of REDIS_URL, flushed)"
        else:
            from app.embedded_redis import ensure_embedded_redis, stop_embedded_redis  # noqa: PLC0415

            self.stack.callback(stop_embedded_redis, self.instance)
            settings["REDIS_URL"] = ensure_embedded_redis(self.instance)
            self.redis_label = f"embedded redis-server {settings['REDIS_URL']}"
        self.env_settings = settings

        done = subprocess.run(FLASK + ["db", "upgrade"], env=self.env(), cwd=ROOT, capture_output=True,
                              text=True, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise BenchError(f"`flask db upgrade` failed ({done.returncode}):\n{done.stdout}{done.stderr}")

    def token(self, account: uuid.UUID) -> str:
        done = subprocess.run(FLASK + ["tokens", "create", str(account)], env=self.env(), cwd=ROOT,
                              capture_output=True, text=True, stdin=subprocess.DEVNULL)
        lines = [line for line in done.stdout.splitlines() if line.strip()]
        if done.returncode != 0 or not lines or lines[-1].count(".") != 2:
            raise BenchError(f"`flask tokens create` failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        return lines[-1].strip()

    def tokens(self, accounts) -> list[str]:
        """Bearer tokens for many accounts at once, made in this process by an app created
        with the service's settings (one `flask tokens create` per account costs ~1 s)."""
        from app import create_app  # noqa: PLC0415 - only the benchmarks that need it pay the import
        from app.auth import issue_token  # noqa: PLC0415
        from config import Config  # noqa: PLC0415

        app = create_app(Config.from_env(self.env()))
        return [issue_token(account, app=app) for account in accounts]

    def redis_pid(self) -> int | None:
        """The pid of the embedded redis-server (None when REDIS_URL names a server)."""
        if os.environ.get("REDIS_URL"):
            return None
        try:
            with open(os.path.join(self.instance, "redis", "redis.pid")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def redis(self):
        """A client of the service's Redis."""
        from redis import Redis  # noqa: PLC0415

        return Redis.from_url(self.env_settings["REDIS_URL"])

    def start(self) -> None:
        env = self.env()
        self.worker = start_child("worker", FLASK + ["worker", "--name", f"bench-{uuid.uuid4().hex[:8]}"],
                                  env, self.folder)
        self.stack.callback(self.worker.stop)
        self.web, self.port = self._start_gunicorn("gunicorn", self.web_workers, self.threads, self.gunicorn_args)
        time.sleep(1.0)  # let the worker's scheduler process start
        self.idle_worker_tree = set(tree_pids(self.worker_pids))

    def start_extra_web(self, name: str, workers: int, threads: int, gunicorn_args=()) -> tuple[Child, int]:
        """Another gunicorn on the same instance (database, Redis, storage, rq worker), on its
        own port: e.g. to keep uploads out of the process that holds the WebSockets."""
        return self._start_gunicorn(name, workers, threads, list(gunicorn_args))

    def _start_gunicorn(self, name: str, workers: int, threads: int, gunicorn_args: list) -> tuple[Child, int]:
        port = free_port()
        web = start_child(name, [
            GUNICORN, "--workers", str(workers), "--worker-class", WORKER_CLASS,
            "--threads", str(threads), "--bind", f"127.0.0.1:{port}", "--timeout", "300",
            *gunicorn_args, "wsgi:app"], self.env(), self.folder)
        self.stack.callback(web.stop)
        deadline = time.monotonic() + 90
        last = ""
        while True:
            for child in (web, self.worker):
                if child.proc.poll() is not None:
                    raise BenchError(f"{child.name} exited ({child.proc.returncode}):\n{child.tail()}")
            try:
                status, data, raw = json_request(port, "GET", "/health/uploads", None, timeout=5)
                if status == 200:
                    break
                last = raw.decode(errors="replace")
            except OSError as error:
                last = str(error)
            if time.monotonic() > deadline:
                raise BenchError(f"the service did not become healthy: {last}\n--- {name}:\n"
                                 f"{web.tail()}\n--- worker:\n{self.worker.tail()}")
            time.sleep(0.2)
        return web, port

    @property
    def web_pids(self) -> list[int]:
        return [self.web.proc.pid]

    @property
    def worker_pids(self) -> list[int]:
        return [self.worker.proc.pid]

    def web_worker_pids(self) -> list[int]:
        return [pid for pid in tree_pids(self.web_pids) if pid != self.web.proc.pid]

    def worker_idle(self, timeout: float = 10.0) -> None:
        """Wait until the RQ worker has no work horse (the finalize job's fork) alive: no
        process in its tree but those it had when idle (itself and its scheduler)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and set(tree_pids(self.worker_pids)) - self.idle_worker_tree:
            time.sleep(0.05)

    def failure_context(self) -> str:
        return (f"--- gunicorn log (last lines):\n{self.web.tail() if self.web else ''}\n"
                f"--- worker log (last lines):\n{self.worker.tail() if self.worker else ''}")

    def web_worker_pid(self) -> int:
        """The pid of the one gunicorn worker (for a service started with web_workers=1)."""
        deadline = time.monotonic() + 10
        while True:
            pids = self.web_worker_pids()
            if len(pids) == 1:
                return pids[0]
            if time.monotonic() > deadline:
                raise BenchError(f"expected one gunicorn worker, found {pids}")
            time.sleep(0.05)


# ---------------------------------------------------------------------------------------------
# facts about one process, and the file descriptor limit

def proc_status(pid: int) -> dict[str, str]:
    """/proc/<pid>/status as a mapping (e.g. "Threads", "VmRSS" in "123 kB"); {} if gone."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                name, _, value = line.partition(":")
                out[name] = value.strip()
    except OSError:
        pass
    return out


def proc_threads(pid: int) -> int:
    return int(proc_status(pid).get("Threads", "0"))


def proc_rss(pid: int) -> int:
    return _proc_status_rss(pid)


def proc_context_switches(pid: int) -> tuple[int, int]:
    """(voluntary, involuntary) context switches of all the live threads of a process, from
    /proc/<pid>/task/*/status (a thread that waits for a lock, the GIL or I/O switches
    voluntarily; one preempted by the scheduler, involuntarily)."""
    voluntary = involuntary = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0, 0
    for task in tasks:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/status") as f:
            for line in f:
                if line.startswith("voluntary_ctxt_switches:"):
                    voluntary += int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches:"):
                    involuntary += int(line.split()[1])
    return voluntary, involuntary


def proc_fds(pid: int) -> tuple[int, int]:
    """(open file descriptors, of which sockets) of a process."""
    total = sockets = 0
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            total += 1
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                    sockets += 1
    except OSError:
        pass
    return total, sockets


def proc_nofile(pid: int) -> tuple[str, str]:
    """(soft, hard) 'Max open files' of a process, from /proc/<pid>/limits."""
    try:
        with open(f"/proc/{pid}/limits") as f:
            for line in f:
                if line.startswith("Max open files"):
                    parts = line.split()
                    return parts[3], parts[4]
    except OSError:
        pass
    return "?", "?"


def raise_nofile(needed: int) -> tuple[int, int, int]:
    """Raise this process's soft RLIMIT_NOFILE to `needed` (at most the hard limit), so the
    children it starts inherit it. Returns (soft before, soft now, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = soft
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return soft, target, hard


def established_on_port(port: int) -> int:
    """TCP connections in state ESTABLISHED whose local end is 127.0.0.1:`port` (the server's
    side of its clients' connections), from /proc/net/tcp."""
    count = 0
    want = f":{port:04X}"
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split()
            if parts[1].endswith(want) and parts[3] == "01":
                count += 1
    return count


def load_average() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


# ---------------------------------------------------------------------------------------------
# main(): cleanup on every exit path

def run_main(run, args) -> int:
    """Call `run(args, stack)` and always close `stack` (which stops and removes what the run
    started): after a normal end (its return code), a BenchError (2), Ctrl-C or SIGTERM (130).
    A second Ctrl-C during the cleanup is ignored rather than cutting it short."""

    def on_term(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started with SIGINT ignored
    stack = contextlib.ExitStack()
    code = 1
    try:
        code = run(args, stack)
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        code = 130
    except BenchError as error:
        print(f"\nFAILED: {error}", file=sys.stderr)
        code = 2
    finally:
        # never cut the cleanup short: a second Ctrl-C waits
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            stack.close()
        except Exception as error:  # noqa: BLE001
            print(f"cleanup: {type(error).__name__}: {error}", file=sys.stderr)
    return code
