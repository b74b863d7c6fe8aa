"""Deterministic identities for test vectors and tests. Every secret is
derived from a public label, so NEVER use these outside tests."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from .. import primitives as prim
from ..devcert import DeviceCert, make_device_cert


def seed(label: str) -> bytes:
    """32 fixed bytes named by `label` (the JSON records the bytes themselves)."""
    return prim.sha512(b"CR1 test vector seed\x00" + label.encode())[:32]


def fixed_uuid(n: int) -> uuid.UUID:
    return uuid.UUID(f"00000000-0000-4000-8000-{n:012x}")


@dataclass(frozen=True)
class Device:
    device_id: uuid.UUID
    dsk_seed: bytes
    dxk_secret: bytes
    cert: DeviceCert

    @property
    def dsk_pub(self) -> bytes:
        return self.cert.dsk_pub

    @property
    def dxk_pub(self) -> bytes:
        return self.cert.dxk_pub


@dataclass(frozen=True)
class Person:
    name: str
    user_id: uuid.UUID
    uik_seed: bytes
    devices: tuple[Device, ...]

    @property
    def uik_pub(self) -> bytes:
        return prim.ed25519_public(self.uik_seed)

    @property
    def d(self) -> Device:
        return self.devices[0]


NOT_BEFORE_MS = 1_700_000_000_000


def person(name: str, number: int, n_devices: int = 1) -> Person:
    uik = seed(f"{name}/uik")
    devices = []
    for i in range(n_devices):
        device_id = fixed_uuid(number * 0x100 + i + 1)
        dsk, dxk = seed(f"{name}/d{i}/dsk"), seed(f"{name}/d{i}/dxk")
        cert = make_device_cert(
            uik,
            fixed_uuid(number),
            device_id,
            prim.ed25519_public(dsk),
            prim.x25519_public(dxk),
            NOT_BEFORE_MS,
        )
        devices.append(Device(device_id, dsk, dxk, cert))
    return Person(name, fixed_uuid(number), uik, tuple(devices))


CASE_ID = uuid.UUID("c0000000-0000-4000-8000-000000000001")
ALICE = person("alice", 1, 2)  # clinician, case owner; two devices
BOB = person("bob", 2)  # clinician, member
CAROL = person("carol", 3)  # patient
DAVE = person("dave", 4)  # admin
