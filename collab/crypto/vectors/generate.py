"""Builds the CR1 vector document. Bytes are lower-case hex; wire dicts are
the exact to_wire() JSON (base64). Negative vectors name the operation
(`check`) and the CryptoError code it must raise (`error`)."""

from __future__ import annotations

import base64
import dataclasses
import io
import uuid
from typing import Any

from .. import primitives as prim
from ..actions import (
    Action,
    AddDeviceBody,
    AddUserBody,
    CreateBody,
    EnrolDeviceBody,
    RemoveDeviceBody,
    RemoveUserBody,
    RotateBody,
    apply_action,
    enrol_bytes,
    sign_enrol,
)
from ..attachment import CHUNK_SIZE, AttachmentEncryptor, chunk_nonce
from ..devcert import make_device_cert
from ..devproof import http_proof_bytes, sign_http_proof, sign_ws_proof, ws_proof_bytes
from ..envelope import AttachmentRef, Envelope, encode_body, inner_bytes, seal_message
from ..errors import CryptoError
from ..invite import (
    invite_keypair,
    invite_proof_bytes,
    invite_statement_bytes,
    short_code,
    sign_invitation,
    sign_invite_proof,
)
from ..keybackup import backup_key, item_plaintext, seal_backup_item
from ..log import LogEntry, build_entry, key_commit, seal_entry, wrap_nonce, wrap_plaintext
from ..pins import pins_key, pins_signed_bytes, seal_pins, sign_pins
from ..recall import recall_for, sign_recall
from ..roster import Role, Roster
from ..safety import fingerprint_digits, safety_number
from .fixtures import (
    ALICE,
    BOB,
    CAROL,
    CASE_ID,
    NOT_BEFORE_MS,
    Person,
    fixed_uuid,
    person,
    seed,
)

Json = dict[str, Any]
T0 = 1_700_000_000_000
ATT_SIZE = 2 * CHUNK_SIZE + 100
BLOB_ID = uuid.UUID("b0000000-0000-4000-8000-000000000001")


def hx(b: bytes) -> str:
    return b.hex()


def att_content(size: int) -> bytes:
    """content[i] = i mod 251 (a prime, so chunks differ)."""
    return bytes(i % 251 for i in range(size))


def _person(p: Person) -> Json:
    return {
        "user_id": str(p.user_id),
        "uik_seed": hx(p.uik_seed),
        "uik_pub": hx(p.uik_pub),
        "devices": [
            {
                "device_id": str(d.device_id),
                "dsk_seed": hx(d.dsk_seed),
                "dsk_pub": hx(d.dsk_pub),
                "dxk_secret": hx(d.dxk_secret),
                "dxk_pub": hx(d.dxk_pub),
                "not_before_ms": d.cert.not_before_ms,
                "cert_sig": hx(d.cert.cert_sig),
            }
            for d in p.devices
        ],
    }


def _primitives() -> Json:
    ed_seed, msg = seed("prim/ed25519"), b"CR1 test message"
    a, b = seed("prim/box/a"), seed("prim/box/b")
    box_nonce, box_plain = bytes(range(24)), b"CR1 box plaintext"
    sb_key, sb_nonce, sb_plain = seed("prim/secretbox"), bytes(range(24, 48)), b"CR1 secretbox"
    return {
        "sha512": [{"input": hx(m), "output": hx(prim.sha512(m))} for m in (b"", b"abc", b"CR1")],
        "ed25519": {
            "seed": hx(ed_seed),
            "public": hx(prim.ed25519_public(ed_seed)),
            "message": hx(msg),
            "signature": hx(prim.sign(ed_seed, msg)),
        },
        "box": {
            "sender_secret": hx(a),
            "sender_public": hx(prim.x25519_public(a)),
            "recipient_secret": hx(b),
            "recipient_public": hx(prim.x25519_public(b)),
            "nonce": hx(box_nonce),
            "plaintext": hx(box_plain),
            "ciphertext": hx(prim.box_seal(a, prim.x25519_public(b), box_nonce, box_plain)),
        },
        "secretbox": {
            "key": hx(sb_key),
            "nonce": hx(sb_nonce),
            "plaintext": hx(sb_plain),
            "ciphertext": hx(prim.secretbox_seal(sb_key, sb_nonce, sb_plain)),
        },
    }


def _devcert() -> Json:
    d = ALICE.d
    return {
        "uik_seed": hx(ALICE.uik_seed),
        "uik_pub": hx(ALICE.uik_pub),
        "user_id": str(ALICE.user_id),
        "device_id": str(d.device_id),
        "dsk_pub": hx(d.dsk_pub),
        "dxk_pub": hx(d.dxk_pub),
        "not_before_ms": d.cert.not_before_ms,
        "signed_bytes": hx(d.cert.signed_bytes()),
        "cert_sig": hx(d.cert.cert_sig),
        "roster_record": hx(d.cert.encode()),
        "wire": d.cert.to_wire(),
    }


def _entry(e: LogEntry, author_seed: bytes, epoch_key: bytes, epk_secret: bytes) -> Json:
    everyone = {d.device_id: d for p in (ALICE, BOB, CAROL) for d in p.devices}
    return {
        "inputs": {
            "case_id": str(e.case_id),
            "epoch": e.epoch,
            "prev_hash": hx(e.prev_hash),
            "author_user_id": str(e.author_user_id),
            "author_device_id": str(e.author_device_id),
            "author_dsk_seed": hx(author_seed),
            "created_ms": e.created_ms,
            "action": int(e.action),
            "action_body": hx(e.action_body),
            "epoch_key": hx(epoch_key),
            "epk_secret": hx(epk_secret),
        },
        "roster_bytes": hx(e.roster.encode()),
        "key_commit": hx(e.key_commit),
        "epk": hx(e.epk),
        "wraps": [
            {
                "device_id": str(w.device_id),
                "dxk_secret": hx(everyone[w.device_id].dxk_secret),
                "nonce": hx(wrap_nonce(e.epk, w.device_id, e.epoch)),
                "plaintext": hx(
                    wrap_plaintext(e.case_id, e.epoch, e.prev_hash, w.device_id, epoch_key)
                ),
                "ciphertext": hx(w.ciphertext),
            }
            for w in e.wraps
        ],
        "signed_bytes": hx(e.signed_bytes()),
        "signature": hx(e.signature),
        "entry_bytes": hx(e.encode()),
        "entry_hash": hx(e.entry_hash()),
        "wire": e.to_wire(),
    }


def _log() -> tuple[Json, list[LogEntry], list[bytes]]:
    a = ALICE
    k0, x0, k1, x1 = (seed(f"log/e{i}/{w}") for i in (0, 1) for w in ("key", "epk"))
    e0, _ = build_entry(
        None,
        CreateBody(a.uik_pub, tuple(d.cert for d in a.devices)),
        author_seed=a.d.dsk_seed,
        author_user_id=a.user_id,
        author_device_id=a.d.device_id,
        created_ms=T0 + 100_000,
        case_id=CASE_ID,
        epoch_key=k0,
        epk_secret=x0,
    )
    e1, _ = build_entry(
        e0,
        AddUserBody(BOB.user_id, Role.MEMBER, BOB.uik_pub, (BOB.d.cert,)),
        author_seed=a.d.dsk_seed,
        author_user_id=a.user_id,
        author_device_id=a.d.device_id,
        created_ms=T0 + 200_000,
        epoch_key=k1,
        epk_secret=x1,
    )
    doc = {
        "case_id": str(CASE_ID),
        "entries": [_entry(e0, a.d.dsk_seed, k0, x0), _entry(e1, a.d.dsk_seed, k1, x1)],
    }
    return doc, [e0, e1], [k0, k1]


def _attachment() -> tuple[Json, list[bytes], Any]:
    content = att_content(ATT_SIZE)
    enc = AttachmentEncryptor(seed("att/key"), seed("att/prefix")[:16])
    chunks = list(enc.chunks(io.BytesIO(content)))
    manifest = enc.manifest(BLOB_ID, mime="image/jpeg", width=640, height=480)
    n = len(chunks)
    doc = {
        "plaintext_rule": "content[i] = i % 251",
        "size": ATT_SIZE,
        "plaintext_sha512": hx(prim.sha512(content)),
        "key": hx(manifest.key),
        "prefix": hx(manifest.prefix),
        "chunks": [
            {
                "index": i,
                "nonce": hx(chunk_nonce(manifest.prefix, i, i == n - 1)),
                "ct_len": len(c),
                "ct_sha512": hx(prim.sha512(c)),
                "ct_head": hx(c[:32]),
            }
            for i, c in enumerate(chunks)
        ],
        "last_chunk_ct": hx(chunks[-1]),
        "root": hx(manifest.root),
        "manifest": manifest.to_wire(),
    }
    return doc, chunks, manifest


def _message(e1: LogEntry, k1: bytes, manifest: Any) -> tuple[Json, Envelope]:
    body = {
        "text": "Wound check: see image.",
        "priority": "normal",
        "attachments": [manifest.to_wire()],
    }
    env = seal_message(
        dsk_seed=ALICE.d.dsk_seed,
        epoch_key=k1,
        case_id=CASE_ID,
        epoch=e1.epoch,
        log_head=e1.entry_hash(),
        sender_user_id=ALICE.user_id,
        sender_device_id=ALICE.d.device_id,
        sender_seq=1,
        sent_ms=T0 + 300_000,
        content_type="text",
        body=body,
        attachments=[AttachmentRef(manifest.blob_id, manifest.root)],
        client_msg_id=seed("msg/client_msg_id")[:16],
        nonce=seed("msg/nonce")[:24],
    )
    body_bytes = encode_body(body)
    doc = {
        "epoch_key": hx(k1),
        "sender_dsk_seed": hx(ALICE.d.dsk_seed),
        "sender_dsk_pub": hx(ALICE.d.dsk_pub),
        "body_bytes": hx(body_bytes),
        "inner_bytes": hx(inner_bytes(env.header, body_bytes)),
        "header_bytes": hx(env.header.encode()),
        "ct": hx(env.ct),
        "sig": hx(env.sig),
        "wire": env.to_wire(),
    }
    return doc, env


def _safety() -> Json:
    return {
        "a": {"user_id": str(ALICE.user_id), "uik_pub": hx(ALICE.uik_pub)},
        "b": {"user_id": str(BOB.user_id), "uik_pub": hx(BOB.uik_pub)},
        "a_digits": fingerprint_digits(ALICE.user_id, ALICE.uik_pub),
        "b_digits": fingerprint_digits(BOB.user_id, BOB.uik_pub),
        "groups": safety_number(ALICE.user_id, ALICE.uik_pub, BOB.user_id, BOB.uik_pub),
    }


BOB_NEW = person("bob", 2, 2).devices[1]  # Bob's second device, certified by his UIK
CAROL_NEW = person("carol", 3, 2).devices[1]


def _enrol(e1: LogEntry) -> Json:
    """Bob's new device joins the case by itself, authorised by Bob's identity key."""
    k, x = seed("log/e2/key"), seed("log/e2/epk")
    body = sign_enrol(BOB.uik_seed, CASE_ID, e1.epoch + 1, e1.entry_hash(), BOB_NEW.cert)
    e2, _ = build_entry(
        e1, body, author_seed=BOB_NEW.dsk_seed, author_user_id=BOB.user_id,
        author_device_id=BOB_NEW.device_id, created_ms=T0 + 300_000, epoch_key=k, epk_secret=x,
    )
    return {
        "prev": hx(e1.encode()),
        "device": _person(Person("bob", BOB.user_id, BOB.uik_seed, (BOB_NEW,)))["devices"][0],
        "enrol_bytes": hx(enrol_bytes(CASE_ID, e1.epoch + 1, e1.entry_hash(), BOB_NEW.cert)),
        "uik_sig": hx(body.uik_sig),
        "action_body": hx(body.encode()),
        "epoch_key": hx(k),
        "epk_secret": hx(x),
        "created_ms": e2.created_ms,
        "entry_bytes": hx(e2.encode()),
        "entry_hash": hx(e2.entry_hash()),
    }


def _negative_enrol(e1: LogEntry) -> list[Json]:
    """Enrolments a server (or another member) could forge: each must be refused."""
    out: list[Json] = []
    prev_hash = e1.entry_hash()

    def v(name: str, error: str, body: EnrolDeviceBody, author_user: uuid.UUID,
          author_device: uuid.UUID, author_seed: bytes) -> None:
        try:
            roster = apply_action(e1.roster, epoch=2, author_user_id=author_user, body=body)
        except CryptoError:
            roster = e1.roster  # refused before the roster is compared
        entry = forge(e1, BOB, (Action.ENROL_DEVICE, body.encode(), roster),
                      author_user_id=author_user, author_device_id=author_device,
                      author_seed=author_seed)
        out.append({"name": name, "check": "verify_entry", "prev": hx(e1.encode()),
                    "entry": hx(entry.encode()), "error": error})

    other_uik = EnrolDeviceBody(BOB_NEW.cert, prim.sign(
        ALICE.uik_seed, enrol_bytes(CASE_ID, 2, prev_hash, BOB_NEW.cert)))
    v("enrolment signed by another user's identity key", "bad_signature", other_uik,
      BOB.user_id, BOB_NEW.device_id, BOB_NEW.dsk_seed)
    replayed = sign_enrol(BOB.uik_seed, CASE_ID, 5, prev_hash, BOB_NEW.cert)
    v("enrolment signed for another position of the log", "bad_signature", replayed,
      BOB.user_id, BOB_NEW.device_id, BOB_NEW.dsk_seed)
    honest = sign_enrol(BOB.uik_seed, CASE_ID, 2, prev_hash, BOB_NEW.cert)
    v("enrolment authored by a device other than the new one", "unauthorized_author", honest,
      BOB.user_id, BOB.d.device_id, BOB.d.dsk_seed)
    present = sign_enrol(BOB.uik_seed, CASE_ID, 2, prev_hash, BOB.d.cert)
    v("enrolment of a device already in the roster", "unauthorized_author", present,
      BOB.user_id, BOB.d.device_id, BOB.d.dsk_seed)
    outsider = sign_enrol(CAROL.uik_seed, CASE_ID, 2, prev_hash, CAROL_NEW.cert)
    v("enrolment by a user who is not in the case", "unauthorized_author", outsider,
      CAROL.user_id, CAROL_NEW.device_id, CAROL_NEW.dsk_seed)
    return out


PROOF_BODY = b'{"size":1234}'


def _devproof() -> Json:
    """Alice's first device proves itself on an HTTP call and on a case socket."""
    d = ALICE.d
    fields: Json = {"device_id": d.device_id, "time_ms": T0 + 600_000, "method": "POST",
                    "path": f"/api/cases/{CASE_ID}/blobs?x=1", "body": PROOF_BODY,
                    "nonce": "n0nce-from-the-server", "jti": seed("proof jti")[:16]}
    challenge = seed("ws challenge")
    return {
        "device_id": str(d.device_id),
        "dsk_seed": hx(d.dsk_seed),
        "dsk_pub": hx(d.dsk_pub),
        "http": {
            "time_ms": fields["time_ms"], "method": fields["method"], "path": fields["path"],
            "body": hx(PROOF_BODY), "nonce": fields["nonce"], "jti": hx(fields["jti"]),
            "signed_bytes": hx(http_proof_bytes(**fields)),
            "sig": hx(sign_http_proof(d.dsk_seed, **fields)),
        },
        "ws": {
            "case_id": str(CASE_ID), "challenge": hx(challenge),
            "signed_bytes": hx(ws_proof_bytes(challenge, CASE_ID, d.device_id)),
            "sig": hx(sign_ws_proof(d.dsk_seed, challenge, CASE_ID, d.device_id)),
        },
    }


def _keybackup() -> Json:
    """Bob backs up the epoch-1 key of the case under his identity key."""
    key = backup_key(BOB.uik_seed)
    epoch_key = seed("log/e1/key")
    nonce = seed("backup nonce")[:24]
    return {
        "uik_seed": hx(BOB.uik_seed), "key": hx(key), "case_id": str(CASE_ID), "epoch": 1,
        "epoch_key": hx(epoch_key), "nonce": hx(nonce),
        "plaintext": hx(item_plaintext(CASE_ID, 1, epoch_key)),
        "item": hx(seal_backup_item(key, CASE_ID, 1, epoch_key, nonce)),
    }


def _negative_devices() -> list[Json]:
    """Device proofs and key-backup items a server or a thief could replay or swap."""
    p, kb = _devproof(), _keybackup()
    http = p["http"]
    out: list[Json] = []
    for name, change in (
        ("http proof replayed on another path", {"path": "/api/cases"}),
        ("http proof replayed with another body", {"body": hx(b"{}")}),
        ("http proof replayed with another nonce", {"nonce": "another-nonce"}),
        ("http proof claimed by another device", {"device_id": str(ALICE.devices[1].device_id)}),
    ):
        out.append({"name": name, "check": "verify_http_proof", "error": "bad_signature",
                    "dsk_pub": p["dsk_pub"], "sig": http["sig"], "device_id": p["device_id"],
                    **{k: http[k] for k in ("time_ms", "method", "path", "body", "nonce", "jti")},
                    **change})
    out.append({"name": "socket proof for another case", "check": "verify_ws_proof",
                "error": "bad_signature", "dsk_pub": p["dsk_pub"], "sig": p["ws"]["sig"],
                "challenge": p["ws"]["challenge"], "case_id": str(fixed_uuid(98)),
                "device_id": p["device_id"]})
    for name, case_id, epoch, key, code in (
        ("key backup item served for another epoch", kb["case_id"], 2, kb["key"], "bad_wrap"),
        ("key backup item served for another case", str(fixed_uuid(97)), 1, kb["key"],
         "bad_wrap"),
        ("key backup item made by someone without the key", kb["case_id"], 1,
         hx(backup_key(ALICE.uik_seed)), "decrypt_failed"),
    ):
        out.append({"name": name, "check": "open_backup_item", "error": code, "key": key,
                    "item": kb["item"], "case_id": case_id, "epoch": epoch})
    return out


def _invite() -> Json:
    """Alice's first device invites Carol (the patient); Carol's client proves the link."""
    secret = seed("invite secret")
    invite_seed, invite_pub = invite_keypair(secret)
    inviter = ALICE.devices[0]
    created = T0 + 5000
    sig = sign_invitation(inviter.dsk_seed, CASE_ID, ALICE.user_id, inviter.device_id,
                          invite_pub, created)
    proof = sign_invite_proof(invite_seed, CASE_ID, invite_pub, CAROL.user_id, CAROL.uik_pub)
    return {
        "case_id": str(CASE_ID),
        "secret": hx(secret),
        "invite_seed": hx(invite_seed),
        "invite_pub": hx(invite_pub),
        "inviter_user": str(ALICE.user_id),
        "inviter_device": str(inviter.device_id),
        "created_ms": created,
        "statement_bytes": hx(invite_statement_bytes(CASE_ID, ALICE.user_id, inviter.device_id,
                                                     invite_pub, created)),
        "invite_sig": hx(sig),
        "patient_user": str(CAROL.user_id),
        "patient_uik": hx(CAROL.uik_pub),
        "proof_bytes": hx(invite_proof_bytes(CASE_ID, invite_pub, CAROL.user_id, CAROL.uik_pub)),
        "proof_sig": hx(proof),
        "short_code": short_code(CAROL.user_id, CAROL.uik_pub),
        "link_fragment": "k=" + base64.urlsafe_b64encode(secret).rstrip(b"=").decode(),
    }


def _pins() -> Json:
    """Bob's pin book, sealed and signed by his identity key."""
    plaintext = (
        '{"format":"collab-pins","pins":{"' + str(ALICE.user_id) + '":{"changed":null,'
        '"previous":[],"state":"verified","uik":"' + base64.b64encode(ALICE.uik_pub).decode()
        + '","updated_ms":' + str(T0) + "}}}"
    ).encode()
    nonce = seed("pins nonce")[:24]
    blob = seal_pins(BOB.uik_seed, plaintext, nonce)
    version = 3
    return {
        "user_id": str(BOB.user_id),
        "uik_seed": hx(BOB.uik_seed),
        "key": hx(pins_key(BOB.uik_seed)),
        "plaintext": plaintext.decode(),
        "nonce": hx(nonce),
        "blob": hx(blob),
        "version": version,
        "signed_bytes": hx(pins_signed_bytes(BOB.user_id, version, blob)),
        "sig": hx(sign_pins(BOB.uik_seed, BOB.user_id, version, blob)),
    }


RECALL_SEQ = 7


def _recall_revoked(e1: LogEntry, device: Any) -> Json:
    """Alice's second device is removed (epoch 2), then her first device sends seq 8; a
    recall of it signed by the removed device is refused: the device is in neither the
    head roster nor the message's epoch roster, only in older ones (protocol-crypto §9e)."""
    e2, k2 = build_entry(
        e1, RemoveDeviceBody(ALICE.user_id, device.device_id), author_seed=ALICE.d.dsk_seed,
        author_user_id=ALICE.user_id, author_device_id=ALICE.d.device_id,
        created_ms=T0 + 500_000, epoch_key=seed("recall/e2/key"),
        epk_secret=seed("recall/e2/epk"),
    )
    env = _alice_text(e2, k2, sender_seq=4, sent_ms=T0 + 510_000, text="after the removal",
                      label="recall-revoked")
    recall = recall_for(env.header, seq=RECALL_SEQ + 1, device_id=device.device_id,
                        recalled_ms=T0 + 520_000)
    return {
        "name": "recall signed by a device removed before the message's epoch",
        "error": "unauthorized_author",
        "entry_bytes": hx(e2.encode()),
        "header_bytes": hx(env.header.encode()),
        "seq": RECALL_SEQ + 1,
        "wire": recall.to_wire(),
        "sig": hx(sign_recall(device.dsk_seed, recall)),
    }


def _recall(env: Envelope, e1: LogEntry) -> Json:
    """Alice recalls the vector message (stored at seq 7) from her second device; a server
    that forges or retargets a recall is refused (``negative``), and so is a recall by a
    device removed before the message (``revoked``: the log's next entry)."""
    device = ALICE.devices[1]
    recall = recall_for(env.header, seq=RECALL_SEQ, device_id=device.device_id,
                        recalled_ms=T0 + 400_000)
    sig = sign_recall(device.dsk_seed, recall)
    wire = recall.to_wire()

    def changed(**kw: Any) -> Json:
        return dataclasses.replace(recall, **kw).to_wire()

    other_header = dataclasses.replace(env.header, sent_ms=env.header.sent_ms + 1)
    negative: list[Json] = [
        {"name": "recall forged by the server (no sender key)", "check": "verify_recall",
         "error": "bad_signature", "dsk_pub": hx(device.dsk_pub), "recall": wire,
         "sig": hx(sign_recall(seed("server forgery key"), recall))},
        {"name": "recall by another user's device", "check": "verify_recall",
         "error": "bad_signature", "dsk_pub": hx(device.dsk_pub), "recall": wire,
         "sig": hx(sign_recall(BOB.d.dsk_seed, recall))},
        {"name": "signature moved to another seq", "check": "verify_recall",
         "error": "bad_signature", "dsk_pub": hx(device.dsk_pub),
         "recall": changed(seq=RECALL_SEQ + 1), "sig": hx(sig)},
        {"name": "signature moved to another time", "check": "verify_recall",
         "error": "bad_signature", "dsk_pub": hx(device.dsk_pub),
         "recall": changed(recalled_ms=T0 + 400_001), "sig": hx(sig)},
        {"name": "signature claimed by the other device", "check": "verify_recall",
         "error": "bad_signature", "dsk_pub": hx(ALICE.d.dsk_pub),
         "recall": changed(device_id=ALICE.d.device_id), "sig": hx(sig)},
        {"name": "recall of seq 7 applied to seq 8", "check": "check_recall_names",
         "error": "recall_mismatch", "recall": wire,
         "header": hx(env.header.encode()), "seq": RECALL_SEQ + 1},
        {"name": "recall of another header applied to this one", "check": "check_recall_names",
         "error": "recall_mismatch", "recall": wire,
         "header": hx(other_header.encode()), "seq": RECALL_SEQ},
        {"name": "recall for another case", "check": "check_recall_names",
         "error": "recall_mismatch", "recall": changed(case_id=fixed_uuid(96)),
         "header": hx(env.header.encode()), "seq": RECALL_SEQ},
    ]
    return {
        "header_bytes": hx(env.header.encode()),
        "header_hash": hx(recall.header_hash),
        "seq": RECALL_SEQ,
        "device_id": str(device.device_id),
        "dsk_seed": hx(device.dsk_seed),
        "dsk_pub": hx(device.dsk_pub),
        "recalled_ms": recall.recalled_ms,
        "statement_bytes": hx(recall.encode()),
        "sig": hx(sig),
        "wire": wire,
        "negative": negative,
        "revoked": _recall_revoked(e1, device),
    }


def _negative_trust() -> list[Json]:
    """Proofs and pins a lying server might serve: each must be refused."""
    inv = _invite()
    pins = _pins()
    other = invite_keypair(seed("another invite secret"))
    cases = [
        ("proof for another patient key", {"patient_uik": hx(BOB.uik_pub)}, "bad_proof"),
        ("proof for another user", {"patient_user": str(BOB.user_id)}, "bad_proof"),
        ("proof against another invite key", {"invite_pub": hx(other[1])}, "bad_proof"),
        ("proof for another case", {"case_id": str(fixed_uuid(99))}, "bad_proof"),
    ]
    out: list[Json] = []
    for name, change, code in cases:
        out.append({
            "name": name, "check": "verify_invite_proof", "error": code,
            "invite_pub": change.get("invite_pub", inv["invite_pub"]),
            "case_id": change.get("case_id", inv["case_id"]),
            "patient_user": change.get("patient_user", inv["patient_user"]),
            "patient_uik": change.get("patient_uik", inv["patient_uik"]),
            "sig": inv["proof_sig"],
        })
    out.append({
        "name": "invitation statement for another device", "check": "verify_invitation",
        "error": "bad_signature", "dsk_pub": hx(ALICE.devices[1].dsk_pub),
        "case_id": inv["case_id"], "inviter_user": inv["inviter_user"],
        "inviter_device": inv["inviter_device"], "invite_pub": inv["invite_pub"],
        "created_ms": inv["created_ms"], "sig": inv["invite_sig"],
    })
    for name, version, uik_pub in (
        ("pins rolled back to an older version under the same signature", 2, BOB.uik_pub),
        ("pins signed by another identity key", 3, ALICE.uik_pub),
    ):
        out.append({
            "name": name, "check": "verify_pins", "error": "bad_signature",
            "uik_pub": hx(uik_pub), "user_id": pins["user_id"], "version": version,
            "blob": pins["blob"], "sig": pins["sig"],
        })
    return out


def resign(e: LogEntry, author_seed: bytes, **changes: Any) -> LogEntry:
    """Forge test input: change fields, then sign properly (so only the
    intended check can fail)."""
    draft = dataclasses.replace(e, **changes)
    return dataclasses.replace(draft, signature=prim.sign(author_seed, draft.signed_bytes()))


Change = tuple[Action, bytes, Roster]  # action, body bytes, claimed roster


def forge(prev: LogEntry, author: Person, change: Change, **kw: Any) -> LogEntry:
    """seal_entry with chain fields from `prev` unless overridden."""
    action, body_bytes, roster = change
    args: dict[str, Any] = {
        "author_seed": author.d.dsk_seed,
        "case_id": prev.case_id,
        "epoch": prev.epoch + 1,
        "prev_hash": prev.entry_hash(),
        "author_user_id": author.user_id,
        "author_device_id": author.d.device_id,
        "created_ms": T0 + 400_000,
        "action": action,
        "action_body": body_bytes,
        "roster": roster,
        "epoch_key": seed("neg/key"),
        "epk_secret": seed("neg/epk"),
    }
    args.update(kw)
    return seal_entry(**args)


def _rotate(roster: Roster) -> Change:
    return Action.ROTATE, RotateBody().encode(), roster


def _negative_log(e0: LogEntry, e1: LogEntry) -> list[Json]:
    out: list[Json] = []

    def v(name: str, error: str, prev: LogEntry | None, entry: LogEntry) -> None:
        out.append(
            {
                "name": name,
                "check": "verify_entry",
                "prev": hx(prev.encode()) if prev else None,
                "entry": hx(entry.encode()),
                "error": error,
            }
        )

    v(
        "wrong prev_hash",
        "stale_head",
        e1,
        forge(e1, ALICE, _rotate(e1.roster), prev_hash=prim.sha512(b"x")),
    )
    v("skipped epoch", "wrong_epoch", e1, forge(e1, ALICE, _rotate(e1.roster), epoch=3))
    add_carol = AddUserBody(CAROL.user_id, Role.PATIENT, CAROL.uik_pub, (CAROL.d.cert,))
    carol_roster = apply_action(e1.roster, epoch=2, author_user_id=BOB.user_id, body=add_carol)
    v(
        "member adds a user",
        "unauthorized_author",
        e1,
        forge(e1, BOB, (Action.ADD_USER, add_carol.encode(), carol_roster)),
    )
    e2, _ = build_entry(
        e1,
        RemoveUserBody(BOB.user_id),
        author_seed=ALICE.d.dsk_seed,
        author_user_id=ALICE.user_id,
        author_device_id=ALICE.d.device_id,
        created_ms=T0 + 350_000,
        epoch_key=seed("log/e2/key"),
        epk_secret=seed("log/e2/epk"),
    )
    v(
        "removed member authors the next key",
        "unauthorized_author",
        e2,
        forge(e2, BOB, _rotate(e2.roster)),
    )
    v("roster changed by a rotate", "roster_mismatch", e1, forge(e1, ALICE, _rotate(carol_roster)))
    good = forge(e1, ALICE, _rotate(e1.roster))
    v("missing wrap", "wraps_mismatch", e1, resign(good, ALICE.d.dsk_seed, wraps=good.wraps[:-1]))
    v("tampered signature", "bad_signature", e1, dataclasses.replace(good, signature=bytes(64)))
    rogue = make_device_cert(
        BOB.uik_seed, ALICE.user_id, fixed_uuid(0x1FF), BOB.d.dsk_pub, BOB.d.dxk_pub, NOT_BEFORE_MS
    )
    add_rogue = AddDeviceBody(rogue)
    rogue_roster = apply_action(e1.roster, epoch=2, author_user_id=ALICE.user_id, body=add_rogue)
    v(
        "device certificate not signed by its user's UIK",
        "bad_certificate",
        e1,
        forge(e1, ALICE, (Action.ADD_DEVICE, add_rogue.encode(), rogue_roster)),
    )
    other = seed("neg/other-key")
    bad_commit = resign(good, ALICE.d.dsk_seed, key_commit=key_commit(other, CASE_ID, 2))
    out.append(
        {
            "name": "key_commit does not match the wrapped key",
            "check": "open_wrap",
            "prev": hx(e1.encode()),
            "entry": hx(bad_commit.encode()),
            "device_id": str(BOB.d.device_id),
            "dxk_secret": hx(BOB.d.dxk_secret),
            "error": "key_commit_mismatch",
        }
    )
    e1_fork = forge(
        e0,
        ALICE,
        (
            Action.ADD_USER,
            add_carol.encode(),
            apply_action(e0.roster, epoch=1, author_user_id=ALICE.user_id, body=add_carol),
        ),
    )
    out.append(
        {
            "name": "two entries for epoch 1",
            "check": "verify_chain",
            "entries": [hx(e0.encode()), hx(e1.encode()), hx(e1_fork.encode())],
            "error": "fork",
        }
    )
    return out


def _negative_prims() -> list[Json]:
    ed_seed, msg = seed("prim/ed25519"), b"CR1 test message"
    sig = prim.sign(ed_seed, msg)
    s_plus_l = (int.from_bytes(sig[32:], "little") + prim.L).to_bytes(32, "little")
    out: list[Json] = [
        {
            "name": "signature with S + L",
            "check": "ed25519_verify",
            "public": hx(prim.ed25519_public(ed_seed)),
            "message": hx(msg),
            "signature": hx(sig[:32] + s_plus_l),
            "error": "non_canonical_signature",
        },
        {
            "name": "small-order Ed25519 public key (identity)",
            "check": "ed25519_verify",
            "public": hx((1).to_bytes(32, "little")),
            "message": hx(msg),
            "signature": hx(sig),
            "error": "low_order_key",
        },
    ]
    low = [*sorted(prim.X25519_SMALL_ORDER), bytes(31) + b"\x80"]
    for key in low:
        out.append(
            {
                "name": "all-zero X25519 key" if key == bytes(32) else "small-order X25519 key",
                "check": "box_seal",
                "secret": hx(seed("prim/box/a")),
                "peer_public": hx(key),
                "nonce": hx(bytes(24)),
                "plaintext": hx(b"x"),
                "error": "low_order_key",
            }
        )
    for text, length, error in (
        ("AAA", None, "bad_base64"),
        ("AA=A", None, "bad_base64"),
        ("AAB=", None, "bad_base64"),
        ("AA AA===", None, "bad_base64"),
        ("-_8=", None, "bad_base64"),
        ("AAAA", 4, "bad_length"),
    ):
        out.append(
            {
                "name": f"base64 {text!r}",
                "check": "b64decode",
                "input": text,
                "length": length,
                "error": error,
            }
        )
    return out


def _alice_text(
    e1: LogEntry, k1: bytes, *, sender_seq: int, sent_ms: int, text: str, label: str
) -> Envelope:
    """A further text from Alice in epoch 1, with id and nonce fixed by ``label``."""
    return seal_message(
        dsk_seed=ALICE.d.dsk_seed,
        epoch_key=k1,
        case_id=CASE_ID,
        epoch=e1.epoch,
        log_head=e1.entry_hash(),
        sender_user_id=ALICE.user_id,
        sender_device_id=ALICE.d.device_id,
        sender_seq=sender_seq,
        sent_ms=sent_ms,
        content_type="text",
        body={"text": text},
        client_msg_id=seed(f"msg/{label}-id")[:16],
        nonce=seed(f"msg/{label}-nonce")[:24],
    )


def _negative_messages(e1: LogEntry, k1: bytes, env: Envelope) -> list[Json]:
    dsk = ALICE.d.dsk_seed
    h = env.header
    wire = env.to_wire()
    env2 = _alice_text(e1, k1, sender_seq=1, sent_ms=T0 + 301_000, text="same seq", label="second")
    # Inner says sender_seq 7 while the signed header says 1.
    lying = dataclasses.replace(h, sender_seq=7, attachments=())
    ct = prim.secretbox_seal(k1, h.nonce, inner_bytes(lying, encode_body({"text": "hi"})))
    header = dataclasses.replace(h, ct_len=len(ct), ct_hash=prim.sha512(ct), attachments=())
    mismatched = Envelope(header, ct, prim.sign(dsk, header.encode()))
    tampered = Envelope(h, env.ct[:-1] + bytes([env.ct[-1] ^ 1]), env.sig)
    return [
        {
            "name": "replayed client_msg_id",
            "check": "replay_guard",
            "envelopes": [wire, wire],
            "fails_at": 1,
            "error": "replay",
        },
        {
            "name": "sender_seq not increasing",
            "check": "replay_guard",
            "envelopes": [wire, env2.to_wire()],
            "fails_at": 1,
            "error": "replay",
        },
        {
            "name": "inner does not match the header",
            "check": "open_envelope",
            "envelope": mismatched.to_wire(),
            "epoch_key": hx(k1),
            "sender_dsk_pub": hx(ALICE.d.dsk_pub),
            "error": "inner_mismatch",
        },
        {
            "name": "ciphertext does not match H(ct)",
            "check": "verify_envelope",
            "envelope": tampered.to_wire(),
            "sender_dsk_pub": hx(ALICE.d.dsk_pub),
            "error": "bad_hash",
        },
    ]


def _negative_attachment(manifest: Any) -> list[Json]:
    cases = (
        ("reordered chunks", [1, 0, 2], "chunk_order"),
        ("dropped middle chunk", [0, 2], "chunk_order"),
        ("truncated stream (no final-bit chunk)", [0, 1], "truncated"),
        ("extended stream (chunk after the final one)", [0, 1, 2, 2], "extended"),
    )
    return [
        {
            "name": name,
            "check": "decrypt_attachment",
            "manifest": manifest.to_wire(),
            "chunk_order": order,
            "note": "indices into attachment.chunks (regenerate them from key and prefix)",
            "error": error,
        }
        for name, order, error in cases
    ]


def _gap(e1: LogEntry, k1: bytes, first: Json) -> Json:
    third = _alice_text(e1, k1, sender_seq=3, sent_ms=T0 + 302_000, text="third", label="third")
    return {
        "note": "sender_seq 1 then 3 from one device: both accepted, gap reported",
        "envelopes": [first, third.to_wire()],
        "gap": {"device_id": str(ALICE.d.device_id), "first_missing": 2, "last_missing": 2},
    }


def build_vectors() -> Json:
    log_doc, (e0, e1), (_k0, k1) = _log()
    att_doc, _chunks, manifest = _attachment()
    msg_doc, env = _message(e1, k1, manifest)
    replay_env = env.to_wire()
    return {
        "protocol": "CR1",
        "format": 1,
        "about": "Generated by `python -m collab.crypto.vectors --write` from fixed seeds; "
        "bytes are lower-case hex, `wire` objects are the JSON wire form (base64). "
        "Layouts: docs/protocol-crypto.md.",
        "people": {p.name: _person(p) for p in (ALICE, BOB, CAROL)},
        "primitives": _primitives(),
        "devcert": _devcert(),
        "log": log_doc,
        "attachment": att_doc,
        "message": msg_doc,
        "replay_gap": _gap(e1, k1, replay_env),
        "safety_number": _safety(),
        "enrol": _enrol(e1),
        "device_proof": _devproof(),
        "key_backup": _keybackup(),
        "invite": _invite(),
        "pins": _pins(),
        "recall": _recall(env, e1),
        "negative": _negative_prims()
        + _negative_log(e0, e1)
        + _negative_messages(e1, k1, env)
        + _negative_attachment(manifest)
        + _negative_trust()
        + _negative_enrol(e1)
        + _negative_devices(),
    }
