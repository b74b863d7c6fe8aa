"""Marking a picture before sending, in real Chromium: blur a region, draw an arrow with
the keyboard, place a label, undo it, add a size note, send with the unmarked original;
another member's browser shows the marked image (the blurred box's pixels lost their
detail), the note, and the original on request. A mark the editor cannot place is
refused with a reason and adds nothing. With COLLAB_SCREENSHOTS=1 the receiver's view
is saved to docs/images/marked-image.png."""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from PIL import Image, ImageDraw, ImageFont

from collab.cases import models as m
from collab.crypto.envelope import Header
from tests.browser.conftest import ARTIFACTS, PageProblems
from tests.browser.test_case_room_browser import GPS_MARK, named, set_up_first_device, sign_in
from tests.support.actor import Actor

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]

DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"
WIDTH, HEIGHT = 480, 360
BLUR_BOX = (40, 40, 200, 160)  # x1, y1, x2, y2 in image pixels
INNER = (56, 56, 184, 144)  # well inside it (the blur of a region samples only the region)
LABEL_AT = (330, 250)

# The viewer's decrypted image drawn on a canvas: variance and mean of a box, one pixel.
PIXELS = """async ([box, at]) => {
  const img = document.querySelector('#viewer-img');
  await img.decode();
  const c = document.createElement('canvas');
  c.width = img.naturalWidth;
  c.height = img.naturalHeight;
  const ctx = c.getContext('2d', { willReadFrequently: true });
  ctx.drawImage(img, 0, 0);
  const [x1, y1, x2, y2] = box;
  const d = ctx.getImageData(x1, y1, x2 - x1, y2 - y1).data;
  let variance = 0;
  const mean = [];
  for (let ch = 0; ch < 3; ch += 1) {
    let sum = 0, sq = 0, n = 0;
    for (let i = ch; i < d.length; i += 4) { sum += d[i]; sq += d[i] * d[i]; n += 1; }
    variance = Math.max(variance, sq / n - (sum / n) ** 2);
    mean.push(sum / n);
  }
  return { width: c.width, height: c.height, variance, mean,
           pixel: [...ctx.getImageData(at[0], at[1], 1, 1).data.slice(0, 3)] };
}"""


def source_photo() -> tuple[bytes, Image.Image]:
    """A skin-toned picture with a patient's name band (black text on white, full of
    detail) where the blur goes and a brown lesion the arrow points at; EXIF with GPS."""
    img = Image.new("RGB", (WIDTH, HEIGHT), (222, 178, 156))
    draw = ImageDraw.Draw(img)
    for y in range(0, HEIGHT, 6):  # a gentle shading, not a flat fill
        draw.line([(0, y), (WIDTH, y)], fill=(222 - y // 24, 178 - y // 24, 156 - y // 24),
                  width=6)
    draw.rectangle(BLUR_BOX, fill=(250, 250, 250), outline=(40, 40, 40))
    font = ImageFont.load_default(size=19)
    for n, line in enumerate(["ROE, JANE", "DOB 01/01/1970", "MRN 00123456", "WARD 7B",
                              "ALLERGY: PCN"]):
        draw.text((BLUR_BOX[0] + 8, BLUR_BOX[1] + 6 + n * 22), line, fill=(0, 0, 0), font=font)
    draw.ellipse((232, 248, 268, 278), fill=(120, 70, 50))
    exif = Image.Exif()
    exif[0x010F] = GPS_MARK
    exif[0x8825] = {1: "N", 2: (52.0, 31.0, 12.0), 3: "E", 4: (13.0, 24.0, 0.0)}
    out = io.BytesIO()
    img.save(out, "JPEG", quality=95, exif=exif)
    return out.getvalue(), Image.open(io.BytesIO(out.getvalue())).convert("RGB")


def box_stats(img: Image.Image, box: tuple[int, int, int, int]) -> tuple[float, list[float]]:
    from PIL import ImageStat

    stat = ImageStat.Stat(img.crop(box))
    return max(stat.var), list(stat.mean)


def image_headers(case_id: Any) -> list[int]:
    """How many attachments each stored image message names in its signed header."""
    rows = m.Message.objects.filter(case_id=case_id)
    headers = [Header.decode(bytes(row.header)) for row in rows]
    return [len(h.attachments) for h in headers if h.content_type == "image"]


def to_screen(page: Any, x: int, y: int) -> tuple[float, float]:
    """Where image pixel (x, y) of the editor's canvas is on the screen (inside its border)."""
    canvas = page.locator("#markup-canvas")
    canvas.scroll_into_view_if_needed()
    box = canvas.evaluate("""(c) => { const r = c.getBoundingClientRect();
      return [r.left + c.clientLeft, r.top + c.clientTop, c.clientWidth, c.clientHeight]; }""")
    return (box[0] + (x + 0.5) * box[2] / WIDTH, box[1] + (y + 0.5) * box[3] / HEIGHT)


def drag(page: Any, start: tuple[int, int], end: tuple[int, int]) -> None:
    page.mouse.move(*to_screen(page, *start))
    page.mouse.down()
    page.mouse.move(*to_screen(page, *end), steps=6)
    page.mouse.up()


def test_mark_blur_and_send_then_another_member_sees_the_marked_image_and_the_original(
    server: str, new_page: Callable[[str], Any], problems: PageProblems, tmp_path: Path
) -> None:
    pcp_user = named("pcp_markup", "Dr Ida Marsh", "General practice")
    derm_user = named("derm_markup", "Dr Joel Tan", "Dermatology")
    pcp, derm = new_page("pcp"), new_page("derm")
    sign_in(pcp, pcp_user)
    set_up_first_device(pcp)
    sign_in(derm, derm_user)
    set_up_first_device(derm)
    # A Python client owns the case and adds both (keys made in the browsers).
    owner = Actor("owner_markup", specialty="Dermatology").register().go_live(server)
    state = owner.open_case(specialty="Dermatology")
    for user in (pcp_user, derm_user):
        assert owner.add(state, SimpleNamespace(user=user)).status_code == 201  # type: ignore[arg-type]
    for page in (pcp, derm):
        page.goto(f"/cases/{state.case_id}/")
        page.locator("#conn-state", has_text="Connected").wait_for()

    data, source = source_photo()
    photo = tmp_path / "face-and-lesion.jpg"
    photo.write_bytes(data)
    pcp.locator("#img-file").set_input_files(str(photo))
    canvas = pcp.get_by_role("application", name=re.compile("The picture to mark, 480x360 pixels"))
    canvas.wait_for()
    marks = pcp.locator("#markup-list li")

    # Blur a region by dragging over it.
    pcp.get_by_role("radio", name="Blur region").check()
    drag(pcp, BLUR_BOX[:2], BLUR_BOX[2:])
    marks.first.wait_for()
    assert marks.all_inner_texts() == ["Blurred region 40,40, 160x120"]
    # A click without a drag makes no region: refused with the reason, nothing added.
    pcp.mouse.click(*to_screen(pcp, 300, 300))
    pcp.locator("#markup-status", has_text=re.compile(r"Not added: .*at least 2x2")).wait_for()
    assert marks.count() == 1

    # An arrow with the keyboard only: the cursor is where the pointer was last (the
    # refused click, 300,300); each arrow-key press moves 5 px (1% of the longer side).
    pcp.get_by_role("radio", name="Arrow").check()
    canvas.focus()
    pcp.keyboard.press("Enter")
    for _ in range(6):
        pcp.keyboard.press("ArrowLeft")
    for _ in range(4):
        pcp.keyboard.press("ArrowUp")
    pcp.locator("#markup-pos", has_text="Cursor at 270, 280 (mark starts at 300, 300)").wait_for()
    pcp.keyboard.press("Enter")
    pcp.locator("#markup-list li", has_text="Arrow from 300,300 to 270,280").wait_for()

    # A label without text is refused; with text it is placed where clicked.
    pcp.get_by_role("radio", name="Text label").check()
    pcp.mouse.click(*to_screen(pcp, *LABEL_AT))
    pcp.locator("#markup-status", has_text="has no text").wait_for()
    assert marks.count() == 2
    pcp.get_by_label("Label text").fill("lesion")
    pcp.mouse.click(*to_screen(pcp, *LABEL_AT))
    pcp.locator("#markup-list li", has_text="Label “lesion” at 330,250").wait_for()
    # Undo one step: the label goes, the blur and the arrow stay.
    pcp.get_by_role("button", name="Undo last mark").click()
    pcp.locator("#markup-status", has_text="Undone: Label").wait_for()
    assert marks.all_inner_texts() == ["Blurred region 40,40, 160x120",
                                       "Arrow from 300,300 to 270,280"]

    pcp.get_by_label("Size or measurement note (optional)").fill("lesion 12 x 8 mm")
    pcp.get_by_label("Also send the unmarked original").check()
    pcp.get_by_label("Caption (optional)").fill("Cheek, faces blurred")
    pcp.get_by_role("button", name="Send image").click()
    pcp.locator("#img-status", has_text="Image sent").wait_for()
    assert pcp.locator("#markup").is_hidden()

    # Three encrypted blobs: the marked image, its thumbnail, the original.
    assert image_headers(state.case_id) == [3]

    # The other member: "Marked", the note, and the original on request.
    item = derm.locator("li.message", has_text="Cheek, faces blurred")
    item.locator("img.thumb[src^='blob:']").wait_for()
    item.locator(".badge.marked", has_text="Marked").wait_for()
    item.locator(".image-note", has_text="Note: lesion 12 x 8 mm").wait_for()
    item.get_by_role("button", name="View full size").last.click()
    derm.locator("#viewer-img[src^='blob:']").wait_for()
    marked = derm.evaluate(PIXELS, [list(INNER), [285, 290]])
    assert (marked["width"], marked["height"]) == (WIDTH, HEIGHT)
    source_var, source_mean = box_stats(source, INNER)
    assert source_var > 3000
    assert marked["variance"] < source_var / 10, (marked["variance"], source_var)
    # Blurred, not painted over: the box keeps roughly the picture's mean colour.
    assert max(abs(a - b) for a, b in zip(marked["mean"], source_mean, strict=True)) < 30
    r, g, b = marked["pixel"]  # on the arrow's shaft: the marking yellow
    assert r > 200 and g > 170 and b < 90, marked["pixel"]
    # The undone label left nothing behind.
    label_box = (LABEL_AT[0], LABEL_AT[1], LABEL_AT[0] + 60, LABEL_AT[1] + 20)
    after_undo = derm.evaluate(PIXELS, [list(label_box), [0, 0]])
    assert max(abs(a - b) for a, b in
               zip(after_undo["mean"], box_stats(source, label_box)[1], strict=True)) < 8
    if os.environ.get("COLLAB_SCREENSHOTS") == "1":
        DOCS_IMAGES.mkdir(exist_ok=True)
        derm.locator("#viewer").screenshot(path=str(DOCS_IMAGES / "marked-image.png"))
    ARTIFACTS.mkdir(exist_ok=True)
    derm.screenshot(path=str(ARTIFACTS / "browser-marked-image.png"))
    # The saved marked copy carries no metadata.
    with derm.expect_download() as info:
        derm.get_by_role("link", name="Save decrypted copy").click()
    saved = Path(info.value.path()).read_bytes()
    assert b"Exif" not in saved and GPS_MARK.encode() not in saved
    derm.get_by_role("button", name="Close").click()

    # The unmarked original, on request: the box has its detail.
    item.get_by_role("button", name="Show original").click()
    derm.locator("#viewer-img[src^='blob:']").wait_for()
    original = derm.evaluate(PIXELS, [list(INNER), [285, 290]])
    assert original["variance"] > source_var * 0.8, (original["variance"], source_var)
    with derm.expect_download() as info:  # re-encoded the same way: no metadata either
        derm.get_by_role("link", name="Save decrypted copy").click()
    saved = Path(info.value.path()).read_bytes()
    assert b"Exif" not in saved and GPS_MARK.encode() not in saved
    derm.get_by_role("button", name="Close").click()
    problems.assert_none()


def test_cancel_forgets_the_picture_and_a_plain_image_is_not_marked(
    server: str, new_page: Callable[[str], Any], problems: PageProblems, tmp_path: Path
) -> None:
    pcp_user = named("pcp_markup2", "Dr Kim Ray", "General practice")
    pcp = new_page("pcp")
    sign_in(pcp, pcp_user)
    set_up_first_device(pcp)
    owner = Actor("owner_markup2", specialty="Dermatology").register().go_live(server)
    state = owner.open_case(specialty="Dermatology")
    assert owner.add(state, SimpleNamespace(user=pcp_user)).status_code == 201  # type: ignore[arg-type]
    pcp.goto(f"/cases/{state.case_id}/")
    pcp.locator("#conn-state", has_text="Connected").wait_for()
    data, _ = source_photo()
    photo = tmp_path / "arm.jpg"
    photo.write_bytes(data)

    pcp.locator("#img-file").set_input_files(str(photo))
    pcp.get_by_role("radio", name="Pixelate region").check()
    drag(pcp, (10, 10), (100, 100))
    pcp.locator("#markup-list li", has_text="Pixelated region 10,10, 90x90").wait_for()
    pcp.get_by_role("button", name="Cancel this picture").click()
    assert pcp.locator("#markup").is_hidden()
    assert pcp.locator("#img-file").input_value() == ""
    pcp.get_by_role("button", name="Send image").click()
    pcp.locator("#img-status", has_text="Choose an image first").wait_for()
    assert image_headers(state.case_id) == []

    # Chosen again and sent without marks: a plain image, two blobs, no "Marked".
    pcp.locator("#img-file").set_input_files(str(photo))
    pcp.locator("#markup-canvas").wait_for()
    assert pcp.locator("#markup-list li").count() == 0
    pcp.get_by_role("button", name="Send image").click()
    pcp.locator("#img-status", has_text="Image sent").wait_for()
    item = pcp.locator("li.message.own").last
    item.locator("img.thumb[src^='blob:']").wait_for()
    assert item.locator(".badge.marked").count() == 0
    assert item.get_by_role("button", name="Show original").count() == 0
    assert image_headers(state.case_id) == [2]
    problems.assert_none()
