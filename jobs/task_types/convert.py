"""FileConversion: an image of the account (PNG, JPEG, WebP or GIF) converted to another of
these formats with Pillow, optionally resized, stored as a new file.

- Every pair among the four formats is supported (the same format too, to resize or
  recompress), as far as this Pillow build can write it; anything else — a non-image, another
  image format, a format Pillow lacks — is a 400 UNSUPPORTED_CONVERSION when the task is
  created, not a failure later.
- width only, or height only: the other follows the aspect ratio; both: the image is scaled
  to fit within width × height keeping its aspect ratio (it may be enlarged).
- quality (1..100) applies to jpeg and webp (default 85); it is refused for png and gif.
- JPEG has no alpha: transparency is flattened onto white. An animated GIF or WebP gives
  its first frame. A JPEG/WebP's EXIF orientation is applied, so width and height are those
  a viewer shows.
- More than MAX_PIXELS pixels in the source or the result (a decompression bomb) fails the
  task before pixels are decoded.
Results: resultFileId, width, height, format (Pillow's name, e.g. "JPEG", as fileMeta
has it), size. fileMeta of the new file: width, height, format.
"""
from __future__ import annotations

import os
import shutil
import tempfile

from marshmallow import ValidationError, fields, validate, validates_schema
from PIL import Image, ImageOps, UnidentifiedImageError, features

from app.errors import ApiError, BadRequest
from app.schemas.base import CamelSchema, StrictInt
from app.tasks.context import TaskContext, TaskFailed
from app.tasks.files import FileName, NewFile, owned_files, read_file

# target name → (Pillow format, mime type, extension, Pillow feature needed to write it)
TARGETS = {
    "png": ("PNG", "image/png", "png", "zlib"),
    "jpeg": ("JPEG", "image/jpeg", "jpg", "jpg"),
    "webp": ("WEBP", "image/webp", "webp", "webp"),
    "gif": ("GIF", "image/gif", "gif", None),
}
SOURCE_TYPES = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg", "image/pjpeg": "jpeg",
                "image/webp": "webp", "image/gif": "gif"}
MAX_PIXELS = 89_478_485   # Pillow's own default warning limit (≈ 0.25 GiB of RGBA)
MAX_SIDE = 16384
DEFAULT_QUALITY = 85
SPOOL = 32 * 1024 * 1024


class ConvertParameters(CamelSchema):
    file_id = fields.UUID(required=True)
    target_format = fields.String(required=True, validate=validate.OneOf(sorted(TARGETS)))
    width = StrictInt(allow_none=True, validate=validate.Range(min=1, max=MAX_SIDE))
    height = StrictInt(allow_none=True, validate=validate.Range(min=1, max=MAX_SIDE))
    quality = StrictInt(allow_none=True, validate=validate.Range(min=1, max=100))
    output_file_name = FileName(allow_none=True)

    @validates_schema
    def _quality_for_lossy_only(self, data, **kwargs):
        if data.get("quality") is not None and data.get("target_format") in ("png", "gif"):
            raise ValidationError("quality applies to jpeg and webp only", "quality")


def _can_write(target: str) -> bool:
    feature = TARGETS[target][3]
    return feature is None or bool(features.check(feature))


def _source_format(file) -> str | None:
    mime = (file.mime_type or "").split(";")[0].strip().lower()
    return SOURCE_TYPES.get(mime)


def prepare(account_id, parameters: dict) -> dict:
    (file,) = owned_files(account_id, [parameters["file_id"]], plain_only=True)
    source, target = _source_format(file), parameters["target_format"]
    if source is None or not _can_write(target) or (source == "webp" and not features.check("webp")):
        raise BadRequest(f"Converting {file.mime_type or 'this file'} to {target} is not supported",
                         code="UNSUPPORTED_CONVERSION",
                         details={"id": str(file.id), "mimeType": file.mime_type, "targetFormat": target,
                                  "supported": sorted(SOURCE_TYPES)})
    stem = os.path.splitext(file.name)[0] or "image"
    output = parameters.get("output_file_name") or f"{stem}.{TARGETS[target][2]}"
    return {"fileId": str(file.id), "targetFormat": target, "width": parameters.get("width"),
            "height": parameters.get("height"), "quality": parameters.get("quality"), "outputFileName": output}


def target_size(width: int, height: int, want_w: int | None, want_h: int | None) -> tuple[int, int]:
    if want_w and want_h:
        scale = min(want_w / width, want_h / height)
        return max(1, round(width * scale)), max(1, round(height * scale))
    if want_w:
        return want_w, max(1, round(height * want_w / width))
    if want_h:
        return max(1, round(width * want_h / height)), want_h
    return width, height


def _for_target(image: Image.Image, target: str) -> Image.Image:
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    if target == "jpeg":
        if has_alpha:
            rgba = image.convert("RGBA")
            flat = Image.new("RGB", rgba.size, (255, 255, 255))
            flat.paste(rgba, mask=rgba.getchannel("A"))
            return flat
        return image if image.mode in ("RGB", "L", "CMYK") else image.convert("RGB")
    if target == "webp":
        return image if image.mode in ("RGB", "RGBA") else image.convert("RGBA" if has_alpha else "RGB")
    if target == "gif":
        return image if image.mode in ("P", "L", "1") else image.convert("RGBA" if has_alpha else "RGB")
    if image.mode in ("1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16"):
        return image
    return image.convert("RGBA" if has_alpha else "RGB")


def run(ctx: TaskContext) -> None:
    params = ctx.parameters
    (file,) = owned_files(ctx.account_id, [params["fileId"]], plain_only=True)
    target = params["targetFormat"]
    pil_format, mime, _, _ = TARGETS[target]
    with tempfile.SpooledTemporaryFile(max_size=SPOOL) as source, \
            tempfile.SpooledTemporaryFile(max_size=SPOOL) as encoded:
        for block in read_file(file):
            source.write(block)
            ctx.step(ctx.progress)  # throttled: a heartbeat (and pause/cancel) while copying
        source.seek(0)
        ctx.step(10.0, force=True)
        try:
            with Image.open(source, formats=[TARGETS[f][0] for f in TARGETS]) as image:
                if image.width * image.height > MAX_PIXELS:
                    raise TaskFailed(f"The image has {image.width}×{image.height} pixels, more than the limit "
                                     f"of {MAX_PIXELS} pixels")
                image.seek(0)  # an animation gives its first frame
                picture = ImageOps.exif_transpose(image) if image.format in ("JPEG", "WEBP") else image
                size = target_size(picture.width, picture.height, params.get("width"), params.get("height"))
                if size[0] * size[1] > MAX_PIXELS:
                    raise TaskFailed(f"The result would have {size[0]}×{size[1]} pixels, more than the limit "
                                     f"of {MAX_PIXELS} pixels")
                picture.load()
                ctx.step(40.0)
                if size != picture.size:
                    if picture.mode == "P":  # resample in full colour, not palette indices
                        picture = picture.convert("RGBA" if "transparency" in picture.info else "RGB")
                    picture = picture.resize(size, Image.Resampling.LANCZOS)
                picture = _for_target(picture, target)
                options = {}
                if target in ("jpeg", "webp"):
                    options["quality"] = params.get("quality") or DEFAULT_QUALITY
                if target == "png":
                    options["optimize"] = False
                picture.save(encoded, format=pil_format, **options)
                width, height = picture.size
        except Image.DecompressionBombError as error:  # Pillow's own check, at twice its warning limit
            raise TaskFailed(f"The image has more than the limit of {MAX_PIXELS} pixels") from error
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
            raise TaskFailed(f"The image could not be converted: {error}"[:300]) from error
        ctx.step(80.0)
        encoded.seek(0)
        out = NewFile(ctx.account_id)
        ctx.on_cancel(out.abort)
        try:
            shutil.copyfileobj(encoded, out, 1024 * 1024)
            result = out.publish(params["outputFileName"], mime,
                                 file_meta={"width": width, "height": height, "format": pil_format})
        except ApiError as error:  # e.g. QUOTA_EXCEEDED
            out.abort()
            raise TaskFailed(error.message) from error
        except BaseException:
            out.abort()
            raise
    ctx.results.update({"resultFileId": str(result.id), "width": width, "height": height,
                        "format": pil_format, "size": result.size})
