"""Authenticated backup of epoch keys, so every device of a user reads the whole case.

Each device seals the epoch keys it holds under a backup key that only the user's
identity-key holders can derive, one item per (case, epoch); the server stores the items
and can neither read, inject nor swap them:

    K_b   = SHA-512("CR1C/key-backup-key\\0" || uik_seed)[0:32]
    plain = "CR1C/key-backup\\0" || case_id(16) || epoch(u64) || K_e(32)
    item  = nonce(24) || secretbox(plain, nonce, K_b)

Opening checks the MAC (only K_b makes a valid item), that the item names the case and
epoch it is served for (a swapped item fails), and the client then checks ``K_e`` against
the ``key_commit`` of that epoch's verified log entry.
"""

from __future__ import annotations

import uuid

from . import primitives as prim
from .encoding import fixed, u64, uuid_bytes
from .errors import CryptoError

KEY_TAG = b"CR1C/key-backup-key\x00"
ITEM_TAG = b"CR1C/key-backup\x00"
PLAIN_LEN = len(ITEM_TAG) + 16 + 8 + 32
ITEM_LEN = prim.SECRETBOX_NONCE_LEN + prim.MAC_LEN + PLAIN_LEN


def backup_key(uik_seed: bytes) -> bytes:
    return prim.sha512(KEY_TAG + uik_seed)[:32]


def item_plaintext(case_id: uuid.UUID, epoch: int, epoch_key: bytes) -> bytes:
    return ITEM_TAG + uuid_bytes(case_id) + u64(epoch) + fixed(epoch_key, 32, "epoch key")


def seal_backup_item(key: bytes, case_id: uuid.UUID, epoch: int, epoch_key: bytes,
                     nonce: bytes | None = None) -> bytes:
    n = nonce if nonce is not None else prim.random_bytes(prim.SECRETBOX_NONCE_LEN)
    return n + prim.secretbox_seal(key, n, item_plaintext(case_id, epoch, epoch_key))


def open_backup_item(key: bytes, item: bytes, case_id: uuid.UUID, epoch: int) -> bytes:
    """The epoch key; decrypt_failed for an item not made with this key, bad_wrap for one
    made for another case or epoch (a server swapping items)."""
    if len(item) != ITEM_LEN:
        raise CryptoError("bad_length", "key backup item has the wrong length")
    n = prim.SECRETBOX_NONCE_LEN
    plain = prim.secretbox_open(key, item[:n], item[n:])
    if plain[:-32] != item_plaintext(case_id, epoch, bytes(32))[:-32]:
        raise CryptoError("bad_wrap", "key backup item is for another case or epoch")
    return plain[-32:]
