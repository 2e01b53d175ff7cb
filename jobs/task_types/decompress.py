"""FileDecompress: the entries of a zip or tar (.tar, .tar.gz, .tgz) archive of the account
become files in a bundle (the one named, or a new bundle named after the archive).

Safety, in two passes over a local copy of the archive (zipfile needs to seek):
1. The archive's directory (zip central directory, tar headers) is read and the whole archive
   refused, before anything is written, if an entry is absolute, has a '..' component, is a
   link or a device, has a name that is not a valid file name, or if the entry count or the
   declared expanded size is over the limits (the task's maxEntries/maxTotalSize, capped by
   TASK_DECOMPRESS_MAX_ENTRIES/TASK_DECOMPRESS_MAX_TOTAL_BYTES), or if zip entries overlap
   (the "non-recursive zip bomb"), or the declared sizes give an absurd compression ratio.
2. Each regular entry is streamed into a new file while the real bytes are counted: more
   than the limit, or than MAX_RATIO times the archive's size, fails the task (zipfile also
   never yields more than an entry's declared size and checks its CRC, so an entry that lies
   about its size fails as damaged).

Sub-folders are flattened: a file is named after the last component of its path and the whole
path inside the archive is kept in its fileMeta as `archivePath`. Folder entries make no file.

On failure or cancel every file this task created is removed (quota released, object deleted,
row deleted) and so is a bundle it created: nothing is left behind. Files get ids derived from
the task and the entry's number, so a run resumed after a pause or a crash finds the files it
already made (even those published after the last saved checkpoint) instead of making them
twice, and the cleanup finds every one of them. Checkpoint: entriesDone, fileIds, bundleId,
bundleCreated, bytesDone. Results: bundleId, fileIds, filesExtracted, totalSize.
"""
from __future__ import annotations

import gzip
import lzma
import mimetypes
import stat
import tarfile
import tempfile
import uuid
import zipfile
import zlib
from dataclasses import dataclass

import sqlalchemy as sa
from flask import current_app
from marshmallow import ValidationError, fields, validate

from app.errors import ApiError, BadRequest
from app.extensions import db
from app.models import Bundle, CloudFile, Pool
from app.schemas.base import CamelSchema, StrictInt
from app.schemas.uploads import check_file_name
from app.services.bundles import create_bundle, get_bundle
from app.services.files import remove_file
from app.tasks.context import TaskContext, TaskFailed
from app.tasks.files import NewFile, owned_files, read_file

# What reading a broken (or unsupported) archive raises; any other error is retried by the engine.
DAMAGED = (zipfile.BadZipFile, zipfile.LargeZipFile, tarfile.TarError, gzip.BadGzipFile, zlib.error,
           lzma.LZMAError, EOFError, NotImplementedError)
COPY_BLOCK = 1024 * 1024
MAX_RATIO = 1100            # deflate cannot exceed ~1032:1; more is a bomb (or bzip2/lzma of zeros)
RATIO_FLOOR = 64 * 1024 * 1024  # archives expanding to less than this are never refused for ratio
ZIP_NAMES = (".zip",)
TAR_NAMES = (".tar", ".tar.gz", ".tgz")
ZIP_TYPES = {"application/zip", "application/x-zip-compressed", "application/x-zip"}
TAR_TYPES = {"application/x-tar", "application/gzip", "application/x-gzip", "application/x-gtar",
             "application/x-compressed-tar", "application/tar+gzip"}


class DecompressParameters(CamelSchema):
    file_id = fields.UUID(required=True)
    bundle_id = fields.UUID(allow_none=True)
    max_total_size = StrictInt(allow_none=True, validate=validate.Range(min=1))
    max_entries = StrictInt(allow_none=True, validate=validate.Range(min=1))


def _limits(max_total_size, max_entries) -> tuple[int, int]:
    config = current_app.config
    cap_size, cap_entries = config["TASK_DECOMPRESS_MAX_TOTAL_BYTES"], config["TASK_DECOMPRESS_MAX_ENTRIES"]
    return min(max_total_size or cap_size, cap_size), min(max_entries or cap_entries, cap_entries)


def _looks_like_archive(file: CloudFile) -> bool:
    name, mime = file.name.lower(), (file.mime_type or "").split(";")[0].strip().lower()
    return name.endswith(ZIP_NAMES + TAR_NAMES) or mime in ZIP_TYPES or mime in TAR_TYPES


def prepare(account_id, parameters: dict) -> dict:
    (archive,) = owned_files(account_id, [parameters["file_id"]], plain_only=True)
    if not _looks_like_archive(archive):
        raise BadRequest("The file is not a zip or tar archive (.zip, .tar, .tar.gz, .tgz)",
                         code="UNSUPPORTED_ARCHIVE", details={"id": str(archive.id), "mimeType": archive.mime_type})
    bundle_id = parameters.get("bundle_id")
    if bundle_id is not None:
        bundle_id = get_bundle(bundle_id, account_id).id  # 404 BUNDLE_NOT_FOUND
    max_total, max_entries = _limits(parameters.get("max_total_size"), parameters.get("max_entries"))
    return {"fileId": str(archive.id), "bundleId": str(bundle_id) if bundle_id else None,
            "maxTotalSize": max_total, "maxEntries": max_entries}


@dataclass
class Entry:
    path: str      # the path inside the archive, as stored
    name: str      # the file name it gets (the last component)
    size: int      # declared expanded size
    member: object  # ZipInfo or TarInfo


def _refuse(path: str, why: str) -> TaskFailed:
    shown = repr(path[:120] + ("…" if len(path) > 120 else ""))
    return TaskFailed(f"The archive was refused: entry {shown} {why}; nothing was extracted")


def _check_path(path: str, is_dir: bool) -> str | None:
    """The file name an entry gets (None for a folder), or TaskFailed if its path could escape."""
    normal = path.replace("\\", "/")  # archives made on Windows may use backslashes
    if normal.startswith("/") or (len(normal) > 1 and normal[1] == ":" and normal[0].isalpha()):
        raise _refuse(path, "has an absolute path")
    parts = [p for p in normal.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise _refuse(path, "has a '..' component")
    if is_dir or not parts:
        return None
    try:
        check_file_name(parts[-1])
    except ValidationError as error:
        raise _refuse(path, f"has a name that is not allowed ({error.messages[0]})") from error
    return parts[-1]


def _scan_zip(archive: zipfile.ZipFile, max_entries: int) -> list[Entry]:
    infos = archive.infolist()
    if len(infos) > max_entries:
        raise TaskFailed(f"The archive has {len(infos)} entries, more than the limit of {max_entries}")
    entries = []
    for info in infos:
        mode = info.external_attr >> 16
        kind = stat.S_IFMT(mode)
        if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
            raise _refuse(info.filename, "is a link or a special file")
        if info.flag_bits & 0x1:
            raise TaskFailed("The archive has encrypted entries; only unencrypted archives can be extracted")
        name = _check_path(info.filename, info.is_dir() or kind == stat.S_IFDIR)
        if name is not None:
            entries.append(Entry(info.filename, name, info.file_size, info))
    # Entries whose data overlap share one compressed stream many times over (a zip bomb).
    spans = sorted((i.header_offset, i.header_offset + 30 + len(_stored_name(i)) + i.compress_size) for i in infos)
    for (_, end), (start, _) in zip(spans, spans[1:]):
        if start < end:
            raise TaskFailed("The archive was refused: its entries overlap (a zip bomb); nothing was extracted")
    return entries


def _stored_name(info: zipfile.ZipInfo) -> bytes:
    """The name's bytes as the local header holds them (UTF-8 when flagged, else cp437)."""
    return info.orig_filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437", "replace")


def _count_zip_entries(fp) -> int | None:
    """The entry count of the end-of-central-directory record, read before zipfile builds an
    object for every entry (a huge directory would fill memory first)."""
    try:
        record = zipfile._EndRecData(fp)  # noqa: SLF001 — stable since Python 2
    except (OSError, AttributeError):
        return None
    return record[zipfile._ECD_ENTRIES_TOTAL] if record else None  # noqa: SLF001


def _scan_tar(archive: tarfile.TarFile, max_entries: int, max_total: int) -> list[Entry]:
    entries, count, declared = [], 0, 0
    while True:
        member = archive.next()
        if member is None:
            return entries
        count += 1
        if count > max_entries:
            raise TaskFailed(f"The archive has more than the limit of {max_entries} entries")
        if member.issym() or member.islnk():
            raise _refuse(member.name, "is a link")
        if not (member.isreg() or member.isdir()):
            raise _refuse(member.name, "is a device or special file")
        name = _check_path(member.name, member.isdir())
        if name is not None:
            declared += member.size
            if declared > max_total:  # stop reading headers at once: the rest is not needed
                raise _too_big(max_total)
            entries.append(Entry(member.name, name, member.size, member))


def _too_big(limit: int) -> TaskFailed:
    return TaskFailed(f"The archive expands to more than the limit of {limit} bytes; nothing was kept")


def _detect(fp) -> str:
    fp.seek(0)
    head = fp.read(512)
    fp.seek(0)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if head[:2] == b"\x1f\x8b" or head[257:262] == b"ustar":
        return "tar"
    raise TaskFailed("The file is not a zip or tar archive")


def _entry_file_id(task_pk: uuid.UUID, number: int) -> uuid.UUID:
    return uuid.uuid5(task_pk, f"entry-{number}")


def run(ctx: TaskContext) -> None:
    params = ctx.parameters
    max_total, max_entries = _limits(params.get("maxTotalSize"), params.get("maxEntries"))
    (archive_file,) = owned_files(ctx.account_id, [params["fileId"]], plain_only=True)
    state = {"out": None}
    ctx.on_cancel(lambda: _cleanup(ctx, state))
    # An unnamed temporary file (gone with the process, even a killed one): zipfile must seek.
    with tempfile.TemporaryFile(prefix="drive-decompress-") as local:
        for block in read_file(archive_file):
            local.write(block)
            ctx.step(ctx.progress)  # a heartbeat (and pause/cancel) while a large archive is copied
        local.flush()
        archive_size = max(local.tell(), 1)
        try:
            if _detect(local) == "zip":
                declared_count = _count_zip_entries(local)
                if declared_count is not None and declared_count > max_entries:
                    raise TaskFailed(f"The archive has {declared_count} entries, more than the limit of {max_entries}")
                with zipfile.ZipFile(local) as archive:
                    entries = _scan_zip(archive, max_entries)
                    _extract(ctx, state, entries, archive.open, archive_file, archive_size, max_total)
            else:
                local.seek(0)
                with tarfile.open(fileobj=local, mode="r:*") as archive:
                    entries = _scan_tar(archive, max_entries, max_total)
                    _extract(ctx, state, entries, archive.extractfile, archive_file, archive_size, max_total)
        except DAMAGED as error:
            raise TaskFailed(f"The archive is damaged or not supported: {error}"[:300]) from error
        except ApiError as error:  # e.g. QUOTA_EXCEEDED while storing an entry
            raise TaskFailed(error.message) from error


def _extract(ctx: TaskContext, state: dict, entries: list[Entry], opener, archive_file: CloudFile,
             archive_size: int, max_total: int) -> None:
    declared = sum(e.size for e in entries)
    if declared > max_total:
        raise _too_big(max_total)
    ratio_limit = max(RATIO_FLOOR, MAX_RATIO * archive_size)
    if declared > ratio_limit:
        raise TaskFailed("The archive was refused: its compression ratio is absurd (a zip bomb); nothing was extracted")
    limit = min(max_total, ratio_limit)
    checkpoint = dict(ctx.checkpoint)
    file_ids: list[str] = list(checkpoint.get("fileIds", []))
    done = checkpoint.get("entriesDone", 0)
    total_bytes = checkpoint.get("bytesDone", 0)
    bundle_id = checkpoint.get("bundleId") or ctx.parameters.get("bundleId")
    if bundle_id is None:  # only now that the archive passed every check
        stem = archive_file.name
        for suffix in (".tar.gz", ".tgz", ".tar", ".zip"):
            if stem.lower().endswith(suffix) and len(stem) > len(suffix):
                stem = stem[:-len(suffix)]
                break
        bundle_id = str(create_bundle(ctx.account_id, {"name": stem}).id)
        checkpoint.update(bundleId=bundle_id, bundleCreated=True)
        ctx.step(ctx.progress, dict(checkpoint), force=True)
    elif db.session.scalar(sa.select(Bundle.id).where(Bundle.id == uuid.UUID(bundle_id),
                                                       Bundle.account_id == ctx.account_id)) is None:
        raise TaskFailed("The target bundle no longer exists")
    pool = db.session.get(Pool, archive_file.pool_id)
    for number in range(done, len(entries)):
        entry = entries[number]
        file_id = _entry_file_id(ctx.task_pk, number)
        existing = db.session.get(CloudFile, file_id)
        if existing is not None and existing.deleted_at is None:  # made by a run that crashed after it
            file_ids.append(str(file_id))
            total_bytes += existing.size
        else:
            if existing is not None:  # such a file, since deleted: its row must not block the new one
                db.session.delete(existing)
                db.session.commit()
            out = NewFile(ctx.account_id, pool, file_id=file_id)
            out.backend.delete(out.key)  # an object a crashed run stored without its row
            state["out"] = out
            try:
                with opener(entry.member) as source:
                    while True:
                        block = source.read(COPY_BLOCK)
                        if not block:
                            break
                        total_bytes += len(block)
                        if total_bytes > limit:
                            raise _too_big(max_total) if total_bytes > max_total else TaskFailed(
                                "The archive was refused: its compression ratio is absurd (a zip bomb)")
                        out.write(block)
                        ctx.step(ctx.progress)  # throttled: a heartbeat within a large entry
                mime = mimetypes.guess_type(entry.name)[0] or "application/octet-stream"
                out.publish(entry.name, mime, bundle_id=uuid.UUID(bundle_id), file_meta={"archivePath": entry.path})
            except BaseException:
                out.abort()
                raise
            finally:
                state["out"] = None
            file_ids.append(str(file_id))
        checkpoint.update(entriesDone=number + 1, fileIds=list(file_ids), bytesDone=total_bytes)
        ctx.step(100.0 * (total_bytes + number + 1) / (declared + len(entries)), checkpoint)
    ctx.checkpoint = checkpoint
    ctx.results.update({"bundleId": bundle_id, "fileIds": file_ids, "filesExtracted": len(file_ids),
                        "totalSize": total_bytes})


def discard(ctx: TaskContext) -> None:
    """A paused extraction that is cancelled: remove what its runs made."""
    _cleanup(ctx, {"out": None})


def _cleanup(ctx: TaskContext, state: dict) -> None:
    """Remove every file this task made (by the ids it gives its entries, so also those a
    checkpoint did not record yet) and the bundle it created."""
    db.session.rollback()
    out = state.get("out")
    if out is not None:
        out.abort()
    checkpoint = ctx.checkpoint or {}
    known = {uuid.UUID(i) for i in checkpoint.get("fileIds", [])}
    limit = ctx.parameters.get("maxEntries") or current_app.config["TASK_DECOMPRESS_MAX_ENTRIES"]
    candidates = sorted(known | {_entry_file_id(ctx.task_pk, n) for n in range(limit)})
    for start in range(0, len(candidates), 500):
        batch = candidates[start:start + 500]
        for file in db.session.scalars(sa.select(CloudFile).where(
                CloudFile.id.in_(batch), CloudFile.account_id == ctx.account_id)).all():
            if file.deleted_at is None:
                remove_file(file)  # quota released and object deleted
            db.session.delete(file)
            db.session.commit()
    if checkpoint.get("bundleCreated") and checkpoint.get("bundleId"):
        db.session.execute(sa.delete(Bundle).where(Bundle.id == uuid.UUID(checkpoint["bundleId"]),
                                                   Bundle.account_id == ctx.account_id))
        db.session.commit()
