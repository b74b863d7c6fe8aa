"""The roster: who is in a case (users with role and UIK) and which devices
receive its keys. Carried in full in every membership-log entry.

    roster = u32 n || user*n || u32 m || device*m
    user   = user_id(16) || role(u8) || uik_pub(32) || since_epoch(u64)
    device = DeviceCert record (see devcert), sorted by user_id || device_id
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from typing import Any

from . import primitives as prim
from .devcert import DeviceCert, verify_device_cert
from .encoding import Reader, fixed, pack_list, u8, u64, uuid_bytes
from .errors import CryptoError
from .wire import b64e, get_b64, get_int, get_list, get_uuid

MAX_USERS = 1024
MAX_DEVICES = 8192


class Role(enum.IntEnum):
    OWNER = 1
    ADMIN = 2
    MEMBER = 3
    PATIENT = 4


def parse_role(value: int) -> Role:
    try:
        return Role(value)
    except ValueError as exc:
        raise CryptoError("bad_field", f"unknown role {value}") from exc


@dataclass(frozen=True)
class RosterUser:
    user_id: uuid.UUID
    role: Role
    uik_pub: bytes
    # Epoch of the entry that (last) added the user; bounds leave requests
    # and tells clients from which epoch the user may hold keys.
    since_epoch: int

    def encode(self) -> bytes:
        return (
            uuid_bytes(self.user_id)
            + u8(self.role)
            + fixed(self.uik_pub, 32, "uik_pub")
            + u64(self.since_epoch)
        )

    @classmethod
    def read(cls, r: Reader) -> RosterUser:
        return cls(r.uuid(), parse_role(r.u8()), r.take(32), r.u64())

    def to_wire(self) -> dict[str, Any]:
        return {
            "user_id": str(self.user_id),
            "role": int(self.role),
            "uik_pub": b64e(self.uik_pub),
            "since_epoch": self.since_epoch,
        }

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> RosterUser:
        return cls(
            get_uuid(d, "user_id"),
            parse_role(get_int(d, "role", 255)),
            get_b64(d, "uik_pub", 32),
            get_int(d, "since_epoch"),
        )


def _device_key(d: DeviceCert) -> bytes:
    return d.user_id.bytes + d.device_id.bytes


@dataclass(frozen=True)
class Roster:
    users: tuple[RosterUser, ...]
    devices: tuple[DeviceCert, ...]

    @classmethod
    def build(cls, users: list[RosterUser], devices: list[DeviceCert]) -> Roster:
        """Canonical order: users by user_id bytes, devices by user_id||device_id."""
        return cls(
            tuple(sorted(users, key=lambda u: u.user_id.bytes)),
            tuple(sorted(devices, key=_device_key)),
        )

    def encode(self) -> bytes:
        return pack_list(self.users, RosterUser.encode) + pack_list(self.devices, DeviceCert.encode)

    @classmethod
    def read(cls, r: Reader) -> Roster:
        users = r.list(RosterUser.read, MAX_USERS)
        devices = r.list(DeviceCert.read, MAX_DEVICES)
        return cls(tuple(users), tuple(devices))

    def user(self, user_id: uuid.UUID) -> RosterUser | None:
        return next((u for u in self.users if u.user_id == user_id), None)

    def device(self, device_id: uuid.UUID) -> DeviceCert | None:
        return next((d for d in self.devices if d.device_id == device_id), None)

    def devices_of(self, user_id: uuid.UUID) -> list[DeviceCert]:
        return [d for d in self.devices if d.user_id == user_id]

    def validate(self) -> None:
        """Structure, key and certificate checks every roster must pass."""
        ids = [u.user_id.bytes for u in self.users]
        if ids != sorted(set(ids)) or len(ids) != len(self.users):
            raise CryptoError("bad_roster", "users not strictly sorted by user_id")
        keys = [_device_key(d) for d in self.devices]
        if keys != sorted(keys) or len(set(keys)) != len(keys):
            raise CryptoError("bad_roster", "devices not strictly sorted by user_id||device_id")
        if len({d.device_id for d in self.devices}) != len(self.devices):
            raise CryptoError("bad_roster", "duplicate device_id")
        if not any(u.role == Role.OWNER for u in self.users):
            raise CryptoError("bad_roster", "roster has no owner")
        by_id = {u.user_id: u for u in self.users}
        for u in self.users:
            prim.check_ed25519_public(u.uik_pub)
            if not self.devices_of(u.user_id):
                raise CryptoError("bad_roster", f"user {u.user_id} has no device")
        for d in self.devices:
            owner = by_id.get(d.user_id)
            if owner is None:
                raise CryptoError("bad_roster", f"device {d.device_id} of a user not in the roster")
            verify_device_cert(d, owner.uik_pub)

    def to_wire(self) -> dict[str, Any]:
        return {
            "users": [u.to_wire() for u in self.users],
            "devices": [d.to_wire() for d in self.devices],
        }

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> Roster:
        return cls(
            tuple(RosterUser.from_wire(x) for x in get_list(d, "users")),
            tuple(DeviceCert.from_wire(x) for x in get_list(d, "devices")),
        )
