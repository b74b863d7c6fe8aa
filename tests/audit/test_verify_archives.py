"""audit_verify over archive files and the database as one chain.

Events are written by audit_record, archived by the audit_archive command and removed
as a DBA would (raw SQL with the append-only triggers off); then the archive files
are edited the way someone holding them could, and each break must be reported at
exactly its file and line, or in the database.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction
from django.utils import timezone
from nacl.signing import SigningKey

from collab.audit import canonical
from collab.audit.archives import parse_timestamp
from collab.audit.models import AuditEvent, CheckpointReason
from collab.audit.services import checkpoint_sign
from collab.audit.verify import Problem, ProblemKind, Report, chain_verify
from tests.audit.support import raw_sql, record_events

pytestmark = pytest.mark.django_db


def dba_delete_through(seq: int) -> None:
    """The DBA's removal of archived rows (docs/audit.md), triggers off meanwhile."""
    with raw_sql() as cursor:
        cursor.execute("DELETE FROM audit_auditevent WHERE seq <= %s", [seq])


def archive(path: Path) -> Path:
    call_command(
        "audit_archive", "--before", timezone.now().isoformat(), "--output", str(path),
        stdout=StringIO(),
    )  # fmt: skip
    return path


@dataclass
class Archived:
    a1: Path  # seq 1..3
    a2: Path  # seq 4..6
    a3: Path  # seq 7..9, the database then holds 10..11

    @property
    def all(self) -> list[Path]:
        return [self.a3, self.a1, self.a2]  # deliberately not in order


@pytest.fixture
def archived(tmp_path: Path) -> Archived:
    paths = []
    for index in (1, 2, 3):
        record_events(3)
        paths.append(archive(tmp_path / f"audit-{index}.jsonl"))
        dba_delete_through(3 * index)
    record_events(2)
    return Archived(*paths)


def lines_of(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(lines))


def edit_line(path: Path, number: int, **changes: object) -> None:
    lines = lines_of(path)
    data = json.loads(lines[number - 1])
    data.update(changes)
    lines[number - 1] = json.dumps(data, sort_keys=True) + "\n"
    write_lines(path, lines)


def first(report: Report) -> Problem:
    assert not report.ok
    return report.problems[0]


def test_archives_and_database_verify_as_one_chain(archived: Archived, tmp_path: Path) -> None:
    report = chain_verify(archives_given=archived.all)
    assert report.ok, report.problems
    assert (report.first_seq, report.last_seq, report.events) == (1, 11, 11)
    assert (report.archive_files, report.archived_events, report.overlapping) == (3, 9, 0)
    assert chain_verify().ok  # the database alone still starts at the last archive anchor
    (tmp_path / "anchor.json").write_text("{}")  # not an archive: a directory skips it
    out = StringIO()
    call_command("audit_verify", "--with-archives", str(tmp_path), stdout=out)
    assert out.getvalue().startswith(
        "OK: 11 events (seq 1..11), 9 of them from 3 archive files, 3 checkpoints verified"
    )


def test_an_altered_field_in_an_archive_line_is_reported_at_that_line(
    archived: Archived,
) -> None:
    edit_line(archived.a2, 3, target="nothing to see")  # line 3 holds seq 5
    problem = first(chain_verify(archives_given=archived.all))
    assert (problem.kind, problem.seq, problem.where) == (
        ProblemKind.ALTERED,
        5,
        f"{archived.a2} line 3",
    )
    err = StringIO()
    with pytest.raises(SystemExit):
        call_command("audit_verify", "--with-archives", *map(str, archived.all), stderr=err)
    assert (
        f"FAILED: altered: event seq 5 altered: its content does not match its hash "
        f"(at {archived.a2} line 3)"
    ) in err.getvalue()


def test_a_removed_archive_line_is_reported_missing_where_it_was(archived: Archived) -> None:
    lines = lines_of(archived.a2)
    del lines[2]  # seq 5
    write_lines(archived.a2, lines)
    problem = first(chain_verify(archives_given=archived.all))
    assert (problem.kind, problem.seq, problem.where) == (
        ProblemKind.MISSING,
        5,
        f"{archived.a2} line 3",
    )
    assert problem.description == "event seq 5 missing from the chain"


def test_a_removed_last_line_is_caught_by_the_files_anchor(archived: Archived) -> None:
    lines = lines_of(archived.a1)
    del lines[3]  # seq 3, the last event before the anchor line
    write_lines(archived.a1, lines)
    problem = first(chain_verify(archives_given=archived.all))
    assert (problem.kind, problem.seq, problem.where) == (
        ProblemKind.ANCHOR,
        3,
        f"{archived.a1} line 4",
    )
    assert "last event line is seq 2" in problem.description


def test_a_swapped_pair_of_lines_is_reported_reordered(archived: Archived) -> None:
    lines = lines_of(archived.a2)
    lines[1], lines[2] = lines[2], lines[1]  # seq 5 now before seq 4
    write_lines(archived.a2, lines)
    problem = first(chain_verify(archives_given=archived.all))
    assert (problem.kind, problem.seq, problem.where) == (
        ProblemKind.REORDERED,
        5,
        f"{archived.a2} line 2",
    )
    assert "in the chain it follows seq 4" in problem.description


def test_a_missing_middle_archive_file_is_reported_between_its_neighbours(
    archived: Archived,
) -> None:
    problem = first(chain_verify(archives_given=[archived.a3, archived.a1]))
    assert (problem.kind, problem.seq, problem.where) == (
        ProblemKind.MISSING,
        4,
        f"{archived.a3} line 2",
    )
    assert problem.description == (
        f"events seq 4..6 missing from the chain (between {archived.a1} line 4 and "
        f"{archived.a3} line 2)"
    )


def test_a_database_that_does_not_continue_the_last_archive_is_reported(
    archived: Archived,
) -> None:
    dba_delete_through(10)  # one row more than was archived
    problem = first(chain_verify(archives_given=archived.all))
    assert (problem.kind, problem.seq, problem.where) == (ProblemKind.MISSING, 10, "database")
    assert problem.description == (
        f"event seq 10 missing from the chain (between {archived.a3} line 4 and database)"
    )


def test_a_first_stored_event_linking_elsewhere_is_reported_in_the_database(
    archived: Archived,
) -> None:
    with raw_sql() as cursor:
        cursor.execute("UPDATE audit_auditevent SET prev_hash = %s WHERE seq = 10", ["e" * 64])
    problem = first(chain_verify(archives_given=archived.all))
    assert (problem.kind, problem.seq, problem.where) == (ProblemKind.MISSING, 10, "database")
    assert "it links to a hash no event has" in problem.description


def test_archives_overlapping_the_database_must_be_identical(tmp_path: Path) -> None:
    record_events(3)
    kept = archive(tmp_path / "kept.jsonl")  # rows not deleted: seq 1..3 twice
    record_events(2)
    report = chain_verify(archives_given=[kept])
    assert report.ok, report.problems
    assert (report.events, report.archived_events, report.overlapping) == (5, 3, 3)
    with raw_sql() as cursor:
        cursor.execute("UPDATE audit_auditevent SET target = 'x' WHERE seq = 2")
    problem = first(chain_verify(archives_given=[kept]))
    assert (problem.kind, problem.seq, problem.where) == (ProblemKind.ALTERED, 2, "database")


def test_a_duplicated_archive_must_match_its_twin_line_for_line(archived: Archived) -> None:
    twin = archived.a2.with_name("audit-2.jsonl.copy")  # sorts after its original
    twin.write_text(archived.a2.read_text())
    assert chain_verify(archives_given=[*archived.all, twin]).ok
    # The copy's last event rewritten by someone who knows the (public) encoding:
    # its own hash is right, but it is not the event the chain holds at seq 6.
    data = json.loads(lines_of(twin)[3])
    data["target"] = "forged"
    fields = canonical.EventFields(
        seq=data["seq"],
        prev_hash=data["prev_hash"],
        recorded_at=parse_timestamp(data["recorded_at"]),
        actor_id=None,
        device_id=None,
        action=data["action"],
        outcome=data["outcome"],
        reason=data["reason"],
        case_id=None,
        target=data["target"],
        client_address=data["client_address"],
        user_agent=data["user_agent"],
        details=data["details"],
    )
    edit_line(twin, 4, target="forged", hash=canonical.event_hash(fields))
    problem = first(chain_verify(archives_given=[*archived.all, twin]))
    assert (problem.kind, problem.seq, problem.where) == (
        ProblemKind.OVERLAP,
        6,
        f"{twin} line 4",
    )
    assert f"differs from its copy in {archived.a2} line 4" in problem.description


def test_archive_files_whose_cutoffs_run_backwards_are_out_of_order(archived: Archived) -> None:
    early = json.loads(lines_of(archived.a1)[0])["before"]
    edit_line(archived.a2, 1, before="2000-01-01T00:00:00.000000Z")
    problem = first(chain_verify(archives_given=archived.all))
    assert (problem.kind, problem.seq, problem.where) == (
        ProblemKind.ORDER,
        4,
        str(archived.a2),
    )
    assert f"earlier than that file's {early}" in problem.description


def test_a_bad_anchor_signature_or_a_truncated_file_is_a_bad_anchor(archived: Archived) -> None:
    anchor = json.loads(lines_of(archived.a1)[4])
    anchor["checkpoint"]["signed_at"] = "2001-01-01T00:00:00.000000Z"
    edit_line(archived.a1, 5, checkpoint=anchor["checkpoint"])
    problem = first(chain_verify(archives_given=archived.all))
    assert (problem.kind, problem.where) == (ProblemKind.ANCHOR, f"{archived.a1} line 5")
    assert problem.description == "the anchor's checkpoint has a bad signature"
    write_lines(archived.a3, lines_of(archived.a3)[:-2])  # seq 9 and the anchor line gone
    problems = chain_verify(archives_given=[archived.a3]).problems
    assert any(
        p.kind is ProblemKind.ANCHOR
        and p.where == str(archived.a3)
        and "without its anchor" in p.description
        for p in problems
    )


def test_an_unreadable_line_is_reported_at_its_line(archived: Archived) -> None:
    lines = lines_of(archived.a1)
    lines[2] = lines[2][:40] + "\n"
    write_lines(archived.a1, lines)
    problem = first(chain_verify(archives_given=archived.all))
    assert (problem.kind, problem.where) == (ProblemKind.ALTERED, f"{archived.a1} line 3")
    assert problem.description.startswith("unreadable line: not JSON")
    archived.a2.write_bytes(archived.a2.read_bytes().replace(b"audit_viewed", b"\xff", 1))
    problems = chain_verify(archives_given=archived.all).problems
    assert any(
        p.where == f"{archived.a2} line 2" and p.description == "unreadable line: not UTF-8 text"
        for p in problems
    )


def test_a_later_archive_of_rows_still_stored_is_checked_against_them(tmp_path: Path) -> None:
    record_events(3)
    first_archive = archive(tmp_path / "a.jsonl")  # seq 1..3, rows kept
    record_events(3)
    second = archive(tmp_path / "b.jsonl")  # seq 1..6 again: archives start at the oldest row
    record_events(1)
    only_later = tmp_path / "later.jsonl"
    lines = lines_of(second)
    write_lines(only_later, [lines[0], *lines[4:]])  # its seq 4..6 and the anchor line
    edit_line(only_later, 5, count=3)
    for given in ([first_archive], [second], [first_archive, second], [only_later]):
        report = chain_verify(archives_given=given)
        assert report.ok, (given, report.problems)
        assert (report.first_seq, report.last_seq, report.events) == (1, 7, 7)
    assert chain_verify(archives_given=[only_later]).overlapping == 3
    edit_line(only_later, 3, reason="edited")  # seq 5
    problem = first(chain_verify(archives_given=[only_later]))
    assert (problem.kind, problem.seq, problem.where) == (
        ProblemKind.ALTERED,
        5,
        f"{only_later} line 3",
    )


# docs/audit.md "Retention and archiving", statement for statement (inside the test's
# transaction, so without its BEGIN and COMMIT).
DOCUMENTED_REMOVAL = {
    "postgresql": [
        "ALTER TABLE audit_auditevent DISABLE TRIGGER audit_auditevent_no_change",
        "DELETE FROM audit_auditevent WHERE seq <= {seq}",
        "ALTER TABLE audit_auditevent ENABLE TRIGGER audit_auditevent_no_change",
    ],
    "sqlite": [
        "DROP TRIGGER audit_auditevent_no_delete",
        "DELETE FROM audit_auditevent WHERE seq <= {seq}",
        "CREATE TRIGGER audit_auditevent_no_delete BEFORE DELETE ON audit_auditevent\n"
        "  WHEN NOT collab_audit_may_delete() "
        "BEGIN SELECT RAISE(ABORT, 'audit rows are append-only'); END",
    ],
}


def test_the_documented_dba_removal_keeps_the_chain_verifiable(tmp_path: Path) -> None:
    record_events(3)
    kept = archive(tmp_path / "audit.jsonl")
    record_events(2)
    with connection.cursor() as cursor:
        for statement in DOCUMENTED_REMOVAL[connection.vendor]:
            cursor.execute(statement.format(seq=3))
    assert list(AuditEvent.objects.values_list("seq", flat=True).order_by("seq")) == [4, 5]
    with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM audit_auditevent WHERE seq = 5")  # the guard is back
    assert chain_verify().ok
    report = chain_verify(archives_given=[kept])
    assert report.ok, report.problems
    assert (report.first_seq, report.archived_events, report.overlapping) == (1, 3, 0)


# -- where the chain may start: only at an archive checkpoint or an --anchor ---------


@pytest.mark.parametrize("reason", [CheckpointReason.MANUAL, CheckpointReason.PERIODIC])
def test_events_deleted_up_to_a_non_archive_checkpoint_are_missing(
    reason: CheckpointReason,
) -> None:
    """A DBA without the key deletes the oldest events up to an hourly (or every-N)
    checkpoint: that checkpoint signs a real position, but nothing was archived."""
    record_events(3)
    checkpoint_sign(reason=reason)
    record_events(2)
    assert chain_verify().ok
    dba_delete_through(3)
    problem = first(chain_verify())
    assert problem.kind is ProblemKind.MISSING
    assert problem.seq == 1
    assert "events seq 1..3 missing: events removed without an archive" in problem.description
    assert f"reason {reason.value}" in problem.description
    err = StringIO()
    with pytest.raises(SystemExit) as exited:
        call_command("audit_verify", stdout=StringIO(), stderr=err)
    assert exited.value.code == 1
    assert "events removed without an archive" in err.getvalue()


def test_an_archive_checkpoint_signed_by_an_untrusted_key_starts_nothing() -> None:
    """The DBA signs an 'archive' checkpoint with a key of their own before deleting."""
    record_events(3)
    checkpoint_sign(reason=CheckpointReason.ARCHIVE, key=SigningKey.generate())
    record_events(1)
    dba_delete_through(3)
    problems = chain_verify().problems
    assert problems[0].kind is ProblemKind.MISSING
    assert "events removed without an archive" in problems[0].description
    assert any(
        p.kind is ProblemKind.CHECKPOINT and "untrusted key" in p.description for p in problems
    )


# -- malformed input: a clear report, exit status 1, no traceback ------------------


def _verify_fails(*args: str) -> str:
    err = StringIO()
    with pytest.raises(SystemExit) as exited:
        call_command("audit_verify", "--all", *args, stdout=StringIO(), stderr=err)
    assert exited.value.code == 1
    assert "Traceback" not in err.getvalue()
    return err.getvalue()


def test_a_deeply_nested_archive_line_is_an_unreadable_line(archived: Archived) -> None:
    lines = lines_of(archived.a1)
    lines.insert(1, "[" * 100_000 + "\n")
    write_lines(archived.a1, lines)
    err = _verify_fails("--with-archives", *map(str, archived.all))
    assert f"unreadable line: not JSON (nested too deeply) (at {archived.a1} line 2)" in err


def test_deeply_nested_details_in_an_archive_line_are_refused(archived: Archived) -> None:
    lines = lines_of(archived.a1)
    data = json.loads(lines[1])
    data["details"] = "NESTED"
    # Parses (json's C scanner), but the canonical encoder recurses too deep.
    nested = '{"d": ' * 900 + "{}" + "}" * 900
    lines[1] = json.dumps(data).replace('"NESTED"', nested) + "\n"
    write_lines(archived.a1, lines)
    err = _verify_fails("--with-archives", *map(str, archived.all))
    assert "details cannot be encoded" in err
    assert f"{archived.a1} line 2" in err


def test_an_unreadable_archive_file_is_a_problem_at_that_file(
    archived: Archived, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Root reads any file whatever its mode, so the refusal is simulated at open()."""
    real_open = Path.open

    def refusing_open(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self == archived.a2:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refusing_open)
    err = _verify_fails("--with-archives", str(archived.a1.parent))
    assert f"the file cannot be read (Permission denied) (at {archived.a2} line 1)" in err
