"""Real clients of the live relay: a WebSocket client (websocket-client) and a server-sent-events
reader (requests with stream=True, the event stream parsed here), plus a way to tell which
gunicorn process serves a connection.

Every wait is a blocking read with a timeout: nothing here sleeps.
"""
from __future__ import annotations

import json
import os
import socket
import struct
import threading
from urllib.parse import urlencode, urlsplit

import requests
import websocket

TIMEOUT = 20  # seconds any single read may wait; tests finish far sooner when all is well

SEED_PROGRESS_KEYS = {"taskId", "fileName", "fileSize", "chunksUploaded", "chunksTotal", "progress", "status",
                      "lastActivity"}
SEED_COMPLETED_KEYS = {"taskId", "fileId", "fileName", "fileSize", "completedAt"}
SEED_FAILED_KEYS = {"taskId", "fileName", "fileSize", "failedAt", "errorMessage"}


def ws_url(base: str, path: str = "/ws", **query) -> str:
    url = base.replace("http://", "ws://", 1) + path
    query = {k: v for k, v in query.items() if v is not None}
    return f"{url}?{urlencode(query)}" if query else url


def port_of(base: str) -> int:
    return urlsplit(base).port


# WebSocket ------------------------------------------------------------------------------
def connect(base: str, token: str | None = None, how: str = "header", path: str = "/ws", since=None,
            timeout: float = TIMEOUT) -> websocket.WebSocket:
    """A WebSocket, authenticated `how`: "header" (Authorization: Bearer), "query" (?token=),
    "message" (a first {"type": "auth", "token": ...} message, as the seed's client does) or
    "none" (nothing sent). Returns as soon as the connection is open; see `expect_auth_ok`."""
    header = [f"Authorization: Bearer {token}"] if how == "header" else []
    url = ws_url(base, path, token=token if how == "query" else None, since=since)
    ws = websocket.create_connection(url, timeout=timeout, header=header, enable_multithread=True)
    if how == "message":
        ws.send(json.dumps({"type": "auth", "token": token}))
    return ws


def expect_auth_ok(ws, account_id) -> dict:
    """The first message of an accepted socket: auth.ok naming the account."""
    packet = next_packet(ws)
    assert packet == {"type": "auth.ok", "data": {"accountId": str(account_id)}}, packet
    return packet


def open_socket(base: str, token: str, account_id, **kwargs) -> websocket.WebSocket:
    """`connect` and wait for auth.ok: from then on every event of the account is delivered."""
    ws = connect(base, token, **kwargs)
    expect_auth_ok(ws, account_id)
    return ws


def next_packet(ws) -> dict:
    """The next text message, as JSON, answering pings meanwhile; fails on a close frame.

    Frames are read raw: websocket-client's own reading answers a close frame with one of its
    own, which fails when the server has already hung up, hiding the server's code and reason."""
    while True:
        frame = ws.recv_frame()
        if frame.opcode == websocket.ABNF.OPCODE_PING:
            ws.pong(frame.data)
        elif frame.opcode == websocket.ABNF.OPCODE_CLOSE:
            raise AssertionError(f"the server closed the socket: {decode_close(frame.data)}")
        elif frame.opcode != websocket.ABNF.OPCODE_PONG:
            assert frame.opcode == websocket.ABNF.OPCODE_TEXT and frame.fin, frame
            return json.loads(frame.data)


def packets_until(ws, last_id: int) -> list[dict]:
    """Packets up to and including the one whose id is `last_id`."""
    out = []
    while not out or out[-1].get("id") != last_id:
        out.append(next_packet(ws))
        assert out[-1]["id"] <= last_id, f"went past id {last_id}: {out[-3:]}"
    return out


def decode_close(data: bytes) -> tuple[int | None, str]:
    if len(data) < 2:
        return None, ""
    return struct.unpack("!H", data[:2])[0], data[2:].decode("utf-8")


def close_frame(ws) -> tuple[int | None, str]:
    """(code, reason) of the server's close frame; fails if a message came before it."""
    while True:
        frame = ws.recv_frame()
        if frame.opcode == websocket.ABNF.OPCODE_CLOSE:
            return decode_close(frame.data)
        assert frame.opcode in (websocket.ABNF.OPCODE_PING, websocket.ABNF.OPCODE_PONG), \
            f"a message before the close: {frame.data!r}"


def drop(ws, reset: bool = True) -> None:
    """Leave without a close frame: a TCP reset (reset=True) or a bare FIN."""
    sock = ws.sock
    if reset:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    else:
        sock.shutdown(socket.SHUT_RDWR)
    ws.shutdown()


# Server-sent events ---------------------------------------------------------------------
class EventStream:
    """GET /api/events read as a browser's EventSource would: blocks end with a blank line;
    `id:`, `data:`, `retry:` are fields, lines starting with `:` are comments."""

    def __init__(self, base: str, token: str | None = None, how: str = "header", path: str = "/api/events",
                 last_event_id=None, read_timeout: float = TIMEOUT):
        headers = {"Accept": "text/event-stream"}
        params = {}
        if how == "header" and token is not None:
            headers["Authorization"] = f"Bearer {token}"
        elif how == "query" and token is not None:
            params["token"] = token
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        self.response = requests.get(base + path, headers=headers, params=params, stream=True,
                                     timeout=(5, read_timeout))
        self._chunks = self.response.iter_content(chunk_size=None)
        self._buffer = b""
        self.comments: list[str] = []
        self.retry: int | None = None
        self.last_event_id: str | None = None

    def block(self) -> list[str]:
        """The lines of the next block (an event, or only comments/fields)."""
        while b"\n\n" not in self._buffer:
            try:
                self._buffer += next(self._chunks).replace(b"\r\n", b"\n")
            except StopIteration:
                raise AssertionError(f"the event stream ended; left: {self._buffer!r}") from None
        raw, _, self._buffer = self._buffer.partition(b"\n\n")
        return raw.decode("utf-8").split("\n")

    def next_block(self) -> dict:
        """The next block parsed: {"comments": [...], "id": ..., "data": ..., "retry": ...}."""
        parsed: dict = {"comments": [], "id": None, "data": None, "retry": None}
        data_lines = []
        for line in self.block():
            if line.startswith(":"):
                parsed["comments"].append(line[1:].strip())
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data":
                data_lines.append(value)
            elif name in ("id", "retry"):
                parsed[name] = value
        if data_lines:
            parsed["data"] = "\n".join(data_lines)
        return parsed

    def next_packet(self) -> dict:
        """The next event's packet; comments and retry fields on the way are recorded."""
        while True:
            block = self.next_block()
            self.comments += block["comments"]
            if block["retry"] is not None:
                self.retry = int(block["retry"])
            if block["data"] is None:
                continue
            packet = json.loads(block["data"])
            assert block["id"] == str(packet["id"]), block  # the id: line is the packet's id
            self.last_event_id = block["id"]
            return packet

    def wait_connected(self) -> "EventStream":
        """The stream's opening block: `retry:` and the `: connected` comment. The relay
        subscribes before answering, so every event published from now on is delivered."""
        assert self.response.status_code == 200, self.response.text
        block = self.next_block()
        assert "connected" in block["comments"], block
        self.retry = int(block["retry"]) if block["retry"] is not None else None
        return self

    def packets_until(self, last_id: int) -> list[dict]:
        out = []
        while not out or out[-1]["id"] != last_id:
            out.append(self.next_packet())
            assert out[-1]["id"] <= last_id, f"went past id {last_id}: {out[-3:]}"
        return out

    def close(self) -> None:
        self.response.close()


def raw_event_stream(base: str, token: str, path: str = "/api/events") -> socket.socket:
    """An SSE request on a bare socket, returned once the opening `: connected` block arrived
    (so the server's thread is serving it)."""
    port = port_of(base)
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    sock.sendall(f"GET {path}?token={token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                 "Accept: text/event-stream\r\n\r\n".encode())
    received = b""
    while b": connected" not in received:
        chunk = sock.recv(4096)
        assert chunk, f"closed before the stream opened: {received!r}"
        received += chunk
    assert received.startswith(b"HTTP/1.1 200"), received
    return sock


def reset(sock: socket.socket) -> None:
    """Close with a TCP reset, as a client whose process died or whose network vanished."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def stored_events(app, account_id, since: int = 0) -> list[dict]:
    """The account's events as Redis keeps them for replay (app.events.read_events)."""
    from app.events import read_events  # noqa: PLC0415

    with app.app_context():
        return read_events(account_id, since)


# Publishing from elsewhere --------------------------------------------------------------
class Burst:
    """`count` events published to an account from a thread of its own, as another process
    would, so that what a client does meanwhile (leave, reconnect) races with publishing."""

    def __init__(self, app, account_id, count: int, event_type: str = "test.burst"):
        self.ids: list[int | None] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(app, account_id, count, event_type), daemon=True)
        self.thread.start()

    def _run(self, app, account_id, count, event_type):
        from app.events import publish_event  # noqa: PLC0415

        try:
            with app.app_context():
                for n in range(count):
                    self.ids.append(publish_event(account_id, event_type, {"n": n}))
        except BaseException as error:  # noqa: BLE001 - reported by join()
            self.error = error

    def join(self) -> list[int]:
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive(), "the burst did not finish"
        assert self.error is None, self.error
        assert None not in self.ids, "Redis refused an event"
        return self.ids


# Which gunicorn process serves a connection ---------------------------------------------
def _server_pids(port: int) -> list[int]:
    """gunicorn processes (master and workers) bound to 127.0.0.1:`port`."""
    marker = f"127.0.0.1:{port}".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read()
        except OSError:
            continue
        if b"gunicorn" in cmdline and marker in cmdline:
            pids.append(int(entry))
    return pids


def serving_pid(server_port: int, client_sock: socket.socket) -> int:
    """The pid of the gunicorn worker that holds the server end of `client_sock`, found the
    way `ss -tp` finds it: the TCP socket's inode in /proc/net/tcp, then the process whose
    file descriptors include that inode."""
    client_port = client_sock.getsockname()[1]
    local, remote = f"0100007F:{server_port:04X}", f"0100007F:{client_port:04X}"
    inode = None
    with open("/proc/net/tcp") as fh:
        for line in fh.readlines()[1:]:
            fields = line.split()
            if fields[1] == local and fields[2] == remote:
                inode = fields[9]
    assert inode, f"no server socket for client port {client_port}"
    target = f"socket:[{inode}]"
    for pid in _server_pids(server_port):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    return pid
            except OSError:
                continue
    raise AssertionError(f"no gunicorn process holds {target}")
