"""FileCompress: the account's files into one archive (zip with level 0-9, or tar.gz),
stored as a new file. Results: resultFileId, compressedSize, compressionRatio,
filesProcessed. A pause or crash starts the archive again (an archive stream cannot be
resumed half way); the result is the same as an uninterrupted run."""
from __future__ import annotations

import gzip
import tarfile
import zipfile

from marshmallow import fields, validate

from app.errors import ApiError
from app.schemas.base import CamelSchema, StrictInt
from app.services.bundles import get_bundle
from app.tasks.context import TaskContext, TaskFailed
from app.tasks.files import FileName, NewFile, owned_files, read_file

FORMATS = {"zip": "application/zip", "tar.gz": "application/gzip"}


class CompressParameters(CamelSchema):
    file_ids = fields.List(fields.UUID(), required=True, validate=validate.Length(min=1, max=1000))
    compression_format = fields.String(load_default="zip", validate=validate.OneOf(sorted(FORMATS)))
    compression_level = StrictInt(load_default=6, validate=validate.Range(min=0, max=9))
    output_file_name = FileName(allow_none=True)
    bundle_id = fields.UUID(allow_none=True)


def prepare(account_id, parameters: dict) -> dict:
    files = owned_files(account_id, parameters["file_ids"], plain_only=True)
    names = [f.name for f in files]
    if len(set(names)) != len(names):
        raise ApiError("Two files have the same name; an archive needs distinct names",
                       code="DUPLICATE_NAMES", details={"names": sorted({n for n in names if names.count(n) > 1})})
    bundle_id = parameters.get("bundle_id")
    if bundle_id is not None:  # the archive goes into a bundle of this account's only
        bundle_id = get_bundle(bundle_id, account_id).id  # 404 BUNDLE_NOT_FOUND
    fmt = parameters["compression_format"]
    output = parameters.get("output_file_name") or f"archive.{fmt}"
    return {"fileIds": [str(f.id) for f in files], "compressionFormat": fmt,
            "compressionLevel": parameters["compression_level"], "outputFileName": output,
            "bundleId": str(bundle_id) if bundle_id else None}


def run(ctx: TaskContext) -> None:
    params = ctx.parameters
    files = owned_files(ctx.account_id, params["fileIds"], plain_only=True)
    total = sum(f.size for f in files) or 1
    done = 0
    out = NewFile(ctx.account_id)
    ctx.on_cancel(out.abort)
    try:
        if params["compressionFormat"] == "zip":
            level = params["compressionLevel"]
            method = zipfile.ZIP_STORED if level == 0 else zipfile.ZIP_DEFLATED
            archive = zipfile.ZipFile(out, "w", compression=method, compresslevel=None if level == 0 else level)
            with archive:
                for number, file in enumerate(files):
                    with archive.open(zipfile.ZipInfo(file.name), "w", force_zip64=file.size > 2**31) as entry:
                        for block in read_file(file):
                            entry.write(block)
                            done += len(block)
                            ctx.step(99.0 * done / total, {"filesProcessed": number})
        else:
            with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=params["compressionLevel"], mtime=0) as gz, \
                    tarfile.open(fileobj=gz, mode="w|") as archive:
                for number, file in enumerate(files):
                    info = tarfile.TarInfo(file.name)
                    info.size = file.size
                    archive.addfile(info, _Reader(read_file(file)))
                    done += file.size
                    ctx.step(99.0 * done / total, {"filesProcessed": number + 1})
        result = out.publish(params["outputFileName"], FORMATS[params["compressionFormat"]],
                             bundle_id=params.get("bundleId"))
    except ApiError as error:  # e.g. QUOTA_EXCEEDED when storing the archive
        out.abort()
        raise TaskFailed(error.message) from error
    except BaseException:
        out.abort()
        raise
    ctx.results.update({"resultFileId": str(result.id), "compressedSize": result.size,
                        "compressionRatio": round(result.size / total, 4), "filesProcessed": len(files)})


class _Reader:
    """A file-like `read(n)` over an iterator of blocks, for tarfile.addfile (which reads in
    small pieces: each block is sliced by offset, not copied again for every read)."""

    def __init__(self, blocks):
        self.blocks = blocks
        self.block = b""
        self.offset = 0

    def read(self, size=-1):
        out = []
        wanted = size
        while wanted != 0:
            if self.offset >= len(self.block):
                self.block, self.offset = next(self.blocks, b""), 0
                if not self.block:
                    break
            take = len(self.block) - self.offset if wanted < 0 else min(wanted, len(self.block) - self.offset)
            out.append(self.block[self.offset:self.offset + take])
            self.offset += take
            if wanted > 0:
                wanted -= take
        return b"".join(out)
