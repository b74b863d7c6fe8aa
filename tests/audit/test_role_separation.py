"""The audit trail holds against whoever holds the service's database credentials.

After ``audit_secure`` a NOLOGIN role owns the audit tables and their trigger function;
the role the servers log in as may read and append, and nothing else. The tests log in
as that role over TCP (trust auth on 127.0.0.1) and try what an operator with the
service's credentials would try.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from io import StringIO
from typing import Any

import psycopg
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import IntegrityError, connection, transaction

from collab.audit.models import AuditAction, AuditCheckpoint, AuditEvent
from collab.audit.services import checkpoint_sign
from collab.audit.verify import ProblemKind, chain_verify
from tests.audit.support import record_events
from tests.support.live import ROOT, server_env

TABLES = ("audit_auditevent", "audit_auditcheckpoint", "audit_audithead")
FUNCTION = "collab_audit_append_only()"


@dataclass(frozen=True)
class Roles:
    service: str
    owner: str


def _scalar(sql: str, params: list[Any] | None = None) -> Any:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    return row[0] if row else None


def _role_exists(name: str) -> bool:
    return bool(_scalar("SELECT count(*) FROM pg_roles WHERE rolname = %s", [name]))


@pytest.fixture
def roles() -> Iterator[Roles]:
    """A LOGIN service role and an owner role, unique to this process (roles are
    cluster-wide); at teardown the tables go back to their owner and both roles go."""
    pid = os.getpid()
    found = Roles(service=f"collab_test_service_{pid}", owner=f"collab_test_audit_owner_{pid}")
    me = _scalar("SELECT current_user")
    owners = {
        t: _scalar("SELECT relowner::regrole::text FROM pg_class WHERE oid = %s::regclass", [t])
        for t in TABLES
    }
    function_owner = _scalar(
        "SELECT proowner::regrole::text FROM pg_proc WHERE oid = %s::regprocedure", [FUNCTION]
    )
    with connection.cursor() as cursor:
        for role in (found.service, found.owner):
            if _role_exists(role):  # left by a crashed run with the same pid
                cursor.execute(f"REASSIGN OWNED BY {role} TO {me}")
                cursor.execute(f"DROP OWNED BY {role}")
                cursor.execute(f"DROP ROLE {role}")
        cursor.execute(f"CREATE ROLE {found.service} LOGIN")
        # A real service role ran migrate: it may create objects in the schema and owns
        # every table, the audit tables and their trigger function included, until
        # audit_secure takes those away. (The audit write path touches only audit tables,
        # so the other tables may stay with the test's own role.)
        cursor.execute(f"GRANT USAGE, CREATE ON SCHEMA public TO {found.service}")
        for table in TABLES:
            cursor.execute(f"ALTER TABLE {table} OWNER TO {found.service}")
        cursor.execute(f"ALTER FUNCTION {FUNCTION} OWNER TO {found.service}")
    try:
        yield found
    finally:
        with connection.cursor() as cursor:
            for table, owner in owners.items():
                cursor.execute(f"ALTER TABLE {table} OWNER TO {owner}")
            cursor.execute(f"ALTER FUNCTION {FUNCTION} OWNER TO {function_owner}")
            for role in (found.service, found.owner):
                if _role_exists(role):
                    cursor.execute(f"REASSIGN OWNED BY {role} TO {me}")
                    cursor.execute(f"DROP OWNED BY {role}")
                    cursor.execute(f"DROP ROLE {role}")


def _secure(roles: Roles) -> str:
    out = StringIO()
    call_command(
        "audit_secure", "--service-role", roles.service, "--owner-role", roles.owner, stdout=out
    )
    return out.getvalue()


def _login(role: str) -> psycopg.Connection[Any]:
    cfg = connection.settings_dict
    return psycopg.connect(
        host=cfg.get("HOST") or "127.0.0.1",
        port=int(cfg.get("PORT") or 5432),
        dbname=cfg["NAME"],
        user=role,
        autocommit=True,
    )


def _url(role: str) -> str:
    cfg = connection.settings_dict
    host, port = cfg.get("HOST") or "127.0.0.1", cfg.get("PORT") or 5432
    return f"postgres://{role}@{host}:{port}/{cfg['NAME']}"


def _manage(role: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=server_env(DATABASE_URL=_url(role)),
        capture_output=True,
        text=True,
        timeout=120,
    )


def _attacks(roles: Roles) -> dict[str, list[str]]:
    service, owner = roles.service, roles.owner
    sequence = _scalar("SELECT pg_get_serial_sequence('audit_auditevent', 'id')")
    assert sequence, "the event id has a sequence"
    attacks: dict[str, list[str]] = {}
    for table in ("audit_auditevent", "audit_auditcheckpoint"):
        attacks |= {
            f"update {table}": [f"UPDATE {table} SET seq = seq + 100"],  # noqa: S608
            f"delete {table}": [f"DELETE FROM {table} WHERE seq = 1"],  # noqa: S608
            f"truncate {table}": [f"TRUNCATE {table}"],
            f"truncate {table} with the flush setting": [
                "SELECT set_config('collab.audit_allow_truncate', 'on', false)",
                f"TRUNCATE {table}",
            ],
            f"disable trigger on {table}": [
                f"ALTER TABLE {table} DISABLE TRIGGER {table}_no_change"
            ],
            f"disable all triggers on {table}": [f"ALTER TABLE {table} DISABLE TRIGGER ALL"],
            f"drop trigger on {table}": [f"DROP TRIGGER {table}_no_change ON {table}"],
            f"create trigger on {table}": [
                f"CREATE TRIGGER evil BEFORE INSERT ON {table} "
                f"FOR EACH ROW EXECUTE FUNCTION {FUNCTION}"
            ],
            f"create rule on {table}": [
                f"CREATE RULE evil AS ON INSERT TO {table} DO INSTEAD NOTHING"
            ],
            f"take ownership of {table}": [f"ALTER TABLE {table} OWNER TO {service}"],
            f"rename {table}": [f"ALTER TABLE {table} RENAME TO {table}_old"],
            f"alter columns of {table}": [f"ALTER TABLE {table} ADD COLUMN evil integer"],
            f"row security on {table}": [f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY"],
            f"lock {table}": [f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"],
            f"drop {table}": [f"DROP TABLE {table}"],
        }
    attacks |= {
        "replace the trigger function": [
            f"CREATE OR REPLACE FUNCTION {FUNCTION} RETURNS trigger LANGUAGE plpgsql "
            "AS $$ BEGIN RETURN NULL; END $$"
        ],
        "take the trigger function": [f"ALTER FUNCTION {FUNCTION} OWNER TO {service}"],
        "drop the trigger function": [f"DROP FUNCTION {FUNCTION} CASCADE"],
        "delete the head": ["DELETE FROM audit_audithead"],
        "truncate the head": ["TRUNCATE audit_audithead"],
        "drop the head": ["DROP TABLE audit_audithead"],
        "rewind the id sequence": [f"SELECT setval('{sequence}', 1)"],
        "alter the id sequence": [f"ALTER SEQUENCE {sequence} RESTART"],
        "become the owner role": [f"SET ROLE {owner}"],
        "join the owner role": [f"GRANT {owner} TO {service}"],
        "drop the schema with everything in it": ["DROP SCHEMA public CASCADE"],
    }
    return attacks


def _state(roles: Roles) -> list[Any]:
    """Owners, privileges and memberships: what audit_secure decides."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname, relowner::regrole::text, relacl::text FROM pg_class "
            "WHERE relname = ANY(%s) OR oid IN (SELECT objid FROM pg_depend "
            "WHERE refobjid = ANY(%s::regclass[]) AND classid = 'pg_class'::regclass) "
            "ORDER BY relname",
            [list(TABLES), list(TABLES)],
        )
        rows: list[Any] = list(cursor.fetchall())
        cursor.execute(
            "SELECT proowner::regrole::text, proacl::text FROM pg_proc "
            "WHERE oid = %s::regprocedure",
            [FUNCTION],
        )
        rows += cursor.fetchall()
        cursor.execute(
            "SELECT rolname, rolcanlogin, pg_has_role(%s, rolname, 'MEMBER') "
            "FROM pg_roles WHERE rolname IN (%s, %s) ORDER BY 1",
            [roles.service, roles.service, roles.owner],
        )
        rows += cursor.fetchall()
    return rows


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_service_role_can_read_and_append_but_change_nothing(roles: Roles) -> None:
    record_events(3)
    checkpoint_sign()
    # A careless setup made the service role a member of the owner role: undone.
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE ROLE {roles.owner} NOLOGIN")
        cursor.execute(f"GRANT {roles.owner} TO {roles.service}")
    out = _secure(roles)
    assert f"revoked {roles.service}'s membership of {roles.owner}" in out

    refused: dict[str, str] = {}
    allowed: list[str] = []
    with _login(roles.service) as conn:
        assert conn.execute("SELECT count(*) FROM audit_auditevent").fetchone() == (3,)
        assert conn.execute("SELECT count(*) FROM audit_auditcheckpoint").fetchone() == (1,)
        for name, statements in _attacks(roles).items():
            try:
                with conn.transaction():
                    for statement in statements:
                        conn.execute(statement)
            except psycopg.errors.InsufficientPrivilege as exc:
                refused[name] = str(exc)
            else:
                allowed.append(name)
    assert allowed == [], f"the service role could: {allowed}"
    assert refused["replace the trigger function"].startswith("must be owner of function")
    assert refused["become the owner role"].startswith("permission denied to set role")

    # Nothing moved: rows, triggers, function and owners are as they were.
    assert (AuditEvent.objects.count(), AuditCheckpoint.objects.count()) == (3, 1)
    assert (
        _scalar(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid IN "
            "('audit_auditevent'::regclass, 'audit_auditcheckpoint'::regclass) "
            "AND NOT tgisinternal AND tgenabled = 'O'"
        )
        == 4
    )
    assert _scalar("SELECT count(*) FROM pg_rules WHERE tablename LIKE 'audit_%%'") == 0
    assert chain_verify().ok

    # The real write path, as the service role: a checkpoint and its CHECKPOINT_SIGNED
    # event, then verification, both in their own processes logged in as that role.
    signed = _manage(roles.service, "audit_checkpoint")
    assert signed.returncode == 0, signed.stderr
    assert AuditEvent.objects.order_by("-seq")[0].action == AuditAction.CHECKPOINT_SIGNED
    assert AuditCheckpoint.objects.count() == 2
    verified = _manage(roles.service, "audit_verify")
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.startswith("OK"), verified.stdout


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_rewound_head_is_possible_and_caught(roles: Roles) -> None:
    """The head row is the one thing the service role may rewrite; it is a cache of the
    last event, so moving it breaks no stored row and verification reports it."""
    events = record_events(4)
    checkpoint_sign()
    _secure(roles)
    with _login(roles.service) as conn:
        conn.execute("UPDATE audit_audithead SET seq = 2, hash = %s WHERE id = 1", [events[1].hash])
    problem = chain_verify().problems[0]
    assert problem.kind is ProblemKind.INSERTED
    assert "beyond the chain head (seq 2)" in problem.description
    # Nor can the next append overwrite from there: seq 3 is taken, the write fails.
    with pytest.raises(IntegrityError), transaction.atomic():
        record_events(1)
    assert list(AuditEvent.objects.values_list("seq", flat=True)) == [1, 2, 3, 4]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_audit_secure_is_idempotent(roles: Roles) -> None:
    first = _secure(roles)
    state = _state(roles)
    assert f"created role {roles.owner} (NOLOGIN)" in first
    second = _secure(roles)
    assert _state(roles) == state
    assert f"role {roles.owner} exists (NOLOGIN)" in second
    assert "created role" not in second
    assert second.count("(unchanged)") == len(TABLES)
    for table in TABLES:
        owner = _scalar(
            "SELECT relowner::regrole::text FROM pg_class WHERE oid = %s::regclass", [table]
        )
        assert owner == roles.owner


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_audit_secure_refuses_a_role_that_is_not_a_superuser(roles: Roles) -> None:
    before = _state(roles)
    result = _manage(roles.service, "audit_secure", "--service-role", roles.service)
    assert result.returncode != 0
    assert "not a superuser" in result.stderr
    assert _state(roles) == before


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("attribute", "message"), [("SUPERUSER", "is a superuser"), ("CREATEROLE", "CREATEROLE")]
)
def test_audit_secure_refuses_a_service_role_no_privilege_binds(
    roles: Roles, attribute: str, message: str
) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER ROLE {roles.service} {attribute}")
    before = _state(roles)
    with pytest.raises(CommandError, match=message):
        _secure(roles)
    assert _state(roles) == before


@pytest.mark.sqlite
def test_audit_secure_refuses_sqlite() -> None:
    with pytest.raises(CommandError, match="needs PostgreSQL"):
        call_command("audit_secure", "--service-role", "collab")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_audit_secure_warns_when_the_service_role_owns_the_schema(roles: Roles) -> None:
    """A schema's owner may drop it with every table in it: privileges cannot stop that."""
    schema_owner = _scalar(
        "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'public'"
    )
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER SCHEMA public OWNER TO {roles.service}")
    try:
        err = StringIO()
        call_command(
            "audit_secure",
            "--service-role",
            roles.service,
            "--owner-role",
            roles.owner,
            stdout=StringIO(),
            stderr=err,
        )
        assert f"WARNING: {roles.service} owns schema public" in err.getvalue()
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER SCHEMA public OWNER TO {schema_owner}")
    err = StringIO()
    call_command(
        "audit_secure",
        "--service-role",
        roles.service,
        "--owner-role",
        roles.owner,
        stdout=StringIO(),
        stderr=err,
    )
    assert err.getvalue() == ""


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_audit_secure_refuses_while_a_group_role_grants_more(roles: Roles) -> None:
    """Revoking from the service role leaves a grant to a role it belongs to: the
    command checks what the service role can really do, and changes nothing."""
    group = f"{roles.service}_group"
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE ROLE {group} NOLOGIN")
        cursor.execute(f"GRANT UPDATE ON audit_auditevent TO {group}")
        cursor.execute(f"GRANT {group} TO {roles.service}")
    try:
        before = _state(roles)
        with pytest.raises(CommandError, match="UPDATE on audit_auditevent"):
            _secure(roles)
        assert _state(roles) == before
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP OWNED BY {group}")
            cursor.execute(f"DROP ROLE {group}")
