"""What the API does with pixels: recognise an upload, derive thumbnails.

``inspect`` reads only an image's header and EXIF block, never its pixels, so
checking an upload costs the same for 100 KB and 25 MB. It refuses what is
not one of ``FORMATS`` (whatever the file is called) and what declares more
than ``max_pixels`` pixels, which is how a decompression bomb (a small file
that would decode to gigabytes) is stopped before anything is decoded.

``thumbnail`` decodes, applies the EXIF orientation (so a portrait photo
taken with the phone on its side comes out upright), fits the image into the
requested box and optionally draws the org's watermark text. JPEG sources are
decoded at a reduced scale when the box is small (``Image.draft``), which
keeps both time and memory low for large photos.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import IO, Literal

from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

from forcelink.errors import ForcelinkError

FORMATS = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
}
ThumbFormat = Literal["jpeg", "webp"]
THUMB_TYPES: dict[str, str] = {"jpeg": "image/jpeg", "webp": "image/webp"}

_EXIF_IFD = 0x8769
_DATETIME_ORIGINAL = 36867
_DATETIME_DIGITIZED = 36868
_OFFSET_TIME_ORIGINAL = 36881
_DATETIME = 306
_ORIENTATION = 274


class NotAnImage(ForcelinkError):
    """The bytes are not an image in an accepted format."""


class ImageTooLarge(ForcelinkError):
    """The image declares more pixels than the configured limit."""


@dataclass(frozen=True)
class ImageFacts:
    content_type: str
    width: int
    """As displayed, i.e. after the EXIF orientation is applied."""
    height: int
    orientation: int
    captured_at: datetime | None


def inspect(source: IO[bytes], max_pixels: int) -> ImageFacts:
    """Recognise an image from its bytes; raise NotAnImage or ImageTooLarge."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(source, formats=list(FORMATS))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageTooLarge("image has too many pixels") from error
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise NotAnImage("not a JPEG, PNG, WebP or GIF image") from error
    with image:
        width, height = image.size
        if width <= 0 or height <= 0:
            raise NotAnImage("image has no pixels")
        if width * height > max_pixels:
            raise ImageTooLarge(
                f"image is {width}x{height}, more than {max_pixels} pixels"
            )
        exif = image.getexif()
        orientation = int(exif.get(_ORIENTATION, 1) or 1)
        if orientation in (5, 6, 7, 8):
            width, height = height, width
        return ImageFacts(
            content_type=FORMATS[str(image.format)],
            width=width,
            height=height,
            orientation=orientation,
            captured_at=_captured_at(exif),
        )


def _captured_at(exif: Image.Exif) -> datetime | None:
    """EXIF DateTimeOriginal (or the nearest substitute) as an aware datetime.

    EXIF stores local time without a zone; ``OffsetTimeOriginal`` (EXIF 2.31)
    gives the zone when the camera wrote it. Without it the time is taken as
    UTC, which is wrong by the photographer's offset but never invented.
    """
    details = exif.get_ifd(_EXIF_IFD)
    raw = (
        details.get(_DATETIME_ORIGINAL)
        or details.get(_DATETIME_DIGITIZED)
        or exif.get(_DATETIME)
    )
    if not isinstance(raw, str):
        return None
    try:
        moment = datetime.strptime(raw.strip("\x00 ")[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None
    return moment.replace(tzinfo=_zone(details.get(_OFFSET_TIME_ORIGINAL)))


def _zone(offset: object) -> timezone:
    """``"+02:00"`` -> UTC+2; anything else -> UTC."""
    if not isinstance(offset, str) or len(offset) < 6 or offset[0] not in "+-":
        return UTC
    try:
        hours, minutes = int(offset[1:3]), int(offset[4:6])
    except ValueError:
        return UTC
    sign = -1 if offset[0] == "-" else 1
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def watermark_tag(text: str) -> str:
    """Eight hex digits naming a watermark text, for derived images' keys."""
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def thumbnail(
    source: IO[bytes],
    width: int,
    height: int,
    fmt: ThumbFormat,
    watermark: str = "",
) -> bytes:
    """The source image, upright, fitted into ``width`` x ``height``, encoded."""
    with Image.open(source, formats=list(FORMATS)) as image:
        if image.format == "JPEG":
            image.draft("RGB", (width * 2, height * 2))
        upright = ImageOps.exif_transpose(image)
        picture = upright.convert("RGBA" if fmt == "webp" else "RGB")
    picture.thumbnail((width, height), Image.Resampling.LANCZOS)
    if watermark:
        picture = _draw_watermark(picture, watermark)
    out = io.BytesIO()
    if fmt == "webp":
        picture.save(out, "WEBP", quality=80, method=4)
    else:
        picture.convert("RGB").save(out, "JPEG", quality=82, optimize=True)
    return out.getvalue()


def _draw_watermark(picture: Image.Image, text: str) -> Image.Image:
    """Draw ``text`` in the lower right corner, light with a dark outline."""
    size = max(8, min(picture.width, picture.height) // 10)
    font = ImageFont.load_default(size=size)
    layer = Image.new("RGBA", picture.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font, stroke_width=1)
    margin = max(2, size // 3)
    position = (
        picture.width - (right - left) - margin,
        picture.height - (bottom - top) - margin,
    )
    draw.text(
        position,
        text,
        font=font,
        fill=(255, 255, 255, 200),
        stroke_width=1,
        stroke_fill=(0, 0, 0, 160),
    )
    mode = picture.mode
    return Image.alpha_composite(picture.convert("RGBA"), layer).convert(mode)
