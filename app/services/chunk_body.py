"""Reading a chunk from a request body without holding it in memory: a raw
`application/octet-stream` body (the fast path) or the seed's multipart field `chunk`,
parsed as it streams. Either way the bytes are handed on in pieces as they arrive."""
from __future__ import annotations

from typing import BinaryIO, Iterator

from streaming_form_data import StreamingFormDataParser
from streaming_form_data.parser import ParseFailedException
from streaming_form_data.targets import BaseTarget

from app.errors import BadRequest

READ_SIZE = 1024 * 1024


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
    def __init__(self, stream: BinaryIO, content_type: str, content_length: int | None, checksum: str | None):
        self.stream = stream
        self.content_type = content_type or ""  # as sent: a multipart boundary is case-sensitive
        media_type = self.content_type.split(";", 1)[0].strip().lower()
        self.content_length = content_length
        self.checksum = checksum.strip().lower() if checksum else None
        self.multipart = media_type == "multipart/form-data"
        self.supported = self.multipart or media_type in ("", "application/octet-stream")

    def validate(self) -> None:
        """Refuse a body we cannot read before anything is opened for it."""
        if not self.supported:
            raise BadRequest("Send the chunk as application/octet-stream or as the multipart field 'chunk'",
                             code="UNSUPPORTED_CHUNK_ENCODING", status=415)

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
        remaining = limit
        try:
            while remaining > 0:
                data = self.stream.read(min(READ_SIZE, remaining))
                if not data:
                    return
                remaining -= len(data)
        except Exception:  # noqa: BLE001 - a client gone or a broken body: nothing to keep alive
            return

    def pieces(self) -> Iterator[bytes]:
        if self.multipart:
            yield from self._multipart()
            return
        self.validate()
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
