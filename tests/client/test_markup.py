"""Image marking with Pillow: blurred and pixelated regions lose their detail, nothing
outside a region changes, drawings land where they were asked for, bad marks are refused
with bad_mark before anything is encoded, and the output carries no metadata."""

from __future__ import annotations

import io
import random
import uuid
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageStat

from collab.client.errors import ImageError
from collab.client.markup import (
    COLOUR,
    MAX_LABEL_CHARS,
    MAX_MARKS,
    MAX_NOTE_CHARS,
    Arrow,
    Blur,
    Circle,
    Label,
    Mark,
    Pixelate,
    apply_marks,
    block_size,
    check_marks,
    fingerprint,
    mark_from_dict,
    parse_mark,
    prepare_image,
)
from tests.client.images import assert_no_metadata, jpeg_with_gps, png_bytes, two_tone
from tests.client.test_cli import home, make_keystore, one_error_line, run  # noqa: F401
from tests.support.live import free_port


def noise(width: int = 200, height: int = 150, mode: str = "RGB", seed: int = 7) -> Image.Image:
    """Random pixels: a region's variance is high until it is blurred."""
    rng = random.Random(seed)
    channels = len(mode)
    return Image.frombytes(mode, (width, height),
                           bytes(rng.randrange(256) for _ in range(width * height * channels)))


def variance(img: Image.Image, box: tuple[int, int, int, int]) -> float:
    return max(ImageStat.Stat(img.convert("RGB").crop(box)).var)


def outside_equal(a: Image.Image, b: Image.Image, box: tuple[int, int, int, int]) -> bool:
    """Every pixel outside ``box`` is identical."""
    a, b = a.copy(), b.copy()
    blank = Image.new(a.mode, (box[2] - box[0], box[3] - box[1]))
    a.paste(blank, box[:2])
    b.paste(blank, box[:2])
    return ImageChops.difference(a.convert("RGB"), b.convert("RGB")).getbbox() is None


def test_blur_drops_the_regions_variance_and_leaves_the_rest_alone() -> None:
    src = noise()
    box = (40, 30, 140, 110)
    out = apply_marks(src, [Blur(40, 30, 100, 80)])
    assert variance(src, box) > 4000
    assert variance(out, box) < variance(src, box) / 20
    assert outside_equal(src, out, box)
    assert src.tobytes() == noise().tobytes()  # the input is not changed in place


def test_pixelate_makes_every_block_one_colour_and_leaves_the_rest_alone() -> None:
    src = noise()
    m = Pixelate(20, 10, 120, 96)
    out = apply_marks(src, [m])
    block = block_size(m.w, m.h)
    assert block == 16
    for bx in range(m.x, m.x + m.w - block + 1, block):
        for by in range(m.y, m.y + m.h - block + 1, block):
            colours = out.crop((bx, by, bx + block, by + block)).getcolors()
            assert colours is not None and len(colours) == 1, (bx, by, colours)
    # Neighbouring blocks differ (it is the picture averaged, not a flat fill).
    first = out.getpixel((m.x, m.y))
    assert first != out.getpixel((m.x + block, m.y))
    assert outside_equal(src, out, (m.x, m.y, m.x + m.w, m.y + m.h))


def test_regions_are_applied_before_drawings_whatever_the_order() -> None:
    src = Image.new("RGB", (200, 100), (40, 40, 40))
    label_first = apply_marks(src, [Label(20, 20, "NAME BAND"), Blur(0, 0, 200, 100)])
    blur_first = apply_marks(src, [Blur(0, 0, 200, 100), Label(20, 20, "NAME BAND")])
    assert label_first.tobytes() == blur_first.tobytes()
    assert (*COLOUR,) in {c for _, c in label_first.getcolors(20000) or []}  # crisp, on top


def test_arrow_circle_and_label_draw_where_asked_and_nowhere_else() -> None:
    src = Image.new("RGB", (300, 200), (90, 120, 160))
    marks: list[Mark] = [Arrow(20, 180, 150, 100), Circle(230, 60, 30), Label(10, 10, "2 cm")]
    out = apply_marks(src, marks)
    assert out.getpixel((85, 140)) == COLOUR  # on the arrow's shaft (its midpoint)
    assert out.getpixel((230, 30)) == COLOUR  # on the circle's top edge
    assert out.getpixel((230, 60)) == (90, 120, 160)  # its centre is not filled
    assert variance(out, (10, 10, 60, 40)) > 100  # the label's letters
    assert out.getpixel((290, 190)) == (90, 120, 160)


def test_marks_on_rgba_keep_transparency_outside_and_alpha_stays_png() -> None:
    src = two_tone(80, 60, mode="RGBA")
    prepared = prepare_image(png_bytes(src), marks=[Pixelate(0, 0, 40, 30)])
    assert prepared.image.full.mime == "image/png"
    out = assert_no_metadata(prepared.image.full.data)
    assert out.mode == "RGBA"
    assert outside_equal(src, out, (0, 0, 40, 30))
    assert out.getpixel((70, 50)) == src.getpixel((70, 50))  # translucent half untouched


def test_marked_jpeg_has_no_exif_gps_or_comment_and_coordinates_follow_orientation() -> None:
    # 64x32 stored, orientation 6: displayed (and marked) as 32x64.
    data = jpeg_with_gps(noise(64, 32), orientation=6)
    with pytest.raises(ImageError) as caught:
        prepare_image(data, marks=[Blur(0, 0, 64, 32)])
    assert caught.value.code == "bad_mark" and "32x64" in caught.value.message
    prepared = prepare_image(data, marks=[Blur(0, 0, 32, 32)], send_original=True,
                             note="ruler: 5 mm per tick")
    full = assert_no_metadata(prepared.image.full.data)
    assert_no_metadata(prepared.image.thumbnail.data)
    assert prepared.original is not None
    original = assert_no_metadata(prepared.original.full.data)
    assert full.size == original.size == (32, 64)
    # Blurred in the marked copy, not in the original; the lower half alike in both.
    assert variance(full, (0, 0, 32, 32)) < variance(original, (0, 0, 32, 32)) / 5
    lower = (0, 36, 32, 64)
    assert max(ImageStat.Stat(ImageChops.difference(full.crop(lower),
                                                    original.crop(lower))).mean) < 8
    assert prepared.body_fields(2) == {"marked": True, "note": "ruler: 5 mm per tick",
                                       "original": 2}


def test_the_thumbnail_is_made_from_the_marked_copy() -> None:
    src = noise(640, 480)
    prepared = prepare_image(png_bytes(src, text=None), marks=[Blur(0, 0, 320, 480)])
    thumb = Image.open(io.BytesIO(prepared.image.thumbnail.data))
    assert thumb.size == (320, 240)
    assert variance(thumb, (4, 4, 156, 236)) < variance(thumb, (164, 4, 316, 236)) / 10


def test_no_marks_and_no_note_is_the_plain_sanitised_image() -> None:
    prepared = prepare_image(jpeg_with_gps(two_tone()))
    assert prepared.original is None and prepared.body_fields(2) == {}
    assert fingerprint([], "", False) == b""
    assert fingerprint([Blur(0, 0, 4, 4)], "", False) != fingerprint([Blur(0, 0, 4, 5)], "", False)
    note_only = prepare_image(jpeg_with_gps(two_tone()), note="  12 x 8 mm  ")
    assert note_only.body_fields(2) == {"note": "12 x 8 mm"}


@pytest.mark.parametrize(("marks", "needle"), [
    ([Blur(190, 0, 20, 20)], "does not fit"),
    ([Pixelate(0, 140, 10, 11)], "does not fit"),
    ([Blur(-1, 0, 10, 10)], "must not be negative"),
    ([Blur(0, 0, 1, 10)], "at least 2x2"),
    ([Arrow(10, 10, 10, 10)], "same point"),
    ([Arrow(10, 10, 200, 10)], "outside the 200x150 image"),
    ([Circle(50, 50, 1)], "radius"),
    ([Circle(50, 150, 10)], "outside"),
    ([Label(5, 5, "   ")], "no text"),
    ([Label(5, 5, "two\nlines")], "one line"),
    ([Label(5, 5, "x" * (MAX_LABEL_CHARS + 1))], "one line"),
    ([Blur(True, 0, 10, 10)], "whole number"),  # a bool is an int to the type checker
    ([Blur(1.5, 0, 10, 10)], "whole number"),  # type: ignore[arg-type]
    ([Blur(0, 0, 4, 4)] * (MAX_MARKS + 1), f"at most {MAX_MARKS}"),
    (["blur"], "is not a mark"),
])
def test_bad_marks_are_refused_with_bad_mark_and_change_nothing(
        marks: list[Mark], needle: str) -> None:
    src = noise()
    before = src.tobytes()
    with pytest.raises(ImageError) as caught:
        apply_marks(src, marks)
    assert caught.value.code == "bad_mark" and needle in caught.value.message, caught.value
    assert src.tobytes() == before
    with pytest.raises(ImageError):
        check_marks(marks, 200, 150)


@pytest.mark.parametrize(("kind", "spec", "needle"), [
    ("blur", "1,2,3", "x,y,w,h"),
    ("blur", "1,2,3,4,5", "x,y,w,h"),
    ("pixelate", "a,b,c,d", "whole pixels"),
    ("circle", "-1,2,3", "whole pixels"),
    ("arrow", "1.5,2,3,4", "whole pixels"),
    ("label", "1,2", "x,y,TEXT"),
    ("smudge", "1,2,3,4", "unknown mark"),
])
def test_bad_command_line_specs_name_the_expected_form(kind: str, spec: str, needle: str) -> None:
    with pytest.raises(ImageError) as caught:
        parse_mark(kind, spec)
    assert caught.value.code == "bad_mark" and needle in caught.value.message


def test_specs_and_dicts_parse_to_the_same_marks() -> None:
    assert parse_mark("blur", "1, 2,30,40") == Blur(1, 2, 30, 40)
    assert parse_mark("label", "3,4,left, upper arm") == Label(3, 4, "left, upper arm")
    assert mark_from_dict({"kind": "circle", "x": 5, "y": 6, "r": 7}) == Circle(5, 6, 7)
    with pytest.raises(ImageError) as caught:
        mark_from_dict({"kind": "arrow", "x1": 1})
    assert caught.value.code == "bad_mark" and "lacks" in caught.value.message


def test_bad_note_and_an_original_without_marks_are_refused() -> None:
    data = jpeg_with_gps(two_tone())
    for note in ("x" * (MAX_NOTE_CHARS + 1), "two\nlines"):
        with pytest.raises(ImageError) as caught:
            prepare_image(data, note=note)
        assert caught.value.code == "bad_note"
    with pytest.raises(ImageError) as caught:
        prepare_image(data, send_original=True)
    assert caught.value.code == "original_without_marks"


def test_cli_refuses_bad_marks_before_any_upload(home: Path, tmp_path: Path) -> None:  # noqa: F811
    make_keystore(home, f"http://127.0.0.1:{free_port()}")  # nothing listens there
    photo = tmp_path / "arm.jpg"
    photo.write_bytes(jpeg_with_gps(two_tone(64, 32), orientation=1))
    case = str(uuid.uuid4())
    code, _, err = run("send-image", case, str(photo), "--blur", "10,10,200,5")
    assert code == 1
    one_error_line(err, "bad_mark")
    assert "64x32" in err
    code, _, err = run("send-image", case, str(photo), "--pixelate", "1,2,3")
    assert code == 1
    one_error_line(err, "bad_mark")
    code, _, err = run("send-image", case, str(photo), "--with-original")
    assert code == 1
    one_error_line(err, "original_without_marks")
    # A good mark gets past the checks to the network (unreachable: exit 5).
    code, _, err = run("send-image", case, str(photo), "--blur", "0,0,10,10")
    assert code == 5, err
