"""Walk the hash chain and the signed checkpoints; describe what does not fit.

Each stored event must (1) link to the previous event's hash, (2) sit at the next
sequence number and (3) hash to its stored value. When a link breaks, the hash it
points at tells what happened: a hash no row has means rows are missing, an earlier
row means the rows between were inserted, a later row means rows were reordered.
The head row and the checkpoints catch changes at the end of the chain.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum

from django.core.exceptions import ImproperlyConfigured

from collab.audit import canonical, conf, keys
from collab.audit.models import GENESIS_HASH, AuditCheckpoint, AuditEvent, AuditHead


class ProblemKind(Enum):
    ALTERED = "altered"
    MISSING = "missing"
    INSERTED = "inserted"
    REORDERED = "reordered"
    CHECKPOINT = "checkpoint"


@dataclass(frozen=True)
class Problem:
    kind: ProblemKind
    seq: int | None
    description: str

    def __str__(self) -> str:
        return f"{self.kind.value}: {self.description}"


@dataclass
class Report:
    events: int = 0
    checkpoints: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def event_fields(event: AuditEvent) -> canonical.EventFields:
    return canonical.EventFields(
        seq=event.seq,
        prev_hash=event.prev_hash,
        recorded_at=event.recorded_at,
        actor_id=event.actor_id,
        device_id=event.device_id,
        action=event.action,
        outcome=event.outcome,
        reason=event.reason,
        case_id=event.case_id,
        target=event.target,
        client_address=event.client_address,
        user_agent=event.user_agent,
        details=event.details,
    )


def _seq_of_hash(value: str, *, exclude_pk: int) -> int | None:
    # Only asked when a link breaks, so an unindexed lookup is acceptable.
    row = AuditEvent.objects.filter(hash=value).exclude(pk=exclude_pk).values("seq").first()
    return None if row is None else int(row["seq"])


def _link_problem(event: AuditEvent, prev_seq: int) -> Problem:
    linked = _seq_of_hash(event.prev_hash, exclude_pk=event.pk)
    if linked is None:
        if event.seq > prev_seq + 1:
            span = _span(prev_seq + 1, event.seq - 1)
            return Problem(ProblemKind.MISSING, prev_seq + 1, f"{span} missing from the chain")
        return Problem(
            ProblemKind.MISSING,
            event.seq,
            f"the event before seq {event.seq} is missing: it links to a hash no stored event has",
        )
    if linked < prev_seq:
        span = _span(linked + 1, prev_seq)
        return Problem(
            ProblemKind.INSERTED,
            linked + 1,
            f"{span} inserted: not part of the chain (seq {event.seq} links to seq {linked})",
        )
    return Problem(
        ProblemKind.REORDERED,
        event.seq,
        f"event seq {event.seq} reordered: in the chain it follows seq {linked}",
    )


def _span(first: int, last: int) -> str:
    return f"event seq {first}" if first == last else f"events seq {first}..{last}"


def _anchor(first: AuditEvent, checkpoints: list[AuditCheckpoint], report: Report) -> None:
    """A chain that does not start at 1 must start at a signed archive anchor."""
    if first.seq == 1 and first.prev_hash == GENESIS_HASH:
        return
    for checkpoint in checkpoints:
        if checkpoint.seq == first.seq - 1 and checkpoint.event_hash == first.prev_hash:
            return
    report.problems.append(
        Problem(
            ProblemKind.MISSING,
            1,
            f"{_span(1, first.seq - 1)} missing: the chain starts at seq {first.seq} "
            "without a checkpoint anchoring the archived part",
        )
        if first.seq > 1
        else Problem(ProblemKind.ALTERED, first.seq, "event seq 1 does not start the chain")
    )


def _walk(
    events: Iterable[AuditEvent], checkpoints: list[AuditCheckpoint], report: Report
) -> tuple[dict[int, str], str | None]:
    wanted = {c.seq for c in checkpoints}
    seen: dict[int, str] = {}
    prev_seq: int | None = None
    prev_hash = ""
    for event in events:
        report.events += 1
        if prev_seq is None:
            report.first_seq = event.seq
            _anchor(event, checkpoints, report)
            prev_seq, prev_hash = event.seq - 1, event.prev_hash
        if event.seq in wanted:
            seen[event.seq] = event.hash
        if event.prev_hash != prev_hash:
            report.problems.append(_link_problem(event, prev_seq))
        elif event.seq != prev_seq + 1:
            report.problems.append(
                Problem(
                    ProblemKind.REORDERED,
                    event.seq,
                    f"event seq {event.seq} renumbered: in the chain it follows seq {prev_seq}",
                )
            )
        elif canonical.event_hash(event_fields(event)) != event.hash:
            report.problems.append(
                Problem(
                    ProblemKind.ALTERED,
                    event.seq,
                    f"event seq {event.seq} altered: its content does not match its hash",
                )
            )
        prev_seq, prev_hash = event.seq, event.hash
        report.last_seq = event.seq
    return seen, (prev_hash if report.events else None)


def _check_head(report: Report, last_hash: str | None) -> None:
    head = AuditHead.objects.filter(pk=1).first()
    last = report.last_seq or 0
    if head is None:
        if report.events:
            report.problems.append(
                Problem(ProblemKind.MISSING, None, "the chain head row is missing")
            )
        return
    if head.seq > last:
        report.problems.append(
            Problem(
                ProblemKind.MISSING,
                last + 1,
                f"{_span(last + 1, head.seq)} missing: the chain head is at seq {head.seq}",
            )
        )
    elif head.seq < last:
        report.problems.append(
            Problem(
                ProblemKind.INSERTED,
                head.seq + 1,
                f"{_span(head.seq + 1, last)} inserted beyond the chain head (seq {head.seq})",
            )
        )
    elif last_hash is not None and head.hash != last_hash:
        report.problems.append(
            Problem(
                ProblemKind.ALTERED, last, f"event seq {last} differs from the recorded chain head"
            )
        )


def _trusted_keys(report: Report) -> set[str]:
    trusted = set(conf.trusted_public_keys())
    try:
        trusted.add(keys.public_key_b64(keys.signing_key()))
    except ImproperlyConfigured as exc:
        if not trusted:
            report.problems.append(
                Problem(ProblemKind.CHECKPOINT, None, f"cannot check signatures: {exc}")
            )
    return trusted


def _check_checkpoints(
    checkpoints: list[AuditCheckpoint], seen: dict[int, str], report: Report
) -> None:
    trusted = _trusted_keys(report)
    first = report.first_seq if report.first_seq is not None else 1
    for cp in checkpoints:
        report.checkpoints += 1
        label = f"checkpoint {cp.pk} at seq {cp.seq}"
        message = canonical.checkpoint_bytes(
            seq=cp.seq, event_hash=cp.event_hash, signed_at=cp.signed_at, reason=cp.reason
        )
        if trusted and cp.public_key not in trusted:
            report.problems.append(
                Problem(ProblemKind.CHECKPOINT, cp.seq, f"{label} is signed by an untrusted key")
            )
        elif not keys.signature_valid(
            public_key=cp.public_key, message=message, signature=cp.signature
        ):
            report.problems.append(
                Problem(ProblemKind.CHECKPOINT, cp.seq, f"{label} has a bad signature")
            )
        if cp.seq < first:
            continue  # archived (or the archive anchor, checked with the first event)
        if cp.seq not in seen:
            report.problems.append(
                Problem(
                    ProblemKind.MISSING,
                    cp.seq,
                    f"event seq {cp.seq} missing: {label} signs it but it is not stored",
                )
            )
        elif seen[cp.seq] != cp.event_hash:
            report.problems.append(
                Problem(
                    ProblemKind.CHECKPOINT,
                    cp.seq,
                    f"{label} does not match the chain: event seq {cp.seq} has another hash",
                )
            )


def chain_verify() -> Report:
    """Check the whole stored chain and every checkpoint; an empty report is good."""
    report = Report()
    checkpoints = list(AuditCheckpoint.objects.order_by("seq", "id"))
    events = AuditEvent.objects.order_by("seq").iterator(chunk_size=2000)
    seen, last_hash = _walk(events, checkpoints, report)
    _check_head(report, last_hash)
    _check_checkpoints(checkpoints, seen, report)
    return report
