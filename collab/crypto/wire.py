"""JSON wire wrapper helpers: strict base64 and typed field access.

The wire form is only transport; every signature and hash covers the
canonical bytes re-encoded from the parsed fields."""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Mapping
from typing import Any

from .errors import CryptoError

# JSON numbers are IEEE doubles in JavaScript: refuse anything not exact there.
MAX_SAFE_INT = (1 << 53) - 1


def b64e(data: bytes) -> str:
    """Standard alphabet, with padding."""
    return base64.b64encode(data).decode("ascii")


def b64d(text: object, length: int | None = None) -> bytes:
    """Strict decode: standard alphabet, padding required, no whitespace,
    canonical (re-encoding gives the same text), optional exact length."""
    if not isinstance(text, str):
        raise CryptoError("bad_base64", "expected a base64 string")
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        raise CryptoError("bad_base64", str(exc)) from exc
    if b64e(raw) != text:  # rejects non-zero padding bits
        raise CryptoError("bad_base64", "non-canonical base64")
    if length is not None and len(raw) != length:
        raise CryptoError("bad_length", f"expected {length} bytes, got {len(raw)}")
    return raw


def get(d: Mapping[str, Any], key: str) -> Any:
    if not isinstance(d, Mapping) or key not in d:
        raise CryptoError("bad_field", f"missing field {key!r}")
    return d[key]


def get_int(d: Mapping[str, Any], key: str, max_value: int = MAX_SAFE_INT) -> int:
    value = get(d, key)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= max_value:
        raise CryptoError("bad_field", f"{key!r} must be an integer in 0..{max_value}")
    return int(value)


def get_str(d: Mapping[str, Any], key: str) -> str:
    value = get(d, key)
    if not isinstance(value, str):
        raise CryptoError("bad_field", f"{key!r} must be a string")
    return value


def get_b64(d: Mapping[str, Any], key: str, length: int | None = None) -> bytes:
    return b64d(get(d, key), length)


def get_uuid(d: Mapping[str, Any], key: str) -> uuid.UUID:
    value = get_str(d, key)
    try:
        parsed = uuid.UUID(value)
    except ValueError as exc:
        raise CryptoError("bad_field", f"{key!r} is not a UUID") from exc
    if str(parsed) != value:  # lower-case hyphenated form only
        raise CryptoError("bad_field", f"{key!r} is not a canonical UUID")
    return parsed


def get_list(d: Mapping[str, Any], key: str) -> list[Any]:
    value = get(d, key)
    if not isinstance(value, list):
        raise CryptoError("bad_field", f"{key!r} must be a list")
    return value
