"""Walk the hash chain and the signed checkpoints; describe what does not fit.

Each event must (1) link to the previous event's hash, (2) sit at the next sequence
number and (3) hash to its stored value. When a link breaks, the hash it points at
tells what happened: a hash no event has means events are missing, an earlier event
means the events between were inserted, a later one means events were reordered.
The head row and the checkpoints catch changes at the end of the chain.

The chain may begin in archive files (collab.audit.archives) and continue in the
database: the files are sorted by their first seq and walked before the stored rows,
where copies overlap they must be identical, and every problem names its place (file
and line, or the database). Anchor files (collab.audit.anchors) and archive anchor
lines are signed statements the chain must still agree with.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from collab.audit import archives, canonical, conf, keys
from collab.audit.anchors import Anchor, AnchorError, Statement, statement_parse
from collab.audit.models import (
    GENESIS_HASH,
    AuditCheckpoint,
    AuditEvent,
    AuditHead,
    CheckpointReason,
)


class ProblemKind(Enum):
    ALTERED = "altered"
    MISSING = "missing"
    INSERTED = "inserted"
    REORDERED = "reordered"
    CHECKPOINT = "checkpoint"
    ANCHOR = "bad anchor"
    OVERLAP = "overlap"
    ORDER = "files out of order"


@dataclass(frozen=True)
class Problem:
    kind: ProblemKind
    seq: int | None
    description: str
    where: str = ""  # "<file> line N", "<file>", "database" or "anchor <file>"

    def __str__(self) -> str:
        if not self.where:
            return f"{self.kind.value}: {self.description}"
        place = "in the database" if self.where == "database" else f"at {self.where}"
        return f"{self.kind.value}: {self.description} ({place})"


@dataclass
class Report:
    events: int = 0  # chain positions walked (a second, overlapping copy is not counted)
    checkpoints: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    archived_events: int = 0
    archive_files: int = 0
    overlapping: int = 0
    anchors: int = 0
    trust: str = ""  # where the trusted public keys came from
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


def _span(first: int, last: int) -> str:
    return f"event seq {first}" if first == last else f"events seq {first}..{last}"


@dataclass(frozen=True)
class _Entry:
    """One copy of an event, from an archive line or a stored row."""

    seq: int
    prev_hash: str
    hash: str
    where: str
    fields: canonical.EventFields | None = None  # None: a line that is no event
    bad: str = ""
    pk: int | None = None


@dataclass
class _File:
    path: Path
    first_seq: int | None = None
    last_seq: int | None = None
    before: str = ""


def _trusted_keys(report: Report, given: Sequence[str] | None) -> set[str]:
    if given is not None:
        report.trust = f"keys given with --trust-key ({len(given)})"
        return set(given)
    trusted = set(conf.trusted_public_keys())
    sources = ["COLLAB_AUDIT_TRUSTED_KEYS"] if trusted else []
    try:
        trusted.add(keys.public_key_b64(keys.signing_key()))
        sources.append("the application's signing key")
    except ImproperlyConfigured as exc:
        if not trusted:
            report.problems.append(
                Problem(ProblemKind.CHECKPOINT, None, f"cannot check signatures: {exc}")
            )
    report.trust = " and ".join(sources) or "none (a signature by any key would pass)"
    return trusted


def _checkpoint_statement(cp: AuditCheckpoint) -> Statement:
    return Statement(
        seq=cp.seq,
        event_hash=cp.event_hash,
        signed_at=cp.signed_at,
        reason=cp.reason,
        public_key=cp.public_key,
        signature=cp.signature,
    )


def _statement_problem(statement: Statement, trusted: set[str]) -> str | None:
    if trusted and statement.public_key not in trusted:
        return f"is signed by an untrusted key ({statement.public_key})"
    if not statement.signature_ok():
        return "has a bad signature"
    return None


class _Walk:
    def __init__(
        self,
        report: Report,
        *,
        checkpoints: list[AuditCheckpoint],
        anchors: Sequence[Anchor],
        trusted: set[str],
        files: Sequence[Path],
        archived_range: tuple[int, int] | None,
    ) -> None:
        self.report = report
        self.trusted = trusted
        self.files = files
        self.archived_range = archived_range
        # Where the chain may start after seq 1: an archive checkpoint signed by a
        # trusted key (the events before it are in an archive) or an --anchor
        # statement. Any other checkpoint only names a position, and deleting the
        # events up to one needs no key.
        self.starts = {
            (c.seq, c.event_hash)
            for c in checkpoints
            if c.reason == CheckpointReason.ARCHIVE
            and _statement_problem(_checkpoint_statement(c), trusted) is None
        } | {(a.statement.seq, a.statement.event_hash) for a in anchors}
        self.other_starts = {(c.seq, c.event_hash): c for c in checkpoints}
        self.wanted = {c.seq for c in checkpoints} | {a.statement.seq for a in anchors}
        # seq -> (hash, where) of the first copy of every position an archive covers
        self.copies: dict[int, tuple[str, str]] = {}
        self.seen: dict[int, str] = {}  # seq -> hash of stored rows that are wanted
        self.prev_seq: int | None = None
        self.prev_hash = ""
        self.prev_where = ""
        self._index: dict[str, int] | None = None

    def problem(self, kind: ProblemKind, seq: int | None, text: str, where: str) -> None:
        self.report.problems.append(Problem(kind, seq, text, where))

    # -- looking a hash up, only when a link breaks ------------------------------

    def _seq_of_hash(self, value: str, *, exclude_pk: int | None) -> int | None:
        if self.files:
            if self._index is None:
                self._index = {}
                for path in self.files:
                    for line in archives.archive_lines(path):
                        if isinstance(line, archives.EventLine):
                            self._index.setdefault(line.event_hash, line.seq)
            if value in self._index:
                return self._index[value]
        rows = AuditEvent.objects.filter(hash=value)
        if exclude_pk is not None:
            rows = rows.exclude(pk=exclude_pk)
        row = rows.values("seq").first()
        return None if row is None else int(row["seq"])

    def _link_problem(self, entry: _Entry, prev_seq: int, boundary: str) -> None:
        linked = self._seq_of_hash(entry.prev_hash, exclude_pk=entry.pk)
        if linked is None:
            if entry.seq > prev_seq + 1:
                kind, seq = ProblemKind.MISSING, prev_seq + 1
                text = f"{_span(prev_seq + 1, entry.seq - 1)} missing from the chain"
            else:
                kind, seq = ProblemKind.MISSING, entry.seq
                text = (
                    f"the event before seq {entry.seq} is missing: it links to a hash no event has"
                )
        elif linked < prev_seq:
            kind, seq = ProblemKind.INSERTED, linked + 1
            text = (
                f"{_span(linked + 1, prev_seq)} inserted: not part of the chain "
                f"(seq {entry.seq} links to seq {linked})"
            )
        else:
            kind, seq = ProblemKind.REORDERED, entry.seq
            text = f"event seq {entry.seq} reordered: in the chain it follows seq {linked}"
        self.problem(kind, seq, text + boundary, entry.where)

    # -- the walk -----------------------------------------------------------------

    def _start(self, entry: _Entry) -> None:
        """A chain that does not start at 1 must start at a signed anchor."""
        self.report.first_seq = entry.seq
        self.prev_seq, self.prev_hash = entry.seq - 1, entry.prev_hash
        if entry.seq == 1 and entry.prev_hash == GENESIS_HASH:
            return
        if (entry.seq - 1, entry.prev_hash) in self.starts:
            return
        other = self.other_starts.get((entry.seq - 1, entry.prev_hash))
        if entry.seq > 1 and other is not None:
            self.problem(
                ProblemKind.MISSING,
                1,
                f"{_span(1, entry.seq - 1)} missing: events removed without an archive "
                f"(the chain starts after checkpoint {other.pk}, reason {other.reason}; only "
                "an archive checkpoint signed by a trusted key, or an --anchor, may start it)",
                entry.where,
            )
        elif entry.seq > 1:
            self.problem(
                ProblemKind.MISSING,
                1,
                f"{_span(1, entry.seq - 1)} missing: the chain starts at seq {entry.seq} "
                "without a checkpoint anchoring the archived part",
                entry.where,
            )
        else:
            self.problem(
                ProblemKind.ALTERED, entry.seq, "event seq 1 does not start the chain", entry.where
            )

    def _recomputed_ok(self, entry: _Entry) -> bool:
        return entry.fields is not None and canonical.event_hash(entry.fields) == entry.hash

    def _overlap(self, entry: _Entry, previous: int | None) -> None:
        """A second copy of a chain position: it must be the same event."""
        self.report.overlapping += 1
        copy = self.copies.get(entry.seq)
        if entry.fields is None:
            self.problem(ProblemKind.ALTERED, entry.seq, entry.bad, entry.where)
        elif previous is not None and entry.seq <= previous:
            self.problem(
                ProblemKind.REORDERED,
                entry.seq,
                f"event seq {entry.seq} reordered: it comes after seq {previous}",
                entry.where,
            )
        elif previous is not None and entry.seq > previous + 1:
            self.problem(
                ProblemKind.MISSING,
                previous + 1,
                f"{_span(previous + 1, entry.seq - 1)} missing here (after seq {previous})",
                entry.where,
            )
        elif not self._recomputed_ok(entry):
            self.problem(
                ProblemKind.ALTERED,
                entry.seq,
                f"event seq {entry.seq} altered: its content does not match its hash",
                entry.where,
            )
        elif copy is None or copy[0] != entry.hash:
            other = f"its copy in {copy[1]}" if copy else "the chain walked so far"
            self.problem(
                ProblemKind.OVERLAP,
                entry.seq,
                f"event seq {entry.seq} differs from {other}: "
                "archives and database must agree where they overlap",
                entry.where,
            )
        if entry.pk is not None and entry.seq in self.wanted:
            self.seen[entry.seq] = entry.hash

    def _next(self, entry: _Entry, first_of_source: bool) -> None:
        if self.prev_seq is None:
            self._start(entry)
        assert self.prev_seq is not None  # noqa: S101 - set by _start
        self.report.events += 1
        boundary = (
            f" (between {self.prev_where} and {entry.where})"
            if first_of_source and self.prev_where
            else ""
        )
        if entry.fields is None:
            self.problem(ProblemKind.ALTERED, entry.seq, entry.bad, entry.where)
        elif entry.prev_hash != self.prev_hash:
            self._link_problem(entry, self.prev_seq, boundary)
        elif entry.seq != self.prev_seq + 1:
            self.problem(
                ProblemKind.REORDERED,
                entry.seq,
                f"event seq {entry.seq} renumbered: in the chain it follows seq "
                f"{self.prev_seq}{boundary}",
                entry.where,
            )
        elif not self._recomputed_ok(entry):
            self.problem(
                ProblemKind.ALTERED,
                entry.seq,
                f"event seq {entry.seq} altered: its content does not match its hash",
                entry.where,
            )
        if entry.pk is None:
            self.report.archived_events += 1
        if self.archived_range and self.archived_range[0] <= entry.seq <= self.archived_range[1]:
            self.copies.setdefault(entry.seq, (entry.hash, entry.where))
        if entry.pk is not None and entry.seq in self.wanted:
            self.seen[entry.seq] = entry.hash
        self.prev_seq, self.prev_hash, self.prev_where = entry.seq, entry.hash, entry.where
        self.report.last_seq = entry.seq

    def source(self, entries: Iterable[_Entry]) -> None:
        """Walk one archive file or the stored rows, after everything before them."""
        chain_end = self.prev_seq
        previous: int | None = None
        overlapping = chain_end is not None
        first = True
        for entry in entries:
            if overlapping and chain_end is not None and entry.seq <= chain_end:
                self._overlap(entry, previous)
            else:
                overlapping = False
                self._next(entry, first)
            previous, first = entry.seq, False

    # -- archive files --------------------------------------------------------------

    def archive_entries(self, path: Path) -> Iterator[_Entry]:
        name = str(path)
        header_seen = False
        last: archives.EventLine | None = None
        count = 0
        anchor: archives.AnchorLine | None = None
        for line in archives.archive_lines(path):
            where = f"{name} line {line.line}"
            if anchor is not None:
                self.problem(ProblemKind.ANCHOR, None, "a line after the anchor line", where)
                continue
            if isinstance(line, archives.Header):
                if header_seen or line.line != 1:
                    self.problem(ProblemKind.ALTERED, None, "a header inside the file", where)
                header_seen = True
            elif isinstance(line, archives.BadLine):
                if line.seq is not None:
                    yield _Entry(line.seq, "", "", where, None, f"unreadable line: {line.reason}")
                else:
                    self.problem(
                        ProblemKind.ALTERED, None, f"unreadable line: {line.reason}", where
                    )
            elif isinstance(line, archives.AnchorLine):
                anchor = line
            else:
                if not header_seen:
                    self.problem(ProblemKind.ALTERED, None, "the file has no header line", where)
                    header_seen = True
                count += 1
                last = line
                yield _Entry(line.seq, line.fields.prev_hash, line.event_hash, where, line.fields)
        self._check_archive_anchor(name, anchor, last, count)

    def _check_archive_anchor(
        self,
        name: str,
        anchor: archives.AnchorLine | None,
        last: archives.EventLine | None,
        count: int,
    ) -> None:
        if anchor is None:
            self.problem(
                ProblemKind.ANCHOR,
                last.seq if last else None,
                "the file ends without its anchor line: truncated, or lines removed at its end",
                name,
            )
            return
        where = f"{name} line {anchor.line}"
        if last is not None and (anchor.seq, anchor.event_hash) != (last.seq, last.event_hash):
            self.problem(
                ProblemKind.ANCHOR,
                anchor.seq,
                f"the anchor signs seq {anchor.seq} but the file's last event line is seq "
                f"{last.seq} with another hash: events removed or added at the end",
                where,
            )
        elif anchor.count != count:
            self.problem(
                ProblemKind.ANCHOR,
                anchor.seq,
                f"the anchor counts {anchor.count} events but the file holds {count}",
                where,
            )
        if not count:
            return
        try:
            statement = statement_parse(anchor.checkpoint)
        except AnchorError as exc:
            self.problem(ProblemKind.ANCHOR, anchor.seq, f"the anchor's checkpoint {exc}", where)
            return
        if (statement.seq, statement.event_hash) != (anchor.seq, anchor.event_hash):
            self.problem(
                ProblemKind.ANCHOR,
                anchor.seq,
                f"the anchor's checkpoint signs seq {statement.seq}, not the anchor's",
                where,
            )
        found = _statement_problem(statement, self.trusted)
        if found:
            self.problem(ProblemKind.ANCHOR, anchor.seq, f"the anchor's checkpoint {found}", where)

    # -- after the walk -----------------------------------------------------------

    def copy_of(self, seq: int) -> str | None:
        copy = self.copies.get(seq)
        return copy[0] if copy else self.seen.get(seq)


def _stored_entries() -> Iterator[_Entry]:
    for event in AuditEvent.objects.order_by("seq").iterator(chunk_size=2000):
        yield _Entry(
            event.seq, event.prev_hash, event.hash, "database", event_fields(event), pk=event.pk
        )


def _check_head(report: Report, last_hash: str | None) -> None:
    head = AuditHead.objects.filter(pk=1).first()
    last = report.last_seq or 0
    if head is None:
        if report.events:
            report.problems.append(
                Problem(ProblemKind.MISSING, None, "the chain head row is missing", "database")
            )
        return
    if head.seq > last:
        report.problems.append(
            Problem(
                ProblemKind.MISSING,
                last + 1,
                f"{_span(last + 1, head.seq)} missing: the chain head is at seq {head.seq}",
                "database",
            )
        )
    elif head.seq < last:
        report.problems.append(
            Problem(
                ProblemKind.INSERTED,
                head.seq + 1,
                f"{_span(head.seq + 1, last)} inserted beyond the chain head (seq {head.seq})",
                "database",
            )
        )
    elif last_hash is not None and head.hash != last_hash:
        report.problems.append(
            Problem(
                ProblemKind.ALTERED,
                last,
                f"event seq {last} differs from the recorded chain head",
                "database",
            )
        )


def _check_checkpoints(checkpoints: list[AuditCheckpoint], walk: _Walk, report: Report) -> None:
    first = report.first_seq if report.first_seq is not None else 1
    for cp in checkpoints:
        report.checkpoints += 1
        label = f"checkpoint {cp.pk} at seq {cp.seq}"
        found = _statement_problem(_checkpoint_statement(cp), walk.trusted)
        if found:
            report.problems.append(
                Problem(ProblemKind.CHECKPOINT, cp.seq, f"{label} {found}", "database")
            )
        if cp.seq < first:
            continue  # archived and not given (or the anchor the chain starts from)
        copy = walk.copy_of(cp.seq)
        if copy is None:
            report.problems.append(
                Problem(
                    ProblemKind.MISSING,
                    cp.seq,
                    f"event seq {cp.seq} missing: {label} signs it but it is not stored",
                    "database",
                )
            )
        elif copy != cp.event_hash:
            report.problems.append(
                Problem(
                    ProblemKind.CHECKPOINT,
                    cp.seq,
                    f"{label} does not match the chain: event seq {cp.seq} has another hash",
                    "database",
                )
            )


def _check_anchors(anchors: Sequence[Anchor], walk: _Walk, report: Report) -> None:
    for anchor in anchors:
        report.anchors += 1
        where, st = f"anchor {anchor.path}", anchor.statement
        if anchor.installation != conf.installation_name():
            report.problems.append(
                Problem(
                    ProblemKind.ANCHOR,
                    st.seq,
                    f"the anchor is for installation {anchor.installation!r}, "
                    f"this is {conf.installation_name()!r}",
                    where,
                )
            )
        found = _statement_problem(st, walk.trusted)
        if found:
            report.problems.append(
                Problem(ProblemKind.ANCHOR, st.seq, f"the anchor {found}", where)
            )
        copy = walk.copy_of(st.seq)
        signed = f"signed {canonical.timestamp(st.signed_at)} by key {st.public_key}"
        if copy is None:
            span = (
                f"seq {report.first_seq}..{report.last_seq}"
                if report.first_seq is not None
                else "no events"
            )
            report.problems.append(
                Problem(
                    ProblemKind.ANCHOR,
                    st.seq,
                    f"the chain verified ({span}) holds no event seq {st.seq}, which this "
                    f"anchor ({signed}) fixes: events removed, or the archive holding it "
                    "not given with --with-archives",
                    where,
                )
            )
        elif copy != st.event_hash:
            report.problems.append(
                Problem(
                    ProblemKind.ANCHOR,
                    st.seq,
                    f"the chain was rewritten: event seq {st.seq} has hash {copy}, but this "
                    f"anchor ({signed}) fixes it as {st.event_hash}",
                    where,
                )
            )


def archive_order(files: Sequence[Path], report: Report) -> list[_File]:
    """The files sorted by their first event's seq; a cutoff that goes backwards
    along that order means files (or their headers) are out of order."""
    found: list[_File] = []
    for path in files:
        item = _File(path)
        for line in archives.archive_lines(path):
            if isinstance(line, archives.Header) and not item.before:
                item.before = canonical.timestamp(line.before)
            elif isinstance(line, archives.EventLine):
                if item.first_seq is None:
                    item.first_seq = line.seq
                item.last_seq = max(item.last_seq or 0, line.seq)
        found.append(item)
    found.sort(key=lambda f: (f.first_seq is None, f.first_seq or 0, f.before, str(f.path)))
    latest: _File | None = None
    for item in found:
        if item.first_seq is None or not item.before:
            continue
        if latest is not None and item.before < latest.before:
            report.problems.append(
                Problem(
                    ProblemKind.ORDER,
                    item.first_seq,
                    f"it starts at seq {item.first_seq}, after {latest.path} (seq "
                    f"{latest.first_seq}), but its cutoff {item.before} is earlier than that "
                    f"file's {latest.before}",
                    str(item.path),
                )
            )
        latest = item
    return found


def archive_paths(paths: Iterable[Path]) -> list[Path]:
    """Files as given; a directory stands for the archives directly in it (files whose
    first line is an archive header: a damaged header then shows as missing events)."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = (p for p in path.iterdir() if p.is_file() and archives.looks_like_archive(p))
            out.extend(sorted(found))
        else:
            out.append(path)
    return out


def chain_verify(
    *,
    archives_given: Sequence[Path] = (),
    anchors: Sequence[Anchor] = (),
    trusted: Sequence[str] | None = None,
) -> Report:
    """Check the chain (archive files, then the stored rows), every checkpoint and
    every anchor; an empty report is good. ``trusted`` replaces the configured keys."""
    report = Report()
    checkpoints = list(AuditCheckpoint.objects.order_by("seq", "id"))
    files = archive_order(archive_paths(archives_given), report)
    report.archive_files = len(files)
    spans = [(f.first_seq, f.last_seq) for f in files if f.first_seq and f.last_seq]
    walk = _Walk(
        report,
        checkpoints=checkpoints,
        anchors=anchors,
        trusted=_trusted_keys(report, trusted),
        files=[f.path for f in files],
        archived_range=(min(a for a, _ in spans), max(b for _, b in spans)) if spans else None,
    )
    # The stored rows are walked where their first seq places them: usually after every
    # archive, but before archives of rows not deleted yet, which must then repeat them.
    stored_first = AuditEvent.objects.order_by("seq").values_list("seq", flat=True).first()
    stored_walked = False
    for item in files:
        before_file = item.first_seq is not None and (stored_first or 0) < item.first_seq
        if not stored_walked and stored_first is not None and before_file:
            walk.source(_stored_entries())
            stored_walked = True
        walk.source(walk.archive_entries(item.path))
    if not stored_walked:
        walk.source(_stored_entries())
    _check_head(report, walk.prev_hash if report.events else None)
    _check_checkpoints(checkpoints, walk, report)
    _check_anchors(anchors, walk, report)
    return report
