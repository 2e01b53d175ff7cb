"""Upload throughput of Drive, end to end, against the machine's own ceilings.

    .venv/bin/python bench/upload_throughput.py [--size 1GiB] [--connections 2] [--chunk-size 8MiB]
                                                [--no-hash-ahead] [--no-fsync] [--only raw|multipart]

One run:
1. makes a random file (--size) in a temp folder;
2. measures the ceilings on this machine: `curl -T FILE` to a discarding HTTP receiver
   (bench/discard_receiver.py, its own process; again right before and after each upload,
   whose ratio is judged against the better of those two, since other work on the machine
   comes and goes), and a hashlib SHA-256 read of the file; for
   information also the disk (chunk files written and fsynced as LocalWriter does) and this
   script's own client against the same receiver;
3. starts the service for real in a temp instance: a fresh SQLite database (or, when
   DATABASE_URL is set, a fresh schema in that PostgreSQL database, dropped at the end), the
   Redis of REDIS_URL (a database number claimed the way tests/conftest.py does) or else the
   embedded one, migrations, gunicorn (2 workers x 8 threads, the Procfile's worker class) and one `flask worker`;
4. uploads the file create → chunks (N parallel connections) → complete, once with raw
   application/octet-stream chunk bodies and once with the multipart field `chunk`, and checks
   that complete answers 200 with the file's SHA-256;
5. prints MB/s (10^6 bytes/s) end to end and for the chunk phase, the time from the last
   chunk's answer to complete's 200 per GiB, the ratios to the ceilings, the server's RSS
   growth (VmRSS of gunicorn + its workers + the rq worker, after vs before; plus the sampled
   peak, as PSS so a forked work horse's shared pages count once), the server's CPU time (per
   gunicorn worker too), its page faults, and how busy the machine was (other sessions' tests
   share these 2 cores), next to the targets;
6. stops and removes everything it started, also on Ctrl-C or an error.

The client sends chunk bodies with os.sendfile (no user-space copy; --client read uses
http.client reading the file in 1 MiB blocks instead). The same client is also timed against
the discarding receiver, so its own limit is printed next to the service's numbers.

--py-spy PATH (a py-spy binary, e.g. pip-installed into a separate venv) records the gunicorn
workers and the rq worker as raw collapsed stacks into --profile-dir; --py-spy-args passes
e.g. "--gil" or "--idle". Timings are then not representative.

The service, the process bookkeeping and the cleanup are shared with bench/event_latency.py
in bench/service.py.

Not a test: pytest never collects it (no test_ names, and bench/ is outside testpaths).
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench.service import (  # noqa: E402 - the machinery shared by the benchmarks
    GIB,
    MB,
    MIB,
    PYTHON,
    WORKER_CLASS,
    BenchError,
    PeakSampler,
    Service,
    human,
    json_request,
    load_average,
    log,
    machine_cpu,
    parse_size,
    run_main,
    start_child,
    tree_cpu,
    tree_minflt,
    tree_rss,
)

RECEIVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "discard_receiver.py")
HASH_BLOCK = 8 * MIB
SEND_BLOCK = 1 * MIB  # --client read: http.client's block size

TARGET_RAW = 0.40          # x HTTP ceiling
TARGET_MULTIPART = 0.25    # x HTTP ceiling
TARGET_FINALIZE = 0.6      # s per GiB, last chunk answered -> complete 200
TARGET_RSS = 64 * MIB      # server RSS growth


# ---------------------------------------------------------------------------------------------
# the HTTP client

@dataclass
class Body:
    """A chunk's body: preamble + file[offset:offset+length] + epilogue."""

    offset: int
    length: int
    preamble: bytes = b""
    epilogue: bytes = b""

    @property
    def size(self) -> int:
        return len(self.preamble) + self.length + len(self.epilogue)


class FileSlice:
    """A read()-able window of a file for http.client (--client read)."""

    def __init__(self, fd: int, offset: int, length: int):
        self.fd, self.offset, self.end = fd, offset, offset + length

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            size = self.end - self.offset
        size = min(size, self.end - self.offset)
        if size <= 0:
            return b""
        data = os.pread(self.fd, size, self.offset)
        self.offset += len(data)
        return data


def _body_iter(fd: int, body: Body):
    if body.preamble:
        yield body.preamble
    piece = FileSlice(fd, body.offset, body.length)
    while True:
        data = piece.read(SEND_BLOCK)
        if not data:
            break
        yield data
    if body.epilogue:
        yield body.epilogue


class Client:
    """One keep-alive connection that POSTs file slices; `sendfile` mode sends the slice with
    os.sendfile (kernel to socket, no user-space copy), `read` mode lets http.client read it."""

    def __init__(self, port: int, file_path: str, mode: str):
        self.port = port
        self.mode = mode
        self.fd = os.open(file_path, os.O_RDONLY)
        self.conn = self._connect()

    def _connect(self) -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600, blocksize=SEND_BLOCK)
        conn.connect()
        conn.sock.settimeout(None)  # blocking: os.sendfile needs it
        return conn

    def close(self):
        self.conn.close()
        os.close(self.fd)

    def post(self, method: str, path: str, headers: dict, body: Body) -> tuple[int, bytes]:
        for attempt in (1, 2):
            try:
                return self._post(method, path, headers, body)
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                # the server closed an idle keep-alive connection: reconnect once
                if attempt == 2:
                    raise
                self.conn.close()
                self.conn = self._connect()
        raise AssertionError("unreachable")

    def _post(self, method, path, headers, body: Body) -> tuple[int, bytes]:
        conn = self.conn
        if self.mode == "read":
            all_headers = dict(headers, **{"Content-Length": str(body.size)})
            conn.request(method, path, body=_body_iter(self.fd, body), headers=all_headers)
        else:
            conn.putrequest(method, path, skip_accept_encoding=True)
            for name, value in headers.items():
                conn.putheader(name, value)
            conn.putheader("Content-Length", str(body.size))
            conn.endheaders()
            sock = conn.sock
            if body.preamble:
                sock.sendall(body.preamble)
            offset, remaining = body.offset, body.length
            while remaining:
                sent = os.sendfile(sock.fileno(), self.fd, offset, remaining)
                if sent == 0:
                    raise BrokenPipeError("sendfile sent nothing")
                offset += sent
                remaining -= sent
            if body.epilogue:
                sock.sendall(body.epilogue)
        response = conn.getresponse()
        data = response.read()
        if response.will_close:
            conn.close()
            self.conn = self._connect()
        return response.status, data



def multipart_parts(boundary: str) -> tuple[bytes, bytes]:
    preamble = (f"--{boundary}\r\n"
                'Content-Disposition: form-data; name="chunk"; filename="blob"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n").encode()
    epilogue = f"\r\n--{boundary}--\r\n".encode()
    return preamble, epilogue


@dataclass
class ChunkRun:
    wall: float
    last_answer: float           # monotonic time of the last chunk's answer
    first_sent: float
    latencies: list = field(default_factory=list)
    client_cpu: float = 0.0


def send_chunks(port: int, file_path: str, file_size: int, chunk_size: int, connections: int,
                path_for, headers: dict, multipart: bool, client_mode: str) -> ChunkRun:
    """POST every chunk over `connections` keep-alive connections (each takes the next index);
    raises on the first answer that is not 200."""
    count = max(1, -(-file_size // chunk_size))
    indices = iter(range(count))
    lock = threading.Lock()
    failure: list = []
    latencies: list = []
    finished: list = []
    boundary = "----drive-bench-" + secrets.token_hex(12)
    preamble, epilogue = multipart_parts(boundary) if multipart else (b"", b"")
    chunk_headers = dict(headers)
    chunk_headers["Content-Type"] = (f"multipart/form-data; boundary={boundary}" if multipart
                                     else "application/octet-stream")
    clients = [Client(port, file_path, client_mode) for _ in range(min(connections, count))]

    cpu_used: list = []

    def run(client: Client):
        cpu_start = time.thread_time()
        try:
            while not failure:
                with lock:
                    index = next(indices, None)
                if index is None:
                    return
                offset = index * chunk_size
                body = Body(offset, min(chunk_size, file_size - offset), preamble, epilogue)
                started = time.monotonic()
                status, raw = client.post("POST", path_for(index), chunk_headers, body)
                ended = time.monotonic()
                if status != 200:
                    failure.append(f"chunk {index}: HTTP {status}: {raw[:2000].decode(errors='replace')}")
                    return
                with lock:
                    latencies.append((ended - started, index, started - start))
                    finished.append(ended)
        except BaseException as error:  # noqa: BLE001 - reported by the caller
            failure.append(f"chunk sender failed: {type(error).__name__}: {error}")
        finally:
            cpu_used.append(time.thread_time() - cpu_start)

    start = time.monotonic()
    threads = [threading.Thread(target=run, args=(c,), daemon=True) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - start
    cpu = sum(cpu_used)  # the sender threads' own CPU (user + system, incl. sendfile's copies)
    for c in clients:
        with contextlib.suppress(OSError):
            c.close()
    if failure:
        raise BenchError(failure[0])
    return ChunkRun(wall=wall, last_answer=max(finished), first_sent=start, latencies=latencies,
                    client_cpu=cpu)


# ---------------------------------------------------------------------------------------------
# baselines

def make_file(path: str, size: int) -> None:
    block = 8 * MIB
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(block, left)
            f.write(os.urandom(n))
            left -= n
        f.flush()
        os.fsync(f.fileno())


def disk_write(folder: str, size: int, chunk_size: int, writers: int, fsync: bool) -> float:
    """Seconds to store `size` bytes as chunk files the way LocalWriter does (write, fsync,
    link, unlink the temp name, fsync the folder) from `writers` threads: the storage's own
    ceiling for the chunk phase. The files are removed afterwards."""
    target = os.path.join(folder, "disk-baseline")
    os.makedirs(target, exist_ok=True)
    data = os.urandom(min(chunk_size, size))
    count = max(1, -(-size // chunk_size))
    indices = iter(range(count))
    lock = threading.Lock()

    def run():
        while True:
            with lock:
                index = next(indices, None)
            if index is None:
                return
            tmp = os.path.join(target, f".tmp-{index}")
            with open(tmp, "xb") as f:
                f.write(data[:min(chunk_size, size - index * chunk_size)])
                f.flush()
                if fsync:
                    os.fsync(f.fileno())
            os.link(tmp, os.path.join(target, f"{index:08d}"))
            os.unlink(tmp)
            if fsync:
                fd = os.open(target, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)

    os.sync()
    start = time.perf_counter()
    threads = [threading.Thread(target=run) for _ in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    shutil.rmtree(target, ignore_errors=True)
    return elapsed


def sha256_file(path: str) -> tuple[str, float]:
    buffer = bytearray(HASH_BLOCK)
    view = memoryview(buffer)
    digest = hashlib.sha256()
    start = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while True:
            count = f.readinto(view)
            if not count:
                break
            digest.update(view[:count])
    return digest.hexdigest(), time.perf_counter() - start


@contextlib.contextmanager
def discard_receiver(folder: str):
    child = start_child("discard-receiver", [PYTHON, "-u", RECEIVER], dict(os.environ), folder)
    try:
        deadline = time.monotonic() + 10
        port = None
        while port is None:
            with open(child.log_path) as f:
                first = f.readline().strip()
            if first.isdigit():
                port = int(first)
            elif child.proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"the discarding receiver did not start:\n{child.tail()}")
            else:
                time.sleep(0.02)
        yield port, child
    finally:
        child.stop()


def curl_upload(path: str, port: int) -> float:
    start = time.perf_counter()
    done = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-T", path,
                           f"http://127.0.0.1:{port}/"], capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0 or done.stdout.strip() != "200":
        raise BenchError(f"curl failed ({done.returncode}, {done.stdout!r}): {done.stderr}")
    return elapsed


# ---------------------------------------------------------------------------------------------
# one upload

@dataclass
class UploadResult:
    mode: str
    size: int
    total: float
    create: float
    chunks: ChunkRun
    finalize: float
    complete_calls: int
    rss_before: int
    rss_after: int
    rss_peak: int
    pss_before: int
    pss_peak: int
    cpu_web: float
    cpu_worker: float
    machine_busy: float = 0.0
    machine_iowait: float = 0.0
    machine_total: float = 0.0
    sampler_cpu: float = 0.0
    web_split: list = field(default_factory=list)
    web_faults: int = 0
    sys_web: float = 0.0             # of cpu_web, in the kernel (copies, page cache, fsync, sockets)
    adjacent_ceiling: float = 0.0    # curl -T right before and after this upload, the better


@dataclass
class UploadFlow:
    t0: float                    # monotonic: create sent
    t_created: float             # create answered
    chunks: ChunkRun
    complete_calls: int
    done: dict                   # complete's 200 body
    t_done: float                # complete answered 200


def upload_flow(port: int, token: str, path: str, size: int, digest: str, chunk_size: int, connections: int,
                multipart: bool, client_mode: str = "sendfile") -> UploadFlow:
    """One upload over HTTP: create → every chunk (over `connections` connections) → complete
    (called again while it answers 202). Raises BenchError on any other answer."""
    mode = "multipart" if multipart else "raw"
    t0 = time.monotonic()
    status, created, raw = json_request(port, "POST", "/api/files/upload/create", token, {
        "fileName": f"bench-{mode}.bin", "fileSize": size, "contentType": "application/octet-stream",
        "hash": digest, "chunkSize": chunk_size})
    t_created = time.monotonic()
    if status != 200:
        raise BenchError(f"create: HTTP {status}: {raw.decode(errors='replace')}")
    if created.get("fileExists"):
        raise BenchError("create answered fileExists: the account already has this file")
    task_id, chunk_size = created["taskId"], created["chunkSize"]
    headers = {"Authorization": f"Bearer {token}"}
    chunks = send_chunks(port, path, size, chunk_size, connections,
                         lambda i: f"/api/files/upload/chunk/{task_id}/{i}", headers, multipart, client_mode)
    calls = 0
    while True:
        calls += 1
        status, done, raw = json_request(port, "POST", f"/api/files/upload/complete/{task_id}", token)
        if status == 200:
            break
        if status != 202 or calls > 100:
            raise BenchError(f"complete: HTTP {status}: {raw.decode(errors='replace')}")
    return UploadFlow(t0=t0, t_created=t_created, chunks=chunks, complete_calls=calls, done=done,
                      t_done=time.monotonic())


def upload(service: Service, token: str, path: str, size: int, digest: str, args, multipart: bool,
           chunk_size: int | None = None) -> UploadResult:
    mode = "multipart" if multipart else "raw"
    port = service.port
    roots = service.web_pids + service.worker_pids
    service.worker_idle()
    os.sync()  # start from no dirty pages: earlier writes' writeback must not land in this run
    rss_before = tree_rss(roots)
    cpu_web0, cpu_worker0 = tree_cpu(service.web_pids), tree_cpu(service.worker_pids)
    sys_web0 = tree_cpu(service.web_pids, kernel_only=True)
    machine0 = machine_cpu()
    web_workers = service.web_worker_pids()
    split0 = [tree_cpu([pid]) for pid in web_workers]
    faults0 = tree_minflt(service.web_pids)
    sampler = PeakSampler(roots)
    with sampler:
        flow = upload_flow(port, token, path, size, digest, min(chunk_size or args.chunk_size, size),
                           args.connections, multipart, args.client)
        t0, t_created, chunks, calls, done = flow.t0, flow.t_created, flow.chunks, flow.complete_calls, flow.done
        t_done = flow.t_done
        machine1 = machine_cpu()
        split = [tree_cpu([pid]) - before for pid, before in zip(web_workers, split0)]
        faults = tree_minflt(service.web_pids) - faults0
    if done.get("hash") != digest or done.get("size") != size:
        raise BenchError(f"complete answered a different file: hash {done.get('hash')} size "
                         f"{done.get('size')}, expected {digest} {size}")
    service.worker_idle()
    rss_after = tree_rss(roots)
    cpu_web = tree_cpu(service.web_pids) - cpu_web0
    sys_web = tree_cpu(service.web_pids, kernel_only=True) - sys_web0
    cpu_worker = tree_cpu(service.worker_pids) - cpu_worker0
    return UploadResult(mode=mode, size=size, total=t_done - t0, create=t_created - t0, chunks=chunks,
                        finalize=t_done - chunks.last_answer, complete_calls=calls, rss_before=rss_before,
                        rss_after=rss_after, rss_peak=sampler.peak_rss,
                        pss_before=sampler.pss_before, pss_peak=sampler.peak_pss, cpu_web=cpu_web, cpu_worker=cpu_worker,
                        machine_busy=machine1[0] - machine0[0], machine_iowait=machine1[1] - machine0[1],
                        machine_total=machine1[2] - machine0[2], sampler_cpu=sampler.cpu,
                        web_split=split, web_faults=faults, sys_web=sys_web)


# ---------------------------------------------------------------------------------------------
# report

def verdict(ok: bool) -> str:
    return "OK  " if ok else "MISS"


def report(results: list[UploadResult], ceiling: float, hash_rate: float, client_limits: dict, args) -> None:
    print()
    print(f"{'':34}" + "".join(f"{r.mode:>14}" for r in results) + "    target")
    size_gib = results[0].size / GIB

    def row(label, values, target=""):
        print(f"{label:34}" + "".join(f"{v:>14}" for v in values) + (f"    {target}" if target else ""))

    row("end to end MB/s (create→200)", [f"{r.size / r.total / MB:.1f}" for r in results])
    row("  ÷ HTTP ceiling", [f"{r.size / r.total / ceiling:.3f}" for r in results],
        f"raw ≥ {TARGET_RAW:.2f}, multipart ≥ {TARGET_MULTIPART:.2f}")
    row("  ÷ HTTP ceiling next to it", [f"{r.size / r.total / r.adjacent_ceiling:.3f}" for r in results],
        "(curl -T right before and after this upload: " + ", ".join(
            f"{r.adjacent_ceiling / MB:.0f}" for r in results) + " MB/s)")
    row("  ÷ hashlib SHA-256 rate", [f"{r.size / r.total / hash_rate:.3f}" for r in results])
    row("chunk phase MB/s", [f"{r.size / r.chunks.wall / MB:.1f}" for r in results])
    row("  ÷ HTTP ceiling", [f"{r.size / r.chunks.wall / ceiling:.3f}" for r in results])
    row("  ÷ hashlib SHA-256 rate", [f"{r.size / r.chunks.wall / hash_rate:.3f}" for r in results])
    row("  client alone → discard, MB/s",
        [f"{client_limits[r.mode] / MB:.1f}" for r in results])
    row("  client CPU s / % of one core",
        [f"{r.chunks.client_cpu:.2f}/{100 * r.chunks.client_cpu / r.chunks.wall:.0f}%" for r in results])
    lat = [sorted(r.chunks.latencies) for r in results]
    row("  chunk answer ms p50/p90/max",
        [f"{1000 * v[len(v) // 2][0]:.0f}/{1000 * v[int(len(v) * 0.9)][0]:.0f}/{1000 * v[-1][0]:.0f}" for v in lat])
    row("  slowest chunk: index @ sent (s)", [f"#{v[-1][1]} @{v[-1][2]:.2f}" for v in lat])
    row("create (ms)", [f"{1000 * r.create:.0f}" for r in results])
    row("last chunk → complete 200 (s)", [f"{r.finalize:.3f}" for r in results])
    row("  per GiB (s)", [f"{r.finalize / size_gib:.3f}" for r in results], f"≤ {TARGET_FINALIZE} s/GiB")
    row("  complete calls (202 → again)", [str(r.complete_calls) for r in results])
    row("server CPU s: gunicorn", [f"{r.cpu_web:.2f}" for r in results])
    row("  of which in the kernel", [f"{r.sys_web:.2f}" for r in results],
        "(socket reads, page cache writes, fsync)")
    row("  per gunicorn worker (s)", ["/".join(f"{c:.1f}" for c in r.web_split) for r in results],
        "(keep-alive connections stay on the worker that accepted them)")
    row("  gunicorn page faults / page moved", [f"{r.web_faults / (r.size / 4096):.2f}" for r in results],
        "(minor faults per 4 KiB of file: fresh buffers page in)")
    row("server CPU s: rq worker+horse", [f"{r.cpu_worker:.2f}" for r in results])
    row("machine busy / iowait (all cores)",
        [f"{100 * r.machine_busy / r.machine_total:.0f}%/{100 * r.machine_iowait / r.machine_total:.0f}%"
         for r in results])
    row("  CPU s used by other processes", [
        f"{max(0.0, r.machine_busy - r.cpu_web - r.cpu_worker - r.chunks.client_cpu - r.sampler_cpu):.2f}"
        for r in results], "(other sessions' tests etc.; ≈, includes redis/db)")
    row("server RSS before (MiB)", [f"{r.rss_before / MIB:.1f}" for r in results])
    row("server RSS after (MiB)", [f"{r.rss_after / MIB:.1f}" for r in results])
    row("server RSS growth (MiB)", [f"{(r.rss_after - r.rss_before) / MIB:+.1f}" for r in results],
        f"< {TARGET_RSS // MIB} MiB")
    row("  peak RSS growth, sampled (MiB)", [f"{(r.rss_peak - r.rss_before) / MIB:+.1f}" for r in results],
        "(info: a forked work horse's shared pages count again)")
    row("  peak PSS growth, sampled (MiB)", [f"{(r.pss_peak - r.pss_before) / MIB:+.1f}" for r in results],
        f"< {TARGET_RSS // MIB} MiB (peak, incl. the work horse)")
    print()
    for r in results:
        rate = r.size / r.total
        target = TARGET_RAW if r.mode == "raw" else TARGET_MULTIPART
        near = rate / r.adjacent_ceiling
        checks = [
            (f"throughput {near:.3f} × the ceiling next to it ≥ {target:.2f} ({rate / ceiling:.3f} × the "
             "baseline's)", near >= target),
            (f"finalize {r.finalize / size_gib:.3f} s/GiB ≤ {TARGET_FINALIZE}", r.finalize / size_gib <= TARGET_FINALIZE),
            (f"RSS growth {(r.rss_after - r.rss_before) / MIB:+.1f} MiB < {TARGET_RSS // MIB}",
             r.rss_after - r.rss_before < TARGET_RSS),
            (f"peak PSS growth {(r.pss_peak - r.pss_before) / MIB:+.1f} MiB < {TARGET_RSS // MIB}",
             r.pss_peak - r.pss_before < TARGET_RSS),
        ]
        print(f"{r.mode:>9}: " + "; ".join(f"{verdict(ok)} {text}" for text, ok in checks))


# ---------------------------------------------------------------------------------------------

def run(args, stack: contextlib.ExitStack) -> int:
    folder = tempfile.mkdtemp(prefix="drive-bench-", dir=args.tmpdir)
    stack.callback(shutil.rmtree, folder, ignore_errors=True)
    path = os.path.join(folder, "payload.bin")
    size = args.size
    print(f"load average at start: {load_average()}")
    print(f"Drive upload throughput — {human(size)} file, {human(args.chunk_size)} chunks, "
          f"{args.connections} client connection(s), client={args.client}, "
          f"{os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    log(f"writing {human(size)} of random bytes to {path}")
    make_file(path, size)

    # -- baselines ------------------------------------------------------------------------
    log("SHA-256 and HTTP baselines")
    hashes = [sha256_file(path) for _ in range(args.repeat_baselines)]
    digest = hashes[0][0]
    hash_time = min(t for _, t in hashes)
    hash_rate = size / hash_time
    client_limits = {}
    # the receiver stays up: each upload's ceiling is also measured right before and after it
    rport, receiver = stack.enter_context(discard_receiver(folder))
    rcpu0 = tree_cpu([receiver.proc.pid])
    curl_times = [curl_upload(path, rport) for _ in range(args.repeat_baselines)]
    rcpu = tree_cpu([receiver.proc.pid]) - rcpu0
    ceiling = size / min(curl_times)
    for mode, multipart in (("raw", False), ("multipart", True)):
        timed = send_chunks(rport, path, size, args.chunk_size, args.connections, lambda i: f"/sink/{i}",
                            {}, multipart, args.client)
        client_limits[mode] = size / timed.wall
    fsync = not args.no_fsync
    log("disk baseline")
    disk_times = [disk_write(folder, size, args.chunk_size, args.connections, fsync)
                  for _ in range(args.repeat_baselines)]
    print()
    print("Baselines (best of %d):" % args.repeat_baselines)
    print(f"  HTTP ceiling   {ceiling / MB:8.1f} MB/s  curl -T FILE → bench/discard_receiver.py (raw socket, "
          f"recv_into a preallocated 4 MiB buffer, own process); runs: "
          + ", ".join(f"{size / t / MB:.0f}" for t in curl_times)
          + f" MB/s; receiver CPU {rcpu:.2f} s")
    print(f"  SHA-256        {hash_rate / MB:8.1f} MB/s  hashlib, readinto an 8 MiB buffer + memoryview, one "
          f"core (file in page cache); runs: " + ", ".join(f"{size / t / MB:.0f}" for _, t in hashes) + " MB/s")
    print(f"  disk           {size / min(disk_times) / MB:8.1f} MB/s  {human(args.chunk_size)} chunk files written "
          f"{'with fsync (file + folder) ' if fsync else 'without fsync '}from {args.connections} threads, as "
          "LocalWriter does, into the storage's file system (info: not a target's reference); runs: "
          + ", ".join(f"{size / t / MB:.0f}" for t in disk_times) + " MB/s")
    print(f"  bench client   {client_limits['raw'] / MB:8.1f} MB/s raw, {client_limits['multipart'] / MB:.1f} MB/s "
          f"multipart: this script's chunked client ({args.connections} conn, {args.client}) → the same receiver")

    # -- the service --------------------------------------------------------------------------
    service = Service(stack, folder, web_workers=args.web_workers, threads=args.threads,
                      fsync=not args.no_fsync, settings={"UPLOAD_HASH_AHEAD": "0" if args.no_hash_ahead else "1"})
    log("preparing database, redis and migrations")
    service.prepare()
    log("starting gunicorn and the rq worker")
    service.start()
    print()
    print(f"Service: gunicorn {args.web_workers} workers × {args.threads} threads ({WORKER_CLASS}) on 127.0.0.1:"
          f"{service.port}, 1 `flask worker`; {service.database_label}; Redis {service.redis_label}; "
          f"STORAGE_FSYNC={'0' if args.no_fsync else 'default (on)'}; "
          f"UPLOAD_HASH_AHEAD={'0' if args.no_hash_ahead else '1'}; storage {service.storage}")

    profilers = []
    if args.py_spy:
        targets = [("web", pid) for pid in service.web_worker_pids()] + [("worker", service.worker.proc.pid)]
        for name, pid in targets:
            out = os.path.join(args.profile_dir, f"{name}-{pid}.txt")
            cmd = [args.py_spy, "record", "--pid", str(pid), "--format", "raw", "--rate", "200",
                   "--output", out, "--nonblocking"]
            if name == "worker":
                cmd.append("--subprocesses")
            cmd += args.py_spy_args.split()
            child = start_child(f"py-spy-{name}-{pid}", cmd, dict(os.environ), folder)
            profilers.append((child, out))
        time.sleep(1.0)

    results = []
    for mode, multipart in (("raw", False), ("multipart", True)):
        if args.only and mode != args.only:
            continue
        account = uuid.uuid4()
        log(f"token for account {account}")
        token = service.token(account)
        log(f"warm-up upload ({mode})")
        # warm-up: a small upload in 1 MiB chunks through the same mode, so lazy imports, the
        # threads' first database connections and the client connections are not measured
        warm = os.path.join(folder, f"warm-{mode}.bin")
        warm_size = 16 * MIB + 17
        make_file(warm, warm_size)
        warm_digest, _ = sha256_file(warm)
        try:
            upload(service, token, warm, warm_size, warm_digest, args, multipart, chunk_size=MIB)
            os.unlink(warm)
            log(f"uploading {human(size)} ({mode}), between two curl runs")
            before = curl_upload(path, rport)
            result = upload(service, token, path, size, digest, args, multipart)
            result.adjacent_ceiling = size / min(before, curl_upload(path, rport))
            results.append(result)
        except (BenchError, OSError) as error:
            raise BenchError(f"{mode} upload failed: {error}\n{service.failure_context()}") from None
    for child, out in profilers:
        if child.proc.poll() is None:
            child.proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            child.proc.wait(30)
        except subprocess.TimeoutExpired:
            child.stop()
        if not os.path.exists(out):
            print(f"py-spy wrote no {out}:\n{child.tail()}", file=sys.stderr)
    if profilers:
        print(f"\npy-spy profiles (raw collapsed stacks) in {args.profile_dir}")

    report(results, ceiling, hash_rate, client_limits, args)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=parse_size, default=GIB, help="file size (default 1GiB; e.g. 256MiB)")
    parser.add_argument("--chunk-size", type=parse_size, default=8 * MIB, help="chunk size (default 8MiB)")
    parser.add_argument("--connections", type=int, default=2, help="parallel chunk connections (default 2)")
    parser.add_argument("--client", choices=("sendfile", "read"), default="sendfile",
                        help="sendfile: os.sendfile from the file (default); read: http.client reads it")
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument("--threads", type=int, default=8, help="gunicorn threads per worker (default 8)")
    parser.add_argument("--only", choices=("raw", "multipart"), help="run one mode only")
    parser.add_argument("--no-fsync", action="store_true", help="STORAGE_FSYNC=0 for the service")
    parser.add_argument("--no-hash-ahead", action="store_true",
                        help="UPLOAD_HASH_AHEAD=0: finalize hashes the whole file instead of the web processes "
                             "hashing it as chunks arrive")
    parser.add_argument("--repeat-baselines", type=int, default=2, help="runs of each baseline (best counts)")
    parser.add_argument("--tmpdir", default=None, help="where the temp folder goes (default: $TMPDIR or /tmp)")
    parser.add_argument("--py-spy", metavar="PATH", help="py-spy binary: profile the gunicorn workers and the "
                        "rq worker during the uploads (numbers are then not representative)")
    parser.add_argument("--profile-dir", default=".", help="where py-spy writes its profiles")
    parser.add_argument("--py-spy-args", default="", help="more py-spy record arguments, e.g. '--gil' or '--idle'")
    args = parser.parse_args(argv)
    if args.chunk_size <= 0 or args.size <= 0 or args.connections <= 0:
        parser.error("sizes and --connections must be positive")
    if args.py_spy:
        args.profile_dir = os.path.abspath(args.profile_dir)
        os.makedirs(args.profile_dir, exist_ok=True)
    return run_main(run, args)


if __name__ == "__main__":
    sys.exit(main())
