"""Anchors kept off the server, and checkpoints signed by a key the application never holds.

The attacker here holds the database (and, in the worst case, the signing key): they
rewrite events, re-hash the chain with the public encoding, move the head and sign
new checkpoints. audit_verify alone cannot tell; an anchor the auditor kept must.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
from io import StringIO
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.utils import timezone
from nacl.signing import SigningKey

from collab.audit import canonical, keys
from collab.audit.anchors import anchor_load
from collab.audit.checks import audit_signing_key_present
from collab.audit.models import AuditAction, AuditCheckpoint, AuditEvent
from collab.audit.services import checkpoint_sign
from collab.audit.verify import ProblemKind, chain_verify, event_fields
from tests.audit.conftest import TEST_SEED_B64
from tests.audit.support import raw_sql, record_events

pytestmark = pytest.mark.django_db

APP_PUBLIC = keys.public_key_b64(SigningKey(base64.b64decode(TEST_SEED_B64)))


def make_anchor(path: Path, *extra: str) -> dict[str, object]:
    call_command("audit_anchor", "--output", str(path), *extra, stdout=StringIO())
    return dict(json.loads(path.read_text()))


def rewrite_from(seq: int, *, key: SigningKey) -> str:
    """Change event ``seq``, re-hash every later event, move the head and replace the
    checkpoints with fresh ones signed by ``key``: a rewrite no stored row betrays."""
    events = list(AuditEvent.objects.order_by("seq"))
    prev = events[seq - 2].hash
    with raw_sql() as cursor:
        for event in events[seq - 1 :]:
            target = "rewritten" if event.seq == seq else event.target
            fields = dataclasses.replace(event_fields(event), prev_hash=prev, target=target)
            prev = canonical.event_hash(fields)
            cursor.execute(
                "UPDATE audit_auditevent SET target = %s, prev_hash = %s, hash = %s WHERE seq = %s",
                [target, fields.prev_hash, prev, event.seq],
            )
    with raw_sql("audit_auditcheckpoint") as cursor:
        cursor.execute("DELETE FROM audit_auditcheckpoint")
    with connection.cursor() as cursor:
        cursor.execute("UPDATE audit_audithead SET hash = %s WHERE id = 1", [prev])
    checkpoint_sign(key=key)
    return str(prev)


def test_an_anchor_is_a_signed_checkpoint_that_later_states_chain_to(tmp_path: Path) -> None:
    events = record_events(3)
    path = tmp_path / "anchor.json"
    anchor = make_anchor(path)
    assert set(anchor) == {
        "format", "version", "installation", "seq", "hash", "signed_at", "reason",
        "public_key", "signature",
    }  # fmt: skip
    assert (anchor["format"], anchor["version"], anchor["installation"]) == (
        "collab-audit-anchor",
        1,
        "collab",
    )
    assert (anchor["seq"], anchor["hash"], anchor["public_key"]) == (3, events[-1].hash, APP_PUBLIC)
    message = canonical.checkpoint_bytes(
        seq=3,
        event_hash=events[-1].hash,
        signed_at=anchor_load(path).statement.signed_at,
        reason=str(anchor["reason"]),
    )
    assert keys.signature_valid(
        public_key=APP_PUBLIC, message=message, signature=str(anchor["signature"])
    )
    signed = AuditEvent.objects.get(action=AuditAction.CHECKPOINT_SIGNED)
    assert (signed.target, signed.details) == ("audit:anchor", {"seq": 3, "hash": events[-1].hash})
    with pytest.raises(CommandError, match="never overwritten"):
        make_anchor(path)

    record_events(4)
    out = StringIO()
    call_command("audit_verify", "--anchor", str(path), stdout=out)
    assert "1 anchors verified; trusted keys: the application's signing key" in out.getvalue()
    out = StringIO()
    call_command("audit_verify", "--anchor", str(path), "--trust-key", APP_PUBLIC, stdout=out)
    assert "trusted keys: keys given with --trust-key (1)" in out.getvalue()

    stranger = keys.public_key_b64(SigningKey.generate())
    report = chain_verify(anchors=[anchor_load(path)], trusted=[stranger])
    assert report.problems[0].kind is ProblemKind.CHECKPOINT
    untrusted = "the anchor is signed by an untrusted key"
    assert any(
        p.kind is ProblemKind.ANCHOR and p.description.startswith(untrusted)
        for p in report.problems
    )
    with pytest.raises(CommandError, match="not a base64 Ed25519 public key"):
        call_command("audit_verify", "--trust-key", "abc")


def test_a_chain_rewritten_and_resigned_with_the_same_key_fails_against_the_anchor(
    tmp_path: Path,
) -> None:
    record_events(3)
    path = tmp_path / "anchor.json"
    anchor = make_anchor(path)
    record_events(3)
    new_hash = rewrite_from(2, key=SigningKey(base64.b64decode(TEST_SEED_B64)))
    assert chain_verify().ok  # nothing stored betrays the rewrite
    assert AuditEvent.objects.get(seq=3).hash != anchor["hash"]
    report = chain_verify(anchors=[anchor_load(path)])
    [problem] = report.problems
    assert (problem.kind, problem.seq, problem.where) == (ProblemKind.ANCHOR, 3, f"anchor {path}")
    assert problem.description == (
        f"the chain was rewritten: event seq 3 has hash {AuditEvent.objects.get(seq=3).hash}, "
        f"but this anchor (signed {anchor['signed_at']} by key {APP_PUBLIC}) fixes it as "
        f"{anchor['hash']}"
    )
    assert new_hash == AuditEvent.objects.order_by("-seq")[0].hash
    err = StringIO()
    with pytest.raises(SystemExit):
        call_command("audit_verify", "--anchor", str(path), stderr=err)
    assert "FAILED: bad anchor: the chain was rewritten: event seq 3" in err.getvalue()


def test_a_chain_resigned_with_a_new_key_fails_against_the_anchor_and_the_old_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record_events(3)
    path = tmp_path / "anchor.json"
    make_anchor(path)
    record_events(2)
    new_seed = bytes(range(100, 132))
    monkeypatch.setenv("COLLAB_AUDIT_SIGNING_KEY", base64.b64encode(new_seed).decode())
    rewrite_from(3, key=SigningKey(new_seed))
    assert chain_verify().ok  # the server's configuration now trusts the new key
    kinds = {(p.kind, p.description.split(":")[0]) for p in chain_verify(
        anchors=[anchor_load(path)]
    ).problems}  # fmt: skip
    assert (ProblemKind.ANCHOR, "the chain was rewritten") in kinds
    # The auditor trusts the key they know, not the server's configuration.
    problems = chain_verify(anchors=[anchor_load(path)], trusted=[APP_PUBLIC]).problems
    assert "is signed by an untrusted key" in problems[0].description
    assert any(p.description.startswith("the chain was rewritten: event seq 3") for p in problems)


def test_a_chain_cut_back_before_the_anchor_fails_against_it(tmp_path: Path) -> None:
    record_events(3)
    path = tmp_path / "anchor.json"
    make_anchor(path)
    with raw_sql() as cursor:
        cursor.execute("DELETE FROM audit_auditevent WHERE seq >= 3")
    with raw_sql("audit_auditcheckpoint") as cursor:
        cursor.execute("DELETE FROM audit_auditcheckpoint")
    second = AuditEvent.objects.get(seq=2)
    with connection.cursor() as cursor:
        cursor.execute("UPDATE audit_audithead SET seq = 2, hash = %s WHERE id = 1", [second.hash])
    assert chain_verify().ok
    [problem] = chain_verify(anchors=[anchor_load(path)]).problems
    assert problem.kind is ProblemKind.ANCHOR
    assert problem.description.startswith("the chain verified (seq 1..2) holds no event seq 3")


def test_an_anchor_on_archived_events_needs_the_archive(tmp_path: Path) -> None:
    record_events(3)
    path = tmp_path / "anchor.json"
    make_anchor(path)  # seq 3; its CHECKPOINT_SIGNED event is seq 4
    archive = tmp_path / "audit.jsonl"
    call_command(
        "audit_archive", "--before", timezone.now().isoformat(), "--output", str(archive),
        stdout=StringIO(),
    )  # fmt: skip
    with raw_sql() as cursor:
        cursor.execute("DELETE FROM audit_auditevent WHERE seq <= 4")
    record_events(1)
    [problem] = chain_verify(anchors=[anchor_load(path)]).problems
    assert "not given with --with-archives" in problem.description
    assert chain_verify(archives_given=[archive], anchors=[anchor_load(path)]).ok


def test_an_edited_anchor_file_is_refused(tmp_path: Path, settings) -> None:
    record_events(2)
    path = tmp_path / "anchor.json"
    anchor = make_anchor(path)
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps({**anchor, "seq": 1}))
    problems = chain_verify(anchors=[anchor_load(edited)]).problems
    assert problems[0].description == "the anchor has a bad signature"
    assert problems[1].description.startswith("the chain was rewritten: event seq 1")
    settings.AUDIT_INSTALLATION = "elsewhere"
    [problem] = chain_verify(anchors=[anchor_load(path)]).problems
    assert problem.description == "the anchor is for installation 'collab', this is 'elsewhere'"
    edited.write_text(json.dumps({**anchor, "format": "something else"}))
    with pytest.raises(CommandError, match="is not a collab-audit-anchor file"):
        call_command("audit_verify", "--anchor", str(edited))


# -- the signing key off the application -------------------------------------------


@pytest.fixture
def external(settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A production application that holds no key; the signer's key file beside it."""
    settings.PRODUCTION, settings.DEMO_MODE = True, False
    monkeypatch.setenv("COLLAB_AUDIT_SIGNER", "external")
    monkeypatch.delenv("COLLAB_AUDIT_SIGNING_KEY")
    monkeypatch.setenv("COLLAB_AUDIT_KEY_FILE", str(tmp_path / "app-never-has.key"))
    key_file = tmp_path / "signer.key"
    key_file.write_text(base64.b64encode(bytes(range(50, 82))).decode() + "\n")
    return key_file


def signer_public(key_file: Path) -> str:
    return keys.public_key_b64(SigningKey(base64.b64decode(key_file.read_text())))


def test_the_application_runs_without_the_key_in_external_mode(
    external: Path, settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert [m.id for m in audit_signing_key_present()] == ["audit.W002"]
    monkeypatch.setenv("COLLAB_AUDIT_TRUSTED_KEYS", signer_public(external))
    assert audit_signing_key_present() == []  # no audit.E001 without a key
    settings.AUDIT_CHECKPOINT_EVERY = 1
    record_events(2)
    assert not AuditCheckpoint.objects.exists()  # the application signs nothing itself
    assert not (tmp_path / "app-never-has.key").exists()  # nor makes itself a key
    with pytest.raises(ImproperlyConfigured, match="holds no audit signing key"):
        keys.signing_key()
    with pytest.raises(CommandError, match="holds no audit signing key"):
        call_command("audit_checkpoint")
    with pytest.raises(CommandError, match="holds no audit signing key"):
        call_command("audit_archive", "--before", "2999-01-01", "--output", str(tmp_path / "a"))
    assert not (tmp_path / "a").exists()
    monkeypatch.setenv("COLLAB_AUDIT_SIGNING_KEY", TEST_SEED_B64)
    assert [m.id for m in audit_signing_key_present()] == ["audit.W001"]
    with pytest.raises(ImproperlyConfigured):
        keys.signing_key()  # a key left in the environment is still not used


def test_the_signing_job_signs_with_a_key_file_only_it_can_read(
    external: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    record_events(2)
    for mode in (0o644, 0o640, 0o604):
        os.chmod(external, mode)
        with pytest.raises(
            CommandError, match=f"accessible by group or others \\(mode 0{mode:o}\\)"
        ):
            call_command("audit_checkpoint", "--key-file", str(external))
    assert not AuditCheckpoint.objects.exists()
    with pytest.raises(CommandError, match="does not exist"):
        call_command("audit_checkpoint", "--key-file", str(tmp_path / "nope.key"))
    os.chmod(external, 0o600)
    out = StringIO()
    call_command("audit_checkpoint", "--key-file", str(external), stdout=out)
    assert "signed checkpoint at seq 2" in out.getvalue()
    public = signer_public(external)
    assert AuditCheckpoint.objects.get().public_key == public
    anchor = make_anchor(tmp_path / "anchor.json", "--key-file", str(external))
    assert anchor["public_key"] == public
    archive = tmp_path / "audit.jsonl"
    call_command(
        "audit_archive", "--before", timezone.now().isoformat(), "--output", str(archive),
        "--key-file", str(external), stdout=StringIO(),
    )  # fmt: skip
    anchor_line = json.loads(archive.read_text().splitlines()[-1])
    assert anchor_line["checkpoint"]["public_key"] == public
    report = chain_verify(
        archives_given=[archive], anchors=[anchor_load(tmp_path / "anchor.json")], trusted=[public]
    )
    assert report.ok, report.problems
    assert not chain_verify().ok  # no key configured to trust: signatures cannot be checked
    monkeypatch.setenv("COLLAB_AUDIT_TRUSTED_KEYS", public)
    report = chain_verify()
    assert report.ok and report.trust == "COLLAB_AUDIT_TRUSTED_KEYS"


def test_an_application_key_file_others_can_read_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "audit-signing.key"
    path.write_text(TEST_SEED_B64 + "\n")
    os.chmod(path, 0o644)
    monkeypatch.delenv("COLLAB_AUDIT_SIGNING_KEY")
    monkeypatch.setenv("COLLAB_AUDIT_KEY_FILE", str(path))
    with pytest.raises(ImproperlyConfigured, match="chmod 600"):
        keys.signing_key()
    os.chmod(path, 0o600)
    assert keys.public_key_b64(keys.signing_key()) == APP_PUBLIC


def test_an_unknown_signer_mode_stops_deploys_but_not_clinical_work(
    settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLLAB_AUDIT_SIGNER", "elsewhere")
    [error] = audit_signing_key_present()
    assert error.id == "audit.E001" and "must be 'app' or 'external'" in error.msg
    settings.AUDIT_CHECKPOINT_EVERY = 1
    record_events(2)  # the events are written; the checkpoint is skipped and logged
    assert AuditEvent.objects.count() == 2 and not AuditCheckpoint.objects.exists()


def test_a_deeply_nested_anchor_file_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "anchor.json"
    path.write_text("[" * 100_000)
    with pytest.raises(CommandError) as refused:
        call_command("audit_verify", "--anchor", str(path), stdout=StringIO(), stderr=StringIO())
    assert str(refused.value) == f"anchor {path} cannot be read: JSON nested too deeply"
