"""Reading a chunk from a request body without holding it in memory: a raw
`application/octet-stream` body (the fast path) or the seed's multipart field `chunk`,
parsed as it streams. Either way the bytes are handed on in pieces as they arrive.

Under gunicorn, a body of known length is read straight off the connection's socket
(`SocketBody`) into a reused buffer: gunicorn's own reader copies each byte
several times on its way through its buffers, which cost about half of a worker's CPU.
"""
from __future__ import annotations

import contextlib
import io
import re
import socket
import threading
from typing import BinaryIO, Iterator

from streaming_form_data import StreamingFormDataParser
from streaming_form_data.parser import ParseFailedException
from streaming_form_data.targets import BaseTarget

from app.errors import BadRequest

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")

READ_SIZE = 1024 * 1024
IDLE_BUFFERS = 4  # kept for reuse per process; more are made while more requests need one
_idle: list[memoryview] = []
_idle_lock = threading.Lock()


@contextlib.contextmanager
def borrowed_buffer() -> Iterator[memoryview]:
    """A READ_SIZE buffer for the time of a `with`: reused from request to request (a fresh
    one would be paged in again each time), and only as many kept as IDLE_BUFFERS, so
    memory follows the requests in flight, not the threads that once served one."""
    with _idle_lock:
        view = _idle.pop() if _idle else None
    if view is None:
        view = memoryview(bytearray(READ_SIZE))
    try:
        yield view
    finally:
        with _idle_lock:
            if len(_idle) < IDLE_BUFFERS:
                _idle.append(view)


class SocketBody:
    """The body of a gunicorn request of known length, read from the socket itself.

    Bytes gunicorn already read past the headers come first (taken from its buffer as they
    are used), then `recv_into` the caller's buffer. gunicorn's own reader is kept in step
    (its remaining length), so after the response it drains whatever is left as it always
    does and keeps the connection alive; a body that breaks off marks gunicorn's body
    failed, so the connection is closed instead of the rest being read as the next request.
    """

    def __init__(self, body, sock: socket.socket):
        self.body = body
        self.reader = body.reader
        self.unreader = body.reader.unreader
        self.sock = sock

    @classmethod
    def of(cls, environ) -> "SocketBody | None":
        """A SocketBody for this request, or None when it is not a plain HTTP/1 gunicorn
        request with a Content-Length body that nobody has read from yet."""
        sock = environ.get("gunicorn.socket")
        if sock is None:
            return None
        try:
            from gunicorn.http.body import Body, LengthReader  # noqa: PLC0415 - only under gunicorn
            from gunicorn.http.unreader import SocketUnreader  # noqa: PLC0415
        except ImportError:
            return None
        body = environ.get("wsgi.input")
        reader = getattr(body, "reader", None)
        unreader = getattr(reader, "unreader", None)
        if (type(body) is not Body or type(reader) is not LengthReader or type(unreader) is not SocketUnreader
                or unreader.sock is not sock or not isinstance(getattr(unreader, "buf", None), io.BytesIO)
                or not isinstance(getattr(body, "buf", None), io.BytesIO) or body.buf.tell()):
            return None
        return cls(body, sock)

    @property
    def remaining(self) -> int:
        return self.reader.length

    def readinto(self, view: memoryview) -> int:
        """Up to len(view) bytes of the body into `view`; 0 at its end (or when the client
        went away before it: the connection is then closed by gunicorn)."""
        want = min(len(view), self.reader.length)
        if want <= 0:
            return 0
        held = self.unreader.buf.getvalue()
        if held:  # read past the headers (or a pipelined request's start, beyond our length)
            count = min(want, len(held))
            view[:count] = held[:count]
            self.unreader.buf = io.BytesIO()
            self.unreader.buf.write(held[count:])
        else:
            try:
                count = self.sock.recv_into(view, want)
            except OSError as error:  # reset, timed out: the rest of the body is lost
                self.body.failed = True
                raise BadRequest("The request body could not be read to its end", code="INCOMPLETE_BODY",
                                 details={"reason": type(error).__name__}) from None
            if not count:
                self.body.failed = True
                return 0
        self.reader.length -= count
        return count

    def fill(self, view: memoryview) -> int:
        """Read until `view` is full or the body ends: fewer, larger pieces to hash and write."""
        filled = 0
        while filled < len(view):
            count = self.readinto(view[filled:])
            if not count:
                break
            filled += count
        return filled

    def read(self, size: int) -> bytes:
        """Up to `size` bytes (at most READ_SIZE), for readers that need `bytes`."""
        with borrowed_buffer() as buffer:
            view = buffer[:size]
            return bytes(view[:self.fill(view)])


class _Collect(BaseTarget):
    """Receives the `chunk` part; the pieces are drained by the reading loop."""

    def __init__(self):
        super().__init__()
        self.pieces: list[bytes] = []
        self.seen = False
        self.finished = False

    def on_start(self):
        self.seen = True

    def on_data_received(self, chunk: bytes):
        self.pieces.append(chunk)

    def on_finish(self):
        self.finished = True


class ChunkBody:
    def __init__(self, stream: BinaryIO, content_type: str, content_length: int | None, checksum: str | None,
                 socket_body: SocketBody | None = None):
        self.stream = socket_body or stream
        self.socket_body = socket_body
        self.content_type = content_type or ""  # as sent: a multipart boundary is case-sensitive
        media_type = self.content_type.split(";", 1)[0].strip().lower()
        self.content_length = content_length
        self.checksum = checksum.strip().lower() if checksum else None
        self.multipart = media_type == "multipart/form-data"
        self.supported = self.multipart or media_type in ("", "application/octet-stream")

    @classmethod
    def from_request(cls, request) -> "ChunkBody":
        socket_body = SocketBody.of(request.environ) if request.content_length is not None else None
        return cls(request.stream, request.content_type, request.content_length,
                   request.headers.get("X-Chunk-SHA256"), socket_body)

    def validate(self) -> None:
        """Refuse a body we cannot read before anything is opened for it."""
        if not self.supported:
            raise BadRequest("Send the chunk as application/octet-stream or as the multipart field 'chunk'",
                             code="UNSUPPORTED_CHUNK_ENCODING", status=415)
        if self.checksum is not None and not _SHA256_HEX.fullmatch(self.checksum):
            raise BadRequest("X-Chunk-SHA256 must be 64 hexadecimal digits", code="CHUNK_CHECKSUM_INVALID")

    @property
    def exact_length(self) -> int | None:
        """The chunk's length known before reading (raw bodies with Content-Length)."""
        return None if self.multipart else self.content_length

    def discard_rest(self, limit: int) -> None:
        """Read what is left of the body (up to `limit` bytes) so that an early answer does
        not cost the client its keep-alive connection: gunicorn closes a connection whose
        request body was left unread."""
        if self.content_length is not None and self.content_length > limit:
            return
        if self.socket_body is not None and self.socket_body.body.failed:
            return  # the connection is closing anyway
        remaining = limit
        try:
            while remaining > 0:
                data = self.stream.read(min(READ_SIZE, remaining))
                if not data:
                    return
                remaining -= len(data)
        except Exception:  # noqa: BLE001 - a client gone or a broken body: nothing to keep alive
            return

    def pieces(self) -> Iterator[bytes | memoryview]:
        """The chunk's bytes in order. A piece may be a view of a buffer that the next piece
        overwrites: use it (hash it, write it) before asking for the next."""
        if self.multipart:
            yield from self._multipart()
            return
        self.validate()
        if self.socket_body is not None:
            with borrowed_buffer() as view:
                while True:
                    count = self.socket_body.fill(view)
                    if not count:
                        return
                    yield view[:count]
        while True:
            data = self.stream.read(READ_SIZE)
            if not data:
                return
            yield data

    def _multipart(self) -> Iterator[bytes]:
        target = _Collect()
        try:
            parser = StreamingFormDataParser(headers={"Content-Type": self.content_type})
        except ParseFailedException as error:
            raise BadRequest("The multipart body has no boundary", code="INVALID_MULTIPART") from error
        parser.register("chunk", target)
        while True:
            data = self.stream.read(READ_SIZE)
            if not data:
                break
            try:
                parser.data_received(data)
            except ParseFailedException as error:
                raise BadRequest("The multipart body could not be parsed", code="INVALID_MULTIPART") from error
            if target.pieces:
                pieces, target.pieces = target.pieces, []
                yield from pieces
        if not target.seen:
            raise BadRequest("The multipart body has no field 'chunk'", code="CHUNK_MISSING")
        if not target.finished:
            raise BadRequest("The multipart body ended early", code="INCOMPLETE_BODY")
