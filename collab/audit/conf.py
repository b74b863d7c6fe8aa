"""Audit settings: a Django setting of the same name wins over the environment."""

from __future__ import annotations

import os
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


def _value(name: str, env: str) -> str | None:
    configured = getattr(settings, name, None)
    if configured is not None:
        return str(configured)
    return os.environ.get(env)


def checkpoint_every() -> int:
    """Sign a checkpoint automatically every N events (0 turns it off)."""
    return int(_value("AUDIT_CHECKPOINT_EVERY", "COLLAB_AUDIT_CHECKPOINT_EVERY") or "1000")


def signing_seed_b64() -> str:
    return (_value("AUDIT_SIGNING_KEY", "COLLAB_AUDIT_SIGNING_KEY") or "").strip()


def key_file() -> Path:
    path = _value("AUDIT_KEY_FILE", "COLLAB_AUDIT_KEY_FILE")
    return Path(path) if path else Path(settings.DATA_DIR) / "audit-signing.key"


def trusted_public_keys() -> list[str]:
    """Public keys of earlier (rotated) signing keys whose checkpoints still count."""
    raw = _value("AUDIT_TRUSTED_KEYS", "COLLAB_AUDIT_TRUSTED_KEYS") or ""
    return [item.strip() for item in raw.split(",") if item.strip()]


def signer_external() -> bool:
    """COLLAB_AUDIT_SIGNER=external: the application holds no checkpoint key; a job
    run as another user signs with ``--key-file`` (docs/audit.md)."""
    value = (_value("AUDIT_SIGNER", "COLLAB_AUDIT_SIGNER") or "app").strip().lower()
    if value not in ("app", "external"):
        raise ImproperlyConfigured(
            f"COLLAB_AUDIT_SIGNER must be 'app' or 'external', not {value!r}"
        )
    return value == "external"


def installation_name() -> str:
    return _value("AUDIT_INSTALLATION", "COLLAB_INSTALLATION") or "collab"


def may_generate_key() -> bool:
    return bool(settings.DEMO_MODE or not settings.PRODUCTION)
