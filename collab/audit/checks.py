"""Refuse to deploy without a checkpoint key (migrate and check run system checks).

With COLLAB_AUDIT_SIGNER=external the application needs no key (a job run as another
user signs); it then warns when it holds one anyway, or has no public key to trust.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register
from django.core.exceptions import ImproperlyConfigured

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
