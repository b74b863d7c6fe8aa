from __future__ import annotations

import base64
import dataclasses
import os
from io import StringIO
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import CommandError
from nacl.signing import SigningKey

from collab.audit import canonical, keys
from collab.audit.models import GENESIS_HASH, AuditCheckpoint, AuditEvent
from collab.audit.services import AuditAction, checkpoint_sign
from collab.audit.verify import ProblemKind, chain_verify, event_fields
from tests.audit.support import raw_sql, record_events
from tests.support.users import make_user, verified_client

pytestmark = pytest.mark.django_db


def test_checkpoint_signs_the_head_and_verifies() -> None:
    events = record_events(3)
    checkpoint = checkpoint_sign()
    assert (checkpoint.seq, checkpoint.event_hash) == (3, events[-1].hash)
    message = canonical.checkpoint_bytes(
        seq=3, event_hash=events[-1].hash, signed_at=checkpoint.signed_at, reason="manual"
    )
    assert keys.signature_valid(
        public_key=checkpoint.public_key, message=message, signature=checkpoint.signature
    )
    report = chain_verify()
    assert report.ok and report.checkpoints == 1


def test_checkpoint_command_signs_and_is_audited() -> None:
    record_events(2)
    out = StringIO()
    call_command("audit_checkpoint", stdout=out)
    assert "signed checkpoint at seq 2" in out.getvalue()
    assert AuditEvent.objects.filter(action=AuditAction.CHECKPOINT_SIGNED).count() == 1
    assert chain_verify().ok


def test_tampered_checkpoint_hash_is_caught() -> None:
    record_events(3)
    checkpoint = checkpoint_sign()
    with raw_sql("audit_auditcheckpoint") as cursor:
        cursor.execute(
            "UPDATE audit_auditcheckpoint SET event_hash = %s WHERE id = %s",
            ["f" * 64, checkpoint.pk],
        )
    problems = chain_verify().problems
    assert problems[0].kind is ProblemKind.CHECKPOINT
    assert "bad signature" in problems[0].description
    assert any("does not match the chain" in p.description for p in problems)


def test_checkpoint_signed_by_another_key_is_caught() -> None:
    record_events(2)
    checkpoint = checkpoint_sign()
    other = SigningKey.generate()
    message = canonical.checkpoint_bytes(
        seq=checkpoint.seq,
        event_hash=checkpoint.event_hash,
        signed_at=checkpoint.signed_at,
        reason=checkpoint.reason,
    )
    with raw_sql("audit_auditcheckpoint") as cursor:
        cursor.execute(
            "UPDATE audit_auditcheckpoint SET public_key = %s, signature = %s WHERE id = %s",
            [keys.public_key_b64(other), keys.sign(other, message), checkpoint.pk],
        )
    problem = chain_verify().problems[0]
    assert "untrusted key" in problem.description


def test_rotated_key_stays_trusted_when_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    record_events(2)
    old_public = keys.public_key_b64(keys.signing_key())
    checkpoint_sign()
    monkeypatch.setenv("COLLAB_AUDIT_SIGNING_KEY", base64.b64encode(b"\x07" * 32).decode())
    assert not chain_verify().ok
    monkeypatch.setenv("COLLAB_AUDIT_TRUSTED_KEYS", old_public)
    assert chain_verify().ok


def test_production_without_a_key_refuses_clearly(
    settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("COLLAB_AUDIT_SIGNING_KEY")
    monkeypatch.setenv("COLLAB_AUDIT_KEY_FILE", str(tmp_path / "missing.key"))
    settings.PRODUCTION, settings.DEMO_MODE = True, False
    with pytest.raises(ImproperlyConfigured, match="COLLAB_AUDIT_SIGNING_KEY"):
        checkpoint_sign()
    assert not (tmp_path / "missing.key").exists()
    from collab.audit.checks import audit_signing_key_present

    assert [e.id for e in audit_signing_key_present()] == ["audit.E001"]
    # Periodic checkpoints never block the event they follow.
    settings.AUDIT_CHECKPOINT_EVERY = 1
    record_events(1)
    assert not AuditCheckpoint.objects.exists()


def test_development_generates_a_private_key_file_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "audit-signing.key"
    monkeypatch.delenv("COLLAB_AUDIT_SIGNING_KEY")
    monkeypatch.setenv("COLLAB_AUDIT_KEY_FILE", str(path))
    first = keys.signing_key()
    assert path.exists() and os.stat(path).st_mode & 0o777 == 0o600
    assert keys.signing_key().encode() == first.encode()


def test_malformed_key_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLLAB_AUDIT_SIGNING_KEY", "not base64!")
    with pytest.raises(ImproperlyConfigured, match="base64"):
        keys.signing_key()
    monkeypatch.setenv("COLLAB_AUDIT_SIGNING_KEY", base64.b64encode(b"short").decode())
    with pytest.raises(ImproperlyConfigured, match="32-byte"):
        keys.signing_key()


def test_checkpoint_list_is_admin_only() -> None:
    record_events(2)
    checkpoint_sign()
    admin = verified_client(make_user("boss", role="admin"))
    response = admin.get("/api/audit/checkpoints")
    assert response.status_code == 200
    [listed] = response.json()["checkpoints"]
    assert listed["seq"] == 2 and listed["reason"] == "manual"
    assert AuditEvent.objects.filter(target="audit:checkpoints").count() == 1
    provider = make_user("pcp")
    refused = verified_client(provider).get("/api/audit/checkpoints")
    assert refused.status_code == 403
    assert refused.json()["error"] == "forbidden"
    denied = AuditEvent.objects.get(action=AuditAction.ACCESS_DENIED)
    assert denied.actor_id == provider.pk and denied.target == "audit:checkpoints"


def test_the_signer_refuses_a_rewritten_chain_whose_checkpoints_were_deleted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An operator rewrites an event, re-hashes the rest, moves the head and deletes
    the checkpoints that would contradict it: the next timer run must not sign that."""
    key_file = tmp_path / "signer.key"
    key_file.write_text(base64.b64encode(bytes(range(1, 33))).decode() + "\n")
    key_file.chmod(0o600)
    record_events(3)
    call_command("audit_checkpoint", "--key-file", str(key_file), stdout=StringIO())
    with raw_sql() as cursor:
        cursor.execute("UPDATE audit_auditevent SET target = 'rewritten' WHERE seq = 1")
    with raw_sql("audit_auditcheckpoint") as cursor:
        cursor.execute("DELETE FROM audit_auditcheckpoint")
    before = AuditCheckpoint.objects.count()
    with caplog.at_level("ERROR", logger="collab.security"), pytest.raises(CommandError) as refused:
        call_command("audit_checkpoint", "--key-file", str(key_file), stdout=StringIO())
    assert "event seq 1 altered" in str(refused.value)
    # Now the careful rewrite: every hash recomputed and the head moved, so the chain
    # verifies on its own; only the signer's memo of what it signed last contradicts it.
    prev = GENESIS_HASH
    with raw_sql() as cursor:
        for event in AuditEvent.objects.order_by("seq"):
            fields = dataclasses.replace(event_fields(event), prev_hash=prev)
            prev = canonical.event_hash(fields)
            cursor.execute(
                "UPDATE audit_auditevent SET prev_hash = %s, hash = %s WHERE id = %s",
                [fields.prev_hash, prev, event.pk],
            )
        cursor.execute("UPDATE audit_audithead SET hash = %s WHERE id = 1", [prev])
    assert chain_verify().ok
    with caplog.at_level("ERROR", logger="collab.security"), pytest.raises(CommandError) as refused:
        call_command("audit_checkpoint", "--key-file", str(key_file), stdout=StringIO())
    assert "the chain was rewritten: this signer signed seq 3" in str(refused.value)
    assert AuditCheckpoint.objects.count() == before == 0
    assert any("audit checkpoint refused" in r.getMessage() for r in caplog.records)


def _key_file(directory: Path, data: bytes | None = None) -> Path:
    directory.mkdir(mode=0o700, exist_ok=True)
    path = directory / "audit.key"
    path.write_bytes(data if data is not None else base64.b64encode(bytes(range(32))) + b"\n")
    path.chmod(0o600)
    return path


def _checkpoint_refused(path: Path) -> str:
    before = AuditCheckpoint.objects.count()
    with pytest.raises(CommandError) as refused:
        call_command("audit_checkpoint", "--key-file", str(path), stdout=StringIO())
    assert AuditCheckpoint.objects.count() == before
    return str(refused.value)


def test_a_key_file_that_is_not_utf8_is_a_clear_error(tmp_path: Path) -> None:
    path = _key_file(tmp_path / "k", b"\xff\xfe\x00 not text")
    assert _checkpoint_refused(path) == f"audit key file {path} is not UTF-8 text"


def test_a_symlinked_key_file_is_refused(tmp_path: Path) -> None:
    """The app user points a link it controls at a key the signer would then trust."""
    real = _key_file(tmp_path / "k")
    link = tmp_path / "k" / "link.key"
    link.symlink_to(real)
    assert _checkpoint_refused(link) == f"audit key file {link} is a symlink"


def test_a_key_file_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    """A signer run as root must not take a 0600 key the application's user owns."""
    path = _key_file(tmp_path / "k")
    os.chown(path, 65534, 65534)
    assert "belongs to uid 65534, not to this user" in _checkpoint_refused(path)
    os.chown(path, os.geteuid(), os.getegid())
    record_events(1)
    call_command("audit_checkpoint", "--key-file", str(path), stdout=StringIO())


@pytest.mark.parametrize("mode", [0o770, 0o707, 0o1777])
def test_a_key_file_in_a_directory_others_may_write_is_refused(tmp_path: Path, mode: int) -> None:
    path = _key_file(tmp_path / "k")
    path.parent.chmod(mode)
    assert "is writable by group or others" in _checkpoint_refused(path)
