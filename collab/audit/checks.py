"""Refuse to deploy without a checkpoint key (migrate and check run system checks)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, register
from django.core.exceptions import ImproperlyConfigured

from collab.audit import conf, keys


@register()
def audit_signing_key_present(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    if not settings.PRODUCTION or conf.may_generate_key():
        return []
    try:
        keys.signing_key()
    except ImproperlyConfigured as exc:
        return [Error(str(exc), id="audit.E001")]
    return []
