"""Device proofs of possession (protocol.md §2, protocol-crypto.md §9c): nonces, the
HTTP proof check with its replay cache, the socket challenge, and which sessions a
device acted in (so that revoking it ends them).

A nonce is stateless: ``b64url(u64 issued_ms || HMAC-SHA256(SECRET_KEY,
"collab/device-nonce" || u64 issued_ms)[:16])``, valid ``DEVICE_NONCE_SECONDS``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import struct
import time
import uuid
from datetime import timedelta

from django.conf import settings
from django.contrib.sessions.models import Session
from django.db import IntegrityError, transaction
from django.utils import timezone

from collab.accounts.models import Device, DeviceProofUse, DeviceSession
from collab.crypto import devproof
from collab.crypto.errors import CryptoError
from collab.errors import ServiceError, Unauthorized
from collab.realtime import publish_after_commit, session_group

NONCE_TAG = b"collab/device-nonce"
PROOF_HEADER = "HTTP_X_COLLAB_PROOF"
NONCE_RESPONSE_HEADER = "X-Collab-Nonce"
MAX_PROOF_HEADER = 512


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    if not text or len(text) > MAX_PROOF_HEADER or "=" in text:
        raise ValueError("bad base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("bad base64url") from None


def _now_ms() -> int:
    return int(time.time() * 1000)


def _mac(issued_ms: int) -> bytes:
    key = settings.SECRET_KEY.encode()
    return hmac.new(key, NONCE_TAG + struct.pack(">Q", issued_ms), hashlib.sha256).digest()[:16]


def nonce_issue(now_ms: int | None = None) -> str:
    issued = _now_ms() if now_ms is None else now_ms
    return _b64url(struct.pack(">Q", issued) + _mac(issued))


def nonce_valid(nonce: str, now_ms: int | None = None) -> bool:
    try:
        raw = _b64url_decode(nonce)
    except ValueError:
        return False
    if len(raw) != 24:
        return False
    (issued,) = struct.unpack(">Q", raw[:8])
    if not hmac.compare_digest(raw[8:], _mac(issued)):
        return False
    now = _now_ms() if now_ms is None else now_ms
    return bool(-5_000 <= now - issued <= settings.DEVICE_NONCE_SECONDS * 1000)


def proof_error(code: str, message: str) -> Unauthorized:
    """A 401 that carries a fresh nonce, so a client retries once."""
    return Unauthorized(code, message, nonce=nonce_issue())


def http_proof_check(
    *, device: Device, header: str, method: str, path: str, body: bytes,
    body_hash: bytes | None = None,
) -> None:
    """Verify ``X-Collab-Proof: <time_ms>.<nonce>.<jti>.<sig>`` for ``device`` and spend
    its jti. Raises 401 ``bad_device_proof`` or ``replayed_device_proof``. ``body_hash``
    (SHA-512) stands in for a body that was streamed rather than held."""
    parts = header.split(".")
    try:
        if len(header) > MAX_PROOF_HEADER or len(parts) != 4 or not parts[0].isdigit():
            raise ValueError("shape")
        time_ms = int(parts[0])
        nonce = parts[1]
        jti = _b64url_decode(parts[2])
        sig = _b64url_decode(parts[3])
        if len(jti) != devproof.JTI_LEN or len(sig) != 64 or len(nonce) > devproof.MAX_NONCE:
            raise ValueError("lengths")
    except ValueError:
        raise proof_error("bad_device_proof", "X-Collab-Proof is malformed.") from None
    now = _now_ms()
    if abs(now - time_ms) > settings.DEVICE_PROOF_WINDOW_SECONDS * 1000:
        raise proof_error("bad_device_proof", "The proof's time is outside the window.")
    if not nonce_valid(nonce, now):
        raise proof_error("bad_device_proof", "The proof's nonce is unknown or expired.")
    if len(path) > devproof.MAX_PATH:
        raise proof_error("bad_device_proof", "The path is too long to prove.")
    try:
        devproof.verify_http_proof(
            bytes(device.dsk_pub), sig, device_id=device.pk, time_ms=time_ms, method=method,
            path=path, body=body, nonce=nonce, jti=jti, body_hash=body_hash,
        )
    except CryptoError:
        raise proof_error("bad_device_proof", "The proof's signature does not verify.") from None
    _spend_jti(device, jti)


def _spend_jti(device: Device, jti: bytes) -> None:
    now = timezone.now()
    # Any proof older than window + nonce lifetime fails its own checks: safe to forget.
    keep = timedelta(seconds=settings.DEVICE_PROOF_WINDOW_SECONDS + settings.DEVICE_NONCE_SECONDS)
    try:
        with transaction.atomic():
            DeviceProofUse.objects.create(device=device, jti=jti, expires_at=now + keep)
    except IntegrityError:
        raise proof_error("replayed_device_proof", "This proof was already used.") from None
    if secrets.randbelow(50) == 0:
        DeviceProofUse.objects.filter(expires_at__lt=now).delete()


def ws_challenge() -> bytes:
    return secrets.token_bytes(devproof.CHALLENGE_LEN)


def ws_proof_check(
    *, device: Device, challenge: bytes, case_id: uuid.UUID, sig: bytes
) -> None:
    try:
        devproof.verify_ws_proof(bytes(device.dsk_pub), sig, challenge, case_id, device.pk)
    except CryptoError:
        raise ServiceError("bad_device_proof", "The socket proof does not verify.") from None


def session_device_record(*, session_key: str | None, device_id: uuid.UUID, proven: bool) -> None:
    """Remember that this session acted as this device (revocation ends it)."""
    if not session_key:
        return
    row, created = DeviceSession.objects.get_or_create(
        session_key=session_key, device_id=device_id, defaults={"proven": proven}
    )
    if proven and not created and not row.proven:
        DeviceSession.objects.filter(pk=row.pk).update(proven=True)


def session_device_proven(
    *, session_key: str | None, device_id: uuid.UUID, recorded: bool | None
) -> None:
    """session_device_record(proven=True) for a socket whose handshake already read the
    record (``recorded``, access.room_admission): a reconnect writes nothing."""
    if recorded is True:
        return
    session_device_record(session_key=session_key, device_id=device_id, proven=True)


def device_sessions_end(*, device_id: uuid.UUID) -> int:
    """Delete every session the device acted in and close their sockets (4401)."""
    keys = list(
        DeviceSession.objects.filter(device_id=device_id).values_list("session_key", flat=True)
    )
    Session.objects.filter(session_key__in=keys).delete()
    DeviceSession.objects.filter(session_key__in=keys).delete()
    for key in keys:
        publish_after_commit(session_group(key), {"type": "session.ended", "reason": "revoked"})
    return len(keys)
