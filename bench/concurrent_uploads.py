"""Many uploads at once while many WebSockets listen: Drive under concurrent load.

    .venv/bin/python bench/concurrent_uploads.py [--clients 100] [--file-size 10MiB] [--sockets 1000]
                                                 [--layout split|shared] [--rounds 1]

One run:
1. writes --clients different random files of --file-size (one data file, a slice each) and
   measures the baselines on the same bytes: `curl -T` of all of them to a discarding HTTP
   receiver (bench/discard_receiver.py: the machine's HTTP ceiling), a hashlib SHA-256 read of
   them, and this script's own concurrent client against that receiver (its own limit: the
   same requests, the same concurrency, nothing stored);
2. starts the service (bench/service.py: fresh SQLite database or PostgreSQL schema, claimed or
   embedded Redis, migrations, `flask worker` processes) with gunicorn laid out as --layout:
   `split` (default, the README's deployment for many sockets): the API on one gunicorn
   (--web-workers × --threads) and the live routes on another (one process, a thread per
   socket, --worker-connections = --threads); `shared`: one gunicorn for everything;
3. opens --sockets WebSockets, spread round-robin over the clients' accounts (10 per account
   by default), each read by ONE client thread (bench/event_latency.py's Reader: epoll);
4. warms up (one small upload per client, untimed), then starts every client at once: each
   thread, on its own keep-alive connection, creates its task, sends its chunks (raw bodies
   with os.sendfile, one after the other) and completes (again while it answers 202);
5. checks: zero errors, every complete's 200 names the declared SHA-256 and size, every socket
   received its account's `upload.completed` (right taskId and fileId), and, after the clock
   stopped, every file downloaded and hashed again;
6. prints the total time (first create sent → last complete answered, and → last
   `upload.completed` received), chunk latency p50/p90/p99/max, create and complete latency,
   the CPU each process used, and the verdict against the target (< 2 s in total).

--py-spy PATH records every gunicorn worker and the rq workers during the timed round (raw
collapsed stacks into --profile-dir); the numbers are then not representative.

Not a test: pytest never collects it (no test_ names, and bench/ is outside testpaths).
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import hashlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench.event_latency import Reader, connect, percentile  # noqa: E402 - shared with the benchmarks
from bench.service import (  # noqa: E402
    MB,
    MIB,
    BenchError,
    Service,
    human,
    load_average,
    FLASK,
    GUNICORN,
    log,
    machine_cpu,
    parse_size,
    raise_nofile,
    run_main,
    start_child,
    tree_cpu,
    tree_pids,
)
from bench.upload_throughput import Body, Client, curl_upload, discard_receiver, disk_write, make_file  # noqa: E402

TARGET_SECONDS = 2.0
HASH_BLOCK = 8 * MIB


# ---------------------------------------------------------------------------------------------
# one client: create → chunks → complete on one keep-alive connection

@dataclass
class Outcome:
    """What one client's upload did, with perf_counter times (the Reader's clock)."""

    index: int
    started: float = 0.0
    created: float = 0.0
    chunk_latencies: list = field(default_factory=list)
    last_chunk: float = 0.0
    done: float = 0.0
    complete_calls: int = 0
    task_id: str = ""
    file: dict = field(default_factory=dict)
    error: str | None = None


class UploadClient(Client):
    """upload_throughput's Client (os.sendfile bodies) plus JSON calls on the same connection."""

    def call(self, method: str, path: str, token: str, payload=None) -> tuple[int, dict, bytes]:
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        body = b""
        if payload is not None:
            body = json.dumps(payload).encode()
            headers["Content-Type"] = "application/json"
        for attempt in (1, 2):
            try:
                self.conn.request(method, path, body=body, headers=headers)
                response = self.conn.getresponse()
                raw = response.read()
                if response.will_close:
                    self.conn.close()
                    self.conn = self._connect()
                return response.status, (json.loads(raw) if raw else {}), raw
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                if attempt == 2:  # the server closed an idle keep-alive connection: reconnect once
                    raise
                self.conn.close()
                self.conn = self._connect()
        raise AssertionError("unreachable")


@dataclass
class Job:
    """One client's file: a slice of the data file, its SHA-256, and the account's token."""

    index: int
    token: str
    offset: int
    size: int
    digest: str


def run_upload(client: UploadClient, job: Job, chunk_size: int, outcome: Outcome) -> None:
    """create → every chunk in order → complete (again while 202); raises BenchError."""
    outcome.started = time.perf_counter()
    status, created, raw = client.call("POST", "/api/files/upload/create", job.token, {
        "fileName": f"load-{job.index}.bin", "fileSize": job.size, "contentType": "application/octet-stream",
        "hash": job.digest, "chunkSize": chunk_size})
    outcome.created = time.perf_counter()
    if status != 200 or created.get("fileExists"):
        raise BenchError(f"create: HTTP {status}: {raw[:300].decode(errors='replace')}")
    task_id, chunk_size = created["taskId"], created["chunkSize"]
    outcome.task_id = task_id
    headers = {"Authorization": f"Bearer {job.token}", "Content-Type": "application/octet-stream"}
    for index in range(created["chunksCount"]):
        offset = index * chunk_size
        body = Body(job.offset + offset, min(chunk_size, job.size - offset))
        sent = time.perf_counter()
        status, raw = client.post("POST", f"/api/files/upload/chunk/{task_id}/{index}", headers, body)
        outcome.last_chunk = time.perf_counter()
        outcome.chunk_latencies.append(outcome.last_chunk - sent)
        if status != 200:
            raise BenchError(f"chunk {index}: HTTP {status}: {raw[:300].decode(errors='replace')}")
    while True:
        outcome.complete_calls += 1
        status, done, raw = client.call("POST", f"/api/files/upload/complete/{task_id}", job.token)
        if status == 200:
            break
        if status != 202 or outcome.complete_calls > 100:
            raise BenchError(f"complete: HTTP {status}: {raw[:300].decode(errors='replace')}")
    outcome.done = time.perf_counter()
    outcome.file = done
    if done.get("hash") != job.digest or done.get("size") != job.size:
        raise BenchError(f"complete answered hash {done.get('hash')} size {done.get('size')}, "
                         f"expected {job.digest} {job.size}")


def run_clients(port: int, path: str, jobs: list[Job], chunk_size: int) -> tuple[list[Outcome], float]:
    """One client per job (connected first), all started at once; returns the outcomes and
    the perf_counter time they were released."""

    def work(client, job, outcome):
        try:
            run_upload(client, job, chunk_size, outcome)
        except Exception as error:  # noqa: BLE001 - reported with the others
            outcome.error = f"{type(error).__name__}: {error}"

    return release_together(port, path, jobs, UploadClient, work)


def release_together(port: int, path: str, jobs: list[Job], client_class, work) -> tuple[list[Outcome], float]:
    """Connect a `client_class` per job, start a thread per job that runs
    work(client, job, outcome) once all are ready, and wait for them all."""
    clients = [client_class(port, path, "sendfile") for _ in jobs]
    outcomes = [Outcome(job.index) for job in jobs]
    gate = threading.Barrier(len(jobs) + 1)

    def run(client, job, outcome):
        gate.wait()
        work(client, job, outcome)

    threads = [threading.Thread(target=run, args=args, daemon=True) for args in zip(clients, jobs, outcomes)]
    for thread in threads:
        thread.start()
    gate.wait()
    released = time.perf_counter()
    for thread in threads:
        thread.join()
    for client in clients:
        with contextlib.suppress(OSError):
            client.close()
    return outcomes, released


# ---------------------------------------------------------------------------------------------
# the sockets: upload.completed per account

class CompletionReader(Reader):
    """The Reader of bench/event_latency.py, recording upload.* packets per socket."""

    def __init__(self):
        super().__init__()
        self.completed: dict[int, dict] = {}                 # socket index -> packet data
        self.completed_at: dict[int, int] = {}               # socket index -> perf_counter_ns
        self.counts: collections.Counter = collections.Counter()

    def message(self, client, raw: bytes, now: int) -> None:
        packet = json.loads(raw)
        kind = packet.get("type", "")
        self.counts[kind] += 1
        if packet.get("id", 0) <= client.last_id:
            client.out_of_order += 1
        client.last_id = max(client.last_id, packet.get("id", 0))
        if kind == "upload.completed":
            self.completed[client.index] = packet["data"]
            self.completed_at[client.index] = now

    def reset(self) -> None:
        self.completed.clear()
        self.completed_at.clear()
        self.counts.clear()


def open_sockets(reader: Reader, port: int, plan: list, token_of: dict, parallel: int, timeout: float) -> float:
    started = time.perf_counter()
    failures = []
    with ThreadPoolExecutor(parallel) as pool:
        futures = [pool.submit(connect, port, i, account, token_of[account], timeout) for i, account in plan]
        for future in futures:
            try:
                reader.add(future.result()[0])
            except Exception as error:  # noqa: BLE001
                failures.append(f"{type(error).__name__}: {error}")
    if failures:
        raise BenchError(f"{len(failures)} of {len(plan)} sockets failed to connect; first: {failures[0]}")
    return time.perf_counter() - started


def wait_for_events(reader: CompletionReader, want: int, timeout: float) -> None:
    """Poll (the reader thread fills the dict) until `want` sockets saw upload.completed."""
    deadline = time.perf_counter() + timeout
    while len(reader.completed) < want and time.perf_counter() < deadline:
        time.sleep(0.01)


# ---------------------------------------------------------------------------------------------
# baselines

def sha256_slices(path: str, slice_size: int, count: int) -> tuple[list[str], float]:
    """The SHA-256 of each slice, read with readinto as upload_throughput.sha256_file does,
    and the seconds the whole read + hash took."""
    buffer = bytearray(HASH_BLOCK)
    view = memoryview(buffer)
    digests = []
    started = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        for _ in range(count):
            digest, left = hashlib.sha256(), slice_size
            while left:
                n = f.readinto(view[:min(HASH_BLOCK, left)])
                digest.update(view[:n])
                left -= n
            digests.append(digest.hexdigest())
    return digests, time.perf_counter() - started


@dataclass
class Baselines:
    curl_seconds: float
    hash_seconds: float
    client_seconds: float
    client_p99: float
    disk_seconds: float = 0.0


def measure_baselines(folder: str, path: str, jobs: list[Job], chunk_size: int, repeat: int) -> Baselines:
    hashes = [sha256_slices(path, jobs[0].size, len(jobs))[1] for _ in range(repeat)]
    with discard_receiver(folder) as (port, _receiver):
        curls = [curl_upload(path, port) for _ in range(repeat)]
        runs = []
        for _ in range(repeat):
            outcomes, released = run_sink_clients(port, path, jobs, chunk_size)
            latencies = sorted(lat for o in outcomes for lat in o.chunk_latencies)
            runs.append((max(o.done for o in outcomes) - released, percentile(latencies, .99)))
    best = min(runs)
    total = sum(job.size for job in jobs)
    disk = [disk_write(folder, total, chunk_size, len(jobs), fsync=True) for _ in range(repeat)]
    return Baselines(min(curls), min(hashes), best[0], best[1], min(disk))


def run_sink_clients(port: int, path: str, jobs: list[Job], chunk_size: int) -> tuple[list[Outcome], float]:
    """The same clients, the same chunk requests, to the discarding receiver (no create or
    complete: it answers every request 200 with nothing)."""

    def work(client, job, outcome):
        for offset in range(0, job.size, chunk_size):
            sent = time.perf_counter()
            client.post("POST", "/sink", {}, Body(job.offset + offset, min(chunk_size, job.size - offset)))
            outcome.chunk_latencies.append(time.perf_counter() - sent)
        outcome.done = time.perf_counter()

    return release_together(port, path, jobs, Client, work)


# ---------------------------------------------------------------------------------------------
# the service

@dataclass
class Layout:
    api_port: int
    live_port: int
    api_pids: list
    live_pids: list
    worker_pids: list
    description: str


def start_service(stack, folder: str, args) -> tuple[Service, Layout]:
    """The service as --layout says, with --rq-workers workers (`flask worker`, or `rq worker -w
    CLASS` with --rq-worker-class)."""
    live_threads = args.sockets + 50
    threads = args.threads if args.layout == "split" else args.threads + live_threads // args.web_workers + 1
    settings = dict(item.split("=", 1) for item in args.env)
    service = Service(stack, folder, web_workers=args.web_workers, threads=threads,
                      gunicorn_args=args.gunicorn_args.split(), settings=settings)
    log("preparing database, redis and migrations")
    service.prepare()
    log("starting gunicorn and the rq worker(s)")
    service.start()
    api = f"gunicorn {args.web_workers} × {threads} threads (gthread) on :{service.port}"
    live_pids, live_port = service.web_pids, service.port
    description = f"one {api} for the API and the sockets"
    if args.layout == "split":
        live, live_port = service.start_extra_web("gunicorn-live", 1, live_threads,
                                                  ["--worker-connections", str(live_threads)])
        live_pids = [live.proc.pid]
        description = (f"API: {api}; live routes: gunicorn 1 × {live_threads} threads --worker-connections "
                       f"{live_threads} on :{live_port}")
    workers = start_workers(stack, service, folder, args)
    description += f"; {args.rq_workers} × `{'rq worker -w ' + args.rq_worker_class if args.rq_worker_class else 'flask worker'}`"
    return service, Layout(service.port, live_port, service.web_pids, live_pids, workers, description)


def start_workers(stack, service: Service, folder: str, args) -> list[int]:
    """The service's `flask worker` and --rq-workers - 1 more (or, with --rq-worker-class, that
    many `rq worker -w CLASS` instead of it)."""
    workers = list(service.worker_pids)
    command = FLASK + ["worker"]
    if args.rq_worker_class:
        service.worker.stop()
        workers = []
        command = [os.path.join(os.path.dirname(GUNICORN), "rq"), "worker", "-w", args.rq_worker_class,
                   "--url", service.env_settings["REDIS_URL"], "high", "default", "low"]
    for n in range(len(workers), args.rq_workers):
        extra = start_child(f"worker-{n}", command + ["--name", f"bench-{uuid.uuid4().hex[:8]}"],
                            service.env(), folder)
        stack.callback(extra.stop)
        workers.append(extra.proc.pid)
    return workers


def verify_downloads(port: int, jobs: list[Job], outcomes: list[Outcome]) -> list[str]:
    """Download every file and hash it: the bytes stored, not what complete says."""
    problems = []

    def check(job: Job, outcome: Outcome):
        client = UploadClient(port, os.devnull, "sendfile")
        try:
            client.conn.request("GET", f"/api/files/{outcome.file['id']}/download",
                                headers={"Authorization": f"Bearer {job.token}"})
            response = client.conn.getresponse()
            digest, size = hashlib.sha256(), 0
            while block := response.read(MIB):
                digest.update(block)
                size += len(block)
            if response.status != 200 or digest.hexdigest() != job.digest or size != job.size:
                problems.append(f"client {job.index}: download HTTP {response.status}, {size} bytes, "
                                f"sha256 {digest.hexdigest()}")
        finally:
            client.close()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(check, jobs, outcomes))
    return problems


def check_events(reader: CompletionReader, plan: list, task_of: dict, outcomes: list[Outcome]) -> list[str]:
    """Every socket got its account's upload.completed, naming that task and its file."""
    file_of = {o.task_id: o.file.get("id") for o in outcomes}
    problems = []
    for index, account in plan:
        data = reader.completed.get(index)
        if data is None:
            problems.append(f"socket {index} ({account}): no upload.completed")
        elif data.get("taskId") != task_of[account] or data.get("fileId") != file_of.get(task_of[account]):
            problems.append(f"socket {index}: upload.completed of {data.get('taskId')}/{data.get('fileId')}, "
                            f"expected {task_of[account]}")
    return problems


# ---------------------------------------------------------------------------------------------
# a timed round

@dataclass
class Round:
    outcomes: list
    released: float
    wall_api: float
    wall_events: float
    cpu: dict
    machine_busy: float
    machine_total: float
    problems: list


def timed_round(layout: Layout, reader: CompletionReader, path: str, jobs: list[Job],
                plan: list, accounts: list, args, watch: dict) -> Round:
    reader.reset()
    cpu0 = {label: tree_cpu(pids) for label, pids in watch.items()}
    client_cpu0 = time.process_time()
    machine0 = machine_cpu()
    outcomes, released = run_clients(layout.api_port, path, jobs, args.chunk_size)
    wait_for_events(reader, len(plan), args.wait)
    machine1 = machine_cpu()
    cpu = {label: tree_cpu(pids) - cpu0[label] for label, pids in watch.items()}
    cpu["bench client (all threads)"] = time.process_time() - client_cpu0
    errors = [f"client {o.index}: {o.error}" for o in outcomes if o.error]
    done = [o.done for o in outcomes if not o.error]
    wall_api = (max(done) - released) if done else float("nan")
    events_ns = list(reader.completed_at.values())
    wall_events = max(events_ns) / 1e9 - released if events_ns else float("nan")
    problems = errors
    if not errors:
        task_of = {accounts[o.index]: o.task_id for o in outcomes}
        problems += check_events(reader, plan, task_of, outcomes)
    return Round(outcomes, released, wall_api, wall_events, cpu, machine1[0] - machine0[0],
                 machine1[2] - machine0[2], problems)


def delete_files(port: int, jobs: list[Job], outcomes: list[Outcome]) -> None:
    """Delete the round's files, so the next round's creates are not deduplicated."""
    def remove(job: Job, outcome: Outcome):
        client = UploadClient(port, os.devnull, "sendfile")
        try:
            status, _, raw = client.call("DELETE", f"/api/files/{outcome.file['id']}", job.token)
            if status != 204:
                raise BenchError(f"DELETE file of client {job.index}: HTTP {status}: {raw[:200]!r}")
        finally:
            client.close()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(remove, jobs, outcomes))


# ---------------------------------------------------------------------------------------------
# report

def verdict(ok: bool) -> str:
    return "OK  " if ok else "MISS"


def quantiles(values: list) -> str:
    v = sorted(values)
    if not v:
        return "-"
    return "/".join(f"{1000 * percentile(v, q):.0f}" for q in (.5, .9, .99)) + f"/{1000 * v[-1]:.0f}"


def print_baselines(base: Baselines, total_bytes: int, jobs: list[Job], chunk_size: int, repeat: int) -> None:
    print(f"\nBaselines (best of {repeat}), the same {human(total_bytes)}:")
    print(f"  HTTP ceiling  {total_bytes / base.curl_seconds / MB:8.1f} MB/s = {base.curl_seconds:.3f} s for all "
          "the bytes: curl -T DATA → bench/discard_receiver.py (one connection, nothing stored)")
    print(f"  SHA-256       {total_bytes / base.hash_seconds / MB:8.1f} MB/s = {base.hash_seconds:.3f} s: hashlib "
          "read of every file, one core (page cache)")
    print(f"  disk          {total_bytes / base.disk_seconds / MB:8.1f} MB/s = {base.disk_seconds:.3f} s: the "
          f"chunk files written, fsynced (file + folder) and linked as LocalWriter does, from {len(jobs)} threads "
          "(STORAGE_FSYNC is on: chunks cannot be stored faster)")
    print(f"  bench client  {total_bytes / base.client_seconds / MB:8.1f} MB/s = {base.client_seconds:.3f} s: these "
          f"{len(jobs)} client threads, {-(-jobs[0].size // chunk_size)} chunks each (os.sendfile), to the same "
          f"receiver; chunk p99 {1000 * base.client_p99:.0f} ms")


def print_round(number: int, r: Round, total_bytes: int, base: Baselines, cores: int) -> None:
    ok = [o for o in r.outcomes if not o.error]
    chunks = [lat for o in ok for lat in o.chunk_latencies]
    print(f"\nRound {number}: {len(ok)}/{len(r.outcomes)} uploads completed")
    print(f"  total, first create → last complete 200   {r.wall_api:7.3f} s   "
          f"({total_bytes / r.wall_api / MB:.0f} MB/s; {r.wall_api / base.curl_seconds:.1f} × the HTTP ceiling's "
          f"time, {r.wall_api / base.client_seconds:.1f} × the bench client's)")
    print(f"  total, → last upload.completed received    {r.wall_events:7.3f} s")
    print("  latency ms p50/p90/p99/max:")
    print(f"    chunk (POST → 200)                {quantiles(chunks):>20}   ({len(chunks)} chunks)")
    print(f"    create                            {quantiles([o.created - o.started for o in ok]):>20}")
    print(f"    last chunk → complete 200         {quantiles([o.done - o.last_chunk for o in ok]):>20}   "
          f"({sum(o.complete_calls > 1 for o in ok)} answered 202 first)")
    print(f"    one upload, create → complete 200 {quantiles([o.done - o.started for o in ok]):>20}")
    busy = 100 * r.machine_busy / r.machine_total if r.machine_total else 0.0
    print("  CPU s: " + ", ".join(f"{k} {v:.2f}" for k, v in r.cpu.items())
          + f"; machine busy {busy:.0f}% of {cores} cores ({r.machine_busy:.1f} CPU s)")


def print_events(reader: CompletionReader, sockets: int, r: Round) -> None:
    counts = ", ".join(f"{k} {v}" for k, v in sorted(reader.counts.items()))
    print(f"  events received on {sockets} sockets: {counts}; upload.completed on {len(reader.completed)}/{sockets}")


# ---------------------------------------------------------------------------------------------

def run(args, stack: contextlib.ExitStack) -> int:
    cores = os.cpu_count() or 1
    print(f"load average at start: {load_average()}")
    print(f"Drive concurrent uploads — {args.clients} clients × {human(args.file_size)} "
          f"({human(args.chunk_size)} chunks) at once, {args.sockets} WebSockets listening; {cores} CPUs, "
          f"python {sys.version.split()[0]}")
    before, now, hard = raise_nofile(3 * (args.sockets + args.clients) + 1024)
    print(f"RLIMIT_NOFILE: soft {before} → {now} (hard {hard})")
    folder = tempfile.mkdtemp(prefix="drive-bench-", dir=args.tmpdir)
    stack.callback(shutil.rmtree, folder, ignore_errors=True)
    path = os.path.join(folder, "data.bin")
    total_bytes = args.clients * args.file_size
    log(f"writing {human(total_bytes)} of random bytes")
    make_file(path, total_bytes)
    digests, _ = sha256_slices(path, args.file_size, args.clients)
    warm_digests = [sha256_slice(path, i * args.file_size, args.warm_size) for i in range(args.clients)]

    log("baselines")
    plain = [Job(i, "", i * args.file_size, args.file_size, digests[i]) for i in range(args.clients)]
    base = measure_baselines(folder, path, plain, args.chunk_size, args.repeat_baselines)
    print_baselines(base, total_bytes, plain, args.chunk_size, args.repeat_baselines)

    service, layout = start_service(stack, folder, args)
    print(f"\nService: {layout.description}; {service.database_label}; Redis {service.redis_label}")
    accounts = [uuid.uuid4() for _ in range(args.clients)]
    tokens = service.tokens(accounts)
    accounts = [str(a) for a in accounts]
    token_of = dict(zip(accounts, tokens))
    jobs = [Job(i, tokens[i], i * args.file_size, args.file_size, digests[i]) for i in range(args.clients)]
    warm = [Job(i, tokens[i], i * args.file_size, args.warm_size, warm_digests[i]) for i in range(args.clients)]
    plan = [(i, accounts[i % len(accounts)]) for i in range(args.sockets)]

    reader = CompletionReader()
    stack.callback(reader.stop)  # before the service stops: clients leave first
    reader.start()
    log(f"opening {len(plan)} WebSockets")
    took = open_sockets(reader, layout.live_port, plan, token_of, args.connect_parallel, 60.0)
    print(f"Sockets: {len(reader.sockets)} authenticated in {took:.1f} s, over {len(accounts)} accounts")

    log("warm-up: one small upload per client")
    outcomes, _ = run_clients(layout.api_port, path, warm, args.chunk_size)
    failed = [o for o in outcomes if o.error]
    if failed:
        raise BenchError(f"warm-up: {len(failed)} uploads failed; first: {failed[0].error}\n"
                         f"{service.failure_context()}")
    wait_for_events(reader, len(plan), args.wait)
    delete_files(layout.api_port, warm, outcomes)

    watch = {"API gunicorn": layout.api_pids, "rq workers": layout.worker_pids}
    if layout.live_pids != layout.api_pids:
        watch["live gunicorn"] = layout.live_pids
    if service.redis_pid():
        watch["redis-server"] = [service.redis_pid()]
    profiler = start_profilers(args, folder, layout)
    rounds = []
    for number in range(1, args.rounds + 1):
        service.worker_idle()
        log(f"round {number}: {args.clients} uploads at once")
        result = timed_round(layout, reader, path, jobs, plan, accounts, args, watch)
        print_round(number, result, total_bytes, base, cores)
        print_events(reader, len(plan), result)
        if not result.problems:
            result.problems += verify_downloads(layout.api_port, jobs, result.outcomes)
        for problem in result.problems[:10]:
            print(f"  PROBLEM: {problem}")
        rounds.append(result)
        if result.problems:
            print(service.failure_context())
            break
        delete_files(layout.api_port, jobs, result.outcomes)
    stop_profilers(profiler)

    best = min(r.wall_events for r in rounds) if rounds else float("nan")
    clean = all(not r.problems for r in rounds)
    p99 = max(percentile(sorted(lat for o in r.outcomes for lat in o.chunk_latencies), .99) for r in rounds)
    print(f"\nload average at end: {load_average()}")
    print(f"Verdict: {verdict(clean)} zero errors, every SHA-256 verified (complete, download) and every "
          f"socket got its upload.completed; {verdict(best < TARGET_SECONDS)} total {best:.3f} s "
          f"(to the last event, best of {len(rounds)}) < {TARGET_SECONDS:g} s; chunk p99 {1000 * p99:.0f} ms")
    return 0 if clean else 1


def sha256_slice(path: str, offset: int, size: int) -> str:
    with open(path, "rb") as f:
        f.seek(offset)
        return hashlib.sha256(f.read(size)).hexdigest()


def start_profilers(args, folder: str, layout: Layout) -> list:
    if not args.py_spy:
        return []
    targets = [("web", pid) for pid in tree_pids(layout.api_pids) if pid not in layout.api_pids]
    targets += [("worker", pid) for pid in layout.worker_pids]
    if layout.live_pids != layout.api_pids:
        targets += [("live", pid) for pid in tree_pids(layout.live_pids) if pid not in layout.live_pids]
    profilers = []
    for name, pid in targets:
        out = os.path.join(args.profile_dir, f"{name}-{pid}.txt")
        cmd = [args.py_spy, "record", "--pid", str(pid), "--format", "raw", "--rate", "250", "--output", out,
               "--nonblocking", *(["--subprocesses"] if name == "worker" else []), *args.py_spy_args.split()]
        profilers.append((start_child(f"py-spy-{name}-{pid}", cmd, dict(os.environ), folder), out))
    time.sleep(1.0)
    return profilers


def stop_profilers(profilers: list) -> None:
    for child, out in profilers:
        if child.proc.poll() is None:
            child.proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            child.proc.wait(60)
        except subprocess.TimeoutExpired:
            child.stop()
        print(f"py-spy profile: {out}" if os.path.exists(out) else f"py-spy wrote no {out}:\n{child.tail()}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=100, help="uploads at once (default 100)")
    parser.add_argument("--file-size", type=parse_size, default=10 * MIB, help="each file (default 10MiB)")
    parser.add_argument("--chunk-size", type=parse_size, default=5 * MIB, help="(default 5MiB: 2 chunks)")
    parser.add_argument("--warm-size", type=parse_size, default=256 * 1024, help="warm-up upload (default 256KiB)")
    parser.add_argument("--sockets", type=int, default=1000, help="WebSockets listening (default 1000)")
    parser.add_argument("--layout", choices=("split", "shared"), default="split",
                        help="split: API and live routes on two gunicorns (default); shared: one for both")
    parser.add_argument("--web-workers", type=int, default=2, help="API gunicorn workers (default 2)")
    parser.add_argument("--threads", type=int, default=64, help="API threads per worker (default 64)")
    parser.add_argument("--rq-workers", type=int, default=1, help="`flask worker` processes (default 1)")
    parser.add_argument("--rq-worker-class", help="run `rq worker -w CLASS` instead of `flask worker`")
    parser.add_argument("--gunicorn-args", default="", help="more arguments for the API gunicorn")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting for the service (repeatable)")
    parser.add_argument("--rounds", type=int, default=1, help="timed rounds (default 1; the best counts)")
    parser.add_argument("--wait", type=float, default=60.0, help="s to wait for the upload.completed events")
    parser.add_argument("--connect-parallel", type=int, default=16, help="threads opening the sockets")
    parser.add_argument("--repeat-baselines", type=int, default=2, help="runs of each baseline (best counts)")
    parser.add_argument("--tmpdir", default=None, help="where the temp folder goes (default: $TMPDIR or /tmp)")
    parser.add_argument("--py-spy", metavar="PATH", help="py-spy binary: profile the service during the rounds")
    parser.add_argument("--profile-dir", default=".", help="where py-spy writes its profiles")
    parser.add_argument("--py-spy-args", default="", help="more py-spy record arguments, e.g. '--idle'")
    args = parser.parse_args(argv)
    if min(args.clients, args.file_size, args.chunk_size, args.sockets, args.rounds, args.rq_workers) <= 0:
        parser.error("counts and sizes must be positive")
    if args.warm_size > args.file_size:
        parser.error("--warm-size must not exceed --file-size")
    if any("=" not in item for item in args.env):
        parser.error("--env takes KEY=VALUE")
    if args.py_spy:
        args.profile_dir = os.path.abspath(args.profile_dir)
        os.makedirs(args.profile_dir, exist_ok=True)
    return run_main(run, args)


if __name__ == "__main__":
    sys.exit(main())
