"""Thin, strict wrappers over PyNaCl. No crypto is implemented here; we only
add the input checks that tweetnacl-js lacks so both stacks reject the same
bytes (non-canonical signatures, small-order keys)."""

from __future__ import annotations

import nacl.bindings
import nacl.encoding
import nacl.exceptions
import nacl.hash
import nacl.public
import nacl.secret
import nacl.signing
import nacl.utils

from .errors import CryptoError

P = 2**255 - 19
# Order of the Ed25519 base point; a canonical signature has S < L.
L = 2**252 + 27742317777372353535851937790883648493

SIGNATURE_LEN = 64
ED25519_PUBLIC_LEN = 32
X25519_LEN = 32
SEED_LEN = 32
BOX_NONCE_LEN = 24
SECRETBOX_KEY_LEN = 32
SECRETBOX_NONCE_LEN = 24
MAC_LEN = 16
HASH_LEN = 64

# Edwards y-coordinates of the small-order points (libsodium's blocklist,
# compared with the sign bit cleared); includes the non-canonical p, p+1.
_ED_Y8 = 2707385501144840649318225287225658788936804267575313519463743609750303402022
ED25519_SMALL_ORDER: frozenset[bytes] = frozenset(
    y.to_bytes(32, "little") for y in (0, 1, _ED_Y8, P - _ED_Y8, P - 1, P, P + 1)
)
# Montgomery u-coordinates of the small-order points, top bit cleared.
_X_U8A = 325606250916557431795983626356110631294008115727848805560023387167927233504
_X_U8B = 39382357235489614581723060781553021112529911719440698176882885853963445705823
X25519_SMALL_ORDER: frozenset[bytes] = frozenset(
    u.to_bytes(32, "little") for u in (0, 1, _X_U8A, _X_U8B, P - 1, P, P + 1)
)


def _clear_top_bit(b: bytes) -> bytes:
    return b[:31] + bytes([b[31] & 0x7F])


def random_bytes(n: int) -> bytes:
    return nacl.utils.random(n)


def sha512(data: bytes) -> bytes:
    """Raw 64-byte SHA-512 (PyNaCl returns hex unless told otherwise)."""
    return nacl.hash.sha512(bytes(data), encoder=nacl.encoding.RawEncoder)


# --- Ed25519 ---------------------------------------------------------------


def check_ed25519_public(public: bytes) -> None:
    """Reject keys libsodium's verify would refuse but tweetnacl accepts."""
    if not isinstance(public, bytes) or len(public) != ED25519_PUBLIC_LEN:
        raise CryptoError("bad_length", "Ed25519 public key must be 32 bytes")
    if _clear_top_bit(public) in ED25519_SMALL_ORDER:
        raise CryptoError("low_order_key", "Ed25519 public key has small order")
    if int.from_bytes(_clear_top_bit(public), "little") >= P:
        raise CryptoError("bad_key", "non-canonical Ed25519 public key")


def ed25519_public(seed: bytes) -> bytes:
    if len(seed) != SEED_LEN:
        raise CryptoError("bad_length", "Ed25519 seed must be 32 bytes")
    return bytes(nacl.signing.SigningKey(bytes(seed)).verify_key)


def sign(seed: bytes, message: bytes) -> bytes:
    """Detached Ed25519 signature; the secret is the 32-byte seed."""
    if len(seed) != SEED_LEN:
        raise CryptoError("bad_length", "Ed25519 seed must be 32 bytes")
    return nacl.signing.SigningKey(bytes(seed)).sign(bytes(message)).signature


def verify(public: bytes, message: bytes, signature: bytes) -> None:
    """Raise unless `signature` is a canonical, valid signature by `public`."""
    check_ed25519_public(public)
    if not isinstance(signature, bytes) or len(signature) != SIGNATURE_LEN:
        raise CryptoError("bad_length", "signature must be 64 bytes")
    # Checked before libsodium so the code is the same in Python and JS.
    if int.from_bytes(signature[32:], "little") >= L:
        raise CryptoError("non_canonical_signature", "S >= L")
    if _clear_top_bit(signature[:32]) in ED25519_SMALL_ORDER:
        raise CryptoError("bad_signature", "R has small order")
    try:
        nacl.signing.VerifyKey(public).verify(bytes(message), signature)
    except nacl.exceptions.BadSignatureError as exc:
        raise CryptoError("bad_signature", "signature does not verify") from exc


# --- X25519 crypto_box -------------------------------------------------------


def check_x25519_public(public: bytes) -> None:
    if not isinstance(public, bytes) or len(public) != X25519_LEN:
        raise CryptoError("bad_length", "X25519 public key must be 32 bytes")
    if _clear_top_bit(public) in X25519_SMALL_ORDER:
        raise CryptoError("low_order_key", "X25519 public key has small order")
    if int.from_bytes(public, "little") >= P:  # includes a set top bit
        raise CryptoError("bad_key", "non-canonical X25519 public key")


def x25519_public(secret: bytes) -> bytes:
    if len(secret) != X25519_LEN:
        raise CryptoError("bad_length", "X25519 secret must be 32 bytes")
    return nacl.bindings.crypto_scalarmult_base(bytes(secret))


def _box(secret: bytes, peer_public: bytes) -> nacl.public.Box:
    check_x25519_public(peer_public)
    if len(secret) != X25519_LEN:
        raise CryptoError("bad_length", "X25519 secret must be 32 bytes")
    try:
        return nacl.public.Box(
            nacl.public.PrivateKey(bytes(secret)), nacl.public.PublicKey(peer_public)
        )
    except nacl.exceptions.RuntimeError as exc:  # libsodium's all-zero output check
        raise CryptoError("low_order_key", "shared secret is zero") from exc


def box_seal(secret: bytes, peer_public: bytes, nonce: bytes, plaintext: bytes) -> bytes:
    """crypto_box; returns MAC || ciphertext (the nonce is not included)."""
    if len(nonce) != BOX_NONCE_LEN:
        raise CryptoError("bad_length", "box nonce must be 24 bytes")
    return _box(secret, peer_public).encrypt(bytes(plaintext), bytes(nonce)).ciphertext


def box_open(secret: bytes, peer_public: bytes, nonce: bytes, ciphertext: bytes) -> bytes:
    if len(nonce) != BOX_NONCE_LEN:
        raise CryptoError("bad_length", "box nonce must be 24 bytes")
    if len(ciphertext) < MAC_LEN:
        raise CryptoError("bad_length", "box ciphertext shorter than its MAC")
    try:
        return _box(secret, peer_public).decrypt(bytes(ciphertext), bytes(nonce))
    except nacl.exceptions.CryptoError as exc:
        raise CryptoError("decrypt_failed", "box authentication failed") from exc


# --- secretbox ---------------------------------------------------------------


def secretbox_seal(key: bytes, nonce: bytes, plaintext: bytes) -> bytes:
    """XSalsa20-Poly1305; returns MAC || ciphertext (nonce not included)."""
    if len(key) != SECRETBOX_KEY_LEN or len(nonce) != SECRETBOX_NONCE_LEN:
        raise CryptoError("bad_length", "secretbox key is 32 and nonce 24 bytes")
    return nacl.secret.SecretBox(bytes(key)).encrypt(bytes(plaintext), bytes(nonce)).ciphertext


def secretbox_open(key: bytes, nonce: bytes, ciphertext: bytes) -> bytes:
    if len(key) != SECRETBOX_KEY_LEN or len(nonce) != SECRETBOX_NONCE_LEN:
        raise CryptoError("bad_length", "secretbox key is 32 and nonce 24 bytes")
    if len(ciphertext) < MAC_LEN:
        raise CryptoError("bad_length", "secretbox ciphertext shorter than its MAC")
    try:
        return nacl.secret.SecretBox(bytes(key)).decrypt(bytes(ciphertext), bytes(nonce))
    except nacl.exceptions.CryptoError as exc:
        raise CryptoError("decrypt_failed", "secretbox authentication failed") from exc
