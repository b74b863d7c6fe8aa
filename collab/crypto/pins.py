"""Sealed, signed identity pins: a user's pin book, readable and writable only by the
holder of the user's identity key (UIK), versioned so the server cannot roll it back.

    K        = SHA-512("CR1C/pins-key\\0" || uik_seed)[0:32]
    blob     = nonce(24) || secretbox(document, nonce, K)
    signed   = "CR1C/pins\\0" || user_id(16) || version(u64) || SHA-512(blob)
    sig      = Ed25519(UIK, signed)

The server stores ``(version, blob, sig)`` and accepts version n+1 only over n; a client
refuses a version lower than the highest it has seen.
"""

from __future__ import annotations

import uuid

from . import primitives as prim
from .encoding import u64, uuid_bytes
from .errors import CryptoError

KEY_TAG = b"CR1C/pins-key\x00"
SIG_TAG = b"CR1C/pins\x00"
MAX_BLOB = 262_144


def pins_key(uik_seed: bytes) -> bytes:
    return prim.sha512(KEY_TAG + uik_seed)[:32]


def seal_pins(uik_seed: bytes, plaintext: bytes, nonce: bytes | None = None) -> bytes:
    nonce = nonce if nonce is not None else prim.random_bytes(prim.SECRETBOX_NONCE_LEN)
    return nonce + prim.secretbox_seal(pins_key(uik_seed), nonce, plaintext)


def open_pins(uik_seed: bytes, blob: bytes) -> bytes:
    if len(blob) < prim.SECRETBOX_NONCE_LEN + prim.MAC_LEN:
        raise CryptoError("bad_length", "pins blob is too short")
    n = prim.SECRETBOX_NONCE_LEN
    return prim.secretbox_open(pins_key(uik_seed), blob[:n], blob[n:])


def pins_signed_bytes(user_id: uuid.UUID, version: int, blob: bytes) -> bytes:
    return SIG_TAG + uuid_bytes(user_id) + u64(version) + prim.sha512(blob)


def sign_pins(uik_seed: bytes, user_id: uuid.UUID, version: int, blob: bytes) -> bytes:
    return prim.sign(uik_seed, pins_signed_bytes(user_id, version, blob))


def verify_pins(uik_pub: bytes, user_id: uuid.UUID, version: int, blob: bytes,
                sig: bytes) -> None:
    """Raises CryptoError (bad_signature, too_large, ...)."""
    if len(blob) > MAX_BLOB:
        raise CryptoError("too_large", "pins blob is over 256 KiB")
    prim.verify(uik_pub, pins_signed_bytes(user_id, version, blob), sig)
