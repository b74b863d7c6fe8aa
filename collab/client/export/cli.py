"""``collab-client export CASE --format fhir|html [-o FILE]``: the whole consult, read and
decrypted on this device, written to a file (mode 0600: it holds the clinical content)
or with ``-o -`` to standard output. Progress goes to stderr."""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from tqdm import tqdm

from collab.client.errors import UsageError
from collab.client.export.fhir import build_bundle
from collab.client.export.html import build_html
from collab.client.export.model import gather

if TYPE_CHECKING:
    from collab.client.sdk import CollabClient


def _uuid(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a UUID: {text!r}") from None


def add_parser(sub: Any) -> None:
    p = sub.add_parser("export", help="export the whole consult (FHIR R4 Bundle or printable "
                                      "HTML), decrypted on this device")
    p.add_argument("case", type=_uuid)
    p.add_argument("--format", choices=("fhir", "html"), required=True)
    p.add_argument("-o", "--out", default=None,
                   help="file to write (default case-<id>.fhir.json or .html; '-' for stdout)")


class _Bars:
    """One tqdm bar per stage (messages, images) on stderr; off when stderr is no tty."""

    def __init__(self) -> None:
        self.bars: dict[str, Any] = {}

    def __call__(self, done: int, total: int, what: str) -> None:
        bar = self.bars.get(what)
        if bar is None:
            bar = self.bars[what] = tqdm(total=total, desc=what, unit=" " + what, file=sys.stderr,
                                         disable=None, leave=False)
        bar.total = max(total, done)
        bar.n = done
        bar.refresh()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def run(client: CollabClient, args: argparse.Namespace, out: TextIO) -> None:
    bars = _Bars()
    try:
        export = gather(client, args.case, bars)
    finally:
        bars.close()
    if args.format == "fhir":
        # ASCII only: safe to print, and byte-for-byte the same JSON everywhere.
        text = json.dumps(build_bundle(export), indent=2, sort_keys=True) + "\n"
    else:
        text = build_html(export)
    if args.out == "-":
        out.write(text)
        return
    target = Path(args.out or f"case-{str(args.case)[:8]}."
                  f"{'fhir.json' if args.format == 'fhir' else 'html'}")
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as sink:
            sink.write(text)
    except OSError as error:
        raise UsageError(f"cannot write {target}: {error.strerror}", code="no_file") from None
    out.write(f"{target} ({args.format}, {len(export.messages)} messages, "
              f"{sum(len(m.images) for m in export.messages)} images)\n")
