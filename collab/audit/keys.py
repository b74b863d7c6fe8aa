"""The installation's Ed25519 checkpoint key (PyNaCl).

From COLLAB_AUDIT_SIGNING_KEY (base64 32-byte seed) or a key file (base64 seed,
mode 0600). Outside production a missing file is generated on first use; in
production a missing key is a configuration error, never a silent new key.
"""

from __future__ import annotations

import base64
import binascii
import os

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


def signing_key() -> SigningKey:
    env_seed = conf.signing_seed_b64()
    if env_seed:
        return SigningKey(_seed_from_b64(env_seed, "COLLAB_AUDIT_SIGNING_KEY"))
    path = conf.key_file()
    if not path.exists():
        if not conf.may_generate_key():
            raise ImproperlyConfigured(
                "No audit signing key: set COLLAB_AUDIT_SIGNING_KEY (base64 Ed25519 seed) or "
                f"COLLAB_AUDIT_KEY_FILE, or place the key at {path}. Production never "
                "generates one, so checkpoints stay verifiable against a key you hold."
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
    text = path.read_text().strip()
    if not text:
        raise ImproperlyConfigured(f"audit key file {path} is empty")
    return SigningKey(_seed_from_b64(text, str(path)))


def public_key_b64(key: SigningKey) -> str:
    return base64.b64encode(key.verify_key.encode()).decode()


def sign(key: SigningKey, message: bytes) -> str:
    return base64.b64encode(key.sign(message).signature).decode()


def signature_valid(*, public_key: str, message: bytes, signature: str) -> bool:
    try:
        verify_key = VerifyKey(base64.b64decode(public_key, validate=True))
        verify_key.verify(message, base64.b64decode(signature, validate=True))
    except (BadSignatureError, binascii.Error, ValueError, TypeError):
        return False
    return True
