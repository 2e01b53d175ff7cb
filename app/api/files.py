"""/files/{id}: metadata, download, delete."""
from __future__ import annotations

from urllib.parse import quote

from flask import current_app, g, request

from app.api import api
from app.api.decorators import other_responses, response
from app.errors import ApiError
from app.schemas.files import CloudFileSchema
from app.services import files


def content_disposition(name: str) -> str:
    """`attachment` with an ASCII fallback and the UTF-8 name (RFC 6266 / 5987); no quote,
    backslash or control character of the name can reach the header."""
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\%;' else "_" for c in name) or "download"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


@api.get("/files/<file_id>")
@response(CloudFileSchema)
def get_file(file_id):
    """A file's metadata."""
    return files.get_file(file_id, g.account_id)


@api.get("/files/<file_id>/download")
@other_responses({200: (None, "The bytes"), 206: (None, "The requested range"), 304: (None, "Not modified"),
                  403: (None, "PASSWORD_REQUIRED / WRONG_PASSWORD (encrypted files)"),
                  410: (None, "FILE_EXPIRED"), 416: (None, "Range not satisfiable")})
def download_file(file_id):
    """The file's bytes, streamed; supports Range, If-Range, If-None-Match. An encrypted file
    needs X-Encrypt-Password."""
    download = files.open_download(file_id, g.account_id, request.headers.get("X-Encrypt-Password"))
    size, etag = download.size, download.file.hash
    headers = {
        "ETag": f'"{etag}"',
        "Accept-Ranges": "bytes",
        "Content-Disposition": content_disposition(download.file.name),
        "Cache-Control": "private, no-cache",
        "X-Content-Type-Options": "nosniff",
    }
    if request.if_none_match.contains_weak(etag):  # RFC 9110 13.1.2: weak comparison
        return current_app.response_class(status=304, headers=headers)
    start, end, status = 0, size, 200
    ranges = request.range
    # RFC 9110 14.2 and 13.1.5: a Range in another unit is ignored, and If-Range needs a
    # strong match of our ETag (we give no Last-Modified, so a date never matches).
    if_range = request.headers.get("If-Range")
    if ranges is not None and ranges.units == "bytes" and if_range in (None, f'"{etag}"'):
        bounds = ranges.range_for_length(size)
        if bounds is None:
            raise ApiError("The requested range is not satisfiable", code="RANGE_NOT_SATISFIABLE",
                           status=416, headers={"Content-Range": f"bytes */{size}"})
        start, end = bounds
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    headers["Content-Length"] = str(end - start)
    return current_app.response_class(download.opener(start, end), status=status,
                                      mimetype=download.file.mime_type, headers=headers,
                                      direct_passthrough=True)


@api.delete("/files/<file_id>")
@response(None, 204, "Deleted; the quota is released")
def delete_file(file_id):
    """Delete a file."""
    files.delete_file(file_id, g.account_id)
