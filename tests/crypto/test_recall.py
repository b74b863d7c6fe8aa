"""Recall statements (collab/crypto/recall.py) against the shared vectors' ``recall``
section: exact bytes and signature, and every forged or retargeted recall refused with
its code. Mirrors frontend/tests/recall.test.mjs."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from collab.crypto.envelope import Header
from collab.crypto.errors import CryptoError
from collab.crypto.recall import (
    Recall,
    check_recall_names,
    header_hash,
    recall_for,
    sign_recall,
    verify_recall,
)
from collab.crypto.vectors import PATH

R: dict[str, Any] = json.loads(PATH.read_text(encoding="ascii"))["recall"]


def b(hex_text: str) -> bytes:
    return bytes.fromhex(hex_text)


def test_recall_statement_bytes_and_signature() -> None:
    header = Header.decode(b(R["header_bytes"]))
    assert header_hash(header).hex() == R["header_hash"]
    recall = recall_for(header, seq=R["seq"], device_id=uuid.UUID(R["device_id"]),
                        recalled_ms=R["recalled_ms"])
    assert recall.encode().hex() == R["statement_bytes"]
    assert recall.to_wire() == R["wire"]
    assert Recall.decode(recall.encode()) == recall == Recall.from_wire(R["wire"])
    sig = sign_recall(b(R["dsk_seed"]), recall)
    assert sig.hex() == R["sig"]
    verify_recall(b(R["dsk_pub"]), recall, sig)
    check_recall_names(recall, header, R["seq"])


def test_recall_decode_is_exact() -> None:
    raw = b(R["statement_bytes"])
    with pytest.raises(CryptoError) as e:
        Recall.decode(raw + b"\x00")
    assert e.value.code == "bad_length"
    with pytest.raises(CryptoError) as e:
        Recall.decode(bytes([raw[0] ^ 1]) + raw[1:])
    assert e.value.code == "bad_field"


def test_recall_wire_is_strict() -> None:
    with pytest.raises(CryptoError) as e:
        Recall.from_wire({**R["wire"], "header_hash": R["wire"]["client_msg_id"]})
    assert e.value.code == "bad_length"


def _run(v: dict[str, Any]) -> None:
    recall = Recall.from_wire(v["recall"])
    if v["check"] == "verify_recall":
        verify_recall(b(v["dsk_pub"]), recall, b(v["sig"]))
    elif v["check"] == "check_recall_names":
        check_recall_names(recall, Header.decode(b(v["header"])), v["seq"])
    else:
        raise AssertionError(f"unknown check {v['check']}")


@pytest.mark.parametrize("vector", R["negative"], ids=lambda v: f"{v['check']}:{v['name']}")
def test_negative_recall_vector(vector: dict[str, Any]) -> None:
    with pytest.raises(CryptoError) as e:
        _run(vector)
    assert e.value.code == vector["error"]


def test_negative_recall_vectors_cover_forgery_and_retargeting() -> None:
    assert {v["error"] for v in R["negative"]} == {"bad_signature", "recall_mismatch"}
