"""The room's image: which uploads are images, told by their first bytes.

PNG, JPEG and WebP of at most :data:`MAX_IMAGE_BYTES`. The type comes from
the content only (an SVG, HTML or anything else named ``.png`` is refused),
and the image is re-served with that type and ``nosniff``, so a browser
never runs it as anything but a picture.
"""

from __future__ import annotations

from typing import Literal

from common.tracks import MAX_IMAGE_BYTES
from gateway.tracks import UploadError

__all__ = ["MAX_IMAGE_BYTES", "ImageType", "image_type"]

ImageType = Literal["image/png", "image/jpeg", "image/webp"]


def image_type(data: bytes) -> ImageType:
    """The image's Content-Type by its magic bytes; UploadError 415 / 413 / 400 otherwise."""
    if len(data) > MAX_IMAGE_BYTES:
        raise UploadError(413, f"the image is over {MAX_IMAGE_BYTES // (1024 * 1024)} MB")
    if not data:
        raise UploadError(400, "the image is empty")
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 33:
        return "image/png"
    if data.startswith(b"\xff\xd8\xff") and len(data) >= 4:
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 16:
        return "image/webp"
    raise UploadError(415, "this is not a PNG, JPEG or WebP image")
