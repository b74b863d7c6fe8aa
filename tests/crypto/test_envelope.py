from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from collab.crypto import (
    AttachmentRef,
    CryptoError,
    Envelope,
    Header,
    LogEntry,
    ReplayGuard,
    check_sender,
    open_envelope,
    open_wrap,
    seal_message,
    secretbox_seal,
    sha512,
    sign,
    verify_envelope,
)
from collab.crypto.envelope import encode_body, inner_bytes

from .helpers import ALICE, BOB, CASE_ID, T0, team


def head() -> tuple[LogEntry, bytes]:
    e = team()[2]  # alice, dave, bob
    return e, open_wrap(e, ALICE.d.device_id, ALICE.d.dxk_secret)


def seal(entry: LogEntry, key: bytes, seq: int = 1, **kw: Any) -> Envelope:
    args: dict[str, Any] = {
        "dsk_seed": ALICE.d.dsk_seed,
        "epoch_key": key,
        "case_id": CASE_ID,
        "epoch": entry.epoch,
        "log_head": entry.entry_hash(),
        "sender_user_id": ALICE.user_id,
        "sender_device_id": ALICE.d.device_id,
        "sender_seq": seq,
        "sent_ms": T0,
        "content_type": "text",
        "body": {"text": "Bonjour, ça va? 🩺"},
    }
    args.update(kw)
    return seal_message(**args)


def code_of(fn: Any, *args: Any, **kw: Any) -> str:
    with pytest.raises(CryptoError) as e:
        fn(*args, **kw)
    return e.value.code


def test_seal_verify_open_round_trip() -> None:
    entry, key = head()
    env = seal(entry, key)
    dsk = check_sender(env, entry)
    verify_envelope(env, dsk)
    bob_key = open_wrap(entry, BOB.d.device_id, BOB.d.dxk_secret)
    assert open_envelope(env, bob_key, sender_dsk_pub=dsk) == {"text": "Bonjour, ça va? 🩺"}


def test_wire_and_header_round_trip() -> None:
    entry, key = head()
    env = seal(entry, key, attachments=[AttachmentRef(CASE_ID, bytes(64))])
    assert Envelope.from_wire(env.to_wire()) == env
    assert Header.decode(env.header.encode()) == env.header


def test_tampered_header_rejected() -> None:
    entry, key = head()
    env = seal(entry, key)
    forged = dataclasses.replace(env, header=dataclasses.replace(env.header, sender_seq=9))
    assert code_of(verify_envelope, forged, ALICE.d.dsk_pub) == "bad_signature"


def test_signature_by_other_device_rejected() -> None:
    entry, key = head()
    env = seal(entry, key, dsk_seed=BOB.d.dsk_seed)
    assert code_of(verify_envelope, env, ALICE.d.dsk_pub) == "bad_signature"


def test_ct_hash_mismatch_rejected() -> None:
    entry, key = head()
    env = seal(entry, key)
    bad = dataclasses.replace(env, ct=env.ct[:-1] + bytes([env.ct[-1] ^ 1]))
    assert code_of(verify_envelope, bad, ALICE.d.dsk_pub) == "bad_hash"


def test_ct_len_mismatch_rejected() -> None:
    entry, key = head()
    env = seal(entry, key)
    assert code_of(
        verify_envelope, dataclasses.replace(env, ct=env.ct + b"x"), ALICE.d.dsk_pub
    ) == ("bad_length")


def test_oversize_message_rejected() -> None:
    entry, key = head()
    env = seal(entry, key, body={"text": "x" * 1000})
    assert code_of(verify_envelope, env, ALICE.d.dsk_pub, max_ct_len=100) == "too_large"


def test_sender_outside_roster_rejected() -> None:
    entry, key = head()
    env = seal(entry, key, sender_user_id=BOB.user_id)  # alice's device, bob's id
    assert code_of(check_sender, env, entry) == "unauthorized_author"


def test_message_for_other_head_rejected() -> None:
    entry, key = head()
    assert code_of(check_sender, seal(entry, key, log_head=bytes(64)), entry) == "stale_head"
    assert code_of(check_sender, seal(entry, key, epoch=7), entry) == "wrong_epoch"


def test_wrong_epoch_key_cannot_open() -> None:
    entry, key = head()
    env = seal(entry, key)
    assert code_of(open_envelope, env, bytes(32), sender_dsk_pub=ALICE.d.dsk_pub) == (
        "decrypt_failed"
    )


def _lying(entry: LogEntry, key: bytes, **inner_changes: Any) -> Envelope:
    """Header signed honestly; the encrypted inner claims other fields."""
    env = seal(entry, key)
    h = env.header
    ct = secretbox_seal(key, h.nonce, inner_bytes(dataclasses.replace(h, **inner_changes), b"{}"))
    header = dataclasses.replace(h, ct_len=len(ct), ct_hash=sha512(ct))
    return Envelope(header, ct, sign(ALICE.d.dsk_seed, header.encode()))


@pytest.mark.parametrize(
    "changes",
    [
        {"sender_seq": 2},
        {"epoch": 0},
        {"client_msg_id": bytes(16)},
        {"sender_device_id": BOB.d.device_id},
        {"case_id": BOB.user_id},
    ],
)
def test_inner_mismatch_rejected(changes: dict[str, Any]) -> None:
    entry, key = head()
    env = _lying(entry, key, **changes)
    assert code_of(open_envelope, env, key, sender_dsk_pub=ALICE.d.dsk_pub) == "inner_mismatch"


def test_attachment_manifest_must_match_header() -> None:
    entry, key = head()
    manifest = {"blob_id": str(CASE_ID), "root": "A" * 86 + "==", "key": "x"}
    env = seal(entry, key, body={"attachments": [manifest]})  # header lists none
    assert code_of(open_envelope, env, key, sender_dsk_pub=ALICE.d.dsk_pub) == "inner_mismatch"


def test_non_object_body_rejected() -> None:
    entry, key = head()
    env = seal(entry, key, body=b"[1,2]")
    assert code_of(open_envelope, env, key, sender_dsk_pub=ALICE.d.dsk_pub) == "bad_body"


def test_body_encoding_is_deterministic() -> None:
    assert encode_body({"b": 1, "a": "é"}) == '{"a":"é","b":1}'.encode()


def test_replayed_client_msg_id_dropped() -> None:
    entry, key = head()
    guard = ReplayGuard()
    env = seal(entry, key)
    assert guard.accept(env.header) is None
    assert code_of(guard.accept, env.header) == "replay"


def test_non_increasing_sender_seq_dropped() -> None:
    entry, key = head()
    guard = ReplayGuard()
    guard.accept(seal(entry, key, seq=5).header)
    assert code_of(guard.accept, seal(entry, key, seq=5).header) == "replay"
    assert code_of(guard.accept, seal(entry, key, seq=4).header) == "replay"


def test_sender_seq_gap_reported() -> None:
    entry, key = head()
    guard = ReplayGuard()
    guard.accept(seal(entry, key, seq=1).header)
    gap = guard.accept(seal(entry, key, seq=4).header)
    assert gap is not None and (gap.first_missing, gap.last_missing) == (2, 3)
    assert guard.accept(seal(entry, key, seq=5).header) is None


def test_bad_content_type_rejected() -> None:
    entry, key = head()
    for bad in ("té", "te xt", "", "x" * 65):
        assert code_of(seal, entry, key, content_type=bad) == "bad_field"


def test_wire_rejects_unsupported_version() -> None:
    entry, key = head()
    wire = seal(entry, key).to_wire()
    wire["v"] = 2
    assert code_of(Envelope.from_wire, wire) == "unsupported_version"
