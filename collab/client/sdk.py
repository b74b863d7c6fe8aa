"""The collab client: sign-in, keys, cases, membership, messages and images over CR1.

Everything received is verified before it is decrypted and fails closed: a log entry
that does not verify, a message whose signature, hash or inner fields do not match, an
attachment chunk out of place all raise ``CryptoError`` (stable ``.code``) to the caller;
nothing is dropped silently or shown unverified. Server refusals raise ``ServerRefusedError``,
authentication problems ``AuthError`` (see collab.client.errors).

Blocking calls use HTTP; sending and watching use the case socket (async).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collab.client.case_state import CaseState
from collab.client.errors import AuthError, ClientError, ServerRefusedError, UsageError
from collab.client.http import ApiError, HttpSession
from collab.client.images import sanitise_image
from collab.client.keys import (
    DeviceKeys,
    Identity,
    format_recovery_key,
    new_recovery_key,
    open_identity_backup,
    parse_recovery_key,
    seal_identity_backup,
)
from collab.client.keystore import CaseMemo, Keystore, KeystoreState
from collab.client.room import ConnectionLostError, Room
from collab.crypto import primitives as prim
from collab.crypto.actions import AddDeviceBody, AddUserBody, Body, RemoveUserBody
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
from collab.crypto.log import LogEntry
from collab.crypto.roster import Role
from collab.crypto.safety import safety_number
from collab.crypto.wire import b64d, b64e

LOG_PAGE = 500
HISTORY_PAGE = 100
RESUME_PAGE = 50
PART_CHUNKS = 16
COMMIT_ATTEMPTS = 5
Progress = Callable[[int, int], None]  # (bytes just done, total bytes)


@dataclass(frozen=True)
class Received:
    """A message that passed every check and decrypted."""

    seq: int
    header: Header
    body: dict[str, Any]
    attachments: tuple[Manifest, ...]
    gap: Gap | None  # this sender's messages that never arrived (sender_seq range)

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

    def image(self, thumbnail: bool = False) -> Manifest | None:
        info = self.body.get("image")
        if not isinstance(info, dict):
            return None
        index = info.get("thumbnail" if thumbnail else "full")
        if isinstance(index, bool) or not isinstance(index, int):
            return None
        return self.attachments[index] if 0 <= index < len(self.attachments) else None


@dataclass(frozen=True)
class Sent:
    seq: int
    epoch: int
    duplicate: bool
    client_msg_id: bytes


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
        self.rooms: dict[uuid.UUID, Room] = {}

    def _new_http(self) -> HttpSession:
        device = self.state.device
        http = HttpSession(self.state.server, str(device.device_id) if device else None)
        if self.state.session:
            http.use_session(self.state.session, self.state.session_cookie)
        return http

    def save(self) -> None:
        if self.store is not None:
            self.store.save()

    # --- plumbing -------------------------------------------------------------------
    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            return self.http.json(method, path, body).body
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

    def init(self, device_name: str = "collab-client") -> str:
        """First device of a user: identity key, its backup, this device. Returns the
        recovery key (shown to the user once; the server never sees it)."""
        if self.state.device is not None:
            raise UsageError("this keystore already has a device", code="device_exists")
        try:
            self.call("GET", "/api/identity")
        except ServerRefusedError as refused:
            if refused.code != "no_identity":
                raise
        else:
            raise UsageError("this account already has an identity key: use "
                             "`collab-client recover` with your recovery key", code="has_identity")
        seed = prim.random_bytes(32)
        answer = self.call("POST", "/api/identity", {"uik_pub": b64e(prim.ed25519_public(seed))})
        identity = Identity(uuid.UUID(answer["user_id"]), seed)
        self.state.user_id, self.state.identity = identity.user_id, identity
        self.save()
        recovery = new_recovery_key()
        self.call("PUT", "/api/identity/backup",
                  {"ciphertext": b64e(seal_identity_backup(identity, recovery))})
        self._register_device(identity, device_name)
        self.save()
        return format_recovery_key(recovery)

    def recover(self, recovery_key: str, device_name: str = "collab-client") -> None:
        """A new device: open the identity backup with the recovery key, certify, register."""
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

    def devices(self) -> list[dict[str, Any]]:
        devices: list[dict[str, Any]] = self.call("GET", "/api/devices")["devices"]
        return devices

    def revoke_device(self, device_id: uuid.UUID) -> None:
        self.call("POST", f"/api/devices/{device_id}/revoke", {})

    def user_keys(self, user_id: uuid.UUID) -> tuple[bytes, tuple[DeviceCert, ...]]:
        """A user's UIK and active devices; every certificate must chain to the UIK."""
        keys = self.call("GET", f"/api/users/{user_id}/keys")
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

    def safety_number(self, user_id: uuid.UUID, case_id: uuid.UUID | None = None) -> list[str]:
        """12 groups of 5 digits to compare in person. With a case, the other user's UIK
        is the one in the case's verified roster; otherwise the one the server lists."""
        theirs: bytes | None = None
        if case_id is not None:
            member = self.sync(case_id).head.roster.user(user_id)
            if member is None:
                raise UsageError(f"user {user_id} is not in case {case_id}", code="not_member")
            theirs = member.uik_pub
        if theirs is None:
            theirs = self.user_keys(user_id)[0]
        return safety_number(self.user_id, self.identity.uik_pub, user_id, theirs)

    # --- cases and the membership log ---------------------------------------------------
    def list_cases(self) -> list[dict[str, Any]]:
        cases: list[dict[str, Any]] = self.call("GET", "/api/cases")["cases"]
        return cases

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
        while True:
            after = state.head.epoch if state.chain else -1
            page = self.call("GET", f"/api/cases/{case_id}/log?after={after}")["entries"]
            entries = [LogEntry.decode(b64d(item["entry"])) for item in page]
            state.accept_entries(entries)
            if len(entries) < LOG_PAGE:
                break
        if not state.chain:
            raise CryptoError("truncated", "the server sent no log for this case")
        memo = self._memo(case_id)
        if memo.head_epoch > state.head.epoch:
            raise CryptoError("stale_head", f"the server rolled the log back from epoch "
                                            f"{memo.head_epoch} to {state.head.epoch}")
        if memo.head_epoch >= 0 and state.chain[memo.head_epoch].entry_hash() != memo.head_hash:
            raise CryptoError("fork", f"the log differs at epoch {memo.head_epoch} from the one "
                                      "this client verified before")
        state.sender_seq = max(state.sender_seq, memo.sender_seq)
        self.cases[case_id] = state
        if (memo.head_epoch, memo.head_hash) != (state.head.epoch, state.head.entry_hash()):
            self._remember(state)
        return state

    def _commit(self, case_id: uuid.UUID, make: Callable[[CaseState], Body]) -> LogEntry:
        """Build, sign and submit the next entry; on a lost race re-sync and rebuild."""
        for _ in range(COMMIT_ATTEMPTS):
            state = self.sync(case_id)
            entry = state.next_entry(make(state))
            try:
                self.call("POST", f"/api/cases/{case_id}/log", {"entry": b64e(entry.encode())})
            except ServerRefusedError as refused:
                if refused.status == 409 and refused.code == "stale_head":
                    continue
                raise
            state.accept_entries([entry])
            self._remember(state)
            return entry
        raise ServerRefusedError("the log kept moving; try again", code="stale_head", status=409)

    def add_member(self, case_id: uuid.UUID, user_id: uuid.UUID,
                   role: Role = Role.MEMBER) -> LogEntry:
        uik, devices = self.user_keys(user_id)

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

    def commit_join_requests(self, case_id: uuid.UUID) -> list[uuid.UUID]:
        """Turn pending join requests (claims, invitations) into signed add_user entries."""
        added: list[uuid.UUID] = []
        for request in self.case_detail(case_id).get("join_requests", []):
            user_id = uuid.UUID(request["user"])
            if self.sync(case_id).head.roster.user(user_id) is None:
                self.add_member(case_id, user_id)
                added.append(user_id)
        return added

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
        try:
            manifests = tuple(Manifest.from_wire(m) for m in opened.body.get("attachments", []))
        except (CryptoError, TypeError, AttributeError) as error:
            raise CryptoError("bad_body", f"bad attachment manifest: {error}") from None
        received = Received(seq, opened.header, opened.body, manifests, opened.gap)
        seen[seq] = (fingerprint, received)
        memo = self._memo(case_id)
        memo.last_seq = max(memo.last_seq, seq)
        return received, True

    def history(self, case_id: uuid.UUID, after: int = 0,
                limit: int | None = None) -> list[Received]:
        """Stored messages after ``after``, every one verified and decrypted."""
        self.sync(case_id)
        out: list[Received] = []
        while limit is None or len(out) < limit:
            page = self.call("GET", f"/api/cases/{case_id}/messages?after={after}"
                                    f"&limit={HISTORY_PAGE}")
            for item in page["messages"]:
                after = max(after, int(item["seq"]))
                out.append(self.open_item(case_id, item))
            if not page.get("more"):
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
        return self.open_item(case_id, items[0])

    # --- the socket -----------------------------------------------------------------------
    async def connect(self, case_id: uuid.UUID) -> Room:
        room = await Room.connect(
            base_url=self.state.server, origin=self.http.origin,
            cookie=self.http.cookie_header(), case_id=case_id, device_id=self.device.device_id,
        )
        self.rooms[case_id] = room
        return room

    async def _send_envelope(
        self, case_id: uuid.UUID, body: dict[str, Any], content_type: str,
        attachments: Sequence[AttachmentRef], room: Room | None,
    ) -> Sent:
        own = room is None
        if room is None:
            room = await self.connect(case_id)
        try:
            for _ in range(3):
                state = await asyncio.to_thread(self.sync, case_id)
                envelope = state.seal(body, content_type=content_type, attachments=attachments)
                try:
                    ack = await room.send_envelope(envelope)
                except ServerRefusedError as refused:
                    state.sender_seq = envelope.header.sender_seq - 1  # nothing was stored
                    if refused.code in ("wrong_epoch", "stale_log_head"):
                        continue  # the log moved: re-sync and seal in the new epoch
                    if refused.code == "sender_seq_not_increasing":
                        # Another run of this device sent more than the keystore remembers.
                        found = re.search(r"(\d+)", str(refused.body.get("message", "")))
                        if found:
                            state.sender_seq = int(found.group(1))
                            continue
                    raise
                memo = self._memo(case_id)
                memo.sender_seq = max(memo.sender_seq, state.sender_seq)
                await asyncio.to_thread(self.save)
                return Sent(int(ack["seq"]), int(ack["epoch"]), bool(ack["duplicate"]),
                            envelope.header.client_msg_id)
            raise ServerRefusedError("the case kept changing epochs; try again", code="wrong_epoch")
        finally:
            if own:
                await room.close()
                self.rooms.pop(case_id, None)

    async def send_text(self, case_id: uuid.UUID, text: str, *, room: Room | None = None,
                        priority: str | None = None) -> Sent:
        if not text:
            raise UsageError("the message is empty", code="empty_message")
        body: dict[str, Any] = {"text": text}
        if priority:
            body["priority"] = priority
        return await self._send_envelope(case_id, body, "text", (), room)

    async def send_image(
        self, case_id: uuid.UUID, path: Path | str, *, caption: str = "",
        room: Room | None = None, progress: Progress | None = None,
    ) -> Sent:
        """Sanitise (orientation applied, metadata stripped), encrypt and upload the image
        and its thumbnail as two blobs, then send the message that carries both manifests."""
        try:
            data = Path(path).read_bytes()
        except OSError as error:
            raise UsageError(f"cannot read {path}: {error.strerror}", code="no_file") from None
        image = sanitise_image(data)
        await asyncio.to_thread(self.sync, case_id)
        full = await asyncio.to_thread(self.upload, case_id, image.full.data, image.full.mime,
                                       image.full.width, image.full.height, progress)
        thumb = await asyncio.to_thread(
            self.upload, case_id, image.thumbnail.data, image.thumbnail.mime,
            image.thumbnail.width, image.thumbnail.height, None,
        )
        body = {"text": caption, "attachments": [full.to_wire(), thumb.to_wire()],
                "image": {"full": 0, "thumbnail": 1}}
        refs = [AttachmentRef(full.blob_id, full.root), AttachmentRef(thumb.blob_id, thumb.root)]
        return await self._send_envelope(case_id, body, "image", refs, room)

    async def watch(
        self, case_id: uuid.UUID, after: int | None = None, *, reconnect: bool = True,
        on_notice: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> AsyncGenerator[Received, None]:
        """Every message after ``after`` (default: the last one this keystore saw), then
        live ones; after a dropped connection it reconnects and resumes from the last
        server sequence number, so nothing is lost or shown twice."""
        last = self._memo(case_id).last_seq if after is None else after
        notice = on_notice or (lambda kind, detail: None)
        backoff = 0.2
        while True:
            try:
                room = await self.connect(case_id)
            except ConnectionLostError:
                if not reconnect:
                    raise
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10)
                continue
            try:
                await asyncio.to_thread(self.sync, case_id)
                async for received in self._catch_up(room, case_id, last):
                    last = max(last, received.seq)
                    yield received
                backoff = 0.2
                while True:
                    frame = await room.next_event()
                    kind = frame.get("type")
                    if kind == "message":
                        seq = frame.get("seq")
                        if not isinstance(seq, int) or seq <= last:
                            continue  # already delivered (by the resume page)
                        if seq > last + 1:
                            # A gap in the case sequence: fetch what lies before this one.
                            async for received in self._catch_up(room, case_id, last):
                                last = max(last, received.seq)
                                yield received
                            if seq <= last:
                                continue
                        received_now, new = await asyncio.to_thread(self._open, case_id, frame)
                        last = max(last, seq)
                        if new:
                            yield received_now
                    elif kind == "log":
                        await asyncio.to_thread(self.sync, case_id)
                        notice("log", frame)
                    elif kind in ("join_request", "typing", "read"):
                        notice(str(kind), frame)
            except ConnectionLostError:
                if not reconnect:
                    raise
                notice("reconnecting", {"after": last})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10)
            finally:
                self.rooms.pop(case_id, None)
                with contextlib.suppress(Exception):
                    await room.close()
                await asyncio.to_thread(self.save)

    async def _catch_up(self, room: Room, case_id: uuid.UUID,
                        after: int) -> AsyncIterator[Received]:
        while True:
            page = await room.resume(after, RESUME_PAGE)
            for item in page.get("items", []):
                after = max(after, int(item["seq"]))
                received, new = await asyncio.to_thread(self._open, case_id, item)
                if new:
                    yield received
            if not page.get("more"):
                return

    # --- attachments ------------------------------------------------------------------------
    def upload(self, case_id: uuid.UUID, data: bytes, mime: str, width: int = 0,
               height: int = 0, progress: Progress | None = None) -> Manifest:
        """Encrypt in 64 KiB chunks and upload in parts of up to 16 chunks."""
        size = ciphertext_size(len(data))
        blob_id = uuid.UUID(self.call("POST", f"/api/cases/{case_id}/blobs",
                                      {"size": size})["blob_id"])
        encryptor = AttachmentEncryptor()
        part = bytearray()
        offset = 0

        def flush() -> None:
            nonlocal offset
            try:
                self.http.put_bytes(f"/api/blobs/{blob_id}/parts/{offset}", bytes(part))
            except ApiError as error:
                raise _refusal(error) from None
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
        self.call("POST", f"/api/blobs/{blob_id}/complete", {"root": b64e(manifest.root)})
        return manifest

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
