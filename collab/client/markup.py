"""Image marking before encryption: arrows, circles and text labels, blurred or pixelated
regions (faces, tattoos, name bands) and a size/measurement note.

Marks are drawn on the sanitised pixels (``images.decode_clean``: orientation applied,
metadata gone), so their coordinates are those of the picture as it is displayed, in
whole pixels from the top left. Regions are blurred or pixelated first and the arrows,
circles and labels drawn on top, whatever order they were given in, so a label is never
blurred away by a later region. The marked copy is what is encoded and encrypted; the
unmarked original goes only when asked (``send_original``), as a second full image.
The browser (frontend/static/collab/app/markup.js) applies the same rules and codes.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from PIL import Image, ImageDraw, ImageFilter, ImageFont

from collab.client.errors import ImageError
from collab.client.images import SanitisedImage, decode_clean, encode_sanitised

MAX_MARKS = 64
MAX_LABEL_CHARS = 120
MAX_NOTE_CHARS = 500
MIN_REGION = 2
COLOUR = (255, 214, 0)  # marks: yellow with a dark outline, visible on skin and on black
OUTLINE = (0, 0, 0)
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


@dataclass(frozen=True)
class Arrow:
    x1: int
    y1: int
    x2: int  # the head
    y2: int
    kind: str = "arrow"


@dataclass(frozen=True)
class Circle:
    x: int
    y: int
    r: int
    kind: str = "circle"


@dataclass(frozen=True)
class Label:
    x: int  # top left of the text
    y: int
    text: str
    kind: str = "label"


@dataclass(frozen=True)
class Blur:
    x: int
    y: int
    w: int
    h: int
    kind: str = "blur"


@dataclass(frozen=True)
class Pixelate:
    x: int
    y: int
    w: int
    h: int
    kind: str = "pixelate"


Mark = Arrow | Circle | Label | Blur | Pixelate
_KINDS: dict[str, tuple[type[Any], tuple[str, ...]]] = {
    "arrow": (Arrow, ("x1", "y1", "x2", "y2")),
    "circle": (Circle, ("x", "y", "r")),
    "label": (Label, ("x", "y", "text")),
    "blur": (Blur, ("x", "y", "w", "h")),
    "pixelate": (Pixelate, ("x", "y", "w", "h")),
}
SPEC_HELP = {"arrow": "x1,y1,x2,y2", "circle": "x,y,r", "label": "x,y,TEXT",
             "blur": "x,y,w,h", "pixelate": "x,y,w,h"}


def _bad(message: str) -> ImageError:
    return ImageError(message, code="bad_mark")


def _whole(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(f"{what} must be a whole number of pixels, got {value!r}")
    if value < 0:
        raise _bad(f"{what} must not be negative, got {value}")
    return int(value)


def parse_mark(kind: str, spec: str) -> Mark:
    """One mark from its command-line form (``--blur 10,20,50,40``); raises ImageError."""
    if kind not in _KINDS:
        raise _bad(f"unknown mark {kind!r} (known: {', '.join(_KINDS)})")
    cls, fields = _KINDS[kind]
    parts = spec.split(",", len(fields) - 1) if kind == "label" else spec.split(",")
    if len(parts) != len(fields):
        raise _bad(f"--{kind} expects {SPEC_HELP[kind]}, got {spec!r}")
    values: list[Any] = []
    for name, part in zip(fields, parts, strict=True):
        if name == "text":
            values.append(part)
            continue
        if not re.fullmatch(r"\s*\d+\s*", part):
            raise _bad(f"--{kind} expects {SPEC_HELP[kind]} in whole pixels, got {spec!r}")
        values.append(int(part))
    return cls(*values)  # type: ignore[no-any-return]


def mark_from_dict(data: Mapping[str, Any]) -> Mark:
    """A mark from its JSON form (``{"kind": "blur", "x": 1, ...}``), as the browser keeps them."""
    kind = data.get("kind")
    if not isinstance(kind, str) or kind not in _KINDS:
        raise _bad(f"unknown mark {kind!r} (known: {', '.join(_KINDS)})")
    cls, fields = _KINDS[kind]
    missing = [f for f in fields if f not in data]
    if missing:
        raise _bad(f"{kind} mark lacks {', '.join(missing)}")
    return cls(*(data[f] for f in fields))  # type: ignore[no-any-return]


def check_marks(marks: Sequence[Mark], width: int, height: int) -> None:
    """Every mark lies on the ``width`` x ``height`` picture; raises ImageError(bad_mark)."""
    if len(marks) > MAX_MARKS:
        raise _bad(f"at most {MAX_MARKS} marks, got {len(marks)}")
    size = f"the {width}x{height} image (x 0..{width - 1}, y 0..{height - 1})"

    def inside(x: int, y: int, what: str) -> None:
        if x >= width or y >= height:
            raise _bad(f"{what} ({x},{y}) lies outside {size}")

    for n, mark in enumerate(marks, 1):
        name = f"mark {n} ({getattr(mark, 'kind', type(mark).__name__)})"
        if isinstance(mark, Blur | Pixelate):
            x, y = _whole(mark.x, f"{name} x"), _whole(mark.y, f"{name} y")
            w, h = _whole(mark.w, f"{name} width"), _whole(mark.h, f"{name} height")
            if w < MIN_REGION or h < MIN_REGION:
                raise _bad(f"{name} must be at least {MIN_REGION}x{MIN_REGION} pixels, "
                           f"got {w}x{h}")
            if x + w > width or y + h > height:
                raise _bad(f"{name} {x},{y},{w},{h} does not fit {size}")
        elif isinstance(mark, Arrow):
            inside(_whole(mark.x1, f"{name} x1"), _whole(mark.y1, f"{name} y1"), f"{name} tail")
            inside(_whole(mark.x2, f"{name} x2"), _whole(mark.y2, f"{name} y2"), f"{name} head")
            if (mark.x1, mark.y1) == (mark.x2, mark.y2):
                raise _bad(f"{name} starts and ends at the same point")
        elif isinstance(mark, Circle):
            inside(_whole(mark.x, f"{name} x"), _whole(mark.y, f"{name} y"), f"{name} centre")
            r = _whole(mark.r, f"{name} radius")
            if r < MIN_REGION or r > max(width, height):
                raise _bad(f"{name} radius must be {MIN_REGION}..{max(width, height)}, got {r}")
        elif isinstance(mark, Label):
            inside(_whole(mark.x, f"{name} x"), _whole(mark.y, f"{name} y"), f"{name} position")
            if not isinstance(mark.text, str) or not mark.text.strip():
                raise _bad(f"{name} has no text")
            if len(mark.text) > MAX_LABEL_CHARS or _CONTROLS.search(mark.text):
                raise _bad(f"{name} text must be one line of at most {MAX_LABEL_CHARS} "
                           "characters")
        else:
            raise _bad(f"{name} is not a mark (use Arrow, Circle, Label, Blur or Pixelate)")


def check_note(note: str) -> str:
    """The size/measurement note, stripped; one line of at most MAX_NOTE_CHARS."""
    if not isinstance(note, str):
        raise ImageError("the note must be text", code="bad_note")
    note = note.strip()
    if len(note) > MAX_NOTE_CHARS or _CONTROLS.search(note):
        raise ImageError(f"the note must be one line of at most {MAX_NOTE_CHARS} characters",
                         code="bad_note")
    return note


def block_size(w: int, h: int) -> int:
    """Pixelate block (and blur sampling) size: about six blocks across the short side,
    never less than 8 pixels, so a face's features do not survive."""
    return max(8, math.ceil(min(w, h) / 6))


def stroke_width(width: int, height: int) -> int:
    return max(2, round(max(width, height) / 250))


def _coarse(region: Image.Image, block: int) -> Image.Image:
    w, h = region.size
    return region.resize((max(1, math.ceil(w / block)), max(1, math.ceil(h / block))),
                         Image.Resampling.BOX)


def _blur(img: Image.Image, m: Blur) -> None:
    box = (m.x, m.y, m.x + m.w, m.y + m.h)
    block = block_size(m.w, m.h)
    # Down to a few samples first: what is left cannot be sharpened back into a face.
    smooth = _coarse(img.crop(box), block).resize((m.w, m.h), Image.Resampling.BICUBIC)
    img.paste(smooth.filter(ImageFilter.GaussianBlur(block / 2)), box[:2])


def _pixelate(img: Image.Image, m: Pixelate) -> None:
    block = block_size(m.w, m.h)
    small = _coarse(img.crop((m.x, m.y, m.x + m.w, m.y + m.h)), block)
    blocks = small.resize((small.width * block, small.height * block), Image.Resampling.NEAREST)
    img.paste(blocks.crop((0, 0, m.w, m.h)), (m.x, m.y))


def _colour(img: Image.Image, rgb: tuple[int, int, int]) -> tuple[int, ...]:
    return (*rgb, 255) if img.mode == "RGBA" else rgb


def _arrow(draw: ImageDraw.ImageDraw, m: Arrow, lw: int, fg: tuple[int, ...],
           bg: tuple[int, ...]) -> None:
    length = math.hypot(m.x2 - m.x1, m.y2 - m.y1)
    head = min(max(12.0, lw * 5.0), length * 0.6)
    angle = math.atan2(m.y2 - m.y1, m.x2 - m.x1)
    wings = [(m.x2 - head * math.cos(angle + s), m.y2 - head * math.sin(angle + s))
             for s in (0.45, -0.45)]
    tip = [(float(m.x2), float(m.y2)), wings[0], wings[1]]
    for colour, extra in ((bg, 2), (fg, 0)):
        draw.line([(m.x1, m.y1), (m.x2, m.y2)], fill=colour, width=lw + extra)
        draw.polygon(tip, fill=colour, outline=colour, width=1 + extra)


def _label_font(width: int, height: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=max(14, round(max(width, height) / 30)))


def apply_marks(img: Image.Image, marks: Sequence[Mark]) -> Image.Image:
    """A copy of ``img`` with ``marks`` applied (checked first); regions before drawings."""
    check_marks(marks, img.width, img.height)
    out = img.copy()
    for mark in marks:
        if isinstance(mark, Blur):
            _blur(out, mark)
        elif isinstance(mark, Pixelate):
            _pixelate(out, mark)
    draw = ImageDraw.Draw(out)
    lw = stroke_width(out.width, out.height)
    fg, bg = _colour(out, COLOUR), _colour(out, OUTLINE)
    font = _label_font(out.width, out.height)
    for mark in marks:
        if isinstance(mark, Arrow):
            _arrow(draw, mark, lw, fg, bg)
        elif isinstance(mark, Circle):
            bbox = (mark.x - mark.r, mark.y - mark.r, mark.x + mark.r, mark.y + mark.r)
            draw.ellipse(bbox, outline=bg, width=lw + 2)
            draw.ellipse(bbox, outline=fg, width=lw)
        elif isinstance(mark, Label):
            draw.text((mark.x, mark.y), mark.text, fill=fg, font=font,
                      stroke_width=max(1, lw // 2 + 1), stroke_fill=bg)
    return out


@dataclass(frozen=True)
class PreparedImage:
    """What send_image encrypts: the (marked) image and thumbnail, the unmarked original
    when asked for, and the body fields that describe them."""

    image: SanitisedImage
    original: SanitisedImage | None
    marked: bool
    note: str

    def body_fields(self, original_index: int | None) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        if self.marked:
            fields["marked"] = True
        if self.note:
            fields["note"] = self.note
        if self.original is not None and original_index is not None:
            fields["original"] = original_index
        return fields


def prepare_image(data: bytes, *, marks: Sequence[Mark] = (), note: str = "",
                  send_original: bool = False) -> PreparedImage:
    """Sanitise ``data`` (images.decode_clean), apply ``marks`` to its clean pixels and
    encode the result; with ``send_original`` encode the unmarked pixels too. Marks and
    note are checked before anything is encoded. Raises ImageError / UsageError."""
    note = check_note(note)
    if send_original and not marks:
        raise ImageError("an original is sent only beside a marked image (add a mark)",
                         code="original_without_marks")
    clean, alpha, fmt = decode_clean(data)
    marked = apply_marks(clean, marks) if marks else clean
    original = encode_sanitised(clean, alpha, fmt) if send_original else None
    return PreparedImage(encode_sanitised(marked, alpha, fmt), original, bool(marks), note)


def fingerprint(marks: Sequence[Mark], note: str, send_original: bool) -> bytes:
    """What the marking adds to an image's outbox key (empty when there is none, so the
    key of a plain image stays what it was)."""
    if not marks and not note and not send_original:
        return b""
    described = {"marks": [asdict(m) for m in marks], "note": note, "original": send_original}
    return json.dumps(described, sort_keys=True).encode()
