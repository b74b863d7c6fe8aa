"""Sign the current chain head, after verifying the chain. Run from cron or a systemd
timer (see docs/audit.md); with COLLAB_AUDIT_SIGNER=external, as another user with
--key-file."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser
from nacl.signing import SigningKey

from collab.audit import conf, keys
from collab.audit.models import AuditAction, AuditEvent
from collab.audit.services import audit_record, checkpoint_sign
from collab.audit.verify import chain_verify

security_log = logging.getLogger("collab.security")


def key_option(parser: CommandParser) -> None:
    parser.add_argument(
        "--key-file",
        default="",
        help="sign with the base64 seed in this file (mode 0600, never generated) instead "
        "of the application's key: the external signer's way (docs/audit.md)",
    )


def key_from_options(options: dict[str, Any]) -> SigningKey | None:
    if not options["key_file"]:
        return None
    try:
        return keys.key_from_file(Path(options["key_file"]))
    except (ImproperlyConfigured, OSError) as exc:
        raise CommandError(str(exc)) from exc


def _check_memo(memo: Path, *, report_first: int | None) -> None:
    """The chain must still hold the event this signer signed last: a re-hashed chain
    whose checkpoints were deleted verifies on its own, but not against this memo."""
    try:
        text = memo.read_text(encoding="utf-8")
    except FileNotFoundError:
        return
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"cannot read {memo}: {exc}") from exc
    parts = text.split()
    if len(parts) != 2 or not parts[0].isdigit():
        raise CommandError(f"{memo} is not '<seq> <hash>'")
    seq, event_hash = int(parts[0]), parts[1]
    if report_first is not None and seq < report_first:
        return  # archived since: the chain verified from a trusted archive checkpoint
    event = AuditEvent.objects.filter(seq=seq).first()
    if event is None or event.hash != event_hash:
        found = "missing" if event is None else f"hash {event.hash}"
        message = (
            f"the chain was rewritten: this signer signed seq {seq} hash {event_hash}, "
            f"the chain now has {found}; no checkpoint signed"
        )
        security_log.error("audit checkpoint refused: %s", message)
        raise CommandError(message)


class Command(BaseCommand):
    help = "Sign an Ed25519 checkpoint over the audit chain head (seq, hash, time)."

    def add_arguments(self, parser: CommandParser) -> None:
        key_option(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        key = key_from_options(options)
        # Sign only a chain that verifies, as audit_anchor and audit_archive do: else a
        # rewritten chain (old checkpoints deleted) would get the off-host key's
        # signature on the next timer run. The signer trusts its own key and the
        # configured ones, not the application's.
        trusted = None if key is None else [*conf.trusted_public_keys(), keys.public_key_b64(key)]
        report = chain_verify(trusted=trusted)
        if not report.ok:
            security_log.error(
                "audit checkpoint refused: the chain does not verify: %s", report.problems[0]
            )
            raise CommandError(
                f"the chain does not verify, no checkpoint signed: {report.problems[0]}"
            )
        memo = None if key is None else Path(f"{options['key_file']}.last")
        if memo is not None:
            _check_memo(memo, report_first=report.first_seq)
        try:
            checkpoint = checkpoint_sign(key=key)
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from exc
        audit_record(
            action=AuditAction.CHECKPOINT_SIGNED,
            target="audit:checkpoint",
            details={"seq": checkpoint.seq, "hash": checkpoint.event_hash},
        )
        if memo is not None:
            # Kept beside the key, where the database's operator cannot write.
            memo.write_text(f"{checkpoint.seq} {checkpoint.event_hash}\n")
        self.stdout.write(f"signed checkpoint at seq {checkpoint.seq} hash {checkpoint.event_hash}")
