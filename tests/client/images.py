"""Test images made with Pillow: orientation, GPS EXIF, comments, XMP, alpha."""

from __future__ import annotations

import io

from PIL import Image

SECRET_TEXT = b"Patient Jane Roe 1970-01-01"
MAKER = "SecretCam Model-X SN-4711"


def two_tone(width: int = 64, height: int = 32, mode: str = "RGB") -> Image.Image:
    """Left half red, right half blue (plus opaque/translucent halves with alpha)."""
    img = Image.new(mode, (width, height), (200, 30, 30, 255) if mode == "RGBA" else (200, 30, 30))
    right = Image.new(mode, (width // 2, height),
                      (30, 30, 200, 128) if mode == "RGBA" else (30, 30, 200))
    img.paste(right, (width // 2, 0))
    return img


def gps_exif(orientation: int = 6) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation: 6 = rotate 90 degrees clockwise to display
    exif[0x010F] = MAKER  # Make
    exif[0x010E] = SECRET_TEXT.decode()  # ImageDescription
    exif[0x8825] = {  # GPSInfo IFD
        1: "N", 2: (52.0, 31.0, 12.0), 3: "E", 4: (13.0, 24.0, 0.0),
    }
    return exif


def jpeg_with_gps(img: Image.Image | None = None, orientation: int = 6) -> bytes:
    out = io.BytesIO()
    (img or two_tone()).save(
        out, "JPEG", quality=95, exif=gps_exif(orientation), comment=SECRET_TEXT,
        xmp=b"<x:xmpmeta xmlns:x='adobe:ns:meta/'>" + SECRET_TEXT + b"</x:xmpmeta>",
    )
    return out.getvalue()


def png_bytes(img: Image.Image, text: bytes | None = SECRET_TEXT) -> bytes:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    if text:
        info.add_text("Comment", text.decode())
    out = io.BytesIO()
    img.save(out, "PNG", pnginfo=info)
    return out.getvalue()


def assert_no_metadata(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    assert len(img.getexif()) == 0
    assert not img.getexif().get_ifd(0x8825)
    for key in ("exif", "comment", "xmp", "XML:com.adobe.xmp", "icc_profile", "Comment"):
        assert key not in img.info, key
    assert not getattr(img, "text", {})
    for needle in (b"Exif", SECRET_TEXT, MAKER.encode(), b"xmpmeta"):
        assert needle not in data, needle
    return img
