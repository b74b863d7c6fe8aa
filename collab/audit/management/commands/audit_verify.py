"""Walk the audit chain (archive files, then the database), its checkpoints and any
anchors kept off the server; exit non-zero on the first problem found."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from collab.audit import keys
from collab.audit.anchors import AnchorError, anchor_load
from collab.audit.verify import Report, chain_verify


def _summary(report: Report) -> str:
    span = f"seq {report.first_seq}..{report.last_seq}" if report.events else "empty"
    parts = [f"{report.events} events ({span})"]
    if report.archive_files:
        parts.append(
            f"{report.archived_events} of them from {report.archive_files} archive files"
            + (f", {report.overlapping} overlapping copies identical" if report.overlapping else "")
        )
    parts.append(f"{report.checkpoints} checkpoints")
    if report.anchors:
        parts.append(f"{report.anchors} anchors")
    return ", ".join(parts) + f" verified; trusted keys: {report.trust}"


class Command(BaseCommand):
    help = "Verify the hash-chained audit trail, its archives, checkpoints and anchors."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--all", action="store_true", help="list every problem found")
        parser.add_argument(
            "--with-archives",
            nargs="+",
            action="extend",
            default=[],
            metavar="FILE_OR_DIR",
            help="archive files written by audit_archive (any order; a directory means "
            "every file in it), walked before the database",
        )
        parser.add_argument(
            "--anchor",
            action="append",
            default=[],
            metavar="FILE",
            help="an anchor file written by audit_anchor; repeatable",
        )
        parser.add_argument(
            "--trust-key",
            action="append",
            default=None,
            metavar="BASE64",
            help="a public key to trust instead of the server's configuration; repeatable",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        trusted: list[str] | None = options["trust_key"]
        for key in trusted or ():
            if not keys.public_key_valid(key) or len(key) != 44:
                raise CommandError(f"--trust-key {key!r} is not a base64 Ed25519 public key")
        paths = [Path(p) for p in options["with_archives"]]
        for path in paths:
            if not path.exists():
                raise CommandError(f"--with-archives {path}: no such file or directory")
        try:
            anchors = [anchor_load(Path(p)) for p in options["anchor"]]
        except AnchorError as exc:
            raise CommandError(str(exc)) from exc
        report = chain_verify(archives_given=paths, anchors=anchors, trusted=trusted)
        if report.ok:
            self.stdout.write(f"OK: {_summary(report)}")
            return
        shown = report.problems if options["all"] else report.problems[:1]
        for problem in shown:
            self.stderr.write(f"FAILED: {problem}")
        if len(report.problems) > len(shown):
            self.stderr.write(f"({len(report.problems) - len(shown)} more; use --all)")
        self.stderr.write(f"trusted keys: {report.trust}")
        raise SystemExit(1)
