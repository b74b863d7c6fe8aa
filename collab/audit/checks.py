"""Refuse to deploy without a checkpoint key (migrate and check run system checks).

With COLLAB_AUDIT_SIGNER=external the application needs no key (a job run as another
user signs); it then warns when it holds one anyway, or has no public key to trust.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, connection

from collab.audit import conf, keys


@register()
def audit_signing_key_present(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    try:
        external = conf.signer_external()
    except ImproperlyConfigured as exc:
        return [Error(str(exc), id="audit.E001")]
    if external:
        found: list[CheckMessage] = []
        if conf.signing_seed_b64():
            found.append(
                Warning(
                    "COLLAB_AUDIT_SIGNER=external but COLLAB_AUDIT_SIGNING_KEY is set in the "
                    "application's environment: it is ignored; remove it from the app host",
                    id="audit.W001",
                )
            )
        if not conf.trusted_public_keys():
            found.append(
                Warning(
                    "COLLAB_AUDIT_SIGNER=external without COLLAB_AUDIT_TRUSTED_KEYS: "
                    "audit_verify has no public key to check checkpoints against",
                    id="audit.W002",
                )
            )
        return found
    if not settings.PRODUCTION or conf.may_generate_key():
        return []
    try:
        keys.signing_key()
    except ImproperlyConfigured as exc:
        return [Error(str(exc), id="audit.E001")]
    return []


@register(Tags.security, deploy=True)
def audit_tables_not_servers_own(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """In production the servers' database role must not own the audit tables, nor hold
    TRUNCATE on them: an owner may disable the append-only triggers, and anyone holding
    TRUNCATE may set collab.audit_allow_truncate (any session can) and empty them."""
    if not settings.PRODUCTION or connection.vendor != "postgresql":
        return []
    try:
        with connection.cursor() as cursor:
            # Resolved through the servers' own search_path: the tables they write.
            cursor.execute(
                "SELECT c.relname FROM pg_class c WHERE c.oid = ANY(ARRAY["
                "to_regclass('audit_auditevent'), to_regclass('audit_auditcheckpoint'), "
                "to_regclass('audit_audithead')]) AND (pg_has_role(current_user, c.relowner, "
                "'MEMBER') OR has_table_privilege(c.oid, 'TRUNCATE')) ORDER BY 1"
            )
            exposed = [row[0] for row in cursor.fetchall()]
    except DatabaseError:  # no database to ask: migrate and the servers will say so
        return []
    if not exposed:
        return []
    return [
        Warning(
            f"the servers' database role owns or may truncate {', '.join(exposed)}: it can "
            "disable the append-only triggers or empty the trail",
            hint="run manage.py audit_secure as a superuser (docs/audit.md 'Immutability')",
            id="audit.W010",
        )
    ]
