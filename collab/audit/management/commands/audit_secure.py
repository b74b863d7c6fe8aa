"""Take the audit tables away from the service's database role (PostgreSQL).

The append-only triggers bind whoever writes the tables, but not their owner: an owner
can disable or drop a trigger, replace its function, or drop the table. Run once by a
DBA (a superuser, connected with DATABASE_URL naming that superuser) after ``migrate``,
and again after any migration of the audit app. It gives the audit tables, their
sequences and the trigger function to a NOLOGIN owner role, and leaves the service
role only what the write path needs: SELECT and INSERT on events and checkpoints,
SELECT, INSERT and UPDATE on the head row. Running it twice changes nothing more.

Every object is named by schema (or by oid), never through a search_path: the service
role may have created look-alike tables elsewhere before this runs. It refuses while
the service role owns the schema or the database, or may create schemas or tables
outside the audit schema, unless told to accept that. See docs/audit.md "Immutability".
"""

from __future__ import annotations

import importlib
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError, connections, transaction
from django.db.backends.utils import CursorWrapper

# Append-only rows: read and append, nothing else.
APPEND_ONLY = ("audit_auditevent", "audit_auditcheckpoint")
# The chain head is rewritten by every append; it is a cache of the last event, which
# audit_verify compares with the events and checkpoints, never a source of truth.
HEAD = "audit_audithead"
TABLES = (*APPEND_ONLY, HEAD)
FUNCTION_NAME = "collab_audit_append_only"
# pg_trigger.tgtype bits: ROW 1, BEFORE 2, DELETE 8, UPDATE 16, TRUNCATE 32.
TRIGGERS = {"no_change": 1 | 2 | 8 | 16, "no_truncate": 2 | 32}


def _one(cursor: CursorWrapper, sql: str, params: list[Any]) -> Any:
    cursor.execute(sql, params)
    row = cursor.fetchone()
    return row[0] if row else None


def _migration_body() -> str:
    """The trigger function's body as migration 0002 creates it."""
    module = importlib.import_module("collab.audit.migrations.0002_append_only_triggers")
    return str(module.FUNCTION).split("$$")[1].strip()


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
        parser.add_argument(
            "--schema",
            default="public",
            help="the schema holding the audit tables, the one the servers' search_path "
            "finds them in (default public)",
        )
        parser.add_argument(
            "--allow-schema-owner",
            action="store_true",
            help="secure the tables even though the service role owns their schema or the "
            "database, or may create schemas or tables elsewhere (it can then still drop "
            "or shadow them: see docs/audit.md)",
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
        self._schema: str = options["schema"]
        self._done: list[str] = []
        self._warnings: list[str] = []
        try:
            with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
                # Nothing below may resolve through a path the service role can write to
                # (the default "$user", public finds a schema named after this superuser).
                cursor.execute("SET LOCAL search_path = pg_catalog")
                self._check(cursor, service=service, owner=owner)
                self._check_schema(cursor, service=service, allow=options["allow_schema_owner"])
                self._check_triggers(cursor)
                self._secure(cursor, service=service, owner=owner)
        except DatabaseError as exc:
            raise CommandError(f"nothing changed: {exc}".strip()) from exc
        # Told only once committed: a refusal rolls every step back.
        for message in self._done:
            self.stdout.write(message)
        for warning in self._warnings:
            self.stderr.write(f"WARNING: {warning}")

    def _say(self, message: str) -> None:
        self._done.append(message)

    def _q(self, cursor: CursorWrapper, table: str) -> str:
        """schema.table, quoted, for DDL and for ::regclass."""
        return str(
            _one(cursor, "SELECT format('%%I.%%I', %s::text, %s::text)", [self._schema, table])
        )

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
        # Tables of these names in two schemas: one is a copy, and which one the
        # servers write depends on a search_path. Other sessions' temp schemas are no
        # one's path but their own.
        cursor.execute(
            "SELECT c.relname, string_agg(n.nspname, ', ' ORDER BY n.nspname) "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relname = ANY(%s) AND NOT pg_is_other_temp_schema(n.oid) "
            "GROUP BY c.relname HAVING count(*) > 1 ORDER BY 1",
            [list(TABLES)],
        )
        twice = cursor.fetchall()
        if twice:
            found = "; ".join(f"{name} in {schemas}" for name, schemas in twice)
            raise CommandError(
                f"audit tables exist in more than one schema ({found}): drop the copies "
                "(after finding out who made them), then run this again"
            )
        missing = [
            table
            for table in TABLES
            if _one(
                cursor,
                "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')",
                [self._schema, table],
            )
            is None
        ]
        if missing:
            raise CommandError(
                f"no {', '.join(missing)} in schema {self._schema}: run migrate first, or "
                "name the schema the servers use with --schema"
            )

    def _check_schema(self, cursor: CursorWrapper, *, service: str, allow: bool) -> None:
        """Whatever owns the schema may drop it, audit tables included; whatever may
        create a schema, or tables in another one, may shadow the audit tables on the
        servers' search_path (a role may set its own search_path)."""
        found: list[str] = []
        schema_owner = _one(
            cursor,
            "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = %s "
            "AND pg_has_role(%s, nspowner, 'MEMBER')",
            [self._schema, service],
        )
        if schema_owner:
            found.append(
                f"{service} owns schema {self._schema} (as a member of {schema_owner}), so it "
                f"can DROP SCHEMA {self._schema} CASCADE with the audit tables in it"
            )
        if _one(
            cursor,
            "SELECT pg_has_role(%s, datdba, 'MEMBER') FROM pg_database "
            "WHERE datname = current_database()",
            [service],
        ):
            found.append(
                f"{service} owns the database, so it can drop or rename schemas and set "
                "the servers' search_path for everyone (ALTER DATABASE ... SET)"
            )
        if _one(
            cursor, "SELECT has_database_privilege(%s, current_database(), 'CREATE')", [service]
        ):
            found.append(
                f"{service} may CREATE schemas in this database, so it can put copies of the "
                "audit tables first on the servers' search_path and have them written there"
            )
        cursor.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname <> %s "
            "AND nspname NOT LIKE 'pg\\_%%' AND nspname <> 'information_schema' "
            "AND has_schema_privilege(%s, oid, 'CREATE') ORDER BY 1",
            [self._schema, service],
        )
        for (other,) in cursor.fetchall():
            found.append(
                f"{service} may CREATE in schema {other}, so it can put copies of the audit "
                "tables there and on its search_path"
            )
        if found and not allow:
            raise CommandError(
                "refusing, nothing changed: "
                + "; ".join(found)
                + ". Give the database and the schema to a DBA role (ALTER DATABASE ... "
                f"OWNER TO, ALTER SCHEMA {self._schema} OWNER TO), revoke CREATE on the "
                "database and on other schemas from the service role, or pass "
                "--allow-schema-owner to secure the tables anyway"
            )
        self._warnings += found

    def _check_triggers(self, cursor: CursorWrapper) -> None:
        """The guard as migration 0002 made it: both triggers on both append-only
        tables, enabled, calling one function with the migration's body, and nothing
        else attached (an owner could have added triggers or rules before this ran)."""
        problems: list[str] = []
        functions: set[int] = set()
        for table in APPEND_ONLY:
            qualified = self._q(cursor, table)
            cursor.execute(
                "SELECT tgname, tgtype, tgenabled, tgfoid FROM pg_trigger "
                "WHERE tgrelid = %s::regclass AND NOT tgisinternal ORDER BY tgname",
                [qualified],
            )
            triggers = {
                name: (kind, enabled, foid) for name, kind, enabled, foid in cursor.fetchall()
            }
            for suffix, kind in TRIGGERS.items():
                name = f"{table}_{suffix}"
                got = triggers.pop(name, None)
                if got is None:
                    problems.append(f"trigger {name} is missing")
                    continue
                if got[0] != kind:
                    problems.append(f"trigger {name} is not as migration 0002 made it")
                if got[1] not in ("O", "A"):
                    problems.append(f"trigger {name} is disabled")
                functions.add(int(got[2]))
            problems += [f"{table} has an unknown trigger {name}" for name in triggers]
            if _one(
                cursor,
                "SELECT count(*) FROM pg_rewrite WHERE ev_class = %s::regclass",
                [qualified],
            ):
                problems.append(f"{table} has rules")
        if len(functions) > 1:
            problems.append("the triggers call different functions")
        if problems:
            raise CommandError(
                f"the append-only triggers are not intact ({'; '.join(problems)}): restore "
                "them (migrate audit 0001, then migrate audit, as a superuser) and find out "
                "who changed them; nothing changed"
            )
        (foid,) = functions
        cursor.execute(
            "SELECT n.nspname, p.proname, p.prosrc, p.oid::regprocedure::text FROM pg_proc p "
            "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE p.oid = %s",
            [foid],
        )
        schema, name, body, signature = cursor.fetchone()
        if (schema, name) != (self._schema, FUNCTION_NAME) or body.strip() != _migration_body():
            raise CommandError(
                f"the append-only triggers call {signature}, not {self._schema}."
                f"{FUNCTION_NAME}() as migration 0002 wrote it: restore it (migrate audit "
                "0001, then migrate audit, as a superuser); nothing changed"
            )
        # Qualified by the pg_catalog-only path, so the DDL below names this very one.
        self._function: str = signature

    def _secure(self, cursor: CursorWrapper, *, service: str, owner: str) -> None:
        svc = _one(cursor, "SELECT quote_ident(%s)", [service])
        own = _one(cursor, "SELECT quote_ident(%s)", [owner])
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

        for table in TABLES:
            tbl = self._q(cursor, table)
            before = _one(
                cursor,
                "SELECT relowner::regrole::text FROM pg_class WHERE oid = %s::regclass",
                [tbl],
            )
            # Owning a table owns its identity/serial sequences too.
            cursor.execute(f"ALTER TABLE {tbl} OWNER TO {own}")
            columns = ", ".join(self._columns(cursor, tbl))
            # Table and column privileges alike, so no earlier grant survives.
            cursor.execute(f"REVOKE ALL ON TABLE {tbl} FROM PUBLIC, {svc}")
            cursor.execute(f"REVOKE ALL ({columns}) ON TABLE {tbl} FROM PUBLIC, {svc}")
            grant = "SELECT, INSERT, UPDATE" if table == HEAD else "SELECT, INSERT"
            cursor.execute(f"GRANT {grant} ON TABLE {tbl} TO {svc}")
            moved = "unchanged" if before == own else f"was {before}"
            self._say(f"{tbl}: owner {owner} ({moved}); {service} may {grant}, nothing else")
            for sequence in self._sequences(cursor, tbl):
                cursor.execute(f"REVOKE ALL ON SEQUENCE {sequence} FROM PUBLIC, {svc}")
                cursor.execute(f"GRANT USAGE ON SEQUENCE {sequence} TO {svc}")
                self._say(f"{sequence}: owner {owner}; {service} may USAGE")
        cursor.execute(f"ALTER FUNCTION {self._function} OWNER TO {own}")
        # Resolve what the trigger calls in pg_catalog only, whatever a session's path.
        cursor.execute(f"ALTER FUNCTION {self._function} SET search_path = pg_catalog, pg_temp")
        self._say(f"function {self._function}: owner {owner}, search_path pg_catalog")
        self._check_result(cursor, service=service)
        self._say(
            f"{service} holds no TRUNCATE on the audit tables, so setting "
            "collab.audit_allow_truncate (which any session may) no longer lets it truncate"
        )

    def _check_result(self, cursor: CursorWrapper, *, service: str) -> None:
        """What the service role may do now, through any role it belongs to: a grant
        to a group role it is a member of survives the revokes above."""
        extra: list[str] = []
        for table in TABLES:
            tbl = self._q(cursor, table)
            allowed = {"SELECT", "INSERT", "UPDATE"} if table == HEAD else {"SELECT", "INSERT"}
            for privilege in ("UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"):
                if privilege in allowed:
                    continue
                held = _one(
                    cursor,
                    "SELECT has_table_privilege(%s, %s::regclass, %s) OR (%s IN ('UPDATE', "
                    "'REFERENCES') AND has_any_column_privilege(%s, %s::regclass, %s))",
                    [service, tbl, privilege, privilege, service, tbl, privilege],
                )
                if held:
                    extra.append(f"{privilege} on {table}")
            for sequence in self._sequences(cursor, tbl):
                if _one(
                    cursor,
                    "SELECT has_sequence_privilege(%s, %s::regclass, 'UPDATE')",
                    [service, sequence],
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
            "SELECT quote_ident(attname) FROM pg_attribute WHERE attrelid = %s::regclass "
            "AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            [table],
        )
        return [row[0] for row in cursor.fetchall()]

    @staticmethod
    def _sequences(cursor: CursorWrapper, table: str) -> list[str]:
        # ::regclass::text is schema-qualified under the pg_catalog-only path.
        cursor.execute(
            "SELECT DISTINCT d.objid::regclass::text FROM pg_depend d "
            "JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' "
            "WHERE d.refobjid = %s::regclass AND d.deptype IN ('a', 'i') ORDER BY 1",
            [table],
        )
        return [row[0] for row in cursor.fetchall()]
