"""Sign the chain head and write it as an anchor file for an auditor to keep off the
server; ``audit_verify --anchor FILE`` later checks that the chain still holds it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser

from collab.audit import conf, keys
from collab.audit.anchors import anchor_document
from collab.audit.management.commands.audit_checkpoint import key_from_options, key_option
from collab.audit.models import AuditAction
from collab.audit.services import audit_record, checkpoint_sign
from collab.audit.verify import chain_verify


class Command(BaseCommand):
    help = "Sign the audit chain head and write it as an anchor file (JSON) to keep elsewhere."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--output", "-o", required=True, help="new file to write")
        key_option(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        output = Path(options["output"])
        if output.exists():
            raise CommandError(f"{output} exists; anchors are never overwritten")
        key = key_from_options(options)
        trusted = None
        if key is not None:
            # The signer trusts its own key and the configured ones, not the app's.
            trusted = [*conf.trusted_public_keys(), keys.public_key_b64(key)]
        report = chain_verify(trusted=trusted)
        if not report.ok:
            raise CommandError(f"the chain does not verify, no anchor: {report.problems[0]}")
        try:
            checkpoint = checkpoint_sign(key=key)
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from exc
        audit_record(
            action=AuditAction.CHECKPOINT_SIGNED,
            target="audit:anchor",
            details={"seq": checkpoint.seq, "hash": checkpoint.event_hash},
        )
        text = json.dumps(anchor_document(checkpoint), indent=1, sort_keys=True) + "\n"
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        self.stdout.write(
            f"anchor at seq {checkpoint.seq} hash {checkpoint.event_hash} written to {output}; "
            f"public key {checkpoint.public_key}"
        )
