"""Safety numbers, after Signal's numeric fingerprint: each side is 30
digits from an iterated SHA-512 over its UIK and user id; the two halves are
sorted so both people see the same 60 digits (12 groups of 5).

    h_0     = "CR1/safety\\0" || u16 version || uik_pub(32) || user_id(16)
    h_{i+1} = SHA-512(h_i || uik_pub)          for i in 0..5199
    digits  = for j in 0..5: u40_be(h_5200[5j:5j+5]) mod 100000, 5 digits each
"""

from __future__ import annotations

import uuid

from . import primitives as prim
from .encoding import fixed, u16, uuid_bytes

TAG = b"CR1/safety\x00"
VERSION = 1
ITERATIONS = 5200


def fingerprint_digits(user_id: uuid.UUID, uik_pub: bytes) -> str:
    """One side's 30 digits."""
    key = fixed(uik_pub, 32, "uik_pub")
    h = TAG + u16(VERSION) + key + uuid_bytes(user_id)
    for _ in range(ITERATIONS):
        h = prim.sha512(h + key)
    return "".join(f"{int.from_bytes(h[i : i + 5], 'big') % 100000:05d}" for i in range(0, 30, 5))


def safety_number(user_a: uuid.UUID, uik_a: bytes, user_b: uuid.UUID, uik_b: bytes) -> list[str]:
    """12 groups of 5 digits, identical for both parties."""
    digits = "".join(sorted((fingerprint_digits(user_a, uik_a), fingerprint_digits(user_b, uik_b))))
    return [digits[i : i + 5] for i in range(0, 60, 5)]
