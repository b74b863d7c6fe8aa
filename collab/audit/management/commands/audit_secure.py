"""Take the audit tables away from the service's database role (PostgreSQL).

The append-only triggers bind whoever writes the tables, but not their owner: an owner
can disable or drop a trigger, replace its function, or drop the table. Run once by a
DBA (a superuser, connected with DATABASE_URL naming that superuser) after ``migrate``,
and again after any migration of the audit app. It gives the audit tables, their
sequences and the trigger function to a NOLOGIN owner role, and leaves the service
role only what the write path needs: SELECT and INSERT on events and checkpoints,
SELECT, INSERT and UPDATE on the head row. Running it twice changes nothing more.
See docs/audit.md "Immutability".
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError, connections, transaction
from django.db.backends.utils import CursorWrapper

# Append-only rows: read and append, nothing else.
APPEND_ONLY = ("audit_auditevent", "audit_auditcheckpoint")
# The chain head is rewritten by every append; it is a cache of the last event, which
# audit_verify compares with the events and checkpoints, never a source of truth.
HEAD = "audit_audithead"
FUNCTION = "collab_audit_append_only()"


def _ident(cursor: CursorWrapper, name: str) -> str:
    cursor.execute("SELECT quote_ident(%s)", [name])
    return str(cursor.fetchone()[0])


def _one(cursor: CursorWrapper, sql: str, params: list[Any]) -> Any:
    cursor.execute(sql, params)
    row = cursor.fetchone()
    return row[0] if row else None


class Command(BaseCommand):
    help = (
        "PostgreSQL only, run as a superuser: give the audit tables to a NOLOGIN owner role "
        "and leave the service role SELECT and INSERT (and UPDATE of the chain head)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--service-role", required=True, help="the role the servers log in as")
        parser.add_argument(
            "--owner-role",
            default="collab_audit_owner",
            help="the NOLOGIN role that will own the audit tables (created if missing)",
        )
        parser.add_argument("--database", default="default")

    def handle(self, *args: Any, **options: Any) -> None:
        connection = connections[options["database"]]
        if connection.vendor != "postgresql":
            raise CommandError(
                f"audit_secure needs PostgreSQL; this database is {connection.vendor}, which "
                "has no roles (its triggers are the only guard: see docs/audit.md)"
            )
        service, owner = options["service_role"], options["owner_role"]
        self._done: list[str] = []
        try:
            with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
                self._check(cursor, service=service, owner=owner)
                self._secure(cursor, service=service, owner=owner)
        except DatabaseError as exc:
            raise CommandError(f"nothing changed: {exc}".strip()) from exc
        # Told only once committed: a refusal rolls every step back.
        for message in self._done:
            self.stdout.write(message)

    def _say(self, message: str) -> None:
        self._done.append(message)

    def _check(self, cursor: CursorWrapper, *, service: str, owner: str) -> None:
        me = _one(cursor, "SELECT current_user", [])
        if not _one(cursor, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user", []):
            raise CommandError(
                f"connected as {me!r}, which is not a superuser: run audit_secure as a "
                "superuser (DATABASE_URL=postgres://postgres@.../<db>); nothing changed"
            )
        if service == owner:
            raise CommandError("the service role and the owner role must differ")
        if service == me:
            raise CommandError(
                f"{service!r} is the role this command is connected as: the service role "
                "must be the servers' own role, not a superuser"
            )
        cursor.execute("SELECT rolsuper, rolcreaterole FROM pg_roles WHERE rolname = %s", [service])
        service_row = cursor.fetchone()
        if service_row is None:
            raise CommandError(f"no role {service!r}: create the service role first")
        is_super, creates_roles = service_row
        if is_super:
            raise CommandError(
                f"{service!r} is a superuser, which no privilege binds: "
                f"ALTER ROLE {service} NOSUPERUSER first"
            )
        # Before PostgreSQL 16 a CREATEROLE role may grant itself membership of any
        # non-superuser role, the owner role included; later it still may of roles it
        # administers. The servers never need it.
        if creates_roles:
            raise CommandError(
                f"{service!r} has CREATEROLE, which can let it join the owner role: "
                f"ALTER ROLE {service} NOCREATEROLE first"
            )
        missing = [
            table
            for table in (*APPEND_ONLY, HEAD)
            if _one(cursor, "SELECT to_regclass(%s)", [table]) is None
        ]
        if missing:
            raise CommandError(f"missing tables {', '.join(missing)}: run migrate first")

    def _secure(self, cursor: CursorWrapper, *, service: str, owner: str) -> None:
        svc, own = _ident(cursor, service), _ident(cursor, owner)
        if _one(cursor, "SELECT 1 FROM pg_roles WHERE rolname = %s", [owner]) is None:
            cursor.execute(f"CREATE ROLE {own} NOLOGIN")
            self._say(f"created role {owner} (NOLOGIN)")
        elif _one(cursor, "SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", [owner]):
            cursor.execute(f"ALTER ROLE {own} NOLOGIN")
            self._say(f"role {owner} may no longer log in")
        else:
            self._say(f"role {owner} exists (NOLOGIN)")
        member = "pg_has_role(%s, %s, 'MEMBER') OR pg_has_role(%s, %s, 'USAGE WITH ADMIN OPTION')"
        if _one(cursor, f"SELECT {member}", [service, owner] * 2):
            cursor.execute(f"REVOKE {own} FROM {svc}")
            self._say(f"revoked {service}'s membership of {owner}")
            if _one(cursor, f"SELECT {member}", [service, owner] * 2):
                raise CommandError(
                    f"{service!r} is still a member of {owner!r} (or may grant it) through "
                    "another role: remove that, then run this again"
                )

        for table in (*APPEND_ONLY, HEAD):
            tbl = _ident(cursor, table)
            before = _one(
                cursor,
                "SELECT relowner::regrole::text FROM pg_class WHERE oid = %s::regclass",
                [table],
            )
            # Owning a table owns its identity/serial sequences too.
            cursor.execute(f"ALTER TABLE {tbl} OWNER TO {own}")
            columns = ", ".join(_ident(cursor, name) for name in self._columns(cursor, table))
            # Table and column privileges alike, so no earlier grant survives.
            cursor.execute(f"REVOKE ALL ON TABLE {tbl} FROM PUBLIC, {svc}")
            cursor.execute(f"REVOKE ALL ({columns}) ON TABLE {tbl} FROM PUBLIC, {svc}")
            grant = "SELECT, INSERT, UPDATE" if table == HEAD else "SELECT, INSERT"
            cursor.execute(f"GRANT {grant} ON TABLE {tbl} TO {svc}")
            moved = "unchanged" if before == own else f"was {before}"
            self._say(f"{table}: owner {owner} ({moved}); {service} may {grant}, nothing else")
            for sequence in self._sequences(cursor, table):
                cursor.execute(f"REVOKE ALL ON SEQUENCE {sequence} FROM PUBLIC, {svc}")
                cursor.execute(f"GRANT USAGE ON SEQUENCE {sequence} TO {svc}")
                self._say(f"{sequence}: owner {owner}; {service} may USAGE")
        cursor.execute(f"ALTER FUNCTION {FUNCTION} OWNER TO {own}")
        # Resolve what the trigger calls in pg_catalog only, whatever a session's path.
        cursor.execute(f"ALTER FUNCTION {FUNCTION} SET search_path = pg_catalog, pg_temp")
        self._say(f"function {FUNCTION}: owner {owner}, search_path pg_catalog")
        self._check_result(cursor, service=service)
        self._warn_schema(cursor, service=service)

    def _check_result(self, cursor: CursorWrapper, *, service: str) -> None:
        """What the service role may do now, through any role it belongs to: a grant
        to a group role it is a member of survives the revokes above."""
        extra: list[str] = []
        for table in (*APPEND_ONLY, HEAD):
            allowed = {"SELECT", "INSERT", "UPDATE"} if table == HEAD else {"SELECT", "INSERT"}
            for privilege in ("UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"):
                if privilege in allowed:
                    continue
                held = _one(
                    cursor,
                    "SELECT has_table_privilege(%s, %s, %s) OR (%s IN ('UPDATE', 'REFERENCES') "
                    "AND has_any_column_privilege(%s, %s, %s))",
                    [service, table, privilege, privilege, service, table, privilege],
                )
                if held:
                    extra.append(f"{privilege} on {table}")
            for sequence in self._sequences(cursor, table):
                if _one(
                    cursor, "SELECT has_sequence_privilege(%s, %s, 'UPDATE')", [service, sequence]
                ):
                    extra.append(f"UPDATE on {sequence}")
        if extra:
            raise CommandError(
                f"{service!r} still holds {', '.join(extra)} through a role it is a member "
                "of: revoke that grant, then run this again"
            )

    @staticmethod
    def _columns(cursor: CursorWrapper, table: str) -> list[str]:
        cursor.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass "
            "AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            [table],
        )
        return [row[0] for row in cursor.fetchall()]

    @staticmethod
    def _sequences(cursor: CursorWrapper, table: str) -> list[str]:
        cursor.execute(
            "SELECT DISTINCT d.objid::regclass::text FROM pg_depend d "
            "JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' "
            "WHERE d.refobjid = %s::regclass AND d.deptype IN ('a', 'i') ORDER BY 1",
            [table],
        )
        return [row[0] for row in cursor.fetchall()]

    def _warn_schema(self, cursor: CursorWrapper, *, service: str) -> None:
        # A schema's owner may drop the schema, and every table in it, whoever owns them.
        cursor.execute(
            "SELECT DISTINCT n.nspname FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.oid = ANY(%s::regclass[]) AND pg_has_role(%s, n.nspowner, 'USAGE')",
            [list(APPEND_ONLY), service],
        )
        for (schema,) in cursor.fetchall():
            self.stderr.write(
                f"WARNING: {service} owns schema {schema} (or is a member of its owner, e.g. "
                f"as the database owner), so it can DROP SCHEMA {schema} CASCADE, audit "
                "tables included: give the schema to another role (ALTER SCHEMA ... OWNER TO)"
            )
