"""Live event latency of Drive: from the publishing call to receipt at a WebSocket client,
with 1,000 authenticated sockets held by ONE gunicorn process.

    .venv/bin/python bench/event_latency.py [--sockets 1000] [--events 1000] [--rate 200] [--fanout 50]
                                            [--with-uploads]

One run:
1. raises this process's soft RLIMIT_NOFILE (gunicorn inherits it) and prints the limits;
2. starts the service for real in a temp instance (bench/service.py: fresh SQLite database or
   PostgreSQL schema, claimed or embedded Redis, migrations), with ONE gunicorn gthread worker
   sized for the sockets (a WebSocket holds a thread: --threads defaults to sockets + 50,
   --worker-connections to threads + 100) and one `flask worker`;
3. opens --sockets WebSockets to /api/ws (`Authorization: Bearer`), spread round-robin over
   --accounts accounts (default one socket each), plus --fanout sockets of one more account,
   and waits for every `auth.ok`; tokens are issued in this process with app.auth.issue_token
   by an app made with the service's settings;
4. from then on ONE client thread reads every socket (selectors/epoll on the raw sockets, its
   own frame parser, pongs to the server's pings): no thread per socket on the client side;
5. a publisher process (spawned, so that it shares no GIL with the reader) calls
   app.events.publish_event on the service's Redis at a steady --rate, with
   time.perf_counter_ns() taken right before the call in the event's data (CLOCK_MONOTONIC is
   one clock for every process on Linux); the reader takes the clock right after recv() and
   records receipt - publish:
   - check round: one event to every account (every socket must get it; not timed);
   - case 1:1: --events events, each to the next account round-robin;
   - case fan-out: --fanout-events events to the fan-out account, each received by all its
     --fanout sockets;
   - idle hold (--hold s, longer than the server's ping interval: every socket is pinged and
     answers) while the gunicorn worker's CPU is measured;
   - final check round: every socket must still be open and get its event;
6. prints the sockets held (client side, and the server's ESTABLISHED connections and open
   descriptors), the gunicorn worker's RSS and thread count (/proc/<pid>/status) before and
   with the sockets, p50/p90/p99/max latency per case, every missing or out-of-order event,
   the CPU used, and the verdict against the target (p99 < 10 ms);
7. stops and removes everything it started, also on Ctrl-C or an error.

--with-uploads runs raw uploads (bench/upload_throughput.py's client: create → chunks with
os.sendfile → complete, then DELETE; --upload-size each) in a loop in another process during
both cases, and reports how many went through meanwhile. With --uploads-elsewhere they go to a
second gunicorn process of the same instance instead (same machine load, not the same GIL as the
sockets).

--py-spy PATH records the gunicorn worker during the cases (raw collapsed stacks into
--profile-dir; --py-spy-args e.g. "--idle" or "--gil"); latencies are then not representative.

Not a test: pytest never collects it (no test_ names, and bench/ is outside testpaths).
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import json
import math
import multiprocessing
import os
import queue
import selectors
import shutil
import signal
import socket
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

import websocket  # noqa: E402 - websocket-client

from bench.service import (  # noqa: E402 - the machinery shared by the benchmarks
    MB,
    MIB,
    BenchError,
    Service,
    established_on_port,
    human,
    load_average,
    log,
    machine_cpu,
    parse_size,
    proc_context_switches,
    proc_fds,
    proc_nofile,
    proc_rss,
    proc_threads,
    raise_nofile,
    run_main,
    start_child,
    tree_cpu,
)

TARGET_P99_MS = 10.0
TARGET_SOCKETS = 1000
EVENT_TYPE = "bench.latency"


def percentile(sorted_values: list, q: float):
    """Nearest-rank percentile of an ascending list (q in 0..1)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q * len(sorted_values) - 1e-9))
    return sorted_values[min(len(sorted_values), rank) - 1]


def ms(ns) -> str:
    return "-" if ns is None else f"{ns / 1e6:.2f}"


# ---------------------------------------------------------------------------------------------
# the client: sockets, and the one thread that reads them all

@dataclass
class Case:
    """What one round of events should deliver, and what arrived."""

    name: str
    expected: dict                               # socket index -> events it must receive
    total_expected: int = 0
    total_received: int = 0
    received: collections.Counter = field(default_factory=collections.Counter)
    latencies: list = field(default_factory=list)   # ns, one per receipt
    events: list = field(default_factory=list)      # the event n of each receipt
    per_event_max: dict = field(default_factory=dict)  # event n -> latest receipt's latency (ns)
    per_event_min: dict = field(default_factory=dict)  # event n -> first receipt's latency (ns)
    unexpected: int = 0
    done: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self):
        self.total_expected = sum(self.expected.values())
        if self.total_expected == 0:
            self.done.set()


class ClientSocket:
    """One authenticated WebSocket, read without blocking by the Reader (frames parsed here)."""

    def __init__(self, index: int, account: str, ws: websocket.WebSocket):
        self.index = index
        self.account = account
        self.ws = ws
        self.sock: socket.socket = ws.sock
        self.buffer = bytearray()
        self.fragments: list = []
        self.last_id = 0
        self.out_of_order = 0
        self.pings = 0
        self.closed: str | None = None   # why the socket ended, if it did

    def feed(self, data: bytes, now: int, reader: "Reader") -> None:
        buf = self.buffer
        buf += data
        pos, end = 0, len(buf)
        while end - pos >= 2:
            first, second = buf[pos], buf[pos + 1]
            length, head = second & 0x7F, 2
            if length == 126:
                if end - pos < 4:
                    break
                length, head = int.from_bytes(buf[pos + 2:pos + 4], "big"), 4
            elif length == 127:
                if end - pos < 10:
                    break
                length, head = int.from_bytes(buf[pos + 2:pos + 10], "big"), 10
            if second & 0x80:
                self.closed = "protocol error: a masked frame from the server"
                return
            if end - pos < head + length:
                break
            payload = bytes(buf[pos + head:pos + head + length])
            pos += head + length
            opcode, fin = first & 0x0F, first & 0x80
            if opcode == 0x9:                      # ping: answer at once, or the server drops us
                self.pings += 1
                self._send_control(0xA, payload)
            elif opcode == 0x8:                    # close
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
                self.closed = f"closed by the server: {code} {payload[2:].decode(errors='replace')}"
                return
            elif opcode in (0x1, 0x2, 0x0):
                self.fragments.append(payload)
                if fin:
                    message, self.fragments = b"".join(self.fragments), []
                    reader.message(self, message, now)
        del buf[:pos]

    def _send_control(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        frame = bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked
        with contextlib.suppress(OSError):
            self.sock.send(frame)  # a few bytes into an empty send buffer: never partial

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class Reader:
    """The client's one reading thread: epoll over every socket; takes perf_counter_ns right
    after each recv() and attributes each event to its case."""

    def __init__(self):
        self.selector = selectors.DefaultSelector()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        self.selector.register(self.wake_r, selectors.EVENT_READ, None)
        self.pending: queue.SimpleQueue = queue.SimpleQueue()
        self.sockets: list[ClientSocket] = []
        self.cases: dict[str, Case] = {}
        self.stopping = False
        self.errors: list[str] = []
        self.cpu = 0.0
        self.thread = threading.Thread(target=self._run, name="bench-reader", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def add(self, client: ClientSocket) -> None:
        self.sockets.append(client)
        self.pending.put(client)
        os.write(self.wake_w, b"+")

    def stop(self) -> None:
        self.stopping = True
        with contextlib.suppress(OSError):
            os.write(self.wake_w, b"!")
        if self.thread.is_alive():
            self.thread.join(10)
        for client in self.sockets:
            client.close()
        self.selector.close()
        os.close(self.wake_r)
        os.close(self.wake_w)

    def thread_cpu(self) -> float:
        """CPU seconds the reading thread has used so far."""
        if self.thread.ident is None:
            return 0.0
        if not self.thread.is_alive():
            return self.cpu
        with contextlib.suppress(OSError):
            return time.clock_gettime(time.pthread_getcpuclockid(self.thread.ident))
        return self.cpu

    def _run(self) -> None:
        try:
            while not self.stopping:
                for key, _ in self.selector.select(1.0):
                    client = key.data
                    if client is None:
                        self._register_pending()
                        continue
                    try:
                        data = client.sock.recv(262144)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError as error:
                        data, client.closed = b"", f"{type(error).__name__}: {error}"
                    now = time.perf_counter_ns()
                    if not data:
                        client.closed = client.closed or "EOF from the server"
                    else:
                        client.feed(data, now, self)
                    if client.closed:
                        self.selector.unregister(client.sock)
        except Exception as error:  # noqa: BLE001 - reported by the main thread
            self.errors.append(f"reader failed: {type(error).__name__}: {error}")
        finally:
            self.cpu = time.thread_time()

    def _register_pending(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self.wake_r, 4096):
                pass
        while True:
            try:
                client = self.pending.get_nowait()
            except queue.Empty:
                return
            client.sock.setblocking(False)
            self.selector.register(client.sock, selectors.EVENT_READ, client)

    def message(self, client: ClientSocket, raw: bytes, now: int) -> None:
        packet = json.loads(raw)
        if packet.get("type") != EVENT_TYPE:
            return
        if packet["id"] <= client.last_id:
            client.out_of_order += 1
        client.last_id = max(client.last_id, packet["id"])
        data = packet["data"]
        case = self.cases.get(data["c"])
        if case is None or client.index not in case.expected:
            if case is not None:
                case.unexpected += 1
            return
        latency = now - data["t"]
        case.latencies.append(latency)
        case.events.append(data["n"])
        case.received[client.index] += 1
        n = data["n"]
        if latency > case.per_event_max.get(n, -1):
            case.per_event_max[n] = latency
        if n not in case.per_event_min:
            case.per_event_min[n] = latency  # receipts come in order: the first is the earliest
        case.total_received += 1
        if case.total_received >= case.total_expected:
            case.done.set()


def connect(port: int, index: int, account: str, token: str, timeout: float) -> tuple[ClientSocket, float]:
    """Open /api/ws with the token in the Authorization header and wait for auth.ok."""
    started = time.perf_counter()
    ws = websocket.create_connection(f"ws://127.0.0.1:{port}/api/ws", timeout=timeout,
                                     header=[f"Authorization: Bearer {token}"], skip_utf8_validation=True,
                                     enable_multithread=False)
    try:
        first = json.loads(ws.recv())
        if first.get("type") != "auth.ok" or first.get("data", {}).get("accountId") != account:
            raise BenchError(f"socket {index}: expected auth.ok for {account}, got {first}")
    except BaseException:
        with contextlib.suppress(Exception):
            ws.sock.close()
        raise
    return ClientSocket(index, account, ws), time.perf_counter() - started


# ---------------------------------------------------------------------------------------------
# the publisher and the uploads: other processes (spawned: no GIL shared with the reader)

def publisher_main(conn, redis_url: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the benchmark stops us
    from redis import Redis  # noqa: PLC0415

    from app.events import publish_event  # noqa: PLC0415

    redis = Redis.from_url(redis_url, socket_timeout=30)
    publish_event(str(uuid.uuid4()), "bench.warm", {}, redis=redis)  # loads the script
    conn.send(("ready",))
    while True:
        command = conn.recv()
        if command[0] == "stop":
            return
        _, name, accounts, count, rate = command
        durations, failures, lag = [], 0, 0.0
        start = time.perf_counter() + 0.02
        for n in range(count):
            due = start + n / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            lag = max(lag, time.perf_counter() - due)
            account = accounts[n % len(accounts)]
            sent = time.perf_counter_ns()
            if publish_event(account, EVENT_TYPE, {"c": name, "n": n, "t": sent}, redis=redis) is None:
                failures += 1
            durations.append(time.perf_counter_ns() - sent)
        conn.send(("done", durations, failures, lag, time.perf_counter() - start))


def uploads_main(conn, port: int, tokens: list, path: str, size: int, digest: str, chunk_size: int,
                 connections: int) -> None:
    """Upload the file again and again (raw chunks), each time as another account, deleting
    it afterwards, until told to stop; then report (size, seconds, chunk-phase seconds) each."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from bench.service import json_request  # noqa: PLC0415
    from bench.upload_throughput import upload_flow  # noqa: PLC0415

    done, error = [], None
    try:
        conn.send(("started",))
        for index in range(10 ** 9):
            if conn.poll():
                break
            token = tokens[index % len(tokens)]
            flow = upload_flow(port, token, path, size, digest, chunk_size, connections, multipart=False)
            if flow.done.get("hash") != digest:
                raise BenchError(f"upload {index} completed with hash {flow.done.get('hash')}")
            done.append((size, flow.t_done - flow.t0, flow.chunks.wall))
            status, _, raw = json_request(port, "DELETE", f"/api/files/{flow.done['id']}", token)
            if status != 204:
                raise BenchError(f"DELETE after upload {index}: HTTP {status}: {raw[:300]!r}")
    except Exception as failure:  # noqa: BLE001 - reported by the benchmark
        error = f"{type(failure).__name__}: {failure}"
    conn.send(("done", done, error))


class Helper:
    """A spawned helper process and its end of a pipe; stopped (by pid) at cleanup."""

    def __init__(self, stack: contextlib.ExitStack, target, *args):
        context = multiprocessing.get_context("spawn")
        self.conn, child_conn = context.Pipe()
        self.process = context.Process(target=target, args=(child_conn, *args), daemon=True)
        self.process.start()
        child_conn.close()
        stack.callback(self.stop)

    def receive(self, timeout: float):
        if not self.conn.poll(timeout):
            raise BenchError(f"{self.process.name} did not answer within {timeout:.0f} s "
                             f"(exit code {self.process.exitcode})")
        return self.conn.recv()

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(("stop",))
        self.process.join(10)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)
        self.conn.close()


# ---------------------------------------------------------------------------------------------
# a round of events

@dataclass
class Usage:
    wall: float = 0.0
    web_cpu: float = 0.0
    switches: tuple = (0, 0)      # the gunicorn worker's (voluntary, involuntary) context switches
    cpu: dict = field(default_factory=dict)  # CPU seconds of each watched process (tree)
    machine_busy: float = 0.0
    machine_total: float = 0.0


@dataclass
class RoundResult:
    case: Case
    publish_ns: list            # sorted
    durations: list             # publish_event call of event n, ns
    failures: int
    lag: float
    wall: float
    usage: Usage
    missing: int
    sockets_missing: list


def run_round(publisher: Helper, reader: Reader, name: str, accounts: list, sockets_of: dict, count: int,
              rate: float, web_pid: int, wait: float, watch: dict) -> RoundResult:
    """Publish `count` events (to accounts round-robin) at `rate`/s and wait until every socket
    of each account got its events, or `wait` seconds after the last publish."""
    per_account = collections.Counter(accounts[n % len(accounts)] for n in range(count))
    expected = {client.index: per_account[account] for account in per_account
                for client in sockets_of[account]}
    case = Case(name, expected)
    reader.cases[name] = case
    switches0 = proc_context_switches(web_pid)
    watched0 = {label: tree_cpu(pids) for label, pids in watch.items()}
    reader_cpu0 = reader.thread_cpu()
    cpu0, machine0, t0 = tree_cpu([web_pid]), machine_cpu(), time.monotonic()
    publisher.conn.send(("run", name, accounts, count, rate))
    reply = publisher.receive(count / rate + 120)
    case.done.wait(wait)
    usage = Usage(time.monotonic() - t0, tree_cpu([web_pid]) - cpu0)
    switches1 = proc_context_switches(web_pid)
    usage.switches = (switches1[0] - switches0[0], switches1[1] - switches0[1])
    usage.cpu = {label: tree_cpu(pids) - watched0[label] for label, pids in watch.items()}
    usage.cpu["bench reader"] = reader.thread_cpu() - reader_cpu0
    machine1 = machine_cpu()
    usage.machine_busy, usage.machine_total = machine1[0] - machine0[0], machine1[2] - machine0[2]
    _, durations, failures, lag, wall = reply
    short = sorted(((want - case.received[index], index) for index, want in expected.items()
                    if case.received[index] < want), reverse=True)
    return RoundResult(case, sorted(durations), durations, failures, lag, wall, usage,
                       sum(n for n, _ in short), short)


# ---------------------------------------------------------------------------------------------
# report

def snapshot(service: Service, pid: int) -> dict:
    fds, sockets = proc_fds(pid)
    return {"rss": proc_rss(pid), "threads": proc_threads(pid), "fds": fds, "sockets": sockets,
            "established": established_on_port(service.port)}


def verdict(ok: bool) -> str:
    return "OK  " if ok else "MISS"


def latency_rows(label: str, result: RoundResult, per_event: bool = False) -> list[tuple]:
    lat = sorted(result.case.latencies)
    rows = [(label, len(result.publish_ns), len(lat), lat, result.missing)]
    after = sorted(latency - result.durations[n] for latency, n in zip(result.case.latencies, result.case.events))
    rows.append(("  from the return of publish_event", len(result.publish_ns), len(after), after, None))
    if per_event:
        first = sorted(result.case.per_event_min.values())
        last = sorted(result.case.per_event_max.values())
        spread = sorted(result.case.per_event_max[n] - result.case.per_event_min[n] for n in result.case.per_event_max)
        rows.append(("  first of its sockets, per event", len(first), len(first), first, None))
        rows.append(("  last of its sockets, per event", len(last), len(last), last, None))
        rows.append(("  last − first, per event", len(spread), len(spread), spread, None))
    return rows


def print_latency_table(rows) -> None:
    print(f"{'latency, publish call → receipt':44}{'events':>8}{'receipts':>10}{'p50':>8}{'p90':>8}"
          f"{'p99':>8}{'max':>8}{'missing':>9}   (ms)")
    for label, events, receipts, lat, missing in rows:
        print(f"{label:44}{events:>8}{receipts:>10}{ms(percentile(lat, .5)):>8}{ms(percentile(lat, .9)):>8}"
              f"{ms(percentile(lat, .99)):>8}{ms(lat[-1] if lat else None):>8}"
              f"{'' if missing is None else missing:>9}")


def describe_usage(label: str, result: RoundResult, cores: int, uploads: bool) -> str:
    u = result.usage
    busy = 100 * u.machine_busy / u.machine_total if u.machine_total else 0.0
    receipts = max(1, len(result.case.latencies))
    return (f"  {label}: {u.wall:.1f} s, {len(result.publish_ns) / result.wall:.0f} events/s published "
            f"(max lag behind schedule {1000 * result.lag:.1f} ms); gunicorn worker CPU {u.web_cpu:.2f} s "
            f"= {100 * u.web_cpu / u.wall:.0f}% of one core, {1e6 * u.web_cpu / receipts:.0f} µs and "
            f"{sum(u.switches) / receipts:.1f} context switches ({u.switches[1] / receipts:.1f} involuntary) "
            f"per receipt{' (uploads included)' if uploads else ''}\n"
            f"    CPU s: " + ", ".join(f"{k} {v:.2f}" for k, v in u.cpu.items())
            + f"; machine busy {busy:.0f}% of {cores} cores ({u.machine_busy:.1f} CPU s)")


# ---------------------------------------------------------------------------------------------

def run(args, stack: contextlib.ExitStack) -> int:
    total_sockets = args.sockets + args.fanout
    threads = args.threads or total_sockets + 50
    connections = args.worker_connections or threads + 100
    gunicorn_args = ["--worker-connections", str(connections), *args.gunicorn_args.split()]
    settings = dict(item.split("=", 1) for item in args.env)
    cores = os.cpu_count() or 1

    print(f"load average at start: {load_average()}")
    print(f"Drive event latency — {args.sockets} sockets over {args.accounts} account(s)"
          + (f" + fan-out: {args.fanout} sockets of one account" if args.fanout else "")
          + f"; {args.events} events (1:1) and {args.fanout_events if args.fanout else 0} (fan-out) at "
          f"{args.rate:g}/s; uploads in background: "
          f"{('yes, ' + human(args.upload_size) + ' raw' + (' to another gunicorn' if args.uploads_elsewhere else '')) if args.with_uploads else 'no'}; "
          f"{cores} CPUs, python {sys.version.split()[0]}")
    # every socket costs a descriptor here and two in gunicorn (the socket and simple_websocket's
    # epoll selector); gunicorn inherits this soft limit
    before, now, hard = raise_nofile(2 * total_sockets + 1024)
    print(f"RLIMIT_NOFILE: bench soft {before} → {now} (hard {hard}); needs ≈ {total_sockets} here "
          f"+ {2 * total_sockets} in gunicorn")

    folder = tempfile.mkdtemp(prefix="drive-bench-", dir=args.tmpdir)
    stack.callback(shutil.rmtree, folder, ignore_errors=True)
    service = Service(stack, folder, web_workers=1, threads=threads, gunicorn_args=gunicorn_args,
                      settings=settings)
    log("preparing database, redis and migrations")
    service.prepare()
    log("starting gunicorn and the rq worker")
    service.start()
    web_pid = service.web_worker_pid()
    soft, hard = proc_nofile(web_pid)
    config = {"LIVE_PING_INTERVAL_SECONDS": 25, "LIVE_IDLE_CHECK_SECONDS": 2}
    config.update({k: v for k, v in settings.items() if k in config})
    print()
    print(f"Service: gunicorn 1 worker (gthread) --threads {threads} --worker-connections {connections}"
          f"{' ' + args.gunicorn_args if args.gunicorn_args else ''} on 127.0.0.1:{service.port}, worker pid "
          f"{web_pid} (Max open files {soft}/{hard}); 1 `flask worker`; {service.database_label}; "
          f"Redis {service.redis_label}; LIVE_PING_INTERVAL_SECONDS={config['LIVE_PING_INTERVAL_SECONDS']}, "
          f"LIVE_IDLE_CHECK_SECONDS={config['LIVE_IDLE_CHECK_SECONDS']}"
          + "".join(f", {k}={v}" for k, v in settings.items() if k not in config))
    idle = snapshot(service, web_pid)

    # -- accounts, tokens, helpers ---------------------------------------------------------
    accounts = [str(uuid.uuid4()) for _ in range(args.accounts)]
    fan_account = str(uuid.uuid4())
    upload_accounts = [uuid.uuid4() for _ in range(args.upload_accounts)] if args.with_uploads else []
    log(f"issuing {len(accounts) + 1 + len(upload_accounts)} tokens in-process")
    tokens = service.tokens([uuid.UUID(a) for a in accounts] + [uuid.UUID(fan_account)] + upload_accounts)
    token_of = dict(zip(accounts + [fan_account], tokens))
    upload_tokens = tokens[len(accounts) + 1:]
    publisher = Helper(stack, publisher_main, service.env_settings["REDIS_URL"])
    if publisher.receive(60)[0] != "ready":
        raise BenchError("the publisher did not start")

    # -- sockets ---------------------------------------------------------------------------
    plan = [(i, accounts[i % len(accounts)]) for i in range(args.sockets)]
    plan += [(args.sockets + i, fan_account) for i in range(args.fanout)]
    reader = Reader()
    stack.callback(reader.stop)  # runs before the service stops: clients leave first
    reader.start()
    log(f"opening {len(plan)} WebSockets ({args.connect_parallel} connecting threads)")
    handshakes, failures = [], []
    t0 = time.monotonic()
    with ThreadPoolExecutor(args.connect_parallel) as pool:
        futures = [pool.submit(connect, service.port, i, account, token_of[account], args.connect_timeout)
                   for i, account in plan]
        for future in futures:
            try:
                client, took = future.result()
            except Exception as error:  # noqa: BLE001 - counted and reported
                failures.append(f"{type(error).__name__}: {error}")
                continue
            handshakes.append(took)
            reader.add(client)
    connect_wall = time.monotonic() - t0
    sockets_of: dict[str, list[ClientSocket]] = collections.defaultdict(list)
    for client in reader.sockets:
        sockets_of[client.account].append(client)
    time.sleep(0.5)
    held = snapshot(service, web_pid)
    handshakes.sort()
    print(f"Sockets: {len(reader.sockets)} of {len(plan)} authenticated (auth.ok received) in {connect_wall:.1f} s; "
          f"connect → auth.ok ms p50/p99/max {1000 * percentile(handshakes, .5):.1f}/"
          f"{1000 * percentile(handshakes, .99):.1f}/{1000 * handshakes[-1]:.1f}" if handshakes else
          f"Sockets: none of {len(plan)} connected")
    if failures:
        print(f"  {len(failures)} socket(s) FAILED to connect; first: {failures[0]}")
        print(f"--- gunicorn log (last lines):\n{service.web.tail(15)}")
    if not reader.sockets:
        raise BenchError("no socket connected")

    # -- rounds ----------------------------------------------------------------------------
    everyone = accounts + ([fan_account] if args.fanout else [])
    watch = {"rq worker": service.worker_pids, "publisher": [publisher.process.pid]}
    redis_pid = service.redis_pid()
    if redis_pid:
        watch["redis-server"] = [redis_pid]
    log("check round: one event to every account")
    first_check = run_round(publisher, reader, "check-1", everyone, sockets_of, len(everyone), args.check_rate,
                            web_pid, args.wait, watch)
    uploads = None
    if args.with_uploads:
        path = os.path.join(folder, "upload.bin")
        log(f"writing {human(args.upload_size)} for the background uploads")
        from bench.upload_throughput import make_file, sha256_file  # noqa: PLC0415

        make_file(path, args.upload_size)
        digest, _ = sha256_file(path)
        upload_port = service.port
        if args.uploads_elsewhere:
            log("starting a second gunicorn (1 worker × 8 threads) for the uploads")
            other, upload_port = service.start_extra_web("gunicorn-uploads", 1, 8)
            watch["uploads' gunicorn"] = [other.proc.pid]
        uploads = Helper(stack, uploads_main, upload_port, upload_tokens, path, args.upload_size, digest,
                         args.upload_chunk_size, args.upload_connections)
        if uploads.receive(60)[0] != "started":
            raise BenchError("the upload process did not start")
        watch["upload client"] = [uploads.process.pid]
        time.sleep(1.0)  # the first upload is in its chunk phase
    profilers = start_profiler(args, folder, web_pid)
    results = []
    log(f"case 1:1: {args.events} events at {args.rate:g}/s over {len(accounts)} accounts")
    results.append(("1:1", run_round(publisher, reader, "one-to-one", accounts, sockets_of, args.events, args.rate,
                                     web_pid, args.wait, watch)))
    if args.fanout:
        log(f"case fan-out: {args.fanout_events} events at {args.rate:g}/s to {args.fanout} sockets")
        results.append(("fan-out", run_round(publisher, reader, "fan-out", [fan_account], sockets_of,
                                             args.fanout_events, args.rate, web_pid, args.wait, watch)))
    stop_profiler(profilers)
    upload_report = None
    if uploads is not None:
        log("stopping the background uploads (after the one in flight)")
        uploads.conn.send(("stop",))
        _, done, error = uploads.receive(600)
        if error:
            raise BenchError(f"background uploads failed: {error}\n{service.failure_context()}")
        upload_report = done
    hold = None
    if args.hold > 0:
        log(f"holding the sockets idle for {args.hold:g} s (the server pings each every "
            f"{config['LIVE_PING_INTERVAL_SECONDS']} s; the reader answers)")
        cpu0, pings0, t_hold = tree_cpu([web_pid]), sum(c.pings for c in reader.sockets), time.monotonic()
        time.sleep(args.hold)
        hold = (time.monotonic() - t_hold, tree_cpu([web_pid]) - cpu0, sum(c.pings for c in reader.sockets) - pings0)
    log("final check round: every socket must still get an event")
    last_check = run_round(publisher, reader, "check-2", everyone, sockets_of, len(everyone), args.check_rate,
                           web_pid, args.wait, watch)
    end = snapshot(service, web_pid)
    if reader.errors:
        raise BenchError(reader.errors[0])

    report(args, service, reader, plan, idle, held, end, first_check, last_check, results, upload_report,
           hold, threads, connections, cores)
    return 0


def start_profiler(args, folder: str, pid: int):
    if not args.py_spy:
        return None
    out = os.path.join(args.profile_dir, f"web-{pid}.txt")
    cmd = [args.py_spy, "record", "--pid", str(pid), "--format", "raw", "--rate", "200", "--output", out,
           "--nonblocking", *args.py_spy_args.split()]
    child = start_child(f"py-spy-{pid}", cmd, dict(os.environ), folder)
    time.sleep(1.0)
    return child, out


def stop_profiler(profiler) -> None:
    if profiler is None:
        return
    child, out = profiler
    if child.proc.poll() is None:
        child.proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
    try:
        child.proc.wait(60)
    except subprocess.TimeoutExpired:
        child.stop()
    print(f"py-spy profile: {out}" if os.path.exists(out) else f"py-spy wrote no {out}:\n{child.tail()}")


def report(args, service, reader: Reader, plan, idle, held, end, first_check, last_check, results, uploads,
           hold, threads, connections, cores) -> None:
    clients = reader.sockets
    n = len(clients)
    print()
    print(f"{'gunicorn worker':44}{'no socket':>14}{'sockets held':>14}{'at the end':>14}")
    for label, key, fmt in (("  RSS (MiB)", "rss", lambda v: f"{v / MIB:.1f}"),
                            ("  threads (/proc/<pid>/status Threads)", "threads", str),
                            ("  open descriptors / of which sockets", None, None),
                            ("  ESTABLISHED connections on the port", "established", str)):
        if key is None:
            values = [f"{s['fds']}/{s['sockets']}" for s in (idle, held, end)]
        else:
            values = [fmt(s[key]) for s in (idle, held, end)]
        print(f"{label:44}" + "".join(f"{v:>14}" for v in values))
    if n:
        print(f"  per socket held: {(held['rss'] - idle['rss']) / n / 1024:.0f} KiB RSS, "
              f"{(held['threads'] - idle['threads']) / n:.2f} threads, {(held['fds'] - idle['fds']) / n:.2f} "
              f"descriptors")
    print()
    rows = []
    for label, result in results:
        if label == "1:1":
            rows += latency_rows(f"1:1 ({len(result.case.expected)} sockets, round-robin)", result)
        else:
            rows += latency_rows(f"fan-out ({len(result.case.expected)} sockets of one account)", result,
                                 per_event=True)
    print_latency_table(rows)
    for label, result in results:
        pub = result.publish_ns
        print(f"  publish_event call alone ({label}): ms p50/p99/max {ms(percentile(pub, .5))}/"
              f"{ms(percentile(pub, .99))}/{ms(pub[-1])}; {result.failures} failed")
    for label, result in results:
        print(describe_usage(label, result, cores, uploads is not None and not args.uploads_elsewhere))
    if hold is not None:
        wall, cpu, pings = hold
        print(f"  idle hold: {wall:.1f} s with {n} sockets and no event: gunicorn worker CPU {cpu:.2f} s = "
              f"{100 * cpu / wall:.1f}% of one core; {pings} server pings answered")
    print(f"  client: one reader thread for {n} sockets, {reader.thread_cpu():.2f} s CPU in all")
    if uploads is not None:
        count = len(uploads)
        size = sum(u[0] for u in uploads)
        seconds = sum(u[1] for u in uploads)
        chunk = sum(u[2] for u in uploads)
        print(f"  background uploads: {count} × {human(args.upload_size)} raw completed (and deleted) meanwhile; "
              f"end to end {size / seconds / MB if seconds else 0:.0f} MB/s, chunk phase "
              f"{size / chunk / MB if chunk else 0:.0f} MB/s")
    print()
    still_open = [c for c in clients if not c.closed]
    got_last = sum(1 for c in clients if last_check.case.received[c.index] >= 1)
    disorder = sum(c.out_of_order for c in clients)
    pings = sum(c.pings for c in clients)
    missing = {label: r.missing for label, r in [("first check", first_check)] + results + [("final check", last_check)]}
    print(f"Held: {len(still_open)}/{len(plan)} sockets open at the end ({len(plan) - n} never connected); "
          f"{got_last}/{n} got the final check event; server ESTABLISHED on :{service.port}: {end['established']}; "
          f"server pings answered: {pings}; out-of-order or repeated ids: {disorder}")
    print("Missing events: " + ", ".join(f"{k} {v}" for k, v in missing.items())
          + "".join(f"; unexpected receipts ({r.case.name}) {r.case.unexpected}"
                    for _, r in results if r.case.unexpected))
    for label, r in [("first check", first_check)] + results + [("final check", last_check)]:
        if r.sockets_missing:
            sample = ", ".join(f"#{i} ({clients_by_index(clients, i)}) missed {k}" for k, i in r.sockets_missing[:5])
            print(f"  {label}: {len(r.sockets_missing)} socket(s) short: {sample}")
    closed = [c for c in clients if c.closed]
    for c in closed[:5]:
        print(f"  socket #{c.index} ended: {c.closed}")
    print()
    checks = [(f"sockets held {len(still_open)} ≥ {TARGET_SOCKETS} by one gunicorn process "
               f"(--threads {threads} --worker-connections {connections})",
               len(still_open) >= TARGET_SOCKETS and got_last == len(plan)),
              ("no event missing", not any(missing.values()))]
    for label, r in results:
        p99 = percentile(sorted(r.case.latencies), .99)
        checks.append((f"{label} p99 {ms(p99)} ms < {TARGET_P99_MS:g} ms",
                       p99 is not None and p99 / 1e6 < TARGET_P99_MS))
    print(f"load average at end: {load_average()}")
    print("Verdict" + (" (with uploads)" if uploads is not None else "") + ": "
          + "; ".join(f"{verdict(ok)} {text}" for text, ok in checks))


def clients_by_index(clients, index: int) -> str:
    for c in clients:
        if c.index == index:
            return "open" if not c.closed else c.closed
    return "?"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sockets", type=int, default=1000, help="sockets of the 1:1 case (default 1000)")
    parser.add_argument("--accounts", type=int, help="accounts they are spread over (default: one per socket)")
    parser.add_argument("--fanout", type=int, default=50, help="more sockets, of one account (default 50; 0: none)")
    parser.add_argument("--events", type=int, default=1000, help="events of the 1:1 case (default 1000)")
    parser.add_argument("--fanout-events", type=int, help="events of the fan-out case (default: --events)")
    parser.add_argument("--rate", type=float, default=200.0, help="events per second (default 200)")
    parser.add_argument("--check-rate", type=float, default=1000.0, help="events/s of the check rounds")
    parser.add_argument("--hold", type=float, default=30.0, help="s to hold the sockets idle before the final "
                        "check (default 30: longer than the 25 s ping interval, so every socket pongs once)")
    parser.add_argument("--wait", type=float, default=10.0, help="s to wait for stragglers after a round")
    parser.add_argument("--threads", type=int, help="gunicorn threads (default: sockets + fan-out + 50)")
    parser.add_argument("--worker-connections", type=int, help="gunicorn --worker-connections (default threads+100)")
    parser.add_argument("--gunicorn-args", default="", help="more gunicorn arguments, e.g. '--backlog 4096'")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting for the service, e.g. LIVE_IDLE_CHECK_SECONDS=30 (repeatable)")
    parser.add_argument("--connect-parallel", type=int, default=8, help="threads opening the sockets (default 8)")
    parser.add_argument("--connect-timeout", type=float, default=60.0, help="s for one socket's auth.ok")
    parser.add_argument("--with-uploads", action="store_true", help="raw uploads in a loop during the cases")
    parser.add_argument("--upload-size", type=parse_size, default=256 * MIB, help="each upload (default 256MiB)")
    parser.add_argument("--upload-chunk-size", type=parse_size, default=8 * MIB, help="(default 8MiB)")
    parser.add_argument("--upload-connections", type=int, default=2, help="chunk connections (default 2)")
    parser.add_argument("--uploads-elsewhere", action="store_true",
                        help="send the uploads to a second gunicorn process of the same instance (same database, "
                        "Redis, rq worker), not to the one holding the sockets: same machine load, other GIL")
    parser.add_argument("--upload-accounts", type=int, default=200, help="accounts the uploads rotate over")
    parser.add_argument("--tmpdir", default=None, help="where the temp folder goes (default: $TMPDIR or /tmp)")
    parser.add_argument("--py-spy", metavar="PATH", help="py-spy binary: profile the gunicorn worker during the "
                        "cases (latencies are then not representative)")
    parser.add_argument("--profile-dir", default=".", help="where py-spy writes its profile")
    parser.add_argument("--py-spy-args", default="", help="more py-spy record arguments, e.g. '--idle' or '--gil'")
    args = parser.parse_args(argv)
    args.accounts = args.accounts or args.sockets
    args.fanout_events = args.fanout_events if args.fanout_events is not None else args.events
    if min(args.sockets, args.accounts, args.events, args.connect_parallel) <= 0 or args.rate <= 0 \
            or args.fanout < 0 or args.accounts > args.sockets:
        parser.error("--sockets, --accounts (≤ sockets), --events, --rate must be positive")
    if any("=" not in item for item in args.env):
        parser.error("--env takes KEY=VALUE")
    if args.uploads_elsewhere and not args.with_uploads:
        parser.error("--uploads-elsewhere goes with --with-uploads")
    if args.py_spy:
        args.profile_dir = os.path.abspath(args.profile_dir)
        os.makedirs(args.profile_dir, exist_ok=True)
    return run_main(run, args)


if __name__ == "__main__":
    sys.exit(main())
