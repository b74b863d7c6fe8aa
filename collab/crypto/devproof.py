"""Proof that a request comes from a device that holds its signing key (DSK).

A session cookie says who is signed in; it never says which device acts. Calls that act
as a device carry a fresh Ed25519 signature by that device's DSK (after RFC 9449, DPoP):

    http  = "CR1/http-proof\\0" || device_id(16) || time_ms(u64) || var(method)
            || var(path with query) || H(body) || var(server nonce) || jti(16)
    ws    = "CR1/ws-proof\\0" || challenge(32) || case_id(16) || device_id(16)
    sig   = Ed25519(DSK, http | ws)

The server checks the signature against the device's registered DSK, that the time is
within its window, that the nonce is one it issued recently, and that the one-time id
``jti`` was never seen before for that device (a replay cache).
"""

from __future__ import annotations

import uuid

from . import primitives as prim
from .encoding import fixed, u64, uuid_bytes, var

HTTP_TAG = b"CR1/http-proof\x00"
WS_TAG = b"CR1/ws-proof\x00"
JTI_LEN = 16
CHALLENGE_LEN = 32
MAX_NONCE = 128
MAX_PATH = 2048


def http_proof_bytes(
    *, device_id: uuid.UUID, time_ms: int, method: str, path: str, body: bytes, nonce: str,
    jti: bytes, body_hash: bytes | None = None,
) -> bytes:
    """``body_hash`` (SHA-512 of the body) may stand in for ``body``: a verifier that
    streams a large body hashes it as it reads instead of holding it."""
    digest = body_hash if body_hash is not None else prim.sha512(body)
    return (
        HTTP_TAG + uuid_bytes(device_id) + u64(time_ms) + var(method.upper().encode("ascii"))
        + var(path.encode("utf-8")) + fixed(digest, prim.HASH_LEN, "body hash")
        + var(nonce.encode("ascii")) + fixed(jti, JTI_LEN, "jti")
    )


def sign_http_proof(
    dsk_seed: bytes, *, device_id: uuid.UUID, time_ms: int, method: str, path: str,
    body: bytes, nonce: str, jti: bytes,
) -> bytes:
    return prim.sign(dsk_seed, http_proof_bytes(device_id=device_id, time_ms=time_ms,
                                                method=method, path=path, body=body,
                                                nonce=nonce, jti=jti))


def verify_http_proof(
    dsk_pub: bytes, sig: bytes, *, device_id: uuid.UUID, time_ms: int, method: str, path: str,
    body: bytes, nonce: str, jti: bytes, body_hash: bytes | None = None,
) -> None:
    """Raises CryptoError (bad_signature, non_canonical_signature, bad_length, ...)."""
    prim.verify(dsk_pub, http_proof_bytes(device_id=device_id, time_ms=time_ms, method=method,
                                          path=path, body=body, nonce=nonce, jti=jti,
                                          body_hash=body_hash), sig)


def ws_proof_bytes(challenge: bytes, case_id: uuid.UUID, device_id: uuid.UUID) -> bytes:
    return WS_TAG + fixed(challenge, CHALLENGE_LEN, "challenge") + uuid_bytes(case_id) \
        + uuid_bytes(device_id)


def sign_ws_proof(dsk_seed: bytes, challenge: bytes, case_id: uuid.UUID,
                  device_id: uuid.UUID) -> bytes:
    return prim.sign(dsk_seed, ws_proof_bytes(challenge, case_id, device_id))


def verify_ws_proof(dsk_pub: bytes, sig: bytes, challenge: bytes, case_id: uuid.UUID,
                    device_id: uuid.UUID) -> None:
    prim.verify(dsk_pub, ws_proof_bytes(challenge, case_id, device_id), sig)
