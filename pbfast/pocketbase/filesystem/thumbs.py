"""Thumbnails as PocketBase makes them (``filesystem.CreateThumb``), with Pillow: ``WxH`` crops to fill the
box from the centre, ``WxHt``/``WxHb`` from the top/bottom, ``WxHf`` fits inside it (never enlarging),
``0xH``/``Wx0`` resize keeping the aspect ratio. EXIF orientation is applied, animations keep their first
frame; JPEG and GIF stay in their format, anything else becomes PNG. Pixels are close to, not identical
with, Go's ``imaging`` (both use a linear filter)."""

from __future__ import annotations

import io
import re
from typing import Any, Final

__all__ = ["THUMB_SIZE", "THUMBABLE_TYPES", "ThumbError", "make_thumb"]

THUMB_SIZE: Final = re.compile(r"(\d+)x(\d+)(t|b|f)?")
THUMBABLE_TYPES: Final = ("image/png", "image/jpg", "image/jpeg", "image/gif", "image/webp")
MAX_SOURCE_PIXELS: Final = 50_000_000  # a decompression bomb is refused, not decoded
MAX_THUMB_SIDE: Final = 10_000


class ThumbError(ValueError):
    """The thumb cannot be made (a bad size, an undecodable or too large image)."""


def make_thumb(data: bytes, size: str, content_type: str) -> tuple[bytes, str]:
    """The thumb of image ``data`` for ``size``: its bytes and content type."""
    from PIL import Image, ImageOps

    match = THUMB_SIZE.fullmatch(size)
    if match is None:
        raise ThumbError("thumb size must be in WxH, WxHt, WxHb or WxHf format")
    width, height, mode = int(match[1]), int(match[2]), match[3] or ""
    if width == 0 and height == 0:
        raise ThumbError("thumb width and height cannot be zero at the same time")
    if width > MAX_THUMB_SIDE or height > MAX_THUMB_SIDE:
        raise ThumbError("thumb size too large")
    try:
        with Image.open(io.BytesIO(data)) as opened:
            if opened.width * opened.height > MAX_SOURCE_PIXELS:
                raise ThumbError("image too large for a thumb")
            opened.seek(0)
            image = ImageOps.exif_transpose(opened.copy())
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as err:
        raise ThumbError(f"cannot decode the image: {err}") from err
    image = _resized(image, width, height, mode)
    if content_type == "image/jpeg":
        target, out_type = "JPEG", "image/jpeg"
        image = image.convert("RGB")
    elif content_type == "image/gif":
        target, out_type = "GIF", "image/gif"
    else:
        target, out_type = "PNG", "image/png"
    buffer = io.BytesIO()
    image.save(buffer, target, **({"quality": 95} if target == "JPEG" else {}))
    return buffer.getvalue(), out_type


def _resized(image: Any, width: int, height: int, mode: str) -> Any:
    from PIL import Image

    assert isinstance(image, Image.Image)
    if image.mode not in ("RGB", "RGBA", "L", "LA"):
        image = image.convert("RGBA")
    src_w, src_h = image.size
    linear = Image.Resampling.BILINEAR
    if width == 0 or height == 0:
        if width == 0:
            width = max(1, int(height * src_w / src_h + 0.5))
        else:
            height = max(1, int(width * src_h / src_w + 0.5))
        return image.resize((width, height), linear)
    if mode == "f":
        if src_w <= width and src_h <= height:
            return image
        ratio = min(width / src_w, height / src_h)
        return image.resize((max(1, int(src_w * ratio + 0.5)), max(1, int(src_h * ratio + 0.5))), linear)
    if (src_w, src_h) == (width, height):
        return image
    scale = max(width / src_w, height / src_h)
    scaled_w, scaled_h = max(width, int(src_w * scale + 0.5)), max(height, int(src_h * scale + 0.5))
    scaled = image.resize((scaled_w, scaled_h), linear)
    left = (scaled_w - width) // 2
    top = {"t": 0, "b": scaled_h - height}.get(mode, (scaled_h - height) // 2)
    return scaled.crop((left, top, left + width, top + height))
