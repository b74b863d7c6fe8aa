"""The installation's Ed25519 checkpoint key (PyNaCl).

From COLLAB_AUDIT_SIGNING_KEY (base64 32-byte seed) or a key file (base64 seed,
mode 0600). Outside production a missing file is generated on first use; in
production a missing key is a configuration error, never a silent new key. With
COLLAB_AUDIT_SIGNER=external the application holds no key at all: only a signing
job given ``--key-file`` signs (key_from_file).
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from collab.audit import conf


def _seed_from_b64(text: str, source: str) -> bytes:
    try:
        seed = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImproperlyConfigured(f"{source} is not valid base64") from exc
    if len(seed) != 32:
        raise ImproperlyConfigured(f"{source} must hold a 32-byte Ed25519 seed")
    return seed


def _read_private(path: Path) -> str:
    """A key file's text, refused (as ssh refuses a private key) when group or others
    may read or write it, when it is a symlink, when it belongs to anyone but this
    user or root, or when its directory is writable by group or others: such a key
    may already be in someone else's hands, or be swapped by them."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        if os.path.islink(path):
            raise ImproperlyConfigured(f"audit key file {path} is a symlink") from exc
        raise ImproperlyConfigured(f"audit key file {path} cannot be read: {exc}") from exc
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ImproperlyConfigured(f"audit key file {path} is not a regular file")
        if info.st_uid not in (os.geteuid(), 0):
            raise ImproperlyConfigured(
                f"audit key file {path} belongs to uid {info.st_uid}, not to this user "
                f"(uid {os.geteuid()}) or root"
            )
        if info.st_mode & 0o077:
            raise ImproperlyConfigured(
                f"audit key file {path} is accessible by group or others "
                f"(mode {stat.S_IMODE(info.st_mode):04o}); run chmod 600 {path}"
            )
        parent = os.stat(path.parent)
        if parent.st_mode & 0o022:
            raise ImproperlyConfigured(
                f"the directory of audit key file {path} is writable by group or others "
                f"(mode {stat.S_IMODE(parent.st_mode):04o}); run chmod go-w {path.parent}"
            )
        try:
            text = handle.read().decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            raise ImproperlyConfigured(f"audit key file {path} is not UTF-8 text") from exc
    if not text:
        raise ImproperlyConfigured(f"audit key file {path} is empty")
    return text


def key_from_file(path: Path) -> SigningKey:
    """The key of a signing job run as another user (``--key-file``); never generated."""
    if not path.exists():
        raise ImproperlyConfigured(f"audit key file {path} does not exist")
    return SigningKey(_seed_from_b64(_read_private(path), str(path)))


def signing_key() -> SigningKey:
    """The application's own key; refused in external-signer mode."""
    if conf.signer_external():
        raise ImproperlyConfigured(
            "COLLAB_AUDIT_SIGNER=external: the application holds no audit signing key; "
            "the signing job passes --key-file (docs/audit.md)"
        )
    env_seed = conf.signing_seed_b64()
    if env_seed:
        return SigningKey(_seed_from_b64(env_seed, "COLLAB_AUDIT_SIGNING_KEY"))
    path = conf.key_file()
    if not path.exists():
        if not conf.may_generate_key():
            raise ImproperlyConfigured(
                "No audit signing key: set COLLAB_AUDIT_SIGNING_KEY (base64 Ed25519 seed) or "
                f"COLLAB_AUDIT_KEY_FILE, or place the key at {path}, or sign outside the "
                "application (COLLAB_AUDIT_SIGNER=external). Production never generates "
                "one, so checkpoints stay verifiable against a key you hold."
            )
        seed = SigningKey.generate().encode()
        try:
            # O_EXCL: when two processes race, one writes and both use its key.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(base64.b64encode(seed).decode() + "\n")
    return SigningKey(_seed_from_b64(_read_private(path), str(path)))


def public_key_b64(key: SigningKey) -> str:
    return base64.b64encode(key.verify_key.encode()).decode()


def public_key_valid(text: str) -> bool:
    try:
        VerifyKey(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError, TypeError):
        return False
    return True


def sign(key: SigningKey, message: bytes) -> str:
    return base64.b64encode(key.sign(message).signature).decode()


def signature_valid(*, public_key: str, message: bytes, signature: str) -> bool:
    try:
        verify_key = VerifyKey(base64.b64decode(public_key, validate=True))
        verify_key.verify(message, base64.b64decode(signature, validate=True))
    except (BadSignatureError, binascii.Error, ValueError, TypeError):
        return False
    return True
