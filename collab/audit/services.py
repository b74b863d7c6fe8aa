"""Writing the audit trail: the only code that appends events or checkpoints.

Callers record from inside the transaction that makes the change, so the event
commits or rolls back with it; outside a transaction the event commits at once.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from axes.helpers import get_client_ip_address
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone
from nacl.signing import SigningKey

from collab.audit import archives, canonical, conf, fhir, keys, selectors
from collab.audit.anchors import checkpoint_statement
from collab.audit.filters import AuditFilter
from collab.audit.models import (
    GENESIS_HASH,
    AuditAction,
    AuditCheckpoint,
    AuditEvent,
    AuditHead,
    CheckpointReason,
    Outcome,
)
from collab.audit.verify import event_fields

if TYPE_CHECKING:
    from collab.accounts.models import User

__all__ = [
    "AuditAction",
    "AuditRecord",
    "Outcome",
    "RequestMeta",
    "audit_archive",
    "audit_export",
    "audit_record",
    "audit_record_many",
    "checkpoint_sign",
]

security_log = logging.getLogger("collab.security")

# Detail keys that would mean content or a secret reached the audit trail.
_FORBIDDEN_DETAIL_KEYS = frozenset(
    {
        "body",
        "ciphertext",
        "content",
        "cookie",
        "otp_code",
        "password",
        "plaintext",
        "secret",
        "session_key",
        "token",
    }
)


def _clean_address(value: str | None) -> str:
    if not value:
        return ""
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return ""


@dataclass(frozen=True)
class RequestMeta:
    """Where a request came from: client address and user agent, nothing else."""

    address: str = ""
    user_agent: str = ""

    @classmethod
    def from_request(cls, request: HttpRequest) -> RequestMeta:
        # The same address resolution (proxy count) as the sign-in lockout uses.
        address = get_client_ip_address(request) or request.META.get("REMOTE_ADDR", "")
        return cls(
            address=_clean_address(address),
            user_agent=str(request.META.get("HTTP_USER_AGENT", ""))[:512],
        )

    @classmethod
    def from_scope(cls, scope: Mapping[str, Any]) -> RequestMeta:
        """A socket's: resolved from its handshake headers exactly as for HTTP (the
        scope's client is only the peer, a proxy's address behind one)."""
        client: Sequence[Any] = scope.get("client") or ()
        request = HttpRequest()
        request.META["REMOTE_ADDR"] = str(client[0]) if client else ""
        for name, value in scope.get("headers") or ():
            key = bytes(name).decode("latin-1").upper().replace("-", "_")
            if key in ("USER_AGENT", "X_FORWARDED_FOR"):
                meta_key, text = f"HTTP_{key}", bytes(value).decode("latin-1")
                # Repeated header lines are joined with "," as Django's ASGIRequest does,
                # so the proxy count picks the same address for sockets as for HTTP.
                previous = request.META.get(meta_key)
                request.META[meta_key] = f"{previous},{text}" if previous else text
        return cls.from_request(request)


def _checked_details(details: Mapping[str, Any] | None) -> canonical.JsonValue:
    normalised = canonical.normalise_details(dict(details or {}))
    assert isinstance(normalised, dict)  # noqa: S101 - a mapping normalises to a dict
    for key in normalised:
        if key.lower() in _FORBIDDEN_DETAIL_KEYS:
            raise ValueError(f"audit details may not carry {key!r}: no content or secrets")
    if len(canonical.encode_value(normalised)) > canonical.MAX_DETAILS_BYTES:
        raise ValueError("audit details are too large")
    return normalised


def _locked_head() -> AuditHead:
    """The head row, locked until the transaction ends: writers queue here."""
    head = AuditHead.objects.select_for_update().filter(pk=1).first()
    if head is not None:
        return head
    # First event (or a flushed test database): start from the newest stored event.
    last = AuditEvent.objects.order_by("-seq").first()
    AuditHead.objects.bulk_create(
        [
            AuditHead(
                pk=1,
                seq=last.seq if last else 0,
                hash=last.hash if last else GENESIS_HASH,
            )
        ],
        ignore_conflicts=True,
    )
    return AuditHead.objects.select_for_update().get(pk=1)


@dataclass(frozen=True)
class AuditRecord:
    """One event to append: exactly the keyword arguments of ``audit_record``."""

    action: AuditAction
    actor: User | None = None
    device_id: uuid.UUID | None = None
    outcome: Outcome = Outcome.SUCCESS
    reason: str = ""
    case_id: uuid.UUID | None = None
    target: str = ""
    meta: RequestMeta | None = None
    details: Mapping[str, Any] | None = None


def audit_record(
    *,
    action: AuditAction,
    actor: User | None = None,
    device_id: uuid.UUID | None = None,
    outcome: Outcome = Outcome.SUCCESS,
    reason: str = "",
    case_id: uuid.UUID | None = None,
    target: str = "",
    meta: RequestMeta | None = None,
    details: Mapping[str, Any] | None = None,
) -> AuditEvent:
    """Append one event to the chain. Never pass message content, tokens or secrets."""
    record = AuditRecord(
        action=action,
        actor=actor,
        device_id=device_id,
        outcome=outcome,
        reason=reason,
        case_id=case_id,
        target=target,
        meta=meta,
        details=details,
    )
    return audit_record_many([record])[0]


def audit_record_many(records: Sequence[AuditRecord]) -> list[AuditEvent]:
    """Append events in order under ONE head lock: chained in Python, one insert, one
    head update, a periodic checkpoint at every multiple of checkpoint_every() crossed.
    The chain is sealed in the caller's transaction, so a commit never leaves it open."""
    if not records:
        return []
    # Refused details raise before the lock is taken and before anything is written.
    cleaned = [_checked_details(record.details) for record in records]
    with transaction.atomic():
        head = _locked_head()
        recorded_at = timezone.now()
        seq, prev_hash = head.seq, head.hash
        events = []
        for record, clean_details in zip(records, cleaned, strict=True):
            meta = record.meta or RequestMeta()
            seq += 1
            fields = canonical.EventFields(
                seq=seq,
                prev_hash=prev_hash,
                recorded_at=recorded_at,
                actor_id=record.actor.pk if record.actor is not None else None,
                device_id=record.device_id,
                action=AuditAction(record.action).value,
                outcome=Outcome(record.outcome).value,
                reason=record.reason[:255],
                case_id=record.case_id,
                target=record.target[:255],
                client_address=_clean_address(meta.address),
                user_agent=meta.user_agent[:512],
                details=clean_details,
            )
            prev_hash = canonical.event_hash(fields)
            events.append(
                AuditEvent(
                    seq=fields.seq,
                    prev_hash=fields.prev_hash,
                    recorded_at=fields.recorded_at,
                    actor=record.actor,
                    device_id=record.device_id,
                    action=fields.action,
                    outcome=fields.outcome,
                    reason=fields.reason,
                    case_id=record.case_id,
                    target=fields.target,
                    client_address=fields.client_address,
                    user_agent=fields.user_agent,
                    details=clean_details,
                    hash=prev_hash,
                )
            )
        AuditEvent.objects.bulk_create(events)
        head.seq, head.hash = seq, prev_hash
        head.save(update_fields=["seq", "hash"])
        every = conf.checkpoint_every()
        if every > 0:
            for event in events:
                if event.seq % every == 0:
                    _periodic_checkpoint(event)
    return events


def _periodic_checkpoint(event: AuditEvent) -> None:
    try:
        if conf.signer_external():
            return  # the application holds no key; the external signing job signs
        key = keys.signing_key()
    except ImproperlyConfigured as exc:
        # A missing key must not stop clinical work; the system check refuses deploys.
        security_log.error("audit checkpoint not signed: %s", exc)
        return
    _checkpoint_create(
        key=key, seq=event.seq, event_hash=event.hash, reason=CheckpointReason.PERIODIC
    )


def _checkpoint_create(
    *, key: SigningKey, seq: int, event_hash: str, reason: CheckpointReason
) -> AuditCheckpoint:
    signed_at = timezone.now()
    message = canonical.checkpoint_bytes(
        seq=seq, event_hash=event_hash, signed_at=signed_at, reason=reason.value
    )
    checkpoint = AuditCheckpoint(
        seq=seq,
        event_hash=event_hash,
        signed_at=signed_at,
        reason=reason.value,
        public_key=keys.public_key_b64(key),
        signature=keys.sign(key, message),
    )
    checkpoint.save()
    return checkpoint


def checkpoint_sign(
    *,
    reason: CheckpointReason = CheckpointReason.MANUAL,
    at_seq: int | None = None,
    key: SigningKey | None = None,
) -> AuditCheckpoint:
    """Sign the chain head (or the event at ``at_seq``) with ``key`` (an external
    signer's, from --key-file) or the application's own. Refuses without a key."""
    key = key if key is not None else keys.signing_key()
    with transaction.atomic():
        head = _locked_head()
        if at_seq is None or at_seq == head.seq:
            seq, event_hash = head.seq, head.hash
        else:
            event = AuditEvent.objects.filter(seq=at_seq).first()
            if event is None:
                raise ValueError(f"no audit event with seq {at_seq}")
            seq, event_hash = event.seq, event.hash
        return _checkpoint_create(key=key, seq=seq, event_hash=event_hash, reason=reason)


def audit_export(
    *, flt: AuditFilter, actor: User | None, meta: RequestMeta | None = None
) -> dict[str, Any]:
    """The matching events as a FHIR Bundle; the export itself is audited."""
    with transaction.atomic():
        events = list(selectors.events_matching(flt))
        audit_record(
            action=AuditAction.AUDIT_EXPORTED,
            actor=actor,
            case_id=flt.case_id,
            target="audit:export",
            meta=meta,
            details={**flt.as_details(), "count": len(events)},
        )
    return fhir.bundle(events)


@dataclass(frozen=True)
class ArchiveResult:
    count: int
    last_seq: int
    last_hash: str
    checkpoint: AuditCheckpoint | None


def audit_archive(
    *, before: datetime, output: Path, key: SigningKey | None = None
) -> ArchiveResult:
    """Copy events older than ``before`` to a new JSON-lines file with a signed anchor
    (format in collab.audit.archives; signed with ``key`` or the application's own).

    Rows stay in the database: removing them needs the trigger disabled by a DBA,
    after which audit_verify starts from the anchor checkpoint signed here.
    """
    if key is None and conf.signer_external():
        # Refuse before writing: an archive without its signed anchor line is incomplete.
        key = keys.signing_key()
    events = AuditEvent.objects.filter(recorded_at__lt=before).order_by("seq")
    with output.open("x", encoding="utf-8") as handle:
        handle.write(json.dumps(archives.header_line(before=before)) + "\n")
        count, last_seq, last_hash = 0, 0, GENESIS_HASH
        for event in events.iterator(chunk_size=2000):
            line = archives.event_line(event_fields(event), event_hash=event.hash)
            handle.write(json.dumps(line, sort_keys=True) + "\n")
            count, last_seq, last_hash = count + 1, event.seq, event.hash
        checkpoint = None
        if count:
            checkpoint = checkpoint_sign(reason=CheckpointReason.ARCHIVE, at_seq=last_seq, key=key)
        anchor = archives.anchor_line(
            seq=last_seq,
            event_hash=last_hash,
            count=count,
            checkpoint=None if checkpoint is None else checkpoint_statement(checkpoint),
        )
        handle.write(json.dumps(anchor, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return ArchiveResult(count=count, last_seq=last_seq, last_hash=last_hash, checkpoint=checkpoint)
