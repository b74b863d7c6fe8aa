"""A user's identity key and their devices' keys."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from collab.crypto import primitives as prim
from collab.crypto.devcert import DeviceCert, make_device_cert


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
