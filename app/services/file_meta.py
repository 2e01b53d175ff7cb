"""fileMeta of a stored file: for images, width, height and format, read from the header."""
from __future__ import annotations

import logging

from PIL import Image, UnidentifiedImageError

log = logging.getLogger(__name__)


def probe_file_meta(backend, key: str, content_type: str) -> dict:
    if not content_type.startswith("image/"):
        return {}
    try:
        with backend.open_read(key) as source, Image.open(source) as image:
            return {"width": image.width, "height": image.height, "format": image.format}
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return {}
