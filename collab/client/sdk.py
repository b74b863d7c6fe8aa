"""The collab client: sign-in, keys, cases, membership, messages and images over CR1.

Everything received is verified before it is decrypted and fails closed: a log entry
that does not verify, a message whose signature, hash or inner fields do not match, an
attachment chunk out of place all raise ``CryptoError`` (stable ``.code``) to the caller;
nothing is dropped silently or shown unverified. Server refusals raise ``ServerRefusedError``,
authentication problems ``AuthError`` (see collab.client.errors).

Trust people, not the server: identity keys (UIKs) are pinned on first sight
(collab.client.pins) and every verified head roster is observed; a key that differs from
the pin refuses admission, signing and sending (``IdentityChangedError``) until a person
accepts or verifies it; this user's own key is always the local one, and a roster that
lists us under another key fails closed (``own_identity_mismatch``). Join requests are
only ever committed by an explicit ``admit``. The pin book follows the user to their
other devices, sealed and signed with the UIK (collab.crypto.pins).

Blocking calls use HTTP; sending and watching use the case socket (async).

It recovers by itself: ``watch`` reconnects with capped backoff and resumes from the last
seq after anything resuming can mend (collab.client.room.is_transient); a message is
sealed once into the outbox (kept in the keystore) and the same envelope is retried until
acknowledged, so it is stored once; a send that still raises names its pending message
(``error.pending_id``), which the app retries explicitly (``retry=``) or leaves to
``flush_outbox``/``watch`` — a plain send is always a new message, even with the same text;
uploads continue from what the server holds.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import contextvars
import io
import json
import os
import random
import re
import time
import uuid
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from collab.client import consult, consult_client
from collab.client.admission import AdmissionReview, review_admission
from collab.client.case_state import CaseState, VerifiedHead
from collab.client.consult import ConsultRecord
from collab.client.errors import (
    AdmissionRefusedError,
    AuthError,
    ClientError,
    IdentityChange,
    IdentityChangedError,
    ServerRefusedError,
    UnreachableError,
    UsageError,
)
from collab.client.http import ApiError, HttpSession
from collab.client.keys import (
    DeviceKeys,
    Identity,
    format_recovery_key,
    new_recovery_key,
    now_ms,
    open_identity_backup,
    parse_recovery_key,
    seal_identity_backup,
)
from collab.client.keystore import CaseMemo, Keystore, KeystoreState
from collab.client.markup import Mark, prepare_image
from collab.client.markup import fingerprint as markup_fingerprint
from collab.client.pins import (
    PinBook,
    PinRecord,
    commit_check,
    describe_changes,
    document_bytes,
    fit,
    merge,
    own_check,
)
from collab.client.recall import Removed, judge_frame, judge_tombstone
from collab.client.receipts import CaseReceipts, DeliveredReporter
from collab.client.room import TRANSIENT_STATUS, Room, is_transient
from collab.crypto import primitives as prim
from collab.crypto.actions import (
    AddDeviceBody,
    AddUserBody,
    Body,
    RemoveDeviceBody,
    RemoveUserBody,
    RotateBody,
    apply_action,
    sign_enrol,
)
from collab.crypto.attachment import (
    CT_CHUNK_SIZE,
    AttachmentDecryptor,
    AttachmentEncryptor,
    Manifest,
    ciphertext_size,
)
from collab.crypto.devcert import DeviceCert, verify_device_cert
from collab.crypto.envelope import AttachmentRef, Envelope, Gap, Header
from collab.crypto.errors import CryptoError
from collab.crypto.invite import (
    InvitationRecord,
    check_invitation,
    invite_keypair,
    short_code,
    sign_invitation,
    sign_invite_proof,
)
from collab.crypto.keybackup import backup_key, open_backup_item, seal_backup_item
from collab.crypto.log import LogEntry, make_history_body
from collab.crypto.pins import MAX_BLOB, open_pins, seal_pins, sign_pins, verify_pins
from collab.crypto.recall import recall_for, sign_recall
from collab.crypto.roster import Role, Roster
from collab.crypto.safety import safety_number
from collab.crypto.wire import b64d, b64e

LOG_PAGE = 500
HISTORY_PAGE = 100
# A catch-up page: the server allows 1,000 and caps pages by bytes (512 KiB) too.
RESUME_PAGE = 500
PART_CHUNKS = 16
COMMIT_ATTEMPTS = 5
PIN_SYNC_ATTEMPTS = 4
PINS_MAX_PLAINTEXT = MAX_BLOB - 24 - 16  # the sealed blob: nonce, MAC, document
MAX_JOIN_REQUESTS = 200
REVOKED_CHECK_SECONDS = 30.0
BACKUP_PAGE = 500  # the server's limit per PUT and per GET page
SHARE_ITEMS = 500  # re-wrapped keys per share_history entry (about 64 KiB of entry)
# Sending: attempts in a row (each after a reconnect, with capped backoff) before a
# send raises and its message waits in the outbox; re-seals after the log moved.
SEND_ATTEMPTS = 6
RESEAL_ATTEMPTS = 3
RESEAL_CODES = ("wrong_epoch", "stale_head", "sender_seq_not_increasing")
OUTBOX_MAX = 500  # messages waiting, all cases together
SENT_KEPT = 256  # outcomes of messages that left the outbox, kept for explicit retries
UPLOAD_ATTEMPTS = 6  # per part and for complete
# Entries that may still hold a revoked device (they shrink the roster).
SHRINKING = (RemoveDeviceBody, RemoveUserBody)
Progress = Callable[[int, int], None]  # (bytes just done, total bytes)
T = TypeVar("T")
# Set while the client writes by itself (key backup, pin sync, revoked-device removals,
# enrolment): those requests carry X-Collab-Background, so they are no person's activity.
# A context variable: asyncio.to_thread copies the context, so one thread's automatic
# step never marks another's request.
_AUTOMATIC: contextvars.ContextVar[bool] = contextvars.ContextVar("collab_automatic",
                                                                 default=False)


@contextlib.contextmanager
def _automatic() -> Iterator[None]:
    token = _AUTOMATIC.set(True)
    try:
        yield
    finally:
        _AUTOMATIC.reset(token)


@dataclass(frozen=True)
class Received:
    """A message that passed every check and decrypted."""

    seq: int
    header: Header
    body: dict[str, Any]
    attachments: tuple[Manifest, ...]
    gap: Gap | None  # this sender's messages that never arrived (sender_seq range)
    # Verified (signed by a roster device) but not readable on this device: why, and the
    # author of the log entry whose key wrap could not be opened. The body is empty.
    unavailable: str | None = None
    unavailable_author: uuid.UUID | None = None

    @property
    def sender_user_id(self) -> uuid.UUID:
        return self.header.sender_user_id

    @property
    def epoch(self) -> int:
        return self.header.epoch

    @property
    def text(self) -> str:
        text = self.body.get("text", "")
        return text if isinstance(text, str) else ""

    def image(self, thumbnail: bool = False, *, original: bool = False) -> Manifest | None:
        """The image's manifest: full size, the thumbnail, or (``original``) the unmarked
        original a marked image was sent with (None when there is none)."""
        info = self.body.get("image")
        if not isinstance(info, dict):
            return None
        index = info.get("original" if original else "thumbnail" if thumbnail else "full")
        if isinstance(index, bool) or not isinstance(index, int):
            return None
        return self.attachments[index] if 0 <= index < len(self.attachments) else None

    @property
    def image_marked(self) -> bool:
        """The sender marked the image (arrows, circles, labels, blurred regions)."""
        info = self.body.get("image")
        return isinstance(info, dict) and info.get("marked") is True

    @property
    def image_note(self) -> str:
        """The sender's size/measurement note on the image ("" when none)."""
        info = self.body.get("image")
        note = info.get("note") if isinstance(info, dict) else None
        return note if isinstance(note, str) else ""


@dataclass(frozen=True)
class JoinRequest:
    """A pending join request as a person reviews it: who (from the server's listing),
    why (kind), the key the server serves for them and its pin state, and for a patient
    whether the key is bound to this case's invitation link (and the fallback code)."""

    id: int
    case_id: uuid.UUID
    user: uuid.UUID
    kind: str  # claim | invite | patient | rejoin (after an identity reset)
    requested_by: uuid.UUID | None
    created_at: str
    display_name: str
    role: str
    organisation: str
    specialty: str
    uik: bytes | None  # None: the user has no identity key (or device) yet
    devices: tuple[DeviceCert, ...]
    pin: str  # new | pinned | verified | changed | none
    binding: str | None  # patients: bound | unbound | bad_proof
    short_code: tuple[str, ...] | None  # patients: 4 groups of 5 digits
    problem: str | None = None  # why the served keys cannot be admitted, if they cannot
    # Any signal says patient (kind, the listing's role, the key directory's role, or
    # the role to be granted): the link binding (or a code comparison) is then required.
    patient: bool = False

    def review(self, *, accept_changed: bool = False,
               code_compared: bool = False) -> AdmissionReview:
        return review_admission(pin=self.pin, kind="patient" if self.patient else self.kind,
                                binding=self.binding, accept_changed=accept_changed,
                                code_compared=code_compared)


MALFORMED = "malformed request"

# What a person names when accepting a changed key: the key itself (SDK) or its short
# code (20 digits, as printed with the change; spaces and dashes ignored).
KeyChoice = bytes | str


def key_code(user_id: uuid.UUID, uik: bytes) -> str:
    """The short code of a user's key: 4 groups of 5 digits."""
    return " ".join(short_code(user_id, uik))


def key_matches(user_id: uuid.UUID, uik: bytes, choice: KeyChoice | None) -> bool:
    """Whether ``choice`` (a key or its short code) names exactly ``uik``."""
    if choice is None:
        return False
    if isinstance(choice, bool) or not isinstance(choice, bytes | str):
        raise UsageError("name the accepted key (its bytes or its short code), not a flag",
                         code="bad_key_choice")
    if isinstance(choice, bytes):
        return bytes(choice) == uik
    digits = re.sub(r"[\s-]", "", choice)
    if not re.fullmatch(r"[0-9]{20}", digits):
        raise UsageError("a key's code is 20 digits (4 groups of 5)", code="bad_key_code")
    return digits == "".join(short_code(user_id, uik))


@dataclass(frozen=True)
class Sent:
    seq: int
    epoch: int
    duplicate: bool
    client_msg_id: bytes


def _pairs(roster: Roster) -> list[tuple[uuid.UUID, bytes]]:
    return [(u.user_id, u.uik_pub) for u in roster.users]


def _opt_b64(d: dict[str, Any], key: str) -> bytes | None:
    value = d.get(key)
    return None if value is None else b64d(value)


def _uuids(value: object) -> list[uuid.UUID]:
    """The UUIDs of a server list; anything else in it is ignored."""
    out: list[uuid.UUID] = []
    for item in value if isinstance(value, list) else []:
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            out.append(uuid.UUID(str(item)))
    return out


def _opt_uuid(value: object) -> uuid.UUID | None:
    return None if value is None else uuid.UUID(str(value))


def _invitation_record(d: object) -> InvitationRecord | None:
    if not isinstance(d, dict):
        return None
    created_ms = d.get("created_ms")
    return InvitationRecord(
        created_by=uuid.UUID(str(d["created_by"])),
        inviter_device=_opt_uuid(d.get("inviter_device")),
        invite_pub=_opt_b64(d, "invite_pub"),
        invite_sig=_opt_b64(d, "invite_sig"),
        created_ms=created_ms if isinstance(created_ms, int) and created_ms >= 0 else None,
        proof_sig=_opt_b64(d, "proof_sig"),
    )


def invite_fragment(secret: bytes) -> str:
    """``k=<base64url(secret) without padding>``: the link's fragment, never sent."""
    return "k=" + base64.urlsafe_b64encode(secret).rstrip(b"=").decode("ascii")


def parse_invite_secret(text: str) -> bytes:
    """The 32-byte secret from an invitation link (``...#k=...``) or its fragment."""
    fragment = text.split("#", 1)[1] if "#" in text else text
    for part in fragment.split("&"):
        if part.startswith("k="):
            value = part[2:]
            try:
                secret = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            except (ValueError, TypeError):
                break
            if len(secret) == 32:
                return secret
    raise UsageError("the invitation link carries no valid #k= secret", code="bad_invite_link")


def _outbox_key(case_id: uuid.UUID, content_type: str, what: bytes) -> str:
    """Names a message's content, to check an explicit retry is of the same message (the
    message is named by its id: two identical texts are two messages)."""
    return prim.sha512(case_id.bytes + content_type.encode() + b"\0" + what)[:32].hex()


def _count(value: object) -> int:
    """A sequence number from the server (0 when it is not a non-negative integer)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return 0
    return value


def _removal_notice(removed: Removed) -> dict[str, Any]:
    return {"seq": removed.seq, "verdict": removed.verdict, "text": removed.describe(),
            "sender": str(removed.sender_user_id) if removed.sender_user_id else None}


def _refusal(error: ApiError) -> ClientError:
    text = error.detail or error.code.replace("_", " ")
    if error.status == 401 or error.code in ("second_factor_required", "session_expired"):
        return AuthError(f"{text} (sign in again with `collab-client login`)", code=error.code)
    return ServerRefusedError(text, code=error.code, status=error.status, body=error.body)


class CollabClient:
    def __init__(
        self, server: str | None = None, *, keystore: Keystore | None = None,
        state: KeystoreState | None = None,
    ) -> None:
        self.store = keystore
        self.state = keystore.state if keystore is not None else (state or KeystoreState())
        if server:
            self.state.server = server.rstrip("/")
        if not self.state.server:
            raise UsageError("no server given (use --server or COLLAB_SERVER)", code="no_server")
        self.http = self._new_http()
        self.cases: dict[uuid.UUID, CaseState] = {}
        self._seen: dict[uuid.UUID, dict[int, tuple[bytes, Received]]] = {}
        # Removed messages (recalled or not): their plaintext is dropped from _seen.
        self._removed: dict[uuid.UUID, dict[int, Removed]] = {}
        self.rooms: dict[uuid.UUID, Room] = {}
        self._pins_synced = False
        self._revoked_checked: dict[uuid.UUID, float] = {}
        self._send_locks: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[uuid.UUID, asyncio.Lock]] = \
            weakref.WeakKeyDictionary()
        # Reconnect backoff (seconds): doubles per failure in a row, capped, with jitter.
        self.backoff_first = 0.2
        self.backoff_max = 15.0

    def _new_http(self) -> HttpSession:
        device = self.state.device
        http = HttpSession(self.state.server, str(device.device_id) if device else None,
                           device.dsk_seed if device else None)
        if self.state.session:
            http.use_session(self.state.session, self.state.session_cookie)
        return http

    def save(self) -> None:
        if self.store is not None:
            self.store.save()

    # --- plumbing -------------------------------------------------------------------
    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            return self.http.json(method, path, body, background=_AUTOMATIC.get()).body
        except ApiError as error:
            raise _refusal(error) from None

    @property
    def user_id(self) -> uuid.UUID:
        if self.state.user_id is None:
            raise UsageError("no identity on this keystore yet (run `collab-client init`)",
                             code="no_identity")
        return self.state.user_id

    @property
    def device(self) -> DeviceKeys:
        if self.state.device is None:
            raise UsageError("no device keys yet (run `collab-client init` or `recover`)",
                             code="no_device")
        return self.state.device

    @property
    def identity(self) -> Identity:
        if self.state.identity is None:
            raise UsageError("this keystore holds no identity key (run `collab-client recover`)",
                             code="no_identity")
        return self.state.identity

    # --- sign-in --------------------------------------------------------------------
    def login(self, username: str, password: str, otp_code: str) -> None:
        """The two sign-in pages: password, then the TOTP code."""
        if self.state.username and username != self.state.username and self.state.device:
            raise UsageError(f"this keystore belongs to {self.state.username}; use another "
                             "COLLAB_HOME for another account", code="other_account")
        http = HttpSession(self.state.server)
        status, location = http.form("/accounts/login/", {"username": username,
                                                          "password": password})
        if status == 429:
            raise AuthError("too many failed sign-ins; wait and try again", code="locked_out")
        if status not in (302, 303) or "/accounts/" not in location:
            raise AuthError("wrong username or password", code="bad_credentials")
        if "/accounts/enrol/" in location:
            raise AuthError("enrol TOTP in the browser first", code="totp_not_enrolled")
        status, location = http.form("/accounts/otp/", {"code": otp_code.strip()})
        if status == 429:
            raise AuthError("too many wrong codes; wait and try again", code="otp_throttled")
        if status not in (302, 303) or "/accounts/" in location:
            raise AuthError("the code is not valid (wrong, expired or already used)",
                            code="bad_otp")
        self.state.username = username
        self.state.session = http.session_id
        self.state.session_cookie = http.session_cookie_name
        self.http = self._new_http()
        with contextlib.suppress(ServerRefusedError):
            self.state.user_id = uuid.UUID(self.call("GET", "/api/identity")["user_id"])
        self.save()

    def logout(self) -> None:
        with contextlib.suppress(ClientError, ApiError):
            self.http.form("/accounts/logout/", {})
        self.state.session = None
        self.save()

    # --- keys -------------------------------------------------------------------------
    def _register_device(self, identity: Identity, name: str) -> DeviceKeys:
        device = DeviceKeys.generate(identity.user_id)
        cert = identity.certify(device)
        self.call("POST", "/api/devices", {"cert": cert.to_wire(), "name": name})
        self.state.device, self.state.cert, self.state.device_name = device, cert, name
        self.http = self._new_http()
        return device

    def init(self, device_name: str = "collab-client", *, after_reset: bool = False,
             password: str | None = None) -> str:
        """First device of a user: identity key, its backup, this device. Returns the
        recovery key (shown to the user once; the server never sees it).

        ``after_reset``: an operator reset this user's identity (the server has no
        identity key for them any more) and this keystore still holds the old one and
        its revoked device: replace them with a new identity. The pins of other people
        and the verified log heads stay; then ``rejoin_cases``.

        Calling it again after a failure goes on with the identity this keystore already
        registered (no ``has_identity``). A backup stored by the failed call, whose
        answer was lost, was sealed under a recovery key nobody saw: replacing it needs
        the account's ``password`` (``init_incomplete`` without)."""
        if self.state.device is not None and not after_reset:
            raise UsageError("this keystore already has a device", code="device_exists")
        registered: dict[str, Any] | None
        try:
            registered = self.call("GET", "/api/identity")
        except ServerRefusedError as refused:
            if refused.code != "no_identity":
                raise
            registered = None
        identity = self._unfinished_identity(registered)
        if registered is not None and identity is None:
            raise UsageError("this account already has an identity key: use "
                             "`collab-client recover` with your recovery key", code="has_identity")
        if identity is None:
            if self.state.device is not None:
                self._forget_reset_identity()
            seed = prim.random_bytes(32)
            answer = self.call("POST", "/api/identity",
                               {"uik_pub": b64e(prim.ed25519_public(seed))})
            identity = Identity(uuid.UUID(answer["user_id"]), seed)
            self.state.user_id, self.state.identity = identity.user_id, identity
            self.save()
        recovery = new_recovery_key()
        body: dict[str, Any] = {"ciphertext": b64e(seal_identity_backup(identity, recovery))}
        if registered is not None and self._has_identity_backup():
            if password is None:
                raise UsageError("an earlier init stored an identity backup whose recovery key "
                                 "was never shown: give the account password to replace it",
                                 code="init_incomplete")
            body["password"] = password
        self.call("PUT", "/api/identity/backup", body)
        self._register_device(identity, device_name)
        self.save()
        return format_recovery_key(recovery)

    def _unfinished_identity(self, registered: dict[str, Any] | None) -> Identity | None:
        """The identity an interrupted init of this keystore registered (it has no
        device yet), if it is the one the server holds."""
        identity = self.state.identity
        if registered is None or identity is None or self.state.device is not None:
            return None
        if uuid.UUID(registered["user_id"]) != identity.user_id:
            return None
        return identity if b64d(registered["uik_pub"], 32) == identity.uik_pub else None

    def _has_identity_backup(self) -> bool:
        try:
            self.call("GET", "/api/identity/backup")
        except ServerRefusedError as refused:
            if refused.code != "no_backup":
                raise
            return False
        return True

    def _forget_reset_identity(self) -> None:
        """Drop what belonged to the identity the operator reset: its key, the revoked
        device, unsent envelopes it signed, the version of its (deleted) pin book and how
        far it backed keys up. Verified log heads (fork detection) and pins stay."""
        self.state.identity = self.state.device = self.state.cert = None
        self.state.pins_version = 0
        self.state.outbox = []
        for memo in self.state.cases.values():
            memo.sender_seq, memo.backup_epoch = 0, -1
        self.cases.clear()
        self._pins_synced = False
        self.http = self._new_http()
        self.save()

    def recover(self, recovery_key: str,
                device_name: str = "collab-client") -> dict[uuid.UUID, str]:
        """A new device: open the identity backup with the recovery key, certify,
        register, then enrol this device in every case of the user (``enrol_cases``;
        returned: case -> outcome). Earlier messages read through the key backup."""
        key = parse_recovery_key(recovery_key)
        registered = self.call("GET", "/api/identity")
        user_id = uuid.UUID(registered["user_id"])
        backup = b64d(self.call("GET", "/api/identity/backup")["ciphertext"])
        identity = open_identity_backup(backup, key, user_id)
        if identity.uik_pub != b64d(registered["uik_pub"], 32):
            raise CryptoError("bad_key", "the backup's identity key is not the registered one")
        self.state.user_id, self.state.identity = user_id, identity
        self._register_device(identity, device_name)
        self.save()
        self.sync_pins()  # the pins this user set on other devices
        return self.enrol_cases()

    def devices(self) -> list[dict[str, Any]]:
        devices: list[dict[str, Any]] = self.call("GET", "/api/devices")["devices"]
        return devices

    def revoke_device(self, device_id: uuid.UUID) -> None:
        self.call("POST", f"/api/devices/{device_id}/revoke", {})

    @staticmethod
    def _parse_keys(user_id: uuid.UUID,
                    keys: dict[str, Any]) -> tuple[bytes, tuple[DeviceCert, ...]]:
        if not keys.get("uik_pub"):
            raise UsageError(f"user {user_id} has no identity key yet", code="no_identity")
        uik = b64d(keys["uik_pub"], 32)
        devices = tuple(DeviceCert.from_wire(d) for d in keys["devices"])
        for cert in devices:
            if cert.user_id != user_id:
                raise CryptoError("bad_certificate", "the server listed another user's device")
            verify_device_cert(cert, uik)
        if not devices:
            raise UsageError(f"user {user_id} has no active device", code="no_device")
        return uik, devices

    def user_keys(
        self, user_id: uuid.UUID, *, case_id: uuid.UUID | None = None,
        accept_changed: KeyChoice | None = None,
    ) -> tuple[bytes, tuple[DeviceCert, ...]]:
        """A user's UIK and active devices as the server serves them; every certificate
        must chain to the UIK, and the UIK is checked against the pin book first: a key
        never seen is pinned, a key that differs from the pin raises IdentityChangedError
        (the change is recorded) unless ``accept_changed`` names exactly that key (the
        key itself or its short code; then it is pinned)."""
        keys = self._fetch_keys(user_id)
        if keys.get("uik_pub"):
            self._check_identity(user_id, b64d(keys["uik_pub"], 32), case_id, accept_changed)
        return self._parse_keys(user_id, keys)

    def _fetch_keys(self, user_id: uuid.UUID) -> dict[str, Any]:
        keys = self.call("GET", f"/api/users/{user_id}/keys")
        if not isinstance(keys, dict):
            raise CryptoError("bad_field", "the key directory answer is not an object")
        return keys

    def _check_identity(self, user_id: uuid.UUID, uik: bytes, case_id: uuid.UUID | None,
                        accept_changed: KeyChoice | None) -> str:
        """Observe a served key; refuse a change unless the person accepted exactly this
        key. Returns the pin state."""
        if user_id == self.user_id:
            own_check([(user_id, uik)], self.user_id, self.identity.uik_pub)
            return "verified"
        state = self._observe(user_id, uik, case_id)
        if state == "changed":
            self._accept_exactly(user_id, uik, accept_changed)
        return state

    def _accept_exactly(self, user_id: uuid.UUID, uik: bytes,
                        accept_changed: KeyChoice | None) -> None:
        """Pin ``uik`` (a changed key about to be committed) only when the person's
        acceptance names exactly it; a key the server switched to since is refused."""
        if not key_matches(user_id, uik, accept_changed):
            message = None
            if accept_changed is not None:
                message = (f"the identity key of {user_id} about to be used (code "
                           f"{key_code(user_id, uik)}) is not the one you accepted")
            raise IdentityChangedError(self._describe([user_id], {user_id: uik}), message)
        self.pins.accept(user_id, uik, now_ms())
        self._pins_changed()

    def safety_number(self, user_id: uuid.UUID, case_id: uuid.UUID | None = None) -> list[str]:
        """12 groups of 5 digits to compare in person. Our own key is always the local
        one; theirs is the one in the case's verified roster (with a case), otherwise the
        pinned one (a user never seen is fetched and pinned first)."""
        theirs = self._their_key(user_id, case_id)
        return safety_number(self.user_id, self.identity.uik_pub, user_id, theirs)

    def identity_key(self, user_id: uuid.UUID, case_id: uuid.UUID | None = None) -> bytes:
        """The key ``safety_number(user_id, case_id)`` is computed with."""
        return self._their_key(user_id, case_id)

    def _their_key(self, user_id: uuid.UUID, case_id: uuid.UUID | None) -> bytes:
        if case_id is not None:
            member = self.sync(case_id).head.roster.user(user_id)
            if member is None:
                raise UsageError(f"user {user_id} is not in case {case_id}", code="not_member")
            return member.uik_pub
        self._pins_start()
        record = self.pins.get(user_id)
        if record is not None:
            return record.uik
        return self.user_keys(user_id)[0]

    # --- identity pins ----------------------------------------------------------------
    @property
    def pins(self) -> PinBook:
        return self.state.pins

    def _observe(self, user_id: uuid.UUID, uik: bytes, case_id: uuid.UUID | None) -> str:
        self._pins_start()
        before = self.pins.get(user_id)
        state = self.pins.observe(user_id, uik, case_id, now_ms())
        if self.pins.get(user_id) != before:
            self._pins_changed()
        return state

    def _describe(self, users: Sequence[uuid.UUID],
                  keys: dict[uuid.UUID, bytes]) -> list[IdentityChange]:
        return describe_changes([self.pins.change_for(u, keys[u]) for u in users],
                                self.user_id, self.identity.uik_pub)

    def identity_changes(self) -> list[IdentityChange]:
        """Pending changes (keys seen that differ from the pin), with safety numbers."""
        self._pins_start()
        return describe_changes(self.pins.changes(), self.user_id, self.identity.uik_pub)

    def identities(self) -> list[tuple[uuid.UUID, PinRecord]]:
        self._pins_start()
        return sorted(self.pins.records.items())

    def verify_identity(self, user_id: uuid.UUID, case_id: uuid.UUID | None = None, *,
                        confirm: KeyChoice) -> bytes:
        """Mark the key behind ``safety_number(user_id, case_id)`` verified (after the two
        people compared the numbers). ``confirm`` names the key the person compared (the
        key or its short code); a different key now behind the number is refused.
        Resolves a pending change to that key."""
        if user_id == self.user_id:
            raise UsageError("your own identity key needs no verification", code="own_identity")
        uik = self._their_key(user_id, case_id)
        if not key_matches(user_id, uik, confirm):
            raise UsageError(f"the identity key of {user_id} is now the one with code "
                             f"{key_code(user_id, uik)}, not the one you compared; compare "
                             "again", code="key_mismatch")
        self.pins.verify(user_id, uik, now_ms())
        self._pins_changed()
        return uik

    def accept_identity(self, user_id: uuid.UUID, key: KeyChoice) -> bytes:
        """Accept a pending change to ``key`` (the key or its short code, as shown with
        the change): pin it (any verification is withdrawn). A pending change to any
        other key is refused."""
        self._pins_start()
        record = self.pins.get(user_id)
        if record is None or record.changed is None:
            raise UsageError(f"no pending identity change for {user_id}", code="no_change")
        uik = record.changed.uik
        if not key_matches(user_id, uik, key):
            raise UsageError(f"the pending key of {user_id} has code {key_code(user_id, uik)}, "
                             "not the one given", code="key_mismatch")
        self.pins.accept(user_id, uik, now_ms())
        self._pins_changed()
        return uik

    def _pins_start(self) -> None:
        """Pick up the pin book from the user's other devices once per client."""
        if not self._pins_synced and self.state.identity is not None \
                and self.state.device is not None:
            self.sync_pins()

    def _pins_changed(self) -> None:
        self.save()
        if self.state.identity is not None and self.state.device is not None:
            self.sync_pins()

    def _fetch_pins(self) -> tuple[PinBook | None, int]:
        """The server's copy: signature checked with our own UIK, never older than the
        newest version this keystore has seen (rollback)."""
        identity = self.identity
        try:
            got = self.call("GET", "/api/identity/pins")
        except ServerRefusedError as refused:
            if refused.code != "no_pins":
                raise
            if self.state.pins_version > 0:
                raise CryptoError("rollback", f"the server has no pin book although version "
                                              f"{self.state.pins_version} was seen") from None
            return None, 0
        version = got.get("version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise CryptoError("bad_field", "pin book without a valid version")
        blob, sig = b64d(got.get("blob")), b64d(got.get("sig"), 64)
        verify_pins(identity.uik_pub, identity.user_id, version, blob, sig)
        if version < self.state.pins_version:
            raise CryptoError("rollback", f"the server sent pin book version {version}, "
                                          f"older than version {self.state.pins_version}")
        try:
            document = json.loads(open_pins(identity.uik_seed, blob))
        except ValueError:
            raise CryptoError("bad_body", "the pin book is not JSON") from None
        book = PinBook.from_document(document)
        self.state.pins_version = version
        return book, version

    def sync_pins(self) -> None:
        """Merge the pin book with the server's sealed copy and store the result as the
        next version; another device writing first (409 stale_pins) means merge again."""
        identity = self.identity
        for _ in range(PIN_SYNC_ATTEMPTS):
            remote, version = self._fetch_pins()
            merged = merge(self.pins, remote) if remote is not None else self.pins.copy()
            self.state.pins = merged
            synced = fit(merged, PINS_MAX_PLAINTEXT)
            if synced == remote or (remote is None and not synced.records):
                self._pins_synced = True
                self.save()
                return
            blob = seal_pins(identity.uik_seed, document_bytes(synced))
            sig = sign_pins(identity.uik_seed, identity.user_id, version + 1, blob)
            try:
                with _automatic():
                    self.call("PUT", "/api/identity/pins",
                              {"version": version + 1, "blob": b64e(blob), "sig": b64e(sig)})
            except ServerRefusedError as refused:
                if refused.status == 409 and refused.code == "stale_pins":
                    continue
                raise
            self.state.pins_version = version + 1
            self._pins_synced = True
            self.save()
            return
        raise ServerRefusedError("the pin book kept changing on the server; try again",
                                 code="stale_pins", status=409)

    # --- cases and the membership log ---------------------------------------------------
    def list_cases(self) -> list[dict[str, Any]]:
        cases: list[dict[str, Any]] = self.call("GET", "/api/cases")["cases"]
        return cases

    def _case_ids(self) -> list[uuid.UUID]:
        """The ids of ``list_cases``; a row without a valid id is skipped."""
        ids = []
        for row in self.list_cases():
            try:
                ids.append(uuid.UUID(str(row.get("id"))))
            except (ValueError, AttributeError):
                continue
        return ids

    def case_detail(self, case_id: uuid.UUID) -> dict[str, Any]:
        return self.call("GET", f"/api/cases/{case_id}")

    def _memo(self, case_id: uuid.UUID) -> CaseMemo:
        return self.state.cases.setdefault(str(case_id), CaseMemo())

    def open_case(self, specialty: str = "", urgency: str = "routine") -> uuid.UUID:
        if self.state.cert is None or self.state.identity is None:
            raise UsageError("no device keys yet (run `collab-client init`)", code="no_device")
        state = CaseState(uuid.uuid4(), self.device)
        genesis = state.genesis(self.state.cert, self.state.identity.uik_pub)
        self.call("POST", "/api/cases", {"genesis": b64e(genesis.encode()),
                                         "specialty": specialty, "urgency": urgency})
        state.accept_entries([genesis])
        self.cases[state.case_id] = state
        self._remember(state)
        return state.case_id

    def _remember(self, state: CaseState) -> None:
        memo = self._memo(state.case_id)
        memo.head_epoch, memo.head_hash = state.head.epoch, state.head.entry_hash()
        memo.sender_seq = max(memo.sender_seq, state.sender_seq)
        self.save()

    def sync(self, case_id: uuid.UUID) -> CaseState:
        """Fetch and verify new log entries on top of what this client trusts."""
        state = self.cases.get(case_id)
        if state is None:
            state = CaseState(case_id, self.device)
        known = max(state.chain) if state.chain else -1
        memo = self._memo(case_id)
        # Every page before any is accepted: entries up to the head this client verified
        # in an earlier run are only hash-linked to it (case_state.linked_chain).
        fetched: list[LogEntry] = []
        after = known
        while True:
            page = self.call("GET", f"/api/cases/{case_id}/log?after={after}")
            entries = [LogEntry.decode(b64d(item["entry"])) for item in page["entries"]]
            fetched += entries
            last = max((e.epoch for e in entries), default=after)
            more = page.get("more", len(entries) >= LOG_PAGE)  # servers before byte pages
            if not more or last <= after:
                break
            after = last
        verified = VerifiedHead(memo.head_epoch, memo.head_hash) if known < 0 else None
        state.accept_entries(fetched, verified=verified)
        if not state.chain:
            raise CryptoError("truncated", "the server sent no log for this case")
        if memo.head_epoch > state.head.epoch:
            raise CryptoError("stale_head", f"the server rolled the log back from epoch "
                                            f"{memo.head_epoch} to {state.head.epoch}")
        if memo.head_epoch >= 0 and state.chain[memo.head_epoch].entry_hash() != memo.head_hash:
            raise CryptoError("fork", f"the log differs at epoch {memo.head_epoch} from the one "
                                      "this client verified before")
        try:
            self._check_rosters(state, max(known, memo.head_epoch))
        except CryptoError:
            self.cases.pop(case_id, None)  # nothing of this case is used until it passes
            raise
        state.sender_seq = max(state.sender_seq, memo.sender_seq)
        self.cases[case_id] = state
        if (memo.head_epoch, memo.head_hash) != (state.head.epoch, state.head.entry_hash()):
            self._remember(state)
        self._restore_keys(state)
        self._backup_keys(state)
        return state

    # --- key backup (protocol-crypto.md §9d) ------------------------------------------
    def _restore_keys(self, state: CaseState) -> None:
        """Keys this device lacks, for epochs this user was in the roster of, from the
        user's key backup (once per run and epoch). Each item must open under the
        user's backup key, name this case and epoch, and hold the key the epoch's
        verified entry commits to; any failure leaves that epoch unavailable."""
        if self.state.identity is None:
            return
        wanted = [e for e in state.lacking() if e not in state.backup_asked]
        if not wanted or state.head.roster.user(self.user_id) is None:
            return  # the server serves the backup to current members only
        state.backup_asked.update(wanted)
        key = backup_key(self.identity.uik_seed)
        after, last = wanted[0] - 1, wanted[-1]
        while after < last:
            try:
                page = self.call("GET", f"/api/key-backup?case={state.case_id}&after={after}")
            except ServerRefusedError:
                return  # nothing restored: those epochs stay unavailable
            items = page.get("items") if isinstance(page, dict) else None
            highest = after
            for item in items if isinstance(items, list) else []:
                epoch = item.get("epoch") if isinstance(item, dict) else None
                if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch <= after:
                    continue
                highest = max(highest, epoch)
                if epoch not in wanted or epoch in state.keys:
                    continue
                try:
                    epoch_key = open_backup_item(key, b64d(item.get("item")), state.case_id,
                                                 epoch)
                    state.restore_key(epoch, epoch_key)
                except CryptoError as error:
                    state.backup_refused[epoch] = error.code
                else:
                    state.restored.add(epoch)
            if highest == after or not (isinstance(page, dict) and page.get("more")):
                return
            after = highest

    def _backup_keys(self, state: CaseState) -> None:
        """Seal and upload the keys of epochs not yet backed up (above the highest epoch
        this device uploaded for the case); a refusal leaves them for the next sync."""
        if self.state.identity is None or state.head.roster.user(self.user_id) is None:
            return
        memo = self._memo(state.case_id)
        fresh = sorted(e for e in state.keys if e > memo.backup_epoch)
        if not fresh:
            return
        key = backup_key(self.identity.uik_seed)
        todo = [e for e in fresh if e not in state.restored]  # restored: already there
        for start in range(0, len(todo), BACKUP_PAGE):
            batch = todo[start:start + BACKUP_PAGE]
            items = [{"case": str(state.case_id), "epoch": e,
                      "item": b64e(seal_backup_item(key, state.case_id, e, state.keys[e]))}
                     for e in batch]
            try:
                with _automatic():
                    self.call("PUT", "/api/key-backup", {"items": items})
            except ServerRefusedError:
                self.save()
                return
            memo.backup_epoch = max(memo.backup_epoch, batch[-1])
        memo.backup_epoch = max(memo.backup_epoch, fresh[-1])
        self.save()

    def _check_rosters(self, state: CaseState, seen_epoch: int) -> None:
        """The verified head roster must list us (if at all) under our own key (fail
        closed; a past roster cannot, it only held what was true then). Every roster
        verified for the first time (above ``seen_epoch``, oldest first) and the head's
        are observed: keys pinned on first sight, else compared; rosters below the head
        are historical (a key the user had before records no change)."""
        head = state.head
        own_check(_pairs(head.roster), self.user_id, self.identity.uik_pub)
        self._pins_start()
        before = self.pins.copy()
        now = now_ms()
        for epoch in sorted(e for e in state.chain if e > seen_epoch or e == head.epoch):
            for user, uik in _pairs(state.chain[epoch].roster):
                if user != self.user_id:
                    self.pins.observe(user, uik, state.case_id, now,
                                      historical=epoch != head.epoch)
        if self.pins != before:
            self._pins_changed()

    def blocking(self, case_id: uuid.UUID) -> list[uuid.UUID]:
        """Users of the case's verified roster whose key is an unaccepted change; while
        there are any, this client sends nothing in the case."""
        return self.pins.blocking(_pairs(self.sync(case_id).head.roster), self.user_id)

    def _check_sendable(self, state: CaseState) -> None:
        pairs = _pairs(state.head.roster)
        blocked = self.pins.blocking(pairs, self.user_id)
        if blocked:
            raise IdentityChangedError(self._describe(blocked, dict(pairs)))

    def _commit(self, case_id: uuid.UUID, make: Callable[[CaseState], Body]) -> LogEntry:
        """Build, sign and submit the next entry; on a lost race re-sync and rebuild.
        The resulting roster passes the commit check before anything is signed. Before
        any entry but a removal, the revoked devices in the roster that this user may
        remove are removed first (the server refuses an entry keeping one: 409
        ``revoked_device_in_roster``, which is handled the same way)."""
        cleared = False
        for _ in range(COMMIT_ATTEMPTS):
            state = self.sync(case_id)
            body = make(state)
            shrinking = isinstance(body, SHRINKING)
            if not shrinking and not cleared:
                cleared = True
                listed = self.revoked_in_roster(case_id, state.head.roster)
                if listed and self.clear_revoked(case_id, listed):
                    continue  # the log moved: rebuild on the new head
            resulting = apply_action(state.head.roster, epoch=state.head.epoch + 1,
                                     author_user_id=self.user_id, body=body)
            commit_check(self.pins, _pairs(resulting), self.user_id, self.identity.uik_pub)
            entry = state.next_entry(body)
            try:
                self.call("POST", f"/api/cases/{case_id}/log", {"entry": b64e(entry.encode())})
            except ServerRefusedError as refused:
                if refused.status == 409 and refused.code == "stale_head":
                    continue
                if refused.status == 409 and refused.code == "revoked_device_in_roster" \
                        and not shrinking:
                    listed = _uuids(refused.body.get("devices"))
                    if self.clear_revoked(case_id, listed):
                        continue
                    raise ServerRefusedError(
                        "the roster still holds revoked devices that you may not remove ("
                        + ", ".join(str(d) for d in listed) + "): their user or an owner or "
                        "admin of the case must remove them first",
                        code=refused.code, status=refused.status, body=refused.body) from None
                raise
            state.accept_entries([entry])
            self._check_rosters(state, entry.epoch - 1)  # pins the keys just committed
            self._remember(state)
            self._backup_keys(state)
            return entry
        raise ServerRefusedError("the log kept moving; try again", code="stale_head", status=409)

    # --- revoked devices ---------------------------------------------------------------
    def _clear_revoked_lately(self, case_id: uuid.UUID) -> None:
        """``clear_revoked`` at most once per REVOKED_CHECK_SECONDS per case (sending)."""
        now = time.monotonic()
        if now - self._revoked_checked.get(case_id, -REVOKED_CHECK_SECONDS) \
                < REVOKED_CHECK_SECONDS:
            return
        self._revoked_checked[case_id] = now
        if self.sync(case_id).head.roster.device(self.device.device_id) is not None:
            self.clear_revoked(case_id)

    def revoked_in_roster(self, case_id: uuid.UUID,
                          roster: Roster | None = None) -> list[uuid.UUID]:
        """Devices of the case's verified head roster (or ``roster``) that the server
        lists as revoked (the case detail's ``revoked_devices``)."""
        roster = roster if roster is not None else self.sync(case_id).head.roster
        listed = _uuids(self.case_detail(case_id).get("revoked_devices"))
        return [d for d in listed if roster.device(d) is not None]

    def _may_remove(self, roster: Roster, device_id: uuid.UUID) -> bool:
        """remove_device by this device: it must be in the roster (and not the one
        removed), the user must keep a device, and this user must be the device's own
        user, an owner, or an admin removing a non-owner's device (protocol §6.3)."""
        me, cert = roster.user(self.user_id), roster.device(device_id)
        if me is None or cert is None or roster.device(self.device.device_id) is None \
                or device_id == self.device.device_id or len(roster.devices_of(cert.user_id)) < 2:
            return False
        owner = roster.user(cert.user_id)
        if cert.user_id == self.user_id or me.role == Role.OWNER:
            return True
        return me.role == Role.ADMIN and owner is not None and owner.role != Role.OWNER

    def clear_revoked(self, case_id: uuid.UUID,
                      devices: Sequence[uuid.UUID] | None = None) -> list[uuid.UUID]:
        """Commit remove_device for each revoked device in the roster (``devices``, or
        the case detail's list) that this user may remove; returns those removed."""
        revoked = self.revoked_in_roster(case_id) if devices is None else list(devices)
        removed: list[uuid.UUID] = []
        for device_id in revoked:
            roster = self.sync(case_id).head.roster
            if not self._may_remove(roster, device_id):
                continue
            found = roster.device(device_id)
            if found is None:
                continue
            user_id = found.user_id

            def body(state: CaseState, user_id: uuid.UUID = user_id,
                     device_id: uuid.UUID = device_id) -> Body:
                if state.head.roster.device(device_id) is None:
                    raise UsageError("already removed", code="not_in_roster")
                return RemoveDeviceBody(user_id, device_id)

            try:
                with _automatic():  # the client's own clean-up, not a person's action
                    self._commit(case_id, body)
            except UsageError as gone:
                if gone.code != "not_in_roster":
                    raise
                continue
            removed.append(device_id)
        return removed

    # --- enrol_device: this device joins its user's cases by itself ------------------
    def enrol(self, case_id: uuid.UUID) -> str:
        """Enrol this device in one case whose verified head roster holds this user but
        not this device: an enrol_device entry signed by this device, with the user's
        identity key admitting it at this log position (no other device needed).
        Returns ``enrolled``, ``already`` (the device is in) or ``not_in_roster``."""
        state = self.sync(case_id)
        if state.head.roster.device(self.device.device_id) is not None:
            return "already"
        if state.head.roster.user(self.user_id) is None:
            return "not_in_roster"
        cert = self.state.cert
        if cert is None:
            raise UsageError("no device certificate in this keystore", code="no_device")

        def body(state: CaseState) -> Body:
            if state.head.roster.device(cert.device_id) is not None:
                raise UsageError("this device is already in the case", code="already_enrolled")
            return sign_enrol(self.identity.uik_seed, state.case_id, state.head.epoch + 1,
                              state.head.entry_hash(), cert)

        try:
            with _automatic():  # the device joins by itself
                self._commit(case_id, body)
        except UsageError as already:
            if already.code != "already_enrolled":
                raise
            return "already"
        self.clear_revoked(case_id)  # now this device may remove our revoked ones
        return "enrolled"

    def enrol_cases(self) -> dict[uuid.UUID, str]:
        """Enrol this device in every case of ``GET /api/cases`` whose verified roster
        holds this user but not this device. Returns case -> ``enrolled`` / ``already``
        / ``not_in_roster``, or ``failed (<code>)`` for a case that could not be
        enrolled (the others still are)."""
        outcome: dict[uuid.UUID, str] = {}
        for case_id in self._case_ids():
            try:
                outcome[case_id] = self.enrol(case_id)
            except (ClientError, CryptoError) as error:
                outcome[case_id] = f"failed ({error.code})"
        return outcome

    def add_member(self, case_id: uuid.UUID, user_id: uuid.UUID, role: Role = Role.MEMBER,
                   *, accept_changed: KeyChoice | None = None,
                   code_compared: bool = False) -> LogEntry:
        """Add a user with the keys the server serves, checked against the pin book
        (IdentityChangedError on a changed key unless ``accept_changed`` names exactly
        that key). A patient (their account, or the role granted) is refused
        (AdmissionRefusedError ``patient_unbound``) unless the short code was compared:
        admitting their join request checks the invitation link instead."""
        keys = self._fetch_keys(user_id)
        if keys.get("uik_pub"):
            uik = b64d(keys["uik_pub"], 32)
            if user_id != self.user_id and (role == Role.PATIENT or keys.get("role") == "patient") \
                    and not code_compared:
                raise AdmissionRefusedError(
                    f"{user_id} is a patient: admit their join request (checked against the "
                    f"invitation link), or compare their short code {key_code(user_id, uik)} "
                    "by voice and add with --code-compared", blockers=("patient_unbound",))
            self._check_identity(user_id, uik, case_id, accept_changed)
        uik, devices = self._parse_keys(user_id, keys)
        return self._add_user(case_id, user_id, role, uik, devices)

    def _add_user(self, case_id: uuid.UUID, user_id: uuid.UUID, role: Role, uik: bytes,
                  devices: tuple[DeviceCert, ...]) -> LogEntry:
        def body(state: CaseState) -> Body:
            if state.head.roster.user(user_id) is not None:
                raise UsageError(f"user {user_id} is already in the case", code="already_member")
            return AddUserBody(user_id, role, uik, devices)

        return self._commit(case_id, body)

    def remove_member(self, case_id: uuid.UUID, user_id: uuid.UUID) -> LogEntry:
        def body(state: CaseState) -> Body:
            if state.head.roster.user(user_id) is None:
                raise UsageError(f"user {user_id} is not in the case", code="not_member")
            return RemoveUserBody(user_id)

        return self._commit(case_id, body)

    def adopt_devices(self, case_id: uuid.UUID) -> list[uuid.UUID]:
        """Add this user's other active devices (a new browser, a recovered machine) to
        the case. Each certificate must chain to our own identity key, so the server
        cannot slip in a device of its own."""
        uik = self.identity.uik_pub
        mine = [DeviceCert.from_wire(d) for d in self.devices() if not d.get("revoked_at")]
        added: list[uuid.UUID] = []
        for cert in mine:
            if cert.user_id != self.user_id:
                raise CryptoError("bad_certificate", "the server listed another user's device")
            verify_device_cert(cert, uik)

            def body(state: CaseState, cert: DeviceCert = cert) -> Body:
                return AddDeviceBody(cert)

            if self.sync(case_id).head.roster.device(cert.device_id) is None:
                self._commit(case_id, body)
                added.append(cert.device_id)
        return added

    # --- join requests: listed for a person, committed only by their explicit admit ----
    def join_requests(self, case_id: uuid.UUID) -> list[JoinRequest]:
        """Pending join requests with what a person needs to decide: who, why, the key
        the server serves for them with its pin state (read only: listing records
        nothing; the key is pinned once a roster holding it is committed and observed)
        and, for patients, whether that key is bound to this case's invitation link.
        Nothing is committed here; the server can insert join requests at will, and a
        malformed row is listed with the reason it cannot be admitted."""
        state = self.sync(case_id)
        listing = self.call("GET", f"/api/cases/{case_id}/join-requests")
        rows = listing.get("join_requests") if isinstance(listing, dict) else None
        out: list[JoinRequest] = []
        for item in list(rows if isinstance(rows, list) else [])[:MAX_JOIN_REQUESTS]:
            out.append(self._review_request(state, item))
        return out

    def _review_request(self, state: CaseState, item: object,
                        as_patient: bool = False) -> JoinRequest:
        try:
            return self._review_row(state, item if isinstance(item, dict) else {}, as_patient)
        except (CryptoError, UsageError, KeyError, ValueError, TypeError) as error:
            row = item if isinstance(item, dict) else {}
            code = getattr(error, "code", None) or "malformed"
            try:
                user_id = uuid.UUID(str(row.get("user")))
            except ValueError:
                user_id = uuid.UUID(int=0)
            raw_id = row.get("id")
            return JoinRequest(
                id=raw_id if isinstance(raw_id, int) and not isinstance(raw_id, bool) else -1,
                case_id=state.case_id, user=user_id, kind=str(row.get("kind", "")),
                requested_by=None, created_at=str(row.get("created_at") or ""),
                display_name=str(row.get("display_name") or ""),
                role=str(row.get("role") or ""), organisation="", specialty="", uik=None,
                devices=(), pin="none", binding=None, short_code=None,
                problem=f"{MALFORMED} ({code}: {error})", patient=True)

    def _review_row(self, state: CaseState, item: dict[str, Any],
                    as_patient: bool) -> JoinRequest:
        user_id = uuid.UUID(str(item["user"]))
        requested_by = _opt_uuid(item.get("requested_by"))
        request_id = item["id"]
        if isinstance(request_id, bool) or not isinstance(request_id, int):
            raise ValueError("the request id is not an integer")
        kind = str(item.get("kind", ""))
        uik: bytes | None = None
        devices: tuple[DeviceCert, ...] = ()
        pin = "none"
        problem: str | None = None
        try:
            keys = self._fetch_keys(user_id)
        except ServerRefusedError as refused:  # one bad row does not hide the others
            keys, problem = {}, refused.code
        if keys.get("uik_pub"):
            uik = b64d(keys["uik_pub"], 32)
            if user_id == self.user_id:
                own_check([(user_id, uik)], self.user_id, self.identity.uik_pub)
                pin = "verified"
            else:
                self._pins_start()
                pin = self.pins.state(user_id, uik)  # read only: nothing is recorded
            try:
                devices = self._parse_keys(user_id, keys)[1]
            except (UsageError, CryptoError) as error:  # cannot be admitted as served
                problem = error.code
        elif problem is None:
            problem = "no_identity"
        # A patient if any signal says so; the server cannot relabel one away.
        patient = as_patient or kind == "patient" or item.get("role") == "patient" \
            or keys.get("role") == "patient"
        binding: str | None = None
        code: tuple[str, ...] | None = None
        if patient:
            binding = "unbound"
            if uik is not None:
                code = tuple(short_code(user_id, uik))
                try:
                    record = _invitation_record(item.get("invitation"))
                except (CryptoError, KeyError, ValueError, TypeError):
                    binding = "bad_proof"
                else:
                    binding = check_invitation(state.chain.values(), state.case_id, record,
                                               user_id, uik)
        return JoinRequest(
            id=request_id, case_id=state.case_id, user=user_id, kind=kind,
            requested_by=requested_by,
            created_at=str(item.get("created_at") or ""),
            display_name=str(item.get("display_name") or ""), role=str(item.get("role") or ""),
            organisation=str(item.get("organisation") or ""),
            specialty=str(item.get("specialty") or ""),
            uik=uik, devices=devices, pin=pin, binding=binding, short_code=code,
            problem=problem, patient=patient,
        )

    def _join_request(self, case_id: uuid.UUID, user_id: uuid.UUID,
                      as_patient: bool = False) -> JoinRequest:
        state = self.sync(case_id)
        listing = self.call("GET", f"/api/cases/{case_id}/join-requests")
        rows = listing.get("join_requests") if isinstance(listing, dict) else None
        malformed: JoinRequest | None = None
        for item in list(rows if isinstance(rows, list) else [])[:MAX_JOIN_REQUESTS]:
            if isinstance(item, dict) and str(item.get("user")) == str(user_id):
                request = self._review_request(state, item, as_patient)
                if request.user == user_id and request.id >= 0 and \
                        not (request.problem or "").startswith(MALFORMED):
                    return request
                malformed = malformed or request
        if malformed is not None:
            return malformed  # refused by admit with the reason
        raise UsageError(f"no pending join request from {user_id} in case {case_id}",
                         code="no_join_request")

    def admit(self, case_id: uuid.UUID, user_id: uuid.UUID, *, role: Role | None = None,
              accept_changed: KeyChoice | None = None,
              code_compared: bool = False) -> LogEntry:
        """A person's explicit decision to admit one pending request. Refused
        (IdentityChangedError, AdmissionRefusedError) when the key changed and
        ``accept_changed`` does not name exactly the key about to be committed (the key
        or its short code, as the person saw it), or a patient's key (any signal: kind,
        role listed or served, role granted) is not bound to the invitation link and the
        short code was not compared. The keys reviewed are the keys committed."""
        request = self._join_request(case_id, user_id, as_patient=role == Role.PATIENT)
        if request.uik is None or not request.devices:
            raise UsageError(f"user {user_id} cannot be admitted with the keys the server "
                             f"serves ({request.problem})", code=request.problem or "no_device")
        if request.pin == "changed" and accept_changed is not None \
                and not key_matches(user_id, request.uik, accept_changed):
            raise IdentityChangedError(
                self._describe([user_id], {user_id: request.uik}),
                f"the identity key of {user_id} about to be admitted (code "
                f"{key_code(user_id, request.uik)}) is not the one you accepted")
        review = request.review(accept_changed=accept_changed is not None,
                                code_compared=code_compared)
        if not review.allowed:
            if "identity_changed" in review.blockers:
                raise IdentityChangedError(self._describe([user_id], {user_id: request.uik}))
            raise AdmissionRefusedError(
                f"the patient's key is not bound to this case's invitation link "
                f"({request.binding}); compare the short code "
                f"{' '.join(request.short_code or ())} with the patient by voice, then admit "
                "with --code-compared", blockers=review.blockers)
        previous = self.sync(case_id).head.roster.user(user_id)
        if role is None:
            role = previous.role if previous is not None else \
                Role.PATIENT if request.patient else Role.MEMBER
        if previous is not None:
            # A rejoin after an identity reset: the roster's entry under the old key is
            # replaced (CR1 has no key change in place: remove_user, then add_user). The
            # removal goes first, so its sync does not see the old key as a change.
            self._remove_old_identity(case_id, user_id, request.uik)
        if request.pin == "changed":
            self.pins.accept(user_id, request.uik, now_ms())
            self._pins_changed()
        return self._add_user(case_id, user_id, role, request.uik, request.devices)

    def _remove_old_identity(self, case_id: uuid.UUID, user_id: uuid.UUID,
                             new_uik: bytes) -> None:
        def body(state: CaseState) -> Body:
            member = state.head.roster.user(user_id)
            if member is None:
                raise UsageError("already removed", code="not_member")
            if member.uik_pub == new_uik:
                raise UsageError(f"user {user_id} is already in the case with this key",
                                 code="already_member")
            return RemoveUserBody(user_id)

        try:
            self._commit(case_id, body)
        except UsageError as gone:
            if gone.code != "not_member":  # another admitter removed them first: go on
                raise

    def share_history(self, case_id: uuid.UUID, user_id: uuid.UUID,
                      epochs: Sequence[int] | None = None) -> list[LogEntry]:
        """Hand earlier epoch keys to a user's devices now in the roster (a member readmitted
        after an identity reset, whose old keys are gone): ``share_history`` entries
        (owner or admin), re-wrapping each key this device holds to each of the user's
        roster devices. ``epochs``: those to share; by default every epoch below the head
        whose roster held the user (under any key), i.e. what they could read before.
        Keys are taken only from this device's verified chain; the recipients check each
        against its epoch's key_commit."""
        state = self.sync(case_id)
        head = state.head
        member = head.roster.user(user_id)
        if member is None:
            raise UsageError(f"user {user_id} is not in case {case_id}", code="not_member")
        self._check_sendable(state)  # never wrap keys to a key nobody accepted
        devices = head.roster.devices_of(user_id)
        wanted = sorted(epochs) if epochs is not None else [
            e for e, entry in state.chain.items()
            if e < head.epoch and entry.roster.user(user_id) is not None]
        items = [(d, e, state.keys[e]) for e in wanted if e in state.keys and e < head.epoch
                 for d in devices]
        if not items:
            raise UsageError("this device holds none of those epochs' keys", code="no_keys")
        committed: list[LogEntry] = []
        for start in range(0, len(items), SHARE_ITEMS):
            batch = items[start:start + SHARE_ITEMS]

            def body(state: CaseState, batch: list[tuple[DeviceCert, int, bytes]] = batch,
                     ) -> Body:
                roster = state.head.roster
                if any(roster.device(d.device_id) is None for d, _, _ in batch):
                    raise UsageError("the user's devices changed; share again",
                                     code="roster_changed")
                return make_history_body(case_id, batch)

            committed.append(self._commit(case_id, body))
        return committed

    # --- rejoining after an identity reset ----------------------------------------------
    def request_rejoin(self, case_id: uuid.UUID) -> dict[str, Any]:
        """Ask to be readmitted to a case whose roster still lists this user under the
        identity key an operator reset (kind ``rejoin``). Nothing is synced: that roster
        names us under a key that is not ours, so it fails our own check until a case
        owner or admin, having accepted the new key, commits it."""
        return self.call("POST", f"/api/cases/{case_id}/join-requests", {"kind": "rejoin"})

    def rejoin_cases(self) -> dict[uuid.UUID, str]:
        """``request_rejoin`` in every case of ``GET /api/cases``: case -> ``requested``,
        or the server's refusal code (``already_member`` where the roster already holds
        the new key, ``already_requested`` where a request is pending)."""
        outcome: dict[uuid.UUID, str] = {}
        for case_id in self._case_ids():
            try:
                self.request_rejoin(case_id)
            except ServerRefusedError as refused:
                outcome[case_id] = refused.code
            else:
                outcome[case_id] = "requested"
        return outcome

    def decline(self, case_id: uuid.UUID, user_id: uuid.UUID, reason: str = "") -> None:
        request = self._join_request(case_id, user_id)
        self.call("POST", f"/api/join-requests/{request.id}/decline", {"reason": reason})

    def my_join_requests(self) -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = self.call("GET", "/api/join-requests")["join_requests"]
        return got

    def withdraw(self, case_id: uuid.UUID) -> list[int]:
        """Withdraw this user's own pending request(s) to join the case."""
        withdrawn: list[int] = []
        for request in self.my_join_requests():
            if str(request.get("case")) == str(case_id) and \
                    request.get("status", "pending") == "pending":
                self.call("POST", f"/api/join-requests/{int(request['id'])}/withdraw", {})
                withdrawn.append(int(request["id"]))
        if not withdrawn:
            raise UsageError(f"no pending request of yours for case {case_id}",
                             code="no_join_request")
        return withdrawn

    # --- patient invitations bound by the link ----------------------------------------
    def invite_patient(self, case_id: uuid.UUID) -> tuple[dict[str, Any], str]:
        """Create the patient's invitation, bound to a fresh secret that travels only in
        the link's fragment. Returns (the server's answer, the link to hand over)."""
        secret = prim.random_bytes(32)
        _, invite_pub = invite_keypair(secret)
        created = now_ms()
        device = self.device
        sig = sign_invitation(device.dsk_seed, case_id, self.user_id, device.device_id,
                              invite_pub, created)
        answer = self.call("POST", f"/api/cases/{case_id}/invitations", {
            "invite_pub": b64e(invite_pub), "invite_sig": b64e(sig),
            "inviter_device": str(device.device_id), "created_ms": created,
        })
        return answer, f"{answer['link'].split('#', 1)[0]}#{invite_fragment(secret)}"

    def prove_invitation(self, link: str) -> list[str]:
        """As the patient: bind our identity key to the invitation(s) of this link."""
        seed, invite_pub = invite_keypair(parse_invite_secret(link))
        proved: list[str] = []
        for inv in self.call("GET", "/api/invitations/mine").get("invitations", []):
            if inv.get("invite_pub") != b64e(invite_pub):
                continue
            case_id = uuid.UUID(str(inv["case"]))
            proof = sign_invite_proof(seed, case_id, invite_pub, self.user_id,
                                      self.identity.uik_pub)
            self.call("POST", f"/api/invitations/{inv['id']}/proof", {"proof_sig": b64e(proof)})
            proved.append(str(inv["id"]))
        if not proved:
            raise UsageError("no invitation of yours matches this link", code="no_invitation")
        return proved

    # --- receiving ----------------------------------------------------------------------
    def open_item(self, case_id: uuid.UUID, item: dict[str, Any]) -> Received:
        """Verify and decrypt one stored message ({seq, envelope, ...})."""
        return self._open(case_id, item)[0]

    def _open(self, case_id: uuid.UUID, item: dict[str, Any]) -> tuple[Received, bool]:
        """(message, whether it is new to this client). The same server sequence number
        with different content is a replay attempt."""
        seq = item.get("seq")
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
            raise CryptoError("bad_field", "message without a valid server sequence number")
        if seq in self._removed.get(case_id, {}):
            raise CryptoError("replay", f"message #{seq} was removed; the server served it again")
        envelope = Envelope.from_wire(item.get("envelope") or {})
        fingerprint = prim.sha512(envelope.header.encode() + envelope.sig + envelope.ct)
        seen = self._seen.setdefault(case_id, {})
        if seq in seen:
            known_fingerprint, known = seen[seq]
            if known_fingerprint != fingerprint:
                raise CryptoError("replay", f"the server sent two different messages as #{seq}")
            return known, False
        if envelope.header.case_id != case_id:
            raise CryptoError("wrong_case", "message belongs to another case")
        state = self.cases.get(case_id)
        if state is None or envelope.header.epoch not in state.chain:
            state = self.sync(case_id)
        opened = state.open(envelope)
        if opened.unavailable is not None:
            reason = (f"not available on this device (the key in the entry by "
                      f"{opened.unavailable} could not be opened)")
            received = Received(seq, opened.header, {}, (), opened.gap, reason,
                                opened.unavailable)
        elif opened.missing is not None:
            received = Received(seq, opened.header, {}, (), opened.gap,
                                f"not available on this device ({opened.missing})")
        else:
            try:
                manifests = tuple(Manifest.from_wire(m)
                                  for m in opened.body.get("attachments", []))
            except (CryptoError, TypeError, AttributeError) as error:
                raise CryptoError("bad_body", f"bad attachment manifest: {error}") from None
            received = Received(seq, opened.header, opened.body, manifests, opened.gap)
        seen[seq] = (fingerprint, received)
        memo = self._memo(case_id)
        memo.last_seq = max(memo.last_seq, seq)
        return received, True

    def history(self, case_id: uuid.UUID, after: int = 0,
                limit: int | None = None) -> list[Received]:
        """Stored messages after ``after``, every one verified and decrypted; removed
        ones are left out (``timeline`` has them)."""
        return [m for m in self.timeline(case_id, after, limit) if isinstance(m, Received)]

    def timeline(self, case_id: uuid.UUID, after: int = 0,
                 limit: int | None = None) -> list[Received | Removed]:
        """``history`` with the removed messages in their place, each judged: recalled by
        the sender (a verified recall), purged, or removed by the server."""
        self.sync(case_id)
        out: list[Received | Removed] = []
        while limit is None or len(out) < limit:
            page = self.call("GET", f"/api/cases/{case_id}/messages?after={after}"
                                    f"&limit={HISTORY_PAGE}")
            start = after
            for item in page["messages"]:
                after = max(after, _count(item.get("seq")))
                out.append(self.tombstone(case_id, item)[0] if "removed" in item
                           else self.open_item(case_id, item))
            # Pages are capped by bytes too: follow ``more``; one that does not move
            # forward would be asked for again forever.
            if not page.get("more") or after <= start:
                break
        self.save()
        return out if limit is None else out[:limit]

    def message(self, case_id: uuid.UUID, seq: int) -> Received:
        self.sync(case_id)
        page = self.call("GET", f"/api/cases/{case_id}/messages?after={seq - 1}&limit=1")
        items = [i for i in page["messages"] if i.get("seq") == seq]
        if not items:
            raise ServerRefusedError(f"no message #{seq} readable by this device",
                                     code="no_message",
                                status=404)
        if "removed" in items[0]:
            removed = self.tombstone(case_id, items[0])[0]
            raise ServerRefusedError(f"message #{seq} is {removed.describe()}",
                                     code="already_removed", status=409)
        return self.open_item(case_id, items[0])

    # --- recall (docs/workflow.md "Recall") ----------------------------------------------
    def recall(self, case_id: uuid.UUID, seq: int) -> Removed:
        """Recall one of this user's messages: sign the recall statement of the message as
        verified here, send it, and drop the plaintext held for it."""
        msg = self.message(case_id, seq)
        if msg.sender_user_id != self.user_id:
            raise UsageError(f"message #{seq} was sent by someone else", code="not_sender")
        statement = recall_for(msg.header, seq=seq, device_id=self.device.device_id,
                               recalled_ms=now_ms())
        answer = self.call("POST", f"/api/cases/{case_id}/messages/{seq}/recall", {
            "recalled_ms": statement.recalled_ms,
            "sig": b64e(sign_recall(self.device.dsk_seed, statement)),
        })
        return self.recalled_frame(case_id, {**answer, "type": "recalled"})[0]

    def tombstone(self, case_id: uuid.UUID, item: dict[str, Any]) -> tuple[Removed, bool]:
        """Judge a removed message from history or resume; (verdict, whether new)."""
        return self._judge_removal(case_id, item, judge_tombstone)

    def recalled_frame(self, case_id: uuid.UUID, frame: dict[str, Any]) -> tuple[Removed, bool]:
        """Judge a live ``recalled`` frame; (verdict, whether new)."""
        return self._judge_removal(case_id, frame, judge_frame)

    def _judge_removal(self, case_id: uuid.UUID, data: dict[str, Any],
                       judge: Callable[..., Removed]) -> tuple[Removed, bool]:
        seq = data.get("seq")
        known_removal = self._removed.get(case_id, {}).get(seq) if isinstance(seq, int) else None
        if known_removal is not None and known_removal.verdict != "removed_by_server":
            return known_removal, False
        state = self.cases.get(case_id) or self.sync(case_id)
        known = self._seen.get(case_id, {}).get(seq) if isinstance(seq, int) else None
        removed = judge(case_id, data, list(state.chain.values()),
                        known[1].header if known is not None else None)
        # The message is gone from the server: its plaintext goes from here too.
        self._seen.get(case_id, {}).pop(removed.seq, None)
        self._removed.setdefault(case_id, {})[removed.seq] = removed
        memo = self._memo(case_id)
        memo.last_seq = max(memo.last_seq, removed.seq)
        return removed, known_removal is None or known_removal != removed

    # --- the socket -----------------------------------------------------------------------
    async def connect(self, case_id: uuid.UUID) -> Room:
        room = await Room.connect(
            base_url=self.state.server, origin=self.http.origin,
            cookie=self.http.cookie_header(), case_id=case_id, device_id=self.device.device_id,
            device_key=self.device.dsk_seed,
        )
        self.rooms[case_id] = room
        return room

    # --- sending: the outbox ------------------------------------------------------------
    # A message is sealed once and kept in the outbox (the keystore) until the server
    # acknowledges it. Every retry sends the same envelope (same client_msg_id), so a
    # retry after a lost ack is answered ``duplicate`` and stored once; the server checks
    # the client_msg_id before anything else, so a refusal means it is not stored and the
    # message may be sealed again (same client_msg_id and sender_seq, the current epoch).

    def outbox(self, case_id: uuid.UUID | None = None) -> list[dict[str, Any]]:
        """Messages sealed but not yet acknowledged, oldest first (all cases by default)."""
        return [dict(e) for e in self.state.outbox
                if case_id is None or e.get("case") == str(case_id)]

    def _pending(self, case_id: uuid.UUID) -> list[dict[str, Any]]:
        return [e for e in self.state.outbox if e.get("case") == str(case_id)]

    def _send_lock(self, case_id: uuid.UUID) -> asyncio.Lock:
        """One sender per case at a time (per event loop: the CLI runs one per command)."""
        locks = self._send_locks.setdefault(asyncio.get_running_loop(), {})
        return locks.setdefault(case_id, asyncio.Lock())

    def _seal_into_outbox(self, case_id: uuid.UUID, key: str, body: dict[str, Any],
                          content_type: str, attachments: Sequence[AttachmentRef]
                          ) -> dict[str, Any]:
        if len(self.state.outbox) >= OUTBOX_MAX:
            raise UsageError(f"{OUTBOX_MAX} messages are still waiting to be sent; "
                             "retry when the server is reachable", code="outbox_full")
        envelope = self._seal(case_id, body, content_type, attachments)
        entry = {"case": str(case_id), "id": b64e(envelope.header.client_msg_id), "key": key,
                 "content_type": content_type, "body": body,
                 "attachments": [[str(a.blob_id), b64e(a.root)] for a in attachments],
                 "envelope": envelope.to_wire()}
        self.state.outbox.append(entry)
        # The sender_seq is taken even before the ack: a later run must not reuse it.
        memo = self._memo(case_id)
        memo.sender_seq = max(memo.sender_seq, envelope.header.sender_seq)
        self.save()
        return entry

    def _seal(self, case_id: uuid.UUID, body: dict[str, Any], content_type: str,
              attachments: Sequence[AttachmentRef], *, client_msg_id: bytes | None = None,
              sender_seq: int | None = None) -> Envelope:
        state = self.sync(case_id)
        self._check_sendable(state)
        if state.head_key_unavailable:
            # This device could not open the head's key: a fresh key first.
            self._commit(case_id, lambda _s: RotateBody())
            state = self.cases[case_id]
        taken = state.sender_seq
        if sender_seq is not None:
            state.sender_seq = sender_seq - 1
        envelope = state.seal(body, content_type=content_type, attachments=attachments,
                              client_msg_id=client_msg_id)
        state.sender_seq = max(taken, envelope.header.sender_seq)
        return envelope

    def _reseal(self, entry: dict[str, Any], refused: ServerRefusedError) -> None:
        """Seal a pending message again after a refusal that proves it was not stored
        (the log moved: wrong_epoch / stale_head; or sender_seq_not_increasing)."""
        case_id = uuid.UUID(entry["case"])
        old = Envelope.from_wire(entry["envelope"]).header
        sender_seq: int | None = old.sender_seq
        if refused.code == "sender_seq_not_increasing":
            # Another run of this device sent more than the keystore remembers.
            last = refused.body.get("last_sender_seq")
            if isinstance(last, bool) or not isinstance(last, int):
                raise refused  # the structured field is the contract, never the prose
            state = self.sync(case_id)
            state.sender_seq = max(state.sender_seq, last)
            sender_seq = None
        refs = [AttachmentRef(uuid.UUID(b), b64d(r, 64)) for b, r in entry["attachments"]]
        envelope = self._seal(case_id, entry["body"], entry["content_type"], refs,
                              client_msg_id=old.client_msg_id, sender_seq=sender_seq)
        entry["envelope"] = envelope.to_wire()
        memo = self._memo(case_id)
        memo.sender_seq = max(memo.sender_seq, envelope.header.sender_seq)
        self.save()

    def _outbox_drop(self, entry: dict[str, Any], *, stored: bool,
                     outcome: dict[str, Any]) -> None:
        self.state.outbox[:] = [e for e in self.state.outbox if e.get("id") != entry["id"]]
        self.state.sent.append({"case": entry["case"], "id": entry["id"],
                                "key": entry.get("key"), **outcome})
        del self.state.sent[:-SENT_KEPT]
        case_id = uuid.UUID(entry["case"])
        state = self.cases.get(case_id)
        seq = int(entry["envelope"]["sender_seq"])
        if not stored and state is not None and state.sender_seq == seq \
                and not self._pending(case_id):
            # Refused and nothing sealed after it: its sender_seq is free again.
            state.sender_seq = seq - 1
            self._memo(case_id).sender_seq = seq - 1
        self.save()

    async def _deliver(self, room: Room, entry: dict[str, Any]) -> Sent:
        """Send one outbox entry until it is acknowledged or refused for good."""
        for _ in range(RESEAL_ATTEMPTS):
            envelope = Envelope.from_wire(entry["envelope"])
            try:
                ack = await room.send_envelope(envelope)
            except ServerRefusedError as refused:
                # An error frame answering this send proves it was not stored; a socket
                # closed meanwhile (4401/4403/...) proves nothing: the message stays.
                answered = refused.status is None
                if answered and refused.code in RESEAL_CODES:
                    await asyncio.to_thread(self._reseal, entry, refused)
                    continue
                if answered and not is_transient(refused):
                    await asyncio.to_thread(self._outbox_drop, entry, stored=False,
                                            outcome={"refused": refused.code,
                                                     "message": refused.message})
                raise
            sent = Sent(int(ack["seq"]), int(ack["epoch"]), bool(ack.get("duplicate")),
                        envelope.header.client_msg_id)
            await asyncio.to_thread(self._outbox_drop, entry, stored=True,
                                    outcome={"seq": sent.seq, "epoch": sent.epoch,
                                             "duplicate": sent.duplicate})
            return sent
        raise ServerRefusedError("the case kept changing epochs; try again", code="wrong_epoch")

    async def _flush(self, case_id: uuid.UUID, rooms: list[Room],
                     until: str | None = None) -> None:
        """Deliver the case's pending messages oldest first (the server wants sender_seq
        increasing) over ``rooms[0]`` (connected here when empty), up to the one whose
        id is ``until`` (default: all), reconnecting with capped backoff after a lost
        connection; gives up after SEND_ATTEMPTS failures in a row (they stay pending)."""
        failures = 0
        reopen = False
        while True:
            try:
                if not rooms:
                    rooms.append(await self.connect(case_id))
                elif reopen:
                    await rooms[0].reopen()
                reopen = False
                pending = self._pending(case_id)
                if not pending:
                    return
                await self._deliver(rooms[0], pending[0])
                failures = 0
                if pending[0]["id"] == until:
                    return
            except ClientError as error:
                failures += 1
                if not is_transient(error) or failures >= SEND_ATTEMPTS:
                    raise
                # A refusal frame (rate limited) leaves the connection usable.
                reopen = not (isinstance(error, ServerRefusedError) and error.status is None)
                await asyncio.sleep(self._backoff(failures))

    async def flush_outbox(self, case_id: uuid.UUID, *, room: Room | None = None) -> None:
        """Send what is still pending in the case (e.g. after a restart, once the server
        is reachable again)."""
        async with self._send_lock(case_id):
            if not self._pending(case_id):
                return
            rooms = [room] if room is not None else []
            try:
                await self._flush(case_id, rooms)
            finally:
                if room is None:
                    await self._close_own(case_id, rooms)

    async def _patiently(self, step: Callable[[], T]) -> T:
        """A blocking step of a send (HTTP: the log sync, an upload) in a thread, tried
        again with backoff while the server is unreachable or down (SEND_ATTEMPTS in
        all), so a restarting server costs a send some seconds, not the message."""
        failures = 0
        while True:
            try:
                return await asyncio.to_thread(step)
            except ClientError as error:
                failures += 1
                if not is_transient(error) or failures >= SEND_ATTEMPTS:
                    raise
                await asyncio.sleep(self._backoff(failures))

    def _backoff(self, failures: int) -> float:
        delay = min(self.backoff_max, self.backoff_first * 2.0 ** min(failures, 16))
        return delay * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not a secret

    def _retried(self, case_id: uuid.UUID, msg_id: str, key: str) -> dict[str, Any] | Sent:
        """The message ``msg_id`` (named by a send that raised) again: its pending entry,
        or what became of it when a flush (a watcher, another send) finished it meanwhile.
        ``key`` (the content) must match: a retry is of that message, not another."""
        entry = next((e for e in self._pending(case_id) if e.get("id") == msg_id), None)
        done = None if entry is not None else next(
            (d for d in reversed(self.state.sent)
             if d.get("id") == msg_id and d.get("case") == str(case_id)), None)
        found = entry or done
        if found is None:
            raise UsageError("no message with that id waits in this case's outbox",
                             code="not_pending")
        if found.get("key") != key:
            raise UsageError("the retry is not of the same message (its content differs)",
                             code="retry_mismatch")
        if done is None:
            return found
        if "refused" in done:
            raise ServerRefusedError(str(done.get("message") or done["refused"]),
                                     code=str(done["refused"]))
        return Sent(int(done["seq"]), int(done["epoch"]), bool(done.get("duplicate")),
                    b64d(msg_id))

    def _outcome(self, msg_id: str) -> Sent:
        done = next(d for d in reversed(self.state.sent) if d.get("id") == msg_id)
        return Sent(int(done["seq"]), int(done["epoch"]), bool(done.get("duplicate")),
                    b64d(msg_id))

    async def _send_envelope(
        self, case_id: uuid.UUID, body: dict[str, Any] | None, content_type: str,
        attachments: Sequence[AttachmentRef], room: Room | None, key: str,
        retry: str | None,
    ) -> Sent:
        """Send a new message (``body``), or, with ``retry``, the pending one of that id."""
        # A message in an epoch whose key a revoked device holds is readable with that
        # device's keys: remove the revoked devices we may remove first (a new epoch).
        await self._patiently(lambda: self._clear_revoked_lately(case_id))
        async with self._send_lock(case_id):
            if retry is not None:
                found = self._retried(case_id, retry, key)
                if isinstance(found, Sent):
                    return found  # a flush delivered it meanwhile: that ack
                entry = found
            elif body is None:
                raise UsageError("nothing to send", code="empty_message")
            else:
                entry = await self._patiently(lambda: self._seal_into_outbox(
                    case_id, key, body, content_type, attachments))
            rooms = [room] if room is not None else []
            try:
                await self._flush(case_id, rooms, until=entry["id"])
            except ClientError as error:
                if any(e.get("id") == entry["id"] for e in self._pending(case_id)):
                    error.pending_id = entry["id"]  # the app retries it by this id
                raise
            finally:
                if room is None:
                    await self._close_own(case_id, rooms)
            return self._outcome(entry["id"])

    async def _close_own(self, case_id: uuid.UUID, rooms: list[Room]) -> None:
        for own in rooms:
            with contextlib.suppress(Exception):
                await own.close()
            if self.rooms.get(case_id) is own:
                self.rooms.pop(case_id, None)

    async def send_text(self, case_id: uuid.UUID, text: str, *, room: Room | None = None,
                        priority: str | None = None, retry: str | None = None) -> Sent:
        """Seal and send a new message; retried over reconnects until acknowledged. If it
        raises while the message still waits in the outbox, the error's ``pending_id``
        names it: ``send_text(case, text, retry=pending_id)`` sends that one (stored once;
        its ack if a flush delivered it meanwhile), and so does any later send, watch or
        ``flush_outbox`` in the case. Without ``retry`` the same text is a second message."""
        if not text:
            raise UsageError("the message is empty", code="empty_message")
        body: dict[str, Any] = {"text": text}
        if priority:
            body["priority"] = priority
        key = _outbox_key(case_id, "text", json.dumps(body, sort_keys=True).encode())
        return await self._send_envelope(case_id, body, "text", (), room, key, retry)

    async def send_image(
        self, case_id: uuid.UUID, path: Path | str, *, caption: str = "",
        room: Room | None = None, progress: Progress | None = None, retry: str | None = None,
        marks: Sequence[Mark] = (), send_original: bool = False, note: str = "",
    ) -> Sent:
        """Sanitise (orientation applied, metadata stripped), encrypt and upload the image
        and its thumbnail as two blobs, then send the message that carries both manifests.
        ``marks`` (collab.client.markup: Arrow, Circle, Label, Blur, Pixelate, in pixels
        of the displayed image) are applied to the clean pixels first, so the marked copy
        is what is encrypted; ``send_original`` adds the unmarked image as a third blob
        (body ``image.original``); ``note`` is a size/measurement note (``image.note``).
        With ``retry`` (a failed send's ``pending_id``, same file, caption and marks) it
        sends that pending message (nothing uploaded again); without, always a new one."""
        try:
            data = Path(path).read_bytes()
        except OSError as error:
            raise UsageError(f"cannot read {path}: {error.strerror}", code="no_file") from None
        key = _outbox_key(case_id, "image", prim.sha512(data) + caption.encode()
                          + markup_fingerprint(marks, note, send_original))
        if retry is not None:  # nothing uploaded again
            return await self._send_envelope(case_id, None, "image", (), room, key, retry)
        prepared = prepare_image(data, marks=marks, note=note, send_original=send_original)
        image = prepared.image
        self._check_sendable(await self._patiently(lambda: self.sync(case_id)))
        full = await self._patiently(lambda: self.upload(
            case_id, image.full.data, image.full.mime, image.full.width, image.full.height,
            progress))
        thumb = await self._patiently(lambda: self.upload(
            case_id, image.thumbnail.data, image.thumbnail.mime, image.thumbnail.width,
            image.thumbnail.height, None))
        uploads = [full, thumb]
        if prepared.original is not None:
            plain = prepared.original.full
            uploads.append(await self._patiently(lambda: self.upload(
                case_id, plain.data, plain.mime, plain.width, plain.height, None)))
        body = {"text": caption, "attachments": [u.to_wire() for u in uploads],
                "image": {"full": 0, "thumbnail": 1, **prepared.body_fields(2)}}
        refs = [AttachmentRef(u.blob_id, u.root) for u in uploads]
        return await self._send_envelope(case_id, body, "image", refs, room, key, None)

    # --- the consult record (collab.client.consult_client; docs/workflow.md §8) --------
    def consult_record(self, case_id: uuid.UUID) -> ConsultRecord:
        """The case's request, reports (superseded ones marked) and time per consultant,
        read from the verified history; invalid or unauthorised bodies are skipped."""
        return consult_client.read(self, case_id)

    async def send_consult_request(self, case_id: uuid.UUID, *, room: Room | None = None,
                                   retry: str | None = None, **fields: Any) -> Sent:
        """A ``consult_request`` (fields of collab.client.consult.request_body)."""
        body = consult.request_body(**fields)
        return await self._send_consult(case_id, consult.REQUEST, body, room, retry)

    async def send_report(self, case_id: uuid.UUID, *, room: Room | None = None,
                          retry: str | None = None, **fields: Any) -> Sent:
        """A ``consult_report`` with this user's time so far; by default it supersedes
        their latest current report. The server moves the case to ``answered``."""
        body = await self._patiently(
            lambda: consult_client.report_body(self, case_id, **fields))
        return await self._send_consult(case_id, consult.REPORT, body, room, retry)

    async def add_time(self, case_id: uuid.UUID, *, room: Room | None = None,
                       retry: str | None = None, **fields: Any) -> Sent:
        """A ``time_entry`` (minutes, kind, start_ms, end_ms, note); refused before
        anything is sent when negative, absurd or past 24 h on a day."""
        body = await self._patiently(lambda: consult_client.time_body(self, case_id, **fields))
        return await self._send_consult(case_id, consult.TIME_ENTRY, body, room, retry)

    async def _send_consult(self, case_id: uuid.UUID, content_type: str, body: dict[str, Any],
                            room: Room | None, retry: str | None) -> Sent:
        key = _outbox_key(case_id, content_type, consult.encode(body))
        return await self._send_envelope(case_id, body, content_type, (), room, key, retry)

    async def watch(
        self, case_id: uuid.UUID, after: int | None = None, *, reconnect: bool = True,
        on_notice: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> AsyncGenerator[Received, None]:
        """Every message after ``after`` (default: the last one this keystore saw), then
        live ones. It recovers by itself: after a dropped connection, an unreachable
        server, a handshake answered 500/502/503/504, a close 4503 (unavailable) or 4507
        (too slow) it reconnects with capped backoff and resumes from the last server
        sequence number, so nothing is lost or shown twice; a ``hello`` with a higher
        ``last_seq`` (the server's resync after an outage) resumes too. It stops (raises)
        only when resuming cannot help: the session ended (4401), not a member, no such
        case or this device revoked (4403/4404), or a verification failure."""
        last = self._memo(case_id).last_seq if after is None else after
        notice = on_notice or (lambda kind, detail: None)
        failures = 0
        limit = RESUME_PAGE
        while True:
            room: Room | None = None
            reporter: DeliveredReporter | None = None  # the delivered frame, debounced
            catching_up = progressed = False
            try:
                room = await self.connect(case_id)
                reporter = DeliveredReporter(room.mark_delivered)
                await asyncio.to_thread(self.sync, case_id)
                await self._flush_quietly(case_id, room, notice)
                catching_up = True
                async for received in self._catch_up(room, case_id, last, limit, notice):
                    last, progressed = max(last, received.seq), True
                    self._note_delivered(reporter, received)
                    yield received
                catching_up, failures, limit = False, 0, RESUME_PAGE
                while True:
                    frame = await room.next_event()
                    kind = frame.get("type")
                    if kind == "message":
                        seq = frame.get("seq")
                        if not isinstance(seq, int) or seq <= last:
                            continue  # already delivered (by the resume page)
                        if seq in self._removed.get(case_id, {}):
                            continue  # recalled before its live frame came
                        if seq > last + 1:
                            # A gap in the case sequence: fetch what lies before this one.
                            async for received in self._catch_up(
                                    room, case_id, last, limit, notice):
                                last = max(last, received.seq)
                                self._note_delivered(reporter, received)
                                yield received
                            if seq <= last:
                                continue
                        received_now, new = await asyncio.to_thread(self._open, case_id, frame)
                        last = max(last, seq)
                        if new:
                            self._note_delivered(reporter, received_now)
                            yield received_now
                    elif kind == "hello":
                        # Sent again after an outage: whatever was announced meanwhile
                        # may not have reached this socket.
                        notice("resync", frame)
                        head = frame.get("head_epoch")
                        state = self.cases.get(case_id)
                        if isinstance(head, int) and (state is None or head > state.head.epoch):
                            await asyncio.to_thread(self.sync, case_id)
                        if _count(frame.get("last_seq")) > last:
                            async for received in self._catch_up(
                                    room, case_id, last, limit, notice):
                                last = max(last, received.seq)
                                self._note_delivered(reporter, received)
                                yield received
                    elif kind == "log":
                        await asyncio.to_thread(self.sync, case_id)
                        notice("log", frame)
                    elif kind == "recalled":
                        removed, new = await asyncio.to_thread(self.recalled_frame, case_id,
                                                               frame)
                        if new:
                            notice("recalled", _removal_notice(removed))
                    elif kind in ("join_request", "join_resolved", "typing", "read"):
                        notice(str(kind), frame)
            except ClientError as error:
                if not reconnect or not is_transient(error):
                    raise
                failures = 1 if progressed else failures + 1
                if catching_up and not progressed:
                    # A page that never arrives (too large for a server without byte-capped
                    # pages): ask for fewer messages at a time.
                    limit = max(1, limit // 4)
                notice("reconnecting", {"after": last, "code": error.code})
                await asyncio.sleep(self._backoff(failures))
            finally:
                self.rooms.pop(case_id, None)
                if reporter is not None:
                    reporter.cancel()
                    with contextlib.suppress(Exception):
                        await reporter.flush()  # what was received before it ended
                if room is not None:
                    with contextlib.suppress(Exception):
                        await room.close()
                await asyncio.to_thread(self.save)

    def _note_delivered(self, reporter: DeliveredReporter | None, received: Received) -> None:
        """Others' messages only: a device's own messages echoed back are not deliveries."""
        if reporter is not None and received.sender_user_id != self.user_id:
            reporter.note(received.seq)

    def receipts(self, case_id: uuid.UUID) -> CaseReceipts:
        """Every member's stored read and delivered marks, and who acknowledged each
        urgent message (``GET /api/cases/<id>/receipts``; metadata, nothing signed), for
        the users of the verified head roster only (anyone else the server names is
        dropped)."""
        body = self.call("GET", f"/api/cases/{case_id}/receipts")
        roster = self.sync(case_id).head.roster
        return CaseReceipts.from_wire(body, [u.user_id for u in roster.users])

    async def _flush_quietly(self, case_id: uuid.UUID, room: Room,
                             notice: Callable[[str, dict[str, Any]], None]) -> None:
        """A watcher sends what is pending in its case after each (re)connect; a message
        the server refuses is reported, and the watch goes on."""
        if not self._pending(case_id):
            return
        try:
            async with self._send_lock(case_id):
                await self._flush(case_id, [room])
        except ClientError as error:
            if is_transient(error):
                raise
            notice("send_failed", {"code": error.code, "message": error.message})

    async def _catch_up(self, room: Room, case_id: uuid.UUID, after: int,
                        limit: int = RESUME_PAGE,
                        notice: Callable[[str, dict[str, Any]], None] | None = None,
                        ) -> AsyncIterator[Received]:
        """Resume pages until ``more`` is false (pages are capped by bytes, so a page may
        hold fewer than ``limit``); a page that does not move forward ends it. Removed
        messages are judged and told to ``notice`` ("removed")."""
        while True:
            page = await room.resume(after, limit)
            start = after
            for item in page.get("items") or []:
                after = max(after, _count(item.get("seq")))
                if "removed" in item:
                    removed, new = await asyncio.to_thread(self.tombstone, case_id, item)
                    if new and notice is not None:
                        notice("removed", _removal_notice(removed))
                    continue
                received, new = await asyncio.to_thread(self._open, case_id, item)
                if new:
                    yield received
            if not page.get("more") or after <= start:
                return

    # --- attachments ------------------------------------------------------------------------
    def upload(self, case_id: uuid.UUID, data: bytes, mime: str, width: int = 0,
               height: int = 0, progress: Progress | None = None) -> Manifest:
        """Encrypt in 64 KiB chunks and upload in parts of up to 16 chunks; after a
        dropped connection it continues from what the server holds (``_put_part``)."""
        size = ciphertext_size(len(data))
        blob_id = uuid.UUID(self.call("POST", f"/api/cases/{case_id}/blobs",
                                      {"size": size})["blob_id"])
        encryptor = AttachmentEncryptor()
        part = bytearray()
        offset = 0

        def flush() -> None:
            nonlocal offset
            self._put_part(blob_id, offset, bytes(part))
            offset += len(part)
            if progress is not None:
                progress(len(part), size)
            part.clear()

        for chunk in encryptor.chunks(io.BytesIO(data)):
            part += chunk
            if len(part) >= PART_CHUNKS * CT_CHUNK_SIZE:
                flush()
        if part:
            flush()
        manifest = encryptor.manifest(blob_id, mime=mime, width=width, height=height)
        self._complete_upload(blob_id, manifest.root)
        return manifest

    def upload_status(self, blob_id: uuid.UUID) -> dict[str, Any] | None:
        """``GET /api/blobs/<id>/upload`` ({status, size, received_bytes}); None from a
        server that does not offer it (404)."""
        try:
            return self.http.json("GET", f"/api/blobs/{blob_id}/upload").body
        except ApiError as error:
            if error.status == 404:
                return None
            raise _refusal(error) from None

    def _retry_upload(self, attempt: int, error: ClientError | ApiError) -> None:
        """Between attempts of a part or of complete: transient failures only, bounded."""
        if isinstance(error, ApiError):
            if error.status not in TRANSIENT_STATUS:
                raise _refusal(error) from None
            error = _refusal(error)
        if attempt + 1 >= UPLOAD_ATTEMPTS:
            raise error
        time.sleep(self._backoff(attempt + 1))

    def _put_part(self, blob_id: uuid.UUID, offset: int, part: bytes) -> None:
        """PUT one part. After a dropped connection or a 5xx the server is asked how much
        it holds (the upload status, or the ``received_bytes`` of a 409 out_of_order) and
        the upload continues from there: the part again, or the next one if it arrived."""
        path = f"/api/blobs/{blob_id}/parts/{offset}"
        end = offset + len(part)
        for attempt in range(UPLOAD_ATTEMPTS):
            try:
                held: object = None
                if attempt:
                    status = self.upload_status(blob_id)
                    # No status endpoint: send the part again (a part it already holds,
                    # byte for byte, is accepted as it is).
                    held = None if status is None else status.get("received_bytes")
                if held == end:
                    return  # it arrived; only the answer was lost
                if held is not None and held != offset:
                    raise ServerRefusedError(
                        f"the server holds {held} bytes of this upload, not {offset}",
                        code="upload_lost")
                self.http.put_bytes(path, part)
                return
            except ApiError as error:
                if error.status == 409 and error.code == "out_of_order" \
                        and error.body.get("received_bytes") == end:
                    return
                self._retry_upload(attempt, error)
            except UnreachableError as error:
                self._retry_upload(attempt, error)

    def _complete_upload(self, blob_id: uuid.UUID, root: bytes) -> None:
        for attempt in range(UPLOAD_ATTEMPTS):
            try:
                if attempt:
                    status = self.upload_status(blob_id)
                    if status is not None and status.get("status") == "complete":
                        return  # completed; only the answer was lost
                self.http.json("POST", f"/api/blobs/{blob_id}/complete", {"root": b64e(root)})
                return
            except ApiError as error:
                self._retry_upload(attempt, error)
            except UnreachableError as error:
                self._retry_upload(attempt, error)

    def _ranges(self, manifest: Manifest) -> Iterator[bytes]:
        total = ciphertext_size(manifest.size)
        offset = 0
        while offset < total:
            end = min(offset + PART_CHUNKS * CT_CHUNK_SIZE, total) - 1
            got = 0
            try:
                for block in self.http.stream(f"/api/blobs/{manifest.blob_id}",
                                              {"Range": f"bytes={offset}-{end}"}):
                    got += len(block)
                    yield block
            except ApiError as error:
                raise _refusal(error) from None
            if got == 0:
                raise CryptoError("truncated", "the attachment ended early")
            offset += got

    def download(self, manifest: Manifest, out: Path | str,
                 progress: Progress | None = None) -> Path:
        """Stream, decrypt and check an attachment; the file appears at ``out`` only when
        every chunk and the root verified (a partial result is deleted)."""
        target = Path(out)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
        decryptor = AttachmentDecryptor(manifest)
        total = ciphertext_size(manifest.size)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as sink:
                buffer = bytearray()
                for block in self._ranges(manifest):
                    buffer += block
                    while len(buffer) > CT_CHUNK_SIZE:
                        sink.write(decryptor.update(bytes(buffer[:CT_CHUNK_SIZE])))
                        del buffer[:CT_CHUNK_SIZE]
                        if progress is not None:
                            progress(CT_CHUNK_SIZE, total)
                if buffer:
                    sink.write(decryptor.update(bytes(buffer)))
                    if progress is not None:
                        progress(len(buffer), total)
                decryptor.finalize()
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        return target

    def download_bytes(self, manifest: Manifest) -> bytes:
        """Small attachments (thumbnails) in memory, with the same checks."""
        decryptor = AttachmentDecryptor(manifest)
        out = bytearray()
        buffer = bytearray()
        for block in self._ranges(manifest):
            buffer += block
            while len(buffer) > CT_CHUNK_SIZE:
                out += decryptor.update(bytes(buffer[:CT_CHUNK_SIZE]))
                del buffer[:CT_CHUNK_SIZE]
        if buffer:
            out += decryptor.update(bytes(buffer))
        decryptor.finalize()
        return bytes(out)
