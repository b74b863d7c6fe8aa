"""Canonical binary encoding: fixed-width big-endian ints, u32-prefixed
variable fields, raw 16-byte UUIDs. Every signed or hashed CR1 structure is
built with these helpers so Python and JavaScript produce identical bytes."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from typing import TypeVar

from .errors import CryptoError

T = TypeVar("T")

_MAX = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFFFFFF, 8: 0xFFFFFFFFFFFFFFFF}


def _uint(value: int, width: int) -> bytes:
    if isinstance(value, bool) or not isinstance(value, int):
        raise CryptoError("bad_field", f"u{width * 8} must be an int")
    if not 0 <= value <= _MAX[width]:
        raise CryptoError("bad_field", f"{value} does not fit in u{width * 8}")
    return value.to_bytes(width, "big")


def u8(value: int) -> bytes:
    return _uint(value, 1)


def u16(value: int) -> bytes:
    return _uint(value, 2)


def u32(value: int) -> bytes:
    return _uint(value, 4)


def u64(value: int) -> bytes:
    return _uint(value, 8)


def var(data: bytes) -> bytes:
    """u32 length || bytes."""
    return u32(len(data)) + bytes(data)


def uuid_bytes(value: uuid.UUID) -> bytes:
    if not isinstance(value, uuid.UUID):
        raise CryptoError("bad_field", "expected uuid.UUID")
    return value.bytes


def fixed(data: bytes, length: int, what: str = "field") -> bytes:
    """Check a fixed-width byte field before packing it."""
    if not isinstance(data, bytes | bytearray) or len(data) != length:
        raise CryptoError("bad_length", f"{what} must be {length} bytes")
    return bytes(data)


def pack_list(items: Iterable[T], pack: Callable[[T], bytes]) -> bytes:
    """u32 count || packed items."""
    parts = [pack(item) for item in items]
    return u32(len(parts)) + b"".join(parts)


class Reader:
    """Strict cursor over canonical bytes: short reads and trailing bytes
    both raise bad_length, so a parse is exact or fails."""

    def __init__(self, data: bytes) -> None:
        self._data = bytes(data)
        self._pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self._pos + n > len(self._data):
            raise CryptoError("bad_length", "input is too short")
        out = self._data[self._pos : self._pos + n]
        self._pos += n
        return out

    def tag(self, expected: bytes) -> None:
        if self.take(len(expected)) != expected:
            raise CryptoError("bad_field", f"expected tag {expected!r}")

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def u64(self) -> int:
        return int.from_bytes(self.take(8), "big")

    def var(self, max_len: int = 1 << 30) -> bytes:
        n = self.u32()
        if n > max_len:
            raise CryptoError("bad_length", "variable field too long")
        return self.take(n)

    def uuid(self) -> uuid.UUID:
        return uuid.UUID(bytes=self.take(16))

    def list(self, read_item: Callable[[Reader], T], max_count: int = 1 << 16) -> list[T]:
        n = self.u32()
        if n > max_count:
            raise CryptoError("bad_length", "list too long")
        return [read_item(self) for _ in range(n)]

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def done(self) -> None:
        if self._pos != len(self._data):
            raise CryptoError("bad_length", "trailing bytes")
