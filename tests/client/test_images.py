"""Image sanitising: metadata stripped, orientation applied, bombs and non-images refused."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageChops, ImageStat

from collab.client import images
from collab.client.errors import ImageError
from collab.client.images import sanitise_image
from tests.client.images import assert_no_metadata, jpeg_with_gps, png_bytes, two_tone


def mean_diff(a: Image.Image, b: Image.Image) -> float:
    assert a.size == b.size
    return max(ImageStat.Stat(ImageChops.difference(a.convert("RGB"), b.convert("RGB"))).mean)


def test_source_really_carries_gps_exif_comment_and_xmp() -> None:
    src = Image.open(io.BytesIO(jpeg_with_gps()))
    assert src.getexif().get_ifd(0x8825)[1] == "N"
    assert "comment" in src.info and "xmp" in src.info


def test_gps_exif_comments_and_xmp_are_stripped_and_orientation_applied() -> None:
    original = two_tone(64, 32)
    result = sanitise_image(jpeg_with_gps(original, orientation=6))
    assert result.full.mime == "image/jpeg" and result.source_format == "JPEG"
    out = assert_no_metadata(result.full.data)
    # Orientation 6: displayed rotated 90 degrees clockwise, so 64x32 becomes 32x64.
    assert out.size == (32, 64) == (result.full.width, result.full.height)
    expected = original.transpose(Image.Transpose.ROTATE_270)
    assert mean_diff(out, expected) < 6  # JPEG re-encode tolerance
    top, bottom = out.getpixel((16, 5)), out.getpixel((16, 58))
    assert isinstance(top, tuple) and isinstance(bottom, tuple)
    assert top[0] > 150  # red half now on top
    assert bottom[2] > 150  # blue half below


def test_thumbnail_is_small_and_clean() -> None:
    result = sanitise_image(jpeg_with_gps(two_tone(1200, 800), orientation=1))
    thumb = assert_no_metadata(result.thumbnail.data)
    assert max(thumb.size) == 320 and thumb.size == (320, 213)
    assert result.thumbnail.mime == "image/jpeg"


def test_png_with_alpha_stays_png_exact_pixels_without_text_chunks() -> None:
    original = two_tone(50, 40, mode="RGBA")
    result = sanitise_image(png_bytes(original))
    assert result.full.mime == "image/png"
    out = assert_no_metadata(result.full.data)
    assert out.mode == "RGBA"
    assert out.tobytes() == original.tobytes()


def test_png_without_alpha_becomes_jpeg() -> None:
    result = sanitise_image(png_bytes(two_tone(40, 40)))
    assert result.full.mime == "image/jpeg"
    assert_no_metadata(result.full.data)


def test_icc_profile_is_dropped() -> None:
    from PIL import ImageCms

    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    out = io.BytesIO()
    two_tone().save(out, "JPEG", icc_profile=profile)
    assert "icc_profile" in Image.open(io.BytesIO(out.getvalue())).info
    assert_no_metadata(sanitise_image(out.getvalue()).full.data)


def test_not_an_image_is_refused() -> None:
    with pytest.raises(ImageError) as caught:
        sanitise_image(b"%PDF-1.7 definitely not a picture" * 10)
    assert caught.value.code == "not_an_image"
    with pytest.raises(ImageError):
        sanitise_image(b"")


def test_unsupported_format_is_refused_with_its_name() -> None:
    out = io.BytesIO()
    two_tone().save(out, "PCX")
    with pytest.raises(ImageError) as caught:
        sanitise_image(out.getvalue())
    assert caught.value.code == "unsupported_image" and "PCX" in caught.value.message


def test_truncated_image_is_refused() -> None:
    data = jpeg_with_gps(two_tone(400, 400))
    with pytest.raises(ImageError) as caught:
        sanitise_image(data[: len(data) // 2])
    assert caught.value.code == "bad_image"


def test_decompression_bomb_is_refused_by_pixel_count() -> None:
    bomb = Image.new("1", (9000, 9000))  # 81 Mpx, a few KB as PNG
    data = png_bytes(bomb, text=None)
    assert len(data) < 100_000
    with pytest.raises(ImageError) as caught:
        sanitise_image(data)
    assert caught.value.code == "image_too_large"


@pytest.mark.parametrize("pixels", [1500, 10_000])
def test_pillow_bomb_warning_and_error_are_errors(monkeypatch, pixels: int) -> None:
    # Pillow warns above MAX_IMAGE_PIXELS and raises above twice that: both refuse.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    monkeypatch.setattr(images, "MAX_PIXELS", 10**9)
    side = int(pixels**0.5)
    with pytest.raises(ImageError) as caught:
        sanitise_image(png_bytes(two_tone(side, side), text=None))
    assert caught.value.code == "image_too_large"


def test_oversized_file_is_refused_before_decoding(monkeypatch) -> None:
    monkeypatch.setattr(images, "MAX_INPUT_BYTES", 100)
    with pytest.raises(ImageError) as caught:
        sanitise_image(jpeg_with_gps())
    assert caught.value.code == "image_too_large"
