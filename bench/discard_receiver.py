"""A minimal HTTP/1.1 sink for the benchmark's ceiling: accepts any request with a
Content-Length body, reads the body with `recv_into` into one preallocated 4 MiB buffer per
connection (no allocation, no copy in user space), discards it and answers 200 with an empty
body. Keep-alive and `Expect: 100-continue` (curl -T sends it) are handled; chunked bodies are
not (no client of the benchmark sends them).

Run as its own process: `python bench/discard_receiver.py` prints the port it listens on
(127.0.0.1, a free port) and serves until terminated.
"""
from __future__ import annotations

import socket
import sys
import threading

BUFFER = 4 * 1024 * 1024
HEAD_LIMIT = 64 * 1024
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nContent-Type: text/plain\r\n\r\n"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
BAD = b"HTTP/1.1 411 Length Required\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def _read_head(conn: socket.socket, pending: bytes) -> tuple[bytes, bytes] | None:
    """(head, bytes after it) or None when the peer closed."""
    data = bytearray(pending)
    while True:
        end = data.find(b"\r\n\r\n")
        if end >= 0:
            return bytes(data[:end]), bytes(data[end + 4:])
        if len(data) > HEAD_LIMIT:
            return None
        piece = conn.recv(65536)
        if not piece:
            return None
        data += piece


def _handle(conn: socket.socket) -> None:
    buffer = bytearray(BUFFER)
    view = memoryview(buffer)
    pending = b""
    with conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            got = _read_head(conn, pending)
            if got is None:
                return
            head, rest = got
            length = None
            expect = False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value.strip())
                elif name == b"expect" and value.strip().lower() == b"100-continue":
                    expect = True
            if length is None:
                if head.split(b" ", 1)[0] in (b"GET", b"HEAD", b"DELETE", b"OPTIONS"):
                    length = 0
                else:
                    conn.sendall(BAD)
                    return
            if expect:
                conn.sendall(CONTINUE)
            if len(rest) >= length:
                pending = rest[length:]
            else:
                pending = b""
                remaining = length - len(rest)
                while remaining:
                    count = conn.recv_into(view, min(BUFFER, remaining))
                    if not count:
                        return
                    remaining -= count
            conn.sendall(OK)


def main() -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(128)
    print(server.getsockname()[1], flush=True)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=_handle, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
