"""The case room socket: /ws/cases/<case_id>/?device=<device_id>.

Thin: each frame type has one handler that validates, calls one service, answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import re
import uuid
from typing import Any
from urllib.parse import parse_qs

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from django.conf import settings
from django.db import DatabaseError, connection

from collab.accounts import proofs
from collab.accounts.ws_auth import CLOSE_UNAVAILABLE
from collab.audit.services import RequestMeta
from collab.cases import access, admission_reads, selectors
from collab.cases.services import consults, history, messages, receipts
from collab.cases.services.messages import SendRequest
from collab.consumers import send_pipeline
from collab.consumers.base import AuthenticatedConsumer, FrameError, Refusal, frame_ref
from collab.crypto.envelope import Envelope
from collab.crypto.errors import CryptoError
from collab.crypto.wire import b64d, b64e
from collab.errors import Forbidden, ServiceError
from collab.realtime import LAYER, case_group, device_group, publish

CLOSE_NOT_MEMBER = 4403
CLOSE_NO_CASE = 4404
CLOSE_BAD_REQUEST = 4400
# A live message whose epoch the database could not check is asked about again this often
# (the session sweep closes the socket 4503 if the database stays away).
EPOCH_RETRY_SECONDS = 1.0
# More live messages than this held for a database that does not answer: close 4503 (the
# client resumes) rather than hold more.
HELD_MAX = 200
# A live frame is {"type":"message","seq":N,...,"envelope":{...,"sender_device_id":...,
# then the ciphertext}: the sender is found in this much of its text without parsing it.
_HEADER_SPAN = 1024
_SENDER_KEY = '"sender_device_id":"'
_FRAME_SEQ = re.compile(r'\{"type":"message","seq":(\d+),')

log = logging.getLogger("collab.realtime")


def _int(frame: dict[str, Any], name: str, low: int = 0, high: int = 2**62) -> int:
    value = frame.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise FrameError("bad_field", f"{name} must be an integer in {low}..{high}.")
    return value


class CaseRoomConsumer(AuthenticatedConsumer):
    # A person's actions; ``read`` (automatic receipts) and ``resume`` are not.
    activity_frames = frozenset({"send", "typing", "ack_urgent"})

    awaiting_proof = False
    # Device and roster checked (the room's groups joined, or waiting in missing_groups
    # for the channel layer to recover).
    admitted = False
    # The first hello went out (and the socket is registered for resync hellos).
    greeted = False
    # MESSAGES_DELIVERED was recorded (or is being) for this socket: once per socket.
    delivery_noted = False

    async def dispatch(self, message: dict[str, Any]) -> None:
        """AsyncConsumer.dispatch without its close_old_connections before every handler:
        that is a hop to the one thread-sensitive thread for each frame and each live
        message, queued behind whatever holds that thread (a batch being stored). Every
        database call here goes through database_sync_to_async, which closes stale
        connections itself, in the thread that uses them."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    def is_activity(self, frame: dict[str, Any]) -> bool:
        # typing {active: false} is sent when a draft is cleared or the page loses focus,
        # often without a person's action: only starting to type counts.
        if frame["type"] == "typing" and frame.get("active", True) is not True:
            return False
        return super().is_activity(frame)

    async def authorise(self) -> bool:
        self.held: list[dict[str, Any]] = []  # live messages waiting for the database
        try:
            self.case_id = uuid.UUID(str(self.scope["url_route"]["kwargs"]["case_id"]))
            query = parse_qs(self.scope.get("query_string", b"").decode())
            self.device_id = uuid.UUID(query.get("device", [""])[0])
        except ValueError:
            await self._refuse("bad_request", "Give the case id and ?device=<device id>.",
                               CLOSE_BAD_REQUEST)
            return False
        # Proof of possession: always once DEVICE_PROOF_REQUIRED is on; before that, for
        # clients that ask for it with ?proof=1 (older clients expect hello first).
        self.proving = settings.DEVICE_PROOF_REQUIRED or query.get("proof", [""])[0] == "1"
        if self.proving:
            return True  # accepted; the challenge goes out in on_open
        return await self._admit()

    async def _refuse(self, code: str, message: str, close_code: int) -> None:
        await self.accept()
        await self.send_error(code, message)
        await self.close(code=close_code)

    async def _admit(self, checked: bool = False, refusal: ServiceError | None = None) -> bool:
        """Membership and roster (access.room_admission), unless the proof's check
        already gave the verdict (``checked``); then join the room's groups."""
        if not checked:
            refusal = await database_sync_to_async(self._membership_verdict)()
        if refusal is not None:
            close = CLOSE_NO_CASE if refusal.code == "no_case" else CLOSE_NOT_MEMBER
            await self._refuse(refusal.code, refusal.message, close)
            return False
        self.admitted = True
        await self.join_groups([case_group(self.case_id), device_group(self.device_id)])
        return True

    def check_still_allowed(self) -> Refusal | None:
        # The doorbells that close a revoked or removed device's socket (device.revoked,
        # case.log) are lost while the channel layer is down: the session sweep asks too.
        refusal = super().check_still_allowed()
        if refusal is None and self.admitted:
            refusal = self._admission_refusal()
        return refusal

    @classmethod
    def sweep_refusals(
        cls, sockets: list[AuthenticatedConsumer]
    ) -> dict[AuthenticatedConsumer, Refusal]:
        """Device and roster for every admitted room socket, in one query; only a
        refused one is read again, to say why (_admission_refusal)."""
        rooms = [s for s in sockets if isinstance(s, CaseRoomConsumer) and s.admitted]
        answers = access.access_roster_devices(
            (s.user, s.case_id, s.device_id) for s in rooms
        )
        found: dict[AuthenticatedConsumer, Refusal] = {}
        for room in rooms:
            if isinstance(answers[(room.user.pk, room.case_id, room.device_id)], Forbidden):
                found[room] = room._admission_refusal() or room.removed_refusal()
        return found

    @staticmethod
    def removed_refusal() -> Refusal:
        return ("removed", "This device was removed from the case.", CLOSE_NOT_MEMBER)

    def _admission_refusal(self) -> Refusal | None:
        """None while the device is active and in the case's head roster."""
        try:
            access.access_roster_device(self.user, self.case_id, self.device_id)
        except ServiceError:
            try:
                access.access_device(self.user, self.device_id)
            except ServiceError:
                return ("device_revoked", "This device has been revoked.", CLOSE_NOT_MEMBER)
            return self.removed_refusal()
        return None

    async def still_admitted(self) -> bool:
        """Re-check device and roster now; close (4403, or 4503 without a database) and
        return False when the socket must not go on."""
        try:
            refusal = await database_sync_to_async(self._still_allowed)()
        except DatabaseError:
            await self.end("unavailable", "The server cannot check your device now; "
                           "reconnect later.", CLOSE_UNAVAILABLE)
            return False
        if refusal is not None:
            await self.end(*refusal)
            return False
        return True

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.awaiting_proof and not self.closing:
            await self._take_proof(text_data, bytes_data)
            return
        await super().receive(text_data, bytes_data)

    async def _prove_deadline(self) -> None:
        await asyncio.sleep(settings.WS_PROVE_TIMEOUT_SECONDS)
        if self.awaiting_proof:
            self.awaiting_proof = False
            await self._refuse("device_unproven", "Answer the challenge with prove.",
                               CLOSE_NOT_MEMBER)

    async def _take_proof(self, text_data: str | None, bytes_data: bytes | None) -> None:
        self.awaiting_proof = False
        self.prove_timer.cancel()
        try:
            frame = self.parse(text_data, bytes_data)
        except FrameError as error:
            close = error.close_code or CLOSE_NOT_MEMBER
            await self._refuse("device_unproven", error.message, close)
            return
        sig = frame.get("sig")
        if frame["type"] != "prove" or not isinstance(sig, str):
            await self._refuse("device_unproven", "The first frame must be prove {sig}.",
                               CLOSE_NOT_MEMBER)
            return
        try:
            verdict = await database_sync_to_async(self._check_proof)(b64d(sig, 64))
        except DatabaseError:
            await self._refuse("unavailable", "The server cannot reach its database now; "
                               "reconnect later.", CLOSE_UNAVAILABLE)
            return
        except (ServiceError, CryptoError) as error:
            code = error.code if isinstance(error, ServiceError) else "bad_device_proof"
            if code not in ("unknown_device", "device_revoked"):
                code = "bad_device_proof"
            await self._refuse(code, "The device proof was refused.", CLOSE_NOT_MEMBER)
            return
        try:
            if await self._admit(checked=True, refusal=verdict):
                await self._hello()
        except DatabaseError:
            await self._refuse("unavailable", "The server cannot reach its database now; "
                               "reconnect later.", CLOSE_UNAVAILABLE)

    def _check_proof(self, sig: bytes) -> ServiceError | None:
        """Verify the proof (a refused device raises), record the session as the
        device's, and return the admission verdict: device, case, roster and the
        session's record read at once (access.room_admission)."""
        admission = self._admission(self.session.session_key)
        refusal = admission.device_refusal()
        if refusal is not None:
            raise refusal
        assert admission.device is not None  # noqa: S101 - device_refusal checked it
        proofs.ws_proof_check(
            device=admission.device, challenge=self.challenge, case_id=self.case_id, sig=sig
        )
        proofs.session_device_proven(
            session_key=self.session.session_key, device_id=self.device_id,
            recorded=admission.session_proven,
        )
        if admission.session_proven is not True:
            # The record was just written: a revocation that committed after the read
            # found no session of this device to end, so read the verdict again.
            admission = self._admission(self.session.session_key)
            refusal = admission.device_refusal()
            if refusal is not None:
                raise refusal
        return self._verdict(admission)

    def _membership_verdict(self) -> ServiceError | None:
        """None when the socket may open, else the refusal (access.room_admission)."""
        return self._verdict(self._admission(None))

    def _admission(self, session_key: str | None) -> access.RoomAdmission:
        return access.room_admission(
            user=self.user, case_id=self.case_id, device_id=self.device_id,
            session_key=session_key,
        )

    def _verdict(self, admission: access.RoomAdmission) -> ServiceError | None:
        refusal = admission.refusal()
        if refusal is None:
            self.epochs = set(admission.epochs)
        return refusal

    async def on_open(self) -> None:
        if self.proving:
            self.challenge = proofs.ws_challenge()
            self.awaiting_proof = True
            await self.send_json({"type": "challenge", "nonce": b64e(self.challenge)})
            self.prove_timer = self.spawn(self._prove_deadline())
            return
        await self._hello()

    async def disconnect(self, code: int) -> None:
        LAYER.unregister(self)
        await super().disconnect(code)

    async def _hello(self, resync: bool = False) -> None:
        head = await database_sync_to_async(admission_reads.case_head)(self.case_id)
        hello = {"type": "hello", "case": str(self.case_id), **head}
        await self.send_json({**hello, "resync": True} if resync else hello)
        if not resync:
            self.greeted = True
            LAYER.register(self)

    async def layer_recovered(self) -> None:
        """The channel layer was down and works again: frames may have been missed,
        among them the ones that would have closed this socket. Groups it could not join
        when it opened are joined first; if that fails again, no hello (the layer is noted
        down, and the next recovery tries again)."""
        if self.closing or not await self.join_missing_groups():
            return
        if not self.greeted or not await self.still_admitted():
            return  # not yet proven: its first hello follows admission
        try:
            await self._hello(resync=True)
        except DatabaseError:
            await self.end("unavailable", "The server cannot reach its database now; "
                           "reconnect and resume.", CLOSE_UNAVAILABLE)

    # --- frames from the client -------------------------------------------------

    async def handle_send(self, frame: dict[str, Any]) -> None:
        try:
            envelope = Envelope.from_wire(frame.get("envelope") or {})
        except CryptoError as error:
            raise FrameError(error.code, error.message or "Malformed envelope.") from None
        urgent = frame.get("urgent", False)
        if not isinstance(urgent, bool):
            raise FrameError("bad_field", "urgent must be true or false.")
        request = SendRequest(
            user=self.user,
            device_id=self.device_id,
            case_id=self.case_id,
            envelope=envelope,
            meta=self.meta,
            urgent=urgent,
        )
        try:
            # Stored with the process's other waiting sends, in one transaction.
            ack = await send_pipeline.submit(request)
        except ServiceError as error:
            # Its fields too (e.g. head_epoch): clients act on fields, not on prose.
            raise FrameError(error.code, error.message, **error.extra) from None
        await self.send_json(
            {
                "type": "ack",
                "ref": frame_ref(frame),
                "seq": ack.seq,
                "epoch": ack.epoch,
                "client_msg_id": b64e(ack.client_msg_id),
                "duplicate": ack.duplicate,
            }
        )

    @functools.cached_property
    def meta(self) -> RequestMeta:
        """Where this socket came from (its handshake does not change)."""
        return RequestMeta.from_scope(self.scope)

    async def handle_resume(self, frame: dict[str, Any]) -> None:
        after = _int(frame, "after")
        limit = _int(frame, "limit", 1, settings.HISTORY_PAGE_MAX) if "limit" in frame else 100
        # History only for a device still in the roster (a lost doorbell must not leave
        # a removed device reading). A database error: error unavailable, socket open.
        answer = await database_sync_to_async(self._resume_page)(after, limit)
        if not isinstance(answer, selectors.HistoryPage):
            await self.end(*answer)
            return
        page = answer
        if self.closing:
            return
        # The items were serialised by the selector: the frame is assembled, not re-encoded.
        head = json.dumps({"type": "messages", "ref": frame_ref(frame), "after": after,
                           "more": page.more}, separators=(",", ":"))
        await self.send(text_data=head[:-1] + ',"items":' + page.items_json + "}")
        await self.check_outbound()
        # Audited once the frame is handed to the server, so a page that never left
        # (the socket closed first) is not recorded as read.
        if page.seqs:
            await database_sync_to_async(history.history_read_record)(
                user=self.user,
                device_id=self.device_id,
                case_id=self.case_id,
                page=page,
                meta=self.meta,
            )

    def _resume_page(self, after: int, limit: int) -> Refusal | selectors.HistoryPage:
        """The roster re-check and the page in one trip to the database thread."""
        refusal = self._still_allowed()
        if refusal is not None:
            return refusal
        return selectors.history_page(
            case_id=self.case_id,
            device_id=self.device_id,
            after=after,
            limit=limit,
            max_bytes=settings.HISTORY_PAGE_MAX_BYTES,
        )

    async def handle_typing(self, frame: dict[str, Any]) -> None:
        active = frame.get("active", True)
        if not isinstance(active, bool):
            raise FrameError("bad_field", "active must be true or false.")
        await publish(
            case_group(self.case_id),
            {
                "type": "case.typing",
                "user": str(self.user.pk),
                "device": str(self.device_id),
                "active": active,
            },
        )

    async def handle_read(self, frame: dict[str, Any]) -> None:
        up_to = _int(frame, "up_to")
        try:
            await database_sync_to_async(messages.read_mark_set)(
                user=self.user, case_id=self.case_id, up_to=up_to
            )
        except ServiceError as error:
            raise FrameError(error.code, error.message) from None

    async def handle_delivered(self, frame: dict[str, Any]) -> None:
        """Delivered-up-to (services.receipts): no answer; a bad up_to is an error."""
        up_to = _int(frame, "up_to")
        try:
            await database_sync_to_async(receipts.delivered_mark_set)(
                user=self.user, case_id=self.case_id, up_to=up_to
            )
        except ServiceError as error:
            raise FrameError(error.code, error.message, **error.extra) from None

    async def handle_ack_urgent(self, frame: dict[str, Any]) -> None:
        seq = _int(frame, "seq", 1)
        try:
            result = await database_sync_to_async(consults.urgent_ack)(
                user=self.user,
                case_id=self.case_id,
                seq=seq,
                device_id=self.device_id,
                meta=self.meta,
            )
        except ServiceError as error:
            raise FrameError(error.code, error.message) from None
        await self.send_json(
            {
                "type": "urgent_ack",
                "ref": frame_ref(frame),
                "seq": result.seq,
                "user": str(result.user_id),
                "at": result.at.isoformat(),
                "duplicate": result.duplicate,
            }
        )

    # --- events from the channel layer ------------------------------------------

    async def case_message(self, event: dict[str, Any]) -> None:
        """One live message: the event processes of an earlier release publish per send,
        still heard during a rolling upgrade (this release sends case.messages)."""
        message = event["message"]
        text = json.dumps({"type": "message", **message}, separators=(",", ":"))
        await self._relay([(message["envelope"]["epoch"], text)])

    async def case_messages(self, event: dict[str, Any]) -> None:
        """The messages of one stored batch, in seq order, each already serialised."""
        await self._relay([(epoch, text) for epoch, text in event["frames"]])

    async def _relay(self, frames: list[tuple[int, str]]) -> None:
        """Send the frames this device can read, in order; none overtakes a held one."""
        for index, (epoch, text) in enumerate(frames):
            if self.closing:
                return
            if self.held:  # the database is away: queue behind the held ones
                await self._hold(frames[index:])
                break
            try:
                readable = await self._readable(epoch)
            except DatabaseError as error:
                # Not a reason to close the socket (1011): hold it and ask again until
                # the database answers. The client orders by seq and fills gaps with resume.
                log.warning("live message held, database unavailable: %r", error)
                await self._hold(frames[index:])
                self.spawn(self._deliver_held())
                break
            if readable:
                await self.send(text_data=text)  # serialised once for every socket
                if not self.delivery_noted:
                    self._note_delivery(text)
                await self.check_outbound()  # per frame: a batch may hold many long ones

    def _note_delivery(self, text: str) -> None:
        """The first live message from another device that went out on this socket is
        audited (history.messages_delivered_record), by a task of its own: the relay
        never waits for the audit chain. This device's own messages echoed back are not
        deliveries."""
        seq = self._delivered_seq(text)
        if seq is None:
            return
        self.delivery_noted = True
        self.spawn(self._record_delivery(seq))

    def _delivered_seq(self, text: str) -> int | None:
        """The seq of a live frame from another device; None for this device's own."""
        head = text[:_HEADER_SPAN]
        found = _FRAME_SEQ.match(head)
        if found is not None and _SENDER_KEY in head:
            return None if self._own_sender in head else int(found.group(1))
        try:  # another layout (spaced, or an older release's): read it properly
            frame = json.loads(text)
            sender, seq = frame["envelope"].get("sender_device_id"), frame["seq"]
            seq = seq if isinstance(seq, int) and not isinstance(seq, bool) else None
        except (ValueError, TypeError, KeyError, AttributeError):
            return None  # not a message frame this rule can name
        return None if sender == str(self.device_id) else seq

    @functools.cached_property
    def _own_sender(self) -> str:
        return f'{_SENDER_KEY}{self.device_id}"'

    async def _record_delivery(self, seq: int) -> None:
        try:
            await database_sync_to_async(history.messages_delivered_record)(
                user=self.user,
                device_id=self.device_id,
                case_id=self.case_id,
                first_seq=seq,
                meta=self.meta,
            )
        except DatabaseError as error:
            log.warning("delivery not audited, database unavailable: %r", error)
            self.delivery_noted = False  # the next delivery on this socket tries again

    async def _hold(self, frames: list[tuple[int, str]]) -> None:
        for epoch, text in frames:
            if self.closing:
                return
            if len(self.held) >= HELD_MAX:
                self.held.clear()
                await self.end("unavailable", "The server cannot reach its database now; "
                               "reconnect and resume.", CLOSE_UNAVAILABLE)
                return
            self.held.append({"epoch": epoch, "text": text})

    async def _readable(self, epoch: int) -> bool:
        if epoch not in self.epochs:
            # A key this device may have gained since connecting: ask the database.
            self.epochs = set(await database_sync_to_async(self._readable_epochs)())
        return epoch in self.epochs

    def _readable_epochs(self) -> list[int]:
        try:
            return list(selectors.readable_epochs(case_id=self.case_id, device_id=self.device_id))
        except DatabaseError:
            with contextlib.suppress(Exception):
                connection.close()  # not reused broken by the next attempt
            raise

    async def _deliver_held(self) -> None:
        """One retry loop for all held messages ({epoch, text}), in the order they came."""
        try:
            while self.held and not self.closing:
                await asyncio.sleep(EPOCH_RETRY_SECONDS)
                with contextlib.suppress(DatabaseError):
                    while self.held and not self.closing:
                        held = self.held[0]
                        if await self._readable(held["epoch"]):
                            await self.send(text_data=held["text"])
                            if not self.delivery_noted:
                                self._note_delivery(held["text"])
                            await self.check_outbound()
                        self.held.pop(0)
        finally:
            self.held.clear()  # however this ends, later messages are not queued forever

    async def case_log(self, event: dict[str, Any]) -> None:
        if str(self.device_id) not in event["devices"]:
            await self.end("removed", "This device was removed from the case.", CLOSE_NOT_MEMBER)
            return
        self.epochs.add(event["epoch"])
        await self.send_json(
            {
                "type": "log",
                "epoch": event["epoch"],
                "hash": event["hash"],
                "action": event["action"],
            }
        )

    async def case_typing(self, event: dict[str, Any]) -> None:
        if event["device"] != str(self.device_id):
            await self.send_json(
                {"type": "typing", "user": event["user"], "active": event["active"]}
            )

    async def case_read(self, event: dict[str, Any]) -> None:
        await self.send_json({"type": "read", "user": event["user"], "up_to": event["up_to"]})

    async def case_delivered(self, event: dict[str, Any]) -> None:
        await self.send_json(
            {"type": "delivered", "user": event["user"], "up_to": event["up_to"],
             "at": event["at"]}
        )

    async def case_join_request(self, event: dict[str, Any]) -> None:
        await self.send_json({"type": "join_request", "user": event["user"], "kind": event["kind"]})

    async def case_join_resolved(self, event: dict[str, Any]) -> None:
        await self.send_json(
            {
                "type": "join_resolved",
                "user": event["user"],
                "kind": event["kind"],
                "status": event["status"],
            }
        )

    async def case_status(self, event: dict[str, Any]) -> None:
        await self.send_json(
            {
                "type": "status",
                "status": event["status"],
                "from": event["from"],
                "by": event["by"],
                "at": event["at"],
            }
        )

    async def case_urgent_ack(self, event: dict[str, Any]) -> None:
        if event.get("device") != str(self.device_id):  # the acknowledging socket was answered
            await self.send_json(
                {
                    "type": "urgent_ack",
                    "seq": event["seq"],
                    "user": event["user"],
                    "at": event["at"],
                }
            )

    async def case_urgent_reminder(self, event: dict[str, Any]) -> None:
        await self.send_json(
            {
                "type": "urgent_reminder",
                "seq": event["seq"],
                "reminder": event["reminder"],
                "pending": event["pending"],
                "at": event["at"],
            }
        )

    async def case_urgent_escalated(self, event: dict[str, Any]) -> None:
        await self.send_json(
            {
                "type": "urgent_escalated",
                "seq": event["seq"],
                "to": event["to"],
                "via": event["via"],
                "member": event["member"],
                "at": event["at"],
            }
        )

    async def case_recalled(self, event: dict[str, Any]) -> None:
        """A message was recalled (services/recall.py): ids, time and the signed
        statement only; clients verify it before hiding the message."""
        await self.send_json({key: value for key, value in event.items() if key != "type"}
                             | {"type": "recalled"})

    async def case_leave_request(self, event: dict[str, Any]) -> None:
        await self.send_json({"type": "leave_request", "user": event["user"]})

    async def device_revoked(self, event: dict[str, Any]) -> None:
        await self.end("device_revoked", "This device has been revoked.", CLOSE_NOT_MEMBER)
