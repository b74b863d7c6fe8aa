from __future__ import annotations

import uuid

import pytest

from collab.crypto import (
    CryptoError,
    b64d,
    b64e,
    box_open,
    box_seal,
    ed25519_public,
    secretbox_open,
    secretbox_seal,
    sha512,
    sign,
    verify,
    x25519_public,
)
from collab.crypto import primitives as prim
from collab.crypto.encoding import Reader, u8, u16, u32, u64, uuid_bytes, var
from collab.crypto.errors import CODES

SEED = bytes(range(32))


def code(exc: pytest.ExceptionInfo[CryptoError]) -> str:
    return exc.value.code


def test_sha512_is_raw_64_bytes() -> None:
    assert sha512(b"abc").hex().startswith("ddaf35a193617aba")
    assert len(sha512(b"")) == 64


def test_sign_verify_round_trip() -> None:
    sig = sign(SEED, b"m")
    verify(ed25519_public(SEED), b"m", sig)


def test_bad_signature_rejected() -> None:
    sig = sign(SEED, b"m")
    with pytest.raises(CryptoError) as e:
        verify(ed25519_public(SEED), b"other", sig)
    assert code(e) == "bad_signature"


def test_non_canonical_signature_rejected() -> None:
    sig = sign(SEED, b"m")
    s = int.from_bytes(sig[32:], "little") + prim.L
    with pytest.raises(CryptoError) as e:
        verify(ed25519_public(SEED), b"m", sig[:32] + s.to_bytes(32, "little"))
    assert code(e) == "non_canonical_signature"


@pytest.mark.parametrize("key", sorted(prim.ED25519_SMALL_ORDER))
def test_small_order_ed25519_key_rejected(key: bytes) -> None:
    with pytest.raises(CryptoError) as e:
        verify(key, b"m", sign(SEED, b"m"))
    assert code(e) == "low_order_key"


def test_small_order_signature_r_rejected() -> None:
    sig = sign(SEED, b"m")
    with pytest.raises(CryptoError) as e:
        verify(ed25519_public(SEED), b"m", (1).to_bytes(32, "little") + sig[32:])
    assert code(e) == "bad_signature"


def test_box_round_trip() -> None:
    a, b = bytes(range(1, 33)), bytes(range(2, 34))
    ct = box_seal(a, x25519_public(b), bytes(24), b"hi")
    assert box_open(b, x25519_public(a), bytes(24), ct) == b"hi"
    with pytest.raises(CryptoError) as e:
        box_open(b, x25519_public(a), bytes(23) + b"\x01", ct)
    assert code(e) == "decrypt_failed"


@pytest.mark.parametrize("key", [*sorted(prim.X25519_SMALL_ORDER), bytes(31) + b"\x80"])
def test_low_order_key_rejected(key: bytes) -> None:
    with pytest.raises(CryptoError) as e:
        box_seal(SEED, key, bytes(24), b"x")
    assert code(e) == "low_order_key"
    with pytest.raises(CryptoError) as e:
        box_open(SEED, key, bytes(24), bytes(17))
    assert code(e) == "low_order_key"


def test_non_canonical_x25519_key_rejected() -> None:
    p_plus_2 = (prim.P + 2).to_bytes(32, "little")
    with pytest.raises(CryptoError) as e:
        box_seal(SEED, p_plus_2, bytes(24), b"x")
    assert code(e) == "bad_key"


def test_secretbox_round_trip_and_tamper() -> None:
    ct = secretbox_seal(SEED, bytes(24), b"secret")
    assert secretbox_open(SEED, bytes(24), ct) == b"secret"
    with pytest.raises(CryptoError) as e:
        secretbox_open(SEED, bytes(24), ct[:-1] + bytes([ct[-1] ^ 1]))
    assert code(e) == "decrypt_failed"


@pytest.mark.parametrize("text", ["AAA", "AA=A", "AAB=", "AA AA===", "-_8=", "AA==\n", 5])
def test_bad_base64_rejected(text: object) -> None:
    with pytest.raises(CryptoError) as e:
        b64d(text)
    assert code(e) == "bad_base64"


def test_base64_wrong_length_rejected() -> None:
    assert b64d(b64e(b"abcd"), 4) == b"abcd"
    with pytest.raises(CryptoError) as e:
        b64d(b64e(b"abcd"), 32)
    assert code(e) == "bad_length"


def test_reader_rejects_short_and_trailing_data() -> None:
    data = u8(1) + u16(2) + u32(3) + u64(4) + var(b"xyz") + uuid_bytes(uuid.UUID(int=5))
    r = Reader(data)
    assert (r.u8(), r.u16(), r.u32(), r.u64(), r.var(), r.uuid()) == (
        1,
        2,
        3,
        4,
        b"xyz",
        uuid.UUID(int=5),
    )
    r.done()
    trailing = Reader(data + b"\x00")
    trailing.take(len(data))
    with pytest.raises(CryptoError) as e:
        trailing.done()
    assert code(e) == "bad_length"
    with pytest.raises(CryptoError) as e:
        Reader(u32(10) + b"abc").var()
    assert code(e) == "bad_length"


def test_integer_out_of_range_rejected() -> None:
    with pytest.raises(CryptoError) as e:
        u8(256)
    assert code(e) == "bad_field"


def test_unknown_error_code_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown"):
        CryptoError("no_such_code")
    assert "replay" in CODES
