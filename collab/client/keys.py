"""A user's identity key and their devices' keys."""

from __future__ import annotations

import base64
import binascii
import time
import uuid
from dataclasses import dataclass

from collab.client.errors import AuthError, UsageError
from collab.crypto import primitives as prim
from collab.crypto.devcert import DeviceCert, make_device_cert
from collab.crypto.errors import CryptoError


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class DeviceKeys:
    user_id: uuid.UUID
    device_id: uuid.UUID
    dsk_seed: bytes  # Ed25519 signing seed
    dxk_secret: bytes  # X25519 key-wrap secret

    @classmethod
    def generate(cls, user_id: uuid.UUID) -> DeviceKeys:
        return cls(user_id, uuid.uuid4(), prim.random_bytes(32), prim.random_bytes(32))

    @property
    def dsk_pub(self) -> bytes:
        return prim.ed25519_public(self.dsk_seed)

    @property
    def dxk_pub(self) -> bytes:
        return prim.x25519_public(self.dxk_secret)


@dataclass(frozen=True)
class Identity:
    user_id: uuid.UUID
    uik_seed: bytes

    @classmethod
    def generate(cls, user_id: uuid.UUID) -> Identity:
        return cls(user_id, prim.random_bytes(32))

    @property
    def uik_pub(self) -> bytes:
        return prim.ed25519_public(self.uik_seed)

    def certify(self, device: DeviceKeys, not_before_ms: int | None = None) -> DeviceCert:
        return make_device_cert(
            self.uik_seed, self.user_id, device.device_id, device.dsk_pub, device.dxk_pub,
            now_ms() - 60_000 if not_before_ms is None else not_before_ms,
        )


# --- identity backup under a recovery key -----------------------------------------
# backup = nonce(24) || secretbox("CR1C/uik-backup\0" || user_id(16) || uik_seed(32))
# under a 32-byte random recovery key that only the user holds (shown once, base32).

BACKUP_TAG = b"CR1C/uik-backup\x00"
RECOVERY_KEY_LEN = 32


def new_recovery_key() -> bytes:
    return prim.random_bytes(RECOVERY_KEY_LEN)


def format_recovery_key(key: bytes) -> str:
    """Base32 in groups of four, e.g. ``ABCD-EFGH-...`` (13 groups)."""
    text = base64.b32encode(key).decode("ascii").rstrip("=")
    return "-".join(text[i : i + 4] for i in range(0, len(text), 4))


def parse_recovery_key(text: str) -> bytes:
    cleaned = "".join(ch for ch in text.upper() if ch.isalnum())
    try:
        key = base64.b32decode(cleaned + "=" * (-len(cleaned) % 8))
    except (binascii.Error, ValueError):
        raise UsageError("the recovery key is not valid base32", code="bad_recovery_key") from None
    if len(key) != RECOVERY_KEY_LEN:
        raise UsageError("the recovery key has the wrong length", code="bad_recovery_key")
    return key


def seal_identity_backup(identity: Identity, recovery_key: bytes) -> bytes:
    nonce = prim.random_bytes(24)
    plain = BACKUP_TAG + identity.user_id.bytes + identity.uik_seed
    return nonce + prim.secretbox_seal(recovery_key, nonce, plain)


def open_identity_backup(blob: bytes, recovery_key: bytes, user_id: uuid.UUID) -> Identity:
    if len(blob) < 24 + 16:
        raise CryptoError("bad_length", "identity backup is too short")
    try:
        plain = prim.secretbox_open(recovery_key, blob[:24], blob[24:])
    except CryptoError:
        raise AuthError("the recovery key does not open the identity backup",
                        code="wrong_recovery_key") from None
    if len(plain) != len(BACKUP_TAG) + 16 + 32 or not plain.startswith(BACKUP_TAG):
        raise CryptoError("bad_length", "identity backup has an unknown layout")
    if plain[len(BACKUP_TAG) : len(BACKUP_TAG) + 16] != user_id.bytes:
        raise CryptoError("wrong_case", "identity backup belongs to another user")
    return Identity(user_id, plain[-32:])
