"""The marking flags of ``collab-client send-image`` and how a marked image is listed."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from collab.client.markup import SPEC_HELP, parse_mark

if TYPE_CHECKING:
    from collab.client.sdk import Received

_HELP = {
    "arrow": "draw an arrow from x1,y1 to its head at x2,y2",
    "circle": "draw a circle of radius r around x,y",
    "label": "write TEXT with its top left at x,y",
    "blur": "blur the region (faces, tattoos, name bands)",
    "pixelate": "pixelate the region",
}


class _MarkAction(argparse.Action):
    """Keeps every mark flag in one list, in the order given: (kind, spec)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: str | Sequence[Any] | None, option_string: str | None = None) -> None:
        marks = list(getattr(namespace, self.dest, None) or [])
        marks.append((self.metavar_kind, str(values)))
        setattr(namespace, self.dest, marks)

    metavar_kind = ""


def add_mark_arguments(parser: argparse.ArgumentParser) -> None:
    """--blur/--pixelate x,y,w,h, --arrow x1,y1,x2,y2, --circle x,y,r, --label x,y,TEXT,
    --note TEXT, --with-original. Coordinates are whole pixels of the displayed image."""
    group = parser.add_argument_group(
        "marking", "applied before encryption; pixels of the image as displayed, from the "
        "top left; regions are blurred or pixelated first, then the drawings go on top")
    for kind, spec in SPEC_HELP.items():
        action = type(f"_{kind}", (_MarkAction,), {"metavar_kind": kind})
        group.add_argument(f"--{kind}", dest="marks", action=action, metavar=spec.upper(),
                           default=[], help=f"{_HELP[kind]} (repeatable)")
    group.add_argument("--note", default="", help="a size/measurement note sent with the image")
    group.add_argument("--with-original", action="store_true",
                       help="also send the unmarked original (not by default)")


def mark_options(args: argparse.Namespace) -> dict[str, Any]:
    """send_image's keyword arguments from the parsed flags (raises ImageError bad_mark)."""
    return {"marks": [parse_mark(kind, spec) for kind, spec in args.marks],
            "note": args.note, "send_original": args.with_original}


def marking_summary(msg: Received) -> str:
    """", marked; note: ...; original: fetch-image --original" as far as they apply."""
    from collab.client.cli import printable

    parts = ", marked" if msg.image_marked else ""
    if msg.image_note:
        parts += f"; note: {printable(msg.image_note)}"
    if msg.image(original=True) is not None:
        parts += "; original: fetch-image --original"
    return parts
