"""The committed vector file is reproducible, and every vector holds when
read back the way the JavaScript tests read it (inputs -> expected bytes;
negative vectors -> expected error code)."""

from __future__ import annotations

import io
import json
import uuid
from typing import Any

import pytest

from collab.crypto import (
    AttachmentDecryptor,
    AttachmentEncryptor,
    CryptoError,
    Envelope,
    LogEntry,
    Manifest,
    ReplayGuard,
    b64d,
    box_open,
    box_seal,
    build_entry,
    ed25519_public,
    open_envelope,
    open_wrap,
    safety_number,
    secretbox_seal,
    sha512,
    sign,
    verify,
    verify_chain,
    verify_entry,
    verify_envelope,
    x25519_public,
)
from collab.crypto.actions import enrol_bytes, sign_enrol
from collab.crypto.devcert import DeviceCert, cert_bytes
from collab.crypto.devproof import (
    http_proof_bytes,
    sign_http_proof,
    sign_ws_proof,
    verify_http_proof,
    verify_ws_proof,
    ws_proof_bytes,
)
from collab.crypto.envelope import inner_bytes
from collab.crypto.invite import (
    invite_keypair,
    invite_proof_bytes,
    invite_statement_bytes,
    short_code,
    sign_invitation,
    sign_invite_proof,
    verify_invitation_statement,
    verify_invite_proof,
)
from collab.crypto.keybackup import backup_key, open_backup_item, seal_backup_item
from collab.crypto.log import seal_entry, wrap_nonce, wrap_plaintext
from collab.crypto.pins import (
    open_pins,
    pins_key,
    pins_signed_bytes,
    seal_pins,
    sign_pins,
    verify_pins,
)
from collab.crypto.safety import fingerprint_digits
from collab.crypto.vectors import PATH, render
from collab.crypto.vectors.__main__ import main

V: dict[str, Any] = json.loads(PATH.read_text(encoding="ascii"))


def b(h: str) -> bytes:
    return bytes.fromhex(h)


def test_vectors_file_is_reproducible() -> None:
    assert render() == PATH.read_text(encoding="ascii")


def test_check_mode_passes_on_committed_file() -> None:
    assert main(["--check"]) == 0


def test_primitive_vectors() -> None:
    p = V["primitives"]
    for item in p["sha512"]:
        assert sha512(b(item["input"])).hex() == item["output"]
    ed = p["ed25519"]
    assert ed25519_public(b(ed["seed"])).hex() == ed["public"]
    assert sign(b(ed["seed"]), b(ed["message"])).hex() == ed["signature"]
    verify(b(ed["public"]), b(ed["message"]), b(ed["signature"]))
    bx = p["box"]
    ct = box_seal(
        b(bx["sender_secret"]), b(bx["recipient_public"]), b(bx["nonce"]), b(bx["plaintext"])
    )
    assert ct.hex() == bx["ciphertext"]
    assert (
        box_open(b(bx["recipient_secret"]), b(bx["sender_public"]), b(bx["nonce"]), ct).hex()
        == (bx["plaintext"])
    )
    sb = p["secretbox"]
    assert (
        secretbox_seal(b(sb["key"]), b(sb["nonce"]), b(sb["plaintext"])).hex() == sb["ciphertext"]
    )


def test_devcert_vector() -> None:
    d = V["devcert"]
    msg = cert_bytes(
        uuid.UUID(d["user_id"]),
        uuid.UUID(d["device_id"]),
        b(d["dsk_pub"]),
        b(d["dxk_pub"]),
        d["not_before_ms"],
    )
    assert msg.hex() == d["signed_bytes"]
    assert sign(b(d["uik_seed"]), msg).hex() == d["cert_sig"]
    assert DeviceCert.from_wire(d["wire"]).encode().hex() == d["roster_record"]


def test_log_vectors() -> None:
    entries = []
    prev: LogEntry | None = None
    for item in V["log"]["entries"]:
        i = item["inputs"]
        roster = LogEntry.decode(b(item["entry_bytes"])).roster
        assert roster.encode().hex() == item["roster_bytes"]
        e = seal_entry(
            author_seed=b(i["author_dsk_seed"]),
            case_id=uuid.UUID(i["case_id"]),
            epoch=i["epoch"],
            prev_hash=b(i["prev_hash"]),
            author_user_id=uuid.UUID(i["author_user_id"]),
            author_device_id=uuid.UUID(i["author_device_id"]),
            created_ms=i["created_ms"],
            action=i["action"],
            action_body=b(i["action_body"]),
            roster=roster,
            epoch_key=b(i["epoch_key"]),
            epk_secret=b(i["epk_secret"]),
        )
        assert e.signed_bytes().hex() == item["signed_bytes"]
        assert e.signature.hex() == item["signature"]
        assert e.entry_hash().hex() == item["entry_hash"]
        assert LogEntry.from_wire(item["wire"]) == e
        verify_entry(prev, e)
        for w in item["wraps"]:
            dev = uuid.UUID(w["device_id"])
            assert wrap_nonce(e.epk, dev, e.epoch).hex() == w["nonce"]
            assert (
                wrap_plaintext(e.case_id, e.epoch, e.prev_hash, dev, b(i["epoch_key"])).hex()
                == (w["plaintext"])
            )
            assert open_wrap(e, dev, b(w["dxk_secret"])) == b(i["epoch_key"])
        entries.append(e)
        prev = e
    assert entries[1].prev_hash == entries[0].entry_hash()


def test_attachment_vector() -> None:
    a = V["attachment"]
    content = bytes(i % 251 for i in range(a["size"]))
    assert sha512(content).hex() == a["plaintext_sha512"]
    enc = AttachmentEncryptor(b(a["key"]), b(a["prefix"]))
    chunks = list(enc.chunks(io.BytesIO(content)))
    assert [sha512(c).hex() for c in chunks] == [c["ct_sha512"] for c in a["chunks"]]
    assert chunks[-1].hex() == a["last_chunk_ct"]
    m = Manifest.from_wire(a["manifest"])
    assert (
        m.root.hex()
        == a["root"]
        == enc.manifest(m.blob_id, mime=m.mime, width=m.width, height=m.height).root.hex()
    )


def test_message_vector() -> None:
    msg = V["message"]
    env = Envelope.from_wire(msg["wire"])
    assert env.header.encode().hex() == msg["header_bytes"]
    assert inner_bytes(env.header, b(msg["body_bytes"])).hex() == msg["inner_bytes"]
    assert (
        secretbox_seal(b(msg["epoch_key"]), env.header.nonce, b(msg["inner_bytes"])).hex()
        == msg["ct"]
    )
    assert sign(b(msg["sender_dsk_seed"]), env.header.encode()).hex() == msg["sig"]
    body = open_envelope(env, b(msg["epoch_key"]), sender_dsk_pub=b(msg["sender_dsk_pub"]))
    assert json.dumps(body, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode() == (
        b(msg["body_bytes"])
    )


def test_gap_vector() -> None:
    g = V["replay_gap"]
    guard = ReplayGuard()
    gaps = [guard.accept(Envelope.from_wire(w).header) for w in g["envelopes"]]
    assert gaps[0] is None and gaps[1] is not None
    assert (str(gaps[1].device_id), gaps[1].first_missing, gaps[1].last_missing) == (
        g["gap"]["device_id"],
        g["gap"]["first_missing"],
        g["gap"]["last_missing"],
    )


def test_invite_vector() -> None:
    v = V["invite"]
    case_id, patient = uuid.UUID(v["case_id"]), uuid.UUID(v["patient_user"])
    inviter_user, inviter_device = uuid.UUID(v["inviter_user"]), uuid.UUID(v["inviter_device"])
    seed_, pub = invite_keypair(b(v["secret"]))
    assert (seed_.hex(), pub.hex()) == (v["invite_seed"], v["invite_pub"])
    statement = invite_statement_bytes(case_id, inviter_user, inviter_device, pub,
                                       v["created_ms"])
    assert statement.hex() == v["statement_bytes"]
    alice = V["people"]["alice"]["devices"][0]
    sig = sign_invitation(b(alice["dsk_seed"]), case_id, inviter_user, inviter_device, pub,
                          v["created_ms"])
    assert sig.hex() == v["invite_sig"]
    verify_invitation_statement(b(alice["dsk_pub"]), case_id, inviter_user, inviter_device,
                                pub, v["created_ms"], sig)
    assert invite_proof_bytes(case_id, pub, patient, b(v["patient_uik"])).hex() == v["proof_bytes"]
    proof = sign_invite_proof(seed_, case_id, pub, patient, b(v["patient_uik"]))
    assert proof.hex() == v["proof_sig"]
    verify_invite_proof(pub, case_id, patient, b(v["patient_uik"]), proof)
    assert short_code(patient, b(v["patient_uik"])) == v["short_code"]
    assert "".join(v["short_code"]) == fingerprint_digits(patient, b(v["patient_uik"]))[:20]


def test_pins_vector() -> None:
    v = V["pins"]
    user, seed_ = uuid.UUID(v["user_id"]), b(v["uik_seed"])
    assert pins_key(seed_).hex() == v["key"]
    blob = seal_pins(seed_, v["plaintext"].encode(), b(v["nonce"]))
    assert blob.hex() == v["blob"]
    assert open_pins(seed_, blob).decode() == v["plaintext"]
    assert pins_signed_bytes(user, v["version"], blob).hex() == v["signed_bytes"]
    sig = sign_pins(seed_, user, v["version"], blob)
    assert sig.hex() == v["sig"]
    verify_pins(ed25519_public(seed_), user, v["version"], blob, sig)
    with pytest.raises(CryptoError) as e:
        open_pins(sha512(seed_)[:32], blob)
    assert e.value.code == "decrypt_failed"


def test_safety_vector() -> None:
    s = V["safety_number"]
    groups = safety_number(
        uuid.UUID(s["a"]["user_id"]),
        b(s["a"]["uik_pub"]),
        uuid.UUID(s["b"]["user_id"]),
        b(s["b"]["uik_pub"]),
    )
    assert groups == s["groups"]
    assert "".join(groups) == "".join(sorted((s["a_digits"], s["b_digits"])))


def _run_negative(v: dict[str, Any]) -> None:
    check = v["check"]
    if check == "ed25519_verify":
        verify(b(v["public"]), b(v["message"]), b(v["signature"]))
    elif check == "box_seal":
        box_seal(b(v["secret"]), b(v["peer_public"]), b(v["nonce"]), b(v["plaintext"]))
    elif check == "b64decode":
        b64d(v["input"], v["length"])
    elif check == "verify_entry":
        prev = LogEntry.decode(b(v["prev"])) if v["prev"] else None
        verify_entry(prev, LogEntry.decode(b(v["entry"])))
    elif check == "open_wrap":
        entry = LogEntry.decode(b(v["entry"]))
        verify_entry(LogEntry.decode(b(v["prev"])), entry)  # passes: the server cannot tell
        open_wrap(entry, uuid.UUID(v["device_id"]), b(v["dxk_secret"]))
    elif check == "verify_chain":
        verify_chain([LogEntry.decode(b(h)) for h in v["entries"]])
    elif check == "replay_guard":
        guard = ReplayGuard()
        for n, w in enumerate(v["envelopes"]):
            if n == v["fails_at"]:
                guard.accept(Envelope.from_wire(w).header)
            guard.accept(Envelope.from_wire(w).header)
    elif check == "open_envelope":
        open_envelope(
            Envelope.from_wire(v["envelope"]),
            b(v["epoch_key"]),
            sender_dsk_pub=b(v["sender_dsk_pub"]),
        )
    elif check == "verify_envelope":
        verify_envelope(Envelope.from_wire(v["envelope"]), b(v["sender_dsk_pub"]))
    elif check == "decrypt_attachment":
        a = V["attachment"]
        enc = AttachmentEncryptor(b(a["key"]), b(a["prefix"]))
        chunks = list(enc.chunks(io.BytesIO(bytes(i % 251 for i in range(a["size"])))))
        dec = AttachmentDecryptor(Manifest.from_wire(v["manifest"]))
        for i in v["chunk_order"]:
            dec.update(chunks[i])
        dec.finalize()
    elif check == "verify_invite_proof":
        verify_invite_proof(b(v["invite_pub"]), uuid.UUID(v["case_id"]),
                            uuid.UUID(v["patient_user"]), b(v["patient_uik"]), b(v["sig"]))
    elif check == "verify_invitation":
        verify_invitation_statement(b(v["dsk_pub"]), uuid.UUID(v["case_id"]),
                                    uuid.UUID(v["inviter_user"]), uuid.UUID(v["inviter_device"]),
                                    b(v["invite_pub"]), v["created_ms"], b(v["sig"]))
    elif check == "verify_pins":
        verify_pins(b(v["uik_pub"]), uuid.UUID(v["user_id"]), v["version"], b(v["blob"]),
                    b(v["sig"]))
    elif check == "verify_http_proof":
        verify_http_proof(b(v["dsk_pub"]), b(v["sig"]), device_id=uuid.UUID(v["device_id"]),
                          time_ms=v["time_ms"], method=v["method"], path=v["path"],
                          body=b(v["body"]), nonce=v["nonce"], jti=b(v["jti"]))
    elif check == "verify_ws_proof":
        verify_ws_proof(b(v["dsk_pub"]), b(v["sig"]), b(v["challenge"]), uuid.UUID(v["case_id"]),
                        uuid.UUID(v["device_id"]))
    elif check == "open_backup_item":
        open_backup_item(b(v["key"]), b(v["item"]), uuid.UUID(v["case_id"]), v["epoch"])
    else:
        raise AssertionError(f"unknown check {check}")


@pytest.mark.parametrize("vector", V["negative"], ids=lambda v: f"{v['check']}:{v['name']}")
def test_negative_vector(vector: dict[str, Any]) -> None:
    with pytest.raises(CryptoError) as e:
        _run_negative(vector)
    assert e.value.code == vector["error"]


def test_negative_vectors_cover_the_brief() -> None:
    errors = {v["error"] for v in V["negative"]}
    assert {
        "non_canonical_signature",
        "low_order_key",
        "replay",
        "stale_head",
        "unauthorized_author",
        "chunk_order",
        "truncated",
        "inner_mismatch",
        "fork",
        "bad_proof",
    } <= errors


def test_people_keys_match_their_seeds() -> None:
    for person in V["people"].values():
        assert ed25519_public(b(person["uik_seed"])).hex() == person["uik_pub"]
        for d in person["devices"]:
            assert ed25519_public(b(d["dsk_seed"])).hex() == d["dsk_pub"]
            assert x25519_public(b(d["dxk_secret"])).hex() == d["dxk_pub"]


def test_enrol_vector_a_new_device_joins_by_its_identity_key() -> None:
    v = V["enrol"]
    d = v["device"]
    e1 = LogEntry.decode(b(v["prev"]))
    cert = DeviceCert(e1.roster.users[1].user_id, uuid.UUID(d["device_id"]), b(d["dsk_pub"]),
                      b(d["dxk_pub"]), d["not_before_ms"], b(d["cert_sig"]))
    bob_uik_seed = b(V["people"]["bob"]["uik_seed"])
    assert enrol_bytes(e1.case_id, 2, e1.entry_hash(), cert).hex() == v["enrol_bytes"]
    body = sign_enrol(bob_uik_seed, e1.case_id, 2, e1.entry_hash(), cert)
    assert body.uik_sig.hex() == v["uik_sig"] and body.encode().hex() == v["action_body"]
    entry, key = build_entry(
        e1, body, author_seed=b(d["dsk_seed"]), author_user_id=cert.user_id,
        author_device_id=cert.device_id, created_ms=v["created_ms"],
        epoch_key=b(v["epoch_key"]), epk_secret=b(v["epk_secret"]),
    )
    assert entry.encode().hex() == v["entry_bytes"]
    assert entry.entry_hash().hex() == v["entry_hash"]
    verify_entry(e1, LogEntry.decode(b(v["entry_bytes"])))
    assert open_wrap(entry, cert.device_id, b(d["dxk_secret"])) == key


def test_device_proof_vector() -> None:
    v = V["device_proof"]
    h, w = v["http"], v["ws"]
    device, seed_ = uuid.UUID(v["device_id"]), b(v["dsk_seed"])
    fields = {"device_id": device, "time_ms": h["time_ms"], "method": h["method"],
              "path": h["path"], "body": b(h["body"]), "nonce": h["nonce"], "jti": b(h["jti"])}
    assert http_proof_bytes(**fields).hex() == h["signed_bytes"]
    sig = sign_http_proof(seed_, **fields)
    assert sig.hex() == h["sig"]
    verify_http_proof(b(v["dsk_pub"]), sig, **fields)
    case = uuid.UUID(w["case_id"])
    assert ws_proof_bytes(b(w["challenge"]), case, device).hex() == w["signed_bytes"]
    ws_sig = sign_ws_proof(seed_, b(w["challenge"]), case, device)
    assert ws_sig.hex() == w["sig"]
    verify_ws_proof(b(v["dsk_pub"]), ws_sig, b(w["challenge"]), case, device)


def test_key_backup_vector() -> None:
    v = V["key_backup"]
    key = backup_key(b(v["uik_seed"]))
    assert key.hex() == v["key"]
    case = uuid.UUID(v["case_id"])
    item = seal_backup_item(key, case, v["epoch"], b(v["epoch_key"]), b(v["nonce"]))
    assert item.hex() == v["item"]
    assert open_backup_item(key, item, case, v["epoch"]).hex() == v["epoch_key"]


def test_device_proof_over_a_streamed_body_hash() -> None:
    """A verifier that hashes a large body as it streams it checks the same signature."""
    v = V["device_proof"]
    h = v["http"]
    fields = {"device_id": uuid.UUID(v["device_id"]), "time_ms": h["time_ms"],
              "method": h["method"], "path": h["path"], "nonce": h["nonce"], "jti": b(h["jti"])}
    streamed = sha512(b(h["body"]))
    verify_http_proof(b(v["dsk_pub"]), b(h["sig"]), body=b"", body_hash=streamed, **fields)
    with pytest.raises(CryptoError) as e:
        verify_http_proof(b(v["dsk_pub"]), b(h["sig"]), body=b"", body_hash=sha512(b"other"),
                          **fields)
    assert e.value.code == "bad_signature"
