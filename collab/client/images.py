"""Image sanitising before encryption: decode, orient, strip every piece of metadata,
re-encode, thumbnail.

Nothing of the original file survives but its pixels: the output image is rebuilt from
raw pixel bytes, so EXIF (GPS, maker notes, serial numbers), XMP, IPTC, comments, text
chunks and ICC profiles are all gone. Photos become JPEG, images with transparency PNG.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from collab.client.errors import ImageError

MAX_PIXELS = 64_000_000  # about 8000 x 8000
MAX_INPUT_BYTES = 25 * 1024 * 1024
THUMBNAIL_PX = 320
JPEG_QUALITY = 90
ACCEPTED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "TIFF", "BMP", "GIF", "MPO"})

# Pillow's own guard: a warning above the limit, an error above twice the limit.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


@dataclass(frozen=True)
class EncodedImage:
    data: bytes
    mime: str
    width: int
    height: int


@dataclass(frozen=True)
class SanitisedImage:
    full: EncodedImage
    thumbnail: EncodedImage
    source_format: str


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        img.mode == "P" and "transparency" in img.info
    )


def _encode(img: Image.Image, alpha: bool) -> EncodedImage:
    out = io.BytesIO()
    if alpha:
        img.save(out, "PNG", optimize=True)
        mime = "image/png"
    else:
        img.save(out, "JPEG", quality=JPEG_QUALITY, optimize=True)
        mime = "image/jpeg"
    return EncodedImage(out.getvalue(), mime, img.width, img.height)


def _decode(data: bytes) -> tuple[Image.Image, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as probe:
                fmt = str(probe.format or "")
                if fmt not in ACCEPTED_FORMATS:
                    raise ImageError(
                        f"unsupported image format {fmt or 'unknown'} "
                        f"(accepted: {', '.join(sorted(ACCEPTED_FORMATS - {'MPO'}))})",
                        code="unsupported_image",
                    )
                if probe.width * probe.height > MAX_PIXELS:
                    raise ImageError(
                        f"image of {probe.width}x{probe.height} pixels exceeds the "
                        f"{MAX_PIXELS} pixel limit (decompression bomb?)", code="image_too_large",
                    )
                probe.verify()
            img = Image.open(io.BytesIO(data))
            img.seek(0)  # first frame of an animation
            img.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageError("refused a decompression bomb (image too large when decoded)",
                             code="image_too_large") from None
        except UnidentifiedImageError:
            raise ImageError("the file is not an image Pillow can read",
                             code="not_an_image") from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ImageError(f"the image is damaged or truncated: {exc}",
                             code="bad_image") from None
    return img, fmt


def _pixels_only(img: Image.Image) -> tuple[Image.Image, bool]:
    """Orient, convert to RGB/RGBA, and rebuild from raw pixels (no metadata at all)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        oriented = ImageOps.exif_transpose(img) or img
    alpha = _has_alpha(oriented)
    converted = oriented.convert("RGBA" if alpha else "RGB")
    clean = Image.frombytes(converted.mode, converted.size, converted.tobytes())
    return clean, alpha


def decode_clean(data: bytes) -> tuple[Image.Image, bool, str]:
    """The checks of ``sanitise_image``, then the picture's oriented pixels without any
    metadata: (pixels, has alpha, source format). Markup draws on these. Raises ImageError."""
    if len(data) > MAX_INPUT_BYTES:
        raise ImageError(f"the file is larger than {MAX_INPUT_BYTES // (1024 * 1024)} MB",
                         code="image_too_large")
    if not data:
        raise ImageError("the file is empty", code="not_an_image")
    img, fmt = _decode(data)
    try:
        clean, alpha = _pixels_only(img)
    finally:
        img.close()
    return clean, alpha, fmt


def encode_sanitised(clean: Image.Image, alpha: bool, fmt: str, *,
                     thumbnail_px: int = THUMBNAIL_PX) -> SanitisedImage:
    """Encode pixels from ``decode_clean`` (JPEG, or PNG with alpha) and a thumbnail."""
    full = _encode(clean, alpha)
    thumb = clean.copy()
    thumb.thumbnail((thumbnail_px, thumbnail_px), Image.Resampling.LANCZOS)
    return SanitisedImage(full, _encode(thumb, alpha), fmt)


def sanitise_image(data: bytes, *, thumbnail_px: int = THUMBNAIL_PX) -> SanitisedImage:
    """Verify ``data`` is an image, apply its orientation, strip its metadata and re-encode
    it (JPEG, or PNG when it has transparency); also make a thumbnail. Raises ImageError."""
    clean, alpha, fmt = decode_clean(data)
    return encode_sanitised(clean, alpha, fmt, thumbnail_px=thumbnail_px)
