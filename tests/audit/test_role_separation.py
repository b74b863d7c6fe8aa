"""The audit trail holds against whoever holds the service's database credentials.

After ``audit_secure`` a NOLOGIN role owns the audit tables and their trigger function;
the role the servers log in as may read and append, and nothing else. The tests log in
as that role over TCP (trust auth on 127.0.0.1) and try what an operator with the
service's credentials would try.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from io import StringIO
from typing import Any

import psycopg
import pytest
from django.core.checks.registry import registry
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.test import override_settings

from collab.audit.checks import audit_tables_not_servers_own
from collab.audit.models import AuditAction, AuditCheckpoint, AuditEvent
from collab.audit.services import checkpoint_sign
from collab.audit.verify import ProblemKind, chain_verify
from tests.audit.support import record_events
from tests.support.live import ROOT, server_env

SCHEMA = "public"
NAMES = ("audit_auditevent", "audit_auditcheckpoint", "audit_audithead")
# Always by schema: a decoy schema on the test's own search_path must not fool the test.
TABLES = tuple(f"{SCHEMA}.{name}" for name in NAMES)
EVENTS, CHECKPOINTS, HEAD = TABLES
FUNCTION = f"{SCHEMA}.collab_audit_append_only()"
# What a privilege refusal says; the trigger says "audit rows are append-only" with the
# same SQLSTATE 42501, and must never be what stopped an attack here.
PRIVILEGE_REFUSAL = re.compile(
    r"^(permission denied for (table|sequence|schema|database)|permission denied to set role|"
    r"must be owner of (table|relation|function|sequence|schema)|must have admin option)"
)
TRIGGER_REFUSAL = "audit rows are append-only"


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


def _drop_role(role: str) -> None:
    """The role and whatever it still owns here (decoys it made), its grants too: the
    audit objects have gone back to their owners first."""
    if _role_exists(role):
        with connection.cursor() as cursor:
            cursor.execute(f"DROP OWNED BY {role} CASCADE")
            cursor.execute(f"DROP ROLE {role}")


@pytest.fixture
def roles() -> Iterator[Roles]:
    """A LOGIN service role and an owner role, unique to this process (roles are
    cluster-wide); at teardown the tables, schema and database go back to their owners
    and both roles go, with anything they created."""
    pid = os.getpid()
    found = Roles(service=f"collab_test_service_{pid}", owner=f"collab_test_audit_owner_{pid}")
    database = connection.settings_dict["NAME"]
    owners = {
        t: _scalar("SELECT relowner::regrole::text FROM pg_class WHERE oid = %s::regclass", [t])
        for t in TABLES
    }
    function_owner = _scalar(
        "SELECT proowner::regrole::text FROM pg_proc WHERE oid = %s::regprocedure", [FUNCTION]
    )
    schema_owner = _scalar(
        "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = %s", [SCHEMA]
    )
    database_owner = _scalar(
        "SELECT datdba::regrole::text FROM pg_database WHERE datname = current_database()"
    )
    for role in (found.service, found.owner):
        _drop_role(role)  # left by a crashed run with the same pid
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE ROLE {found.service} LOGIN")
        # A real service role ran migrate: it may create objects in the schema and owns
        # every table, the audit tables and their trigger function included, until
        # audit_secure takes those away. (The audit write path touches only audit tables,
        # so the other tables may stay with the test's own role.)
        cursor.execute(f"GRANT USAGE, CREATE ON SCHEMA {SCHEMA} TO {found.service}")
        for table in TABLES:
            cursor.execute(f"ALTER TABLE {table} OWNER TO {found.service}")
        cursor.execute(f"ALTER FUNCTION {FUNCTION} OWNER TO {found.service}")
    try:
        yield found
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f'ALTER DATABASE "{database}" OWNER TO {database_owner}')
            cursor.execute(f'REVOKE CREATE ON DATABASE "{database}" FROM {found.service}')
            cursor.execute(f"ALTER SCHEMA {SCHEMA} OWNER TO {schema_owner}")
            for table, owner in owners.items():
                cursor.execute(f"ALTER TABLE {table} OWNER TO {owner}")
            cursor.execute(f"ALTER FUNCTION {FUNCTION} OWNER TO {function_owner}")
        for role in (found.service, found.owner):
            _drop_role(role)


def _secure(roles: Roles, *extra: str, stderr: StringIO | None = None) -> str:
    out = StringIO()
    call_command(
        "audit_secure",
        "--service-role",
        roles.service,
        "--owner-role",
        roles.owner,
        *extra,
        stdout=out,
        stderr=stderr or StringIO(),
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
    sequence = _scalar(f"SELECT pg_get_serial_sequence('{EVENTS}', 'id')")
    assert sequence, "the event id has a sequence"
    attacks: dict[str, list[str]] = {}
    for table in (EVENTS, CHECKPOINTS):
        name = table.split(".")[1]
        attacks |= {
            f"update {table}": [f"UPDATE {table} SET seq = seq + 100"],  # noqa: S608
            f"delete {table}": [f"DELETE FROM {table} WHERE seq = 1"],  # noqa: S608
            f"truncate {table}": [f"TRUNCATE {table}"],
            f"truncate {table} with the flush setting": [
                "SELECT set_config('collab.audit_allow_truncate', 'on', false)",
                f"TRUNCATE {table}",
            ],
            f"disable trigger on {table}": [
                f"ALTER TABLE {table} DISABLE TRIGGER {name}_no_change"
            ],
            f"disable all triggers on {table}": [f"ALTER TABLE {table} DISABLE TRIGGER ALL"],
            f"drop trigger on {table}": [f"DROP TRIGGER {name}_no_change ON {table}"],
            f"create trigger on {table}": [
                f"CREATE TRIGGER evil BEFORE INSERT ON {table} "
                f"FOR EACH ROW EXECUTE FUNCTION {FUNCTION}"
            ],
            f"create rule on {table}": [
                f"CREATE RULE evil AS ON INSERT TO {table} DO INSTEAD NOTHING"
            ],
            f"take ownership of {table}": [f"ALTER TABLE {table} OWNER TO {service}"],
            f"rename {table}": [f"ALTER TABLE {table} RENAME TO {name}_old"],
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
        "delete the head": [f"DELETE FROM {HEAD}"],  # noqa: S608
        "truncate the head": [f"TRUNCATE {HEAD}"],
        "drop the head": [f"DROP TABLE {HEAD}"],
        "rewind the id sequence": [f"SELECT setval('{sequence}', 1)"],
        "alter the id sequence": [f"ALTER SEQUENCE {sequence} RESTART"],
        "become the owner role": [f"SET ROLE {owner}"],
        "join the owner role": [f"GRANT {owner} TO {service}"],
        "drop the schema with everything in it": [f"DROP SCHEMA {SCHEMA} CASCADE"],
        "create a schema for copies": ["CREATE SCHEMA evil"],
    }
    return attacks


def _run_attacks(roles: Roles) -> tuple[dict[str, str], list[str]]:
    refused: dict[str, str] = {}
    allowed: list[str] = []
    with _login(roles.service) as conn:
        for name, statements in _attacks(roles).items():
            try:
                with conn.transaction():
                    for statement in statements:
                        conn.execute(statement)
            except psycopg.errors.InsufficientPrivilege as exc:
                refused[name] = str(exc)
            else:
                allowed.append(name)
    return refused, allowed


def _state(roles: Roles) -> list[Any]:
    """Owners, privileges and memberships: what audit_secure decides."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT n.nspname, relname, relowner::regrole::text, relacl::text FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.oid = ANY(%s::regclass[]) OR c.oid IN (SELECT objid FROM pg_depend "
            "WHERE refobjid = ANY(%s::regclass[]) AND classid = 'pg_class'::regclass) "
            "ORDER BY 1, 2",
            [list(TABLES), list(TABLES)],
        )
        rows: list[Any] = list(cursor.fetchall())
        cursor.execute(
            "SELECT proowner::regrole::text, proacl::text, proconfig::text FROM pg_proc "
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


def _owner_of(table: str) -> str:
    return str(
        _scalar("SELECT relowner::regrole::text FROM pg_class WHERE oid = %s::regclass", [table])
    )


def _granted(role: str, table: str) -> set[str]:
    """The privileges relacl grants the role itself (not through a group); PUBLIC
    is grantee 0."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT a.privilege_type FROM pg_class c, aclexplode(c.relacl) a "
            "WHERE c.oid = %s::regclass AND a.grantee = coalesce(to_regrole(%s)::oid, 0)",
            [table, role],
        )
        return {row[0] for row in cursor.fetchall()}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_service_role_can_read_and_append_but_change_nothing(roles: Roles) -> None:
    record_events(3)
    checkpoint_sign()
    # The trigger refuses a superuser with the same SQLSTATE as a privilege refusal:
    # the messages below tell them apart.
    with pytest.raises(DatabaseError, match=TRIGGER_REFUSAL), transaction.atomic():
        _scalar(f"UPDATE {EVENTS} SET seq = seq + 100 RETURNING 1")  # noqa: S608
    # A careless setup made the service role a member of the owner role: undone.
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE ROLE {roles.owner} NOLOGIN")
        cursor.execute(f"GRANT {roles.owner} TO {roles.service}")
    out = _secure(roles)
    assert f"revoked {roles.service}'s membership of {roles.owner}" in out
    assert "collab.audit_allow_truncate" in out

    with _login(roles.service) as conn:
        assert conn.execute(f"SELECT count(*) FROM {EVENTS}").fetchone() == (3,)  # noqa: S608
        assert conn.execute(f"SELECT count(*) FROM {CHECKPOINTS}").fetchone() == (1,)  # noqa: S608
    refused, allowed = _run_attacks(roles)
    assert allowed == [], f"the service role could: {allowed}"
    # Each one stopped by privileges, not by the trigger (which a privilege the
    # service role should not hold would reach).
    by_trigger = {name: msg for name, msg in refused.items() if TRIGGER_REFUSAL in msg}
    assert by_trigger == {}
    unexplained = {n: m for n, m in refused.items() if not PRIVILEGE_REFUSAL.match(m)}
    assert unexplained == {}
    assert refused[f"update {EVENTS}"].startswith("permission denied for table audit_auditevent")
    assert refused[f"truncate {EVENTS} with the flush setting"].startswith(
        "permission denied for table"
    )
    assert refused["replace the trigger function"].startswith("must be owner of function")
    assert refused["become the owner role"].startswith("permission denied to set role")
    assert refused["create a schema for copies"].startswith("permission denied for database")

    # The end state itself: only read and append (and move the head), held directly.
    for table in TABLES:
        assert _owner_of(table) == roles.owner
        for privilege in ("UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"):
            held = _scalar(
                "SELECT has_table_privilege(%s, %s::regclass, %s)",
                [roles.service, table, privilege],
            )
            assert held is (table == HEAD and privilege == "UPDATE"), (table, privilege)
        expected = {"SELECT", "INSERT", "UPDATE"} if table == HEAD else {"SELECT", "INSERT"}
        assert _granted(roles.service, table) == expected
        assert _granted("public", table) == set()
        acl = _scalar("SELECT relacl::text FROM pg_class WHERE oid = %s::regclass", [table])
        assert f"{roles.service}={'arw' if table == HEAD else 'ar'}/" in acl

    # Nothing moved: rows, triggers, function and owners are as they were.
    assert (AuditEvent.objects.count(), AuditCheckpoint.objects.count()) == (3, 1)
    assert (
        _scalar(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = ANY(%s::regclass[]) "
            "AND NOT tgisinternal AND tgenabled = 'O'",
            [[EVENTS, CHECKPOINTS]],
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
        conn.execute(f"UPDATE {HEAD} SET seq = 2, hash = %s WHERE id = 1", [events[1].hash])  # noqa: S608
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
        assert _owner_of(table) == roles.owner


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


def _make_decoys(roles: Roles) -> None:
    """As the service role: a schema named after the superuser that runs audit_secure
    (first on its default search_path, "$user", public) holding look-alike tables and
    a look-alike trigger function with the migration's triggers."""
    me = _scalar("SELECT current_user")
    with _login(roles.service) as conn:
        conn.execute(f"CREATE SCHEMA {me}")
        for name in NAMES:
            conn.execute(f"CREATE TABLE {me}.{name} (LIKE {SCHEMA}.{name} INCLUDING ALL)")
        body = _scalar("SELECT pg_get_functiondef(%s::regprocedure)", [FUNCTION]).replace(
            f"{SCHEMA}.collab_audit_append_only", f"{me}.collab_audit_append_only"
        )
        conn.execute(body)
        for name in NAMES[:2]:
            conn.execute(
                f"CREATE TRIGGER {name}_no_change BEFORE UPDATE OR DELETE ON {me}.{name} "
                f"FOR EACH ROW EXECUTE FUNCTION {me}.collab_audit_append_only()"
            )
            conn.execute(
                f"CREATE TRIGGER {name}_no_truncate BEFORE TRUNCATE ON {me}.{name} "
                f"FOR EACH STATEMENT EXECUTE FUNCTION {me}.collab_audit_append_only()"
            )


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_audit_secure_is_not_fooled_by_a_decoy_schema(roles: Roles) -> None:
    """A service role with CREATE on the database (the database owner has it) builds
    copies where the superuser's search_path looks first: were they what audit_secure
    secured, it would pass its own check and leave the real tables with the service
    role. It refuses, even when told to accept a service role that may create schemas."""
    database = connection.settings_dict["NAME"]
    with connection.cursor() as cursor:
        cursor.execute(f'GRANT CREATE ON DATABASE "{database}" TO {roles.service}')
    _make_decoys(roles)
    me = _scalar("SELECT current_user")
    # The decoys really are what an unqualified name finds for the superuser.
    found = "SELECT relnamespace::regnamespace::text FROM pg_class WHERE oid = %s::regclass"
    assert _scalar(found, ["audit_auditevent"]) == me
    before = _state(roles)
    for extra in ([], ["--allow-schema-owner"]):
        with pytest.raises(CommandError, match="more than one schema") as refused:
            _secure(roles, *extra)
        assert f"audit_auditevent in {me}, {SCHEMA}" in str(refused.value)
        assert _state(roles) == before
    for table in TABLES:
        assert _owner_of(table) == roles.service
    assert _owner_of(f"{me}.audit_auditevent") == roles.service
    with connection.cursor() as cursor:
        cursor.execute(f"DROP SCHEMA {me} CASCADE")

    # The copies gone, the right to make more still refuses, and says why.
    with pytest.raises(CommandError, match="may CREATE schemas in this database"):
        _secure(roles)
    assert _state(roles) == before
    # Accepted on request, with a warning, and what gets secured is the real thing.
    err = StringIO()
    _secure(roles, "--allow-schema-owner", stderr=err)
    assert f"WARNING: {roles.service} may CREATE schemas" in err.getvalue()
    for table in TABLES:
        assert _owner_of(table) == roles.owner
    _, allowed = _run_attacks(roles)
    assert allowed == ["create a schema for copies"]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("owns", ["schema", "database"])
def test_audit_secure_refuses_a_service_role_owning_the_schema_or_database(
    roles: Roles, owns: str
) -> None:
    """A schema's owner may drop it with every table in it, whoever owns the tables;
    on PostgreSQL 15 the database owner owns public through pg_database_owner."""
    database = connection.settings_dict["NAME"]
    with connection.cursor() as cursor:
        if owns == "schema":
            cursor.execute(f"ALTER SCHEMA {SCHEMA} OWNER TO {roles.service}")
        else:
            cursor.execute(f'ALTER DATABASE "{database}" OWNER TO {roles.service}')
    before = _state(roles)
    with pytest.raises(CommandError, match=f"{roles.service} owns schema {SCHEMA}") as refused:
        _secure(roles)
    assert "nothing changed" in str(refused.value)
    if owns == "database":
        assert "pg_database_owner" in str(refused.value)
        assert "owns the database" in str(refused.value)
    assert _state(roles) == before
    for table in TABLES:
        assert _owner_of(table) == roles.service

    # Told to go ahead, it secures the tables and warns; the schema owner can still
    # drop them, which is why it refuses by default.
    err = StringIO()
    _secure(roles, "--allow-schema-owner", stderr=err)
    assert f"WARNING: {roles.service} owns schema {SCHEMA}" in err.getvalue()
    assert _owner_of(EVENTS) == roles.owner
    # (Tried in a transaction that is rolled back.)
    with _login(roles.service) as conn, conn.transaction(force_rollback=True):
        conn.execute(f"DROP SCHEMA {SCHEMA} CASCADE")
        gone = conn.execute(f"SELECT to_regclass('{EVENTS}')").fetchone()
    assert gone == (None,)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (
            "ALTER TABLE public.audit_auditevent DISABLE TRIGGER audit_auditevent_no_change",
            "trigger audit_auditevent_no_change is disabled",
        ),
        (
            "CREATE OR REPLACE FUNCTION public.collab_audit_append_only() RETURNS trigger "
            "LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$",
            "not as migration 0002 wrote it|as migration 0002 wrote it",
        ),
        (
            "CREATE TRIGGER evil BEFORE INSERT ON public.audit_auditcheckpoint "
            "FOR EACH ROW EXECUTE FUNCTION public.collab_audit_append_only()",
            "unknown trigger evil",
        ),
        (
            "CREATE RULE evil AS ON INSERT TO public.audit_auditevent DO INSTEAD NOTHING",
            "audit_auditevent has rules",
        ),
        (
            "DROP TRIGGER audit_auditcheckpoint_no_truncate ON public.audit_auditcheckpoint",
            "trigger audit_auditcheckpoint_no_truncate is missing",
        ),
    ],
)
def test_audit_secure_refuses_triggers_the_service_role_changed(
    roles: Roles, tamper: str, message: str
) -> None:
    """Before audit_secure the service role owns the tables and the function: what it
    changed then would survive a change of owner."""
    function_body = _scalar("SELECT pg_get_functiondef(%s::regprocedure)", [FUNCTION])
    with _login(roles.service) as conn:
        conn.execute(tamper)
    try:
        before = _state(roles)
        with pytest.raises(CommandError, match=message):
            _secure(roles)
        assert _state(roles) == before
    finally:
        with connection.cursor() as cursor:
            cursor.execute(function_body)
            cursor.execute("DROP RULE IF EXISTS evil ON public.audit_auditevent")
            cursor.execute("DROP TRIGGER IF EXISTS evil ON public.audit_auditcheckpoint")
            cursor.execute(f"ALTER TABLE {EVENTS} ENABLE TRIGGER audit_auditevent_no_change")
            if not _scalar(
                "SELECT count(*) FROM pg_trigger WHERE tgname = 'audit_auditcheckpoint_no_truncate'"
            ):
                cursor.execute(
                    f"CREATE TRIGGER audit_auditcheckpoint_no_truncate BEFORE TRUNCATE ON "
                    f"{CHECKPOINTS} FOR EACH STATEMENT EXECUTE FUNCTION {FUNCTION}"
                )


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_audit_secure_refuses_while_a_group_role_grants_more(roles: Roles) -> None:
    """Revoking from the service role leaves a grant to a role it belongs to: the
    command checks what the service role can really do, and changes nothing."""
    group = f"{roles.service}_group"
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE ROLE {group} NOLOGIN")
        cursor.execute(f"GRANT UPDATE ON {EVENTS} TO {group}")
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


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_check_deploy_warns_while_the_servers_role_owns_the_audit_tables(roles: Roles) -> None:
    """Before audit_secure the servers' role owns the tables (and so may truncate them
    once it sets collab.audit_allow_truncate); check --deploy says so in production."""
    assert audit_tables_not_servers_own in registry.get_checks(include_deployment_checks=True)
    assert audit_tables_not_servers_own not in registry.get_checks()

    def as_service() -> list[str]:
        with connection.cursor() as cursor:
            cursor.execute(f"SET ROLE {roles.service}")
        try:
            return [str(m.msg) for m in audit_tables_not_servers_own() if m.id == "audit.W010"]
        finally:
            with connection.cursor() as cursor:
                cursor.execute("RESET ROLE")

    with override_settings(PRODUCTION=False):
        assert as_service() == []
    with override_settings(PRODUCTION=True):
        (before,) = as_service()
        assert "audit_auditcheckpoint, audit_auditevent, audit_audithead" in before
        _secure(roles)
        assert as_service() == []
        # A group role holding TRUNCATE is as bad as owning (audit_secure refuses it too).
        with connection.cursor() as cursor:
            cursor.execute(f"GRANT TRUNCATE ON {CHECKPOINTS} TO {roles.service}")
        (granted,) = as_service()
        assert "may truncate audit_auditcheckpoint:" in granted
        # Servers logged in as a superuser own everything in effect.
        assert [m.id for m in audit_tables_not_servers_own()] == ["audit.W010"]
