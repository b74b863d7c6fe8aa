"""Device certificates: a user's identity key (UIK) vouches for one device's
signing key (DSK) and key-wrap key (DXK).

    cert_bytes = "CR1/devcert\\0" || user_id(16) || device_id(16)
                 || dsk_pub(32) || dxk_pub(32) || not_before_ms(u64)
    cert_sig   = Ed25519(UIK, cert_bytes)
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from . import primitives as prim
from .encoding import Reader, fixed, u64, uuid_bytes
from .errors import CryptoError
from .wire import b64e, get_b64, get_int, get_uuid

TAG = b"CR1/devcert\x00"
RECORD_LEN = 16 + 16 + 32 + 32 + 8 + 64


@dataclass(frozen=True)
class DeviceCert:
    user_id: uuid.UUID
    device_id: uuid.UUID
    dsk_pub: bytes
    dxk_pub: bytes
    not_before_ms: int
    cert_sig: bytes

    def signed_bytes(self) -> bytes:
        return cert_bytes(
            self.user_id, self.device_id, self.dsk_pub, self.dxk_pub, self.not_before_ms
        )

    def encode(self) -> bytes:
        """Roster record: the certified fields followed by the signature."""
        return self.signed_bytes()[len(TAG) :] + fixed(self.cert_sig, 64, "cert_sig")

    @classmethod
    def read(cls, r: Reader) -> DeviceCert:
        return cls(r.uuid(), r.uuid(), r.take(32), r.take(32), r.u64(), r.take(64))

    def to_wire(self) -> dict[str, Any]:
        return {
            "user_id": str(self.user_id),
            "device_id": str(self.device_id),
            "dsk_pub": b64e(self.dsk_pub),
            "dxk_pub": b64e(self.dxk_pub),
            "not_before_ms": self.not_before_ms,
            "cert_sig": b64e(self.cert_sig),
        }

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> DeviceCert:
        return cls(
            get_uuid(d, "user_id"),
            get_uuid(d, "device_id"),
            get_b64(d, "dsk_pub", 32),
            get_b64(d, "dxk_pub", 32),
            get_int(d, "not_before_ms"),
            get_b64(d, "cert_sig", 64),
        )


def cert_bytes(
    user_id: uuid.UUID, device_id: uuid.UUID, dsk_pub: bytes, dxk_pub: bytes, not_before_ms: int
) -> bytes:
    return (
        TAG
        + uuid_bytes(user_id)
        + uuid_bytes(device_id)
        + fixed(dsk_pub, 32, "dsk_pub")
        + fixed(dxk_pub, 32, "dxk_pub")
        + u64(not_before_ms)
    )


def make_device_cert(
    uik_seed: bytes,
    user_id: uuid.UUID,
    device_id: uuid.UUID,
    dsk_pub: bytes,
    dxk_pub: bytes,
    not_before_ms: int,
) -> DeviceCert:
    prim.check_ed25519_public(dsk_pub)
    prim.check_x25519_public(dxk_pub)
    msg = cert_bytes(user_id, device_id, dsk_pub, dxk_pub, not_before_ms)
    return DeviceCert(user_id, device_id, dsk_pub, dxk_pub, not_before_ms, prim.sign(uik_seed, msg))


def verify_device_cert(cert: DeviceCert, uik_pub: bytes, now_ms: int | None = None) -> None:
    """Key checks keep their own codes; any signature failure is bad_certificate."""
    prim.check_ed25519_public(cert.dsk_pub)
    prim.check_x25519_public(cert.dxk_pub)
    try:
        prim.verify(uik_pub, cert.signed_bytes(), cert.cert_sig)
    except CryptoError as exc:
        if exc.code in ("bad_signature", "non_canonical_signature"):
            raise CryptoError("bad_certificate", f"device {cert.device_id}: {exc.code}") from exc
        raise
    if now_ms is not None and now_ms < cert.not_before_ms:
        raise CryptoError("bad_certificate", "certificate is not yet valid")
