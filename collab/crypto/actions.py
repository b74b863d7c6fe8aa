"""Membership-log actions: canonical bodies, the authorisation table and the
pure roster transition `apply_action` that every verifier recomputes.

Bodies (all fields canonical, see docs/protocol-crypto.md):
    create        uik_pub(32) || u32 n || device*n          (author's own devices)
    add_user      user_id || role u8 || uik_pub(32) || u32 n || device*n
    remove_user   user_id || u8 has_leave || [device_id || epoch u64 || sig(64)]
    add_device    device
    remove_device user_id || device_id
    rotate        (empty)
    set_role      user_id || role u8
    share_history hepk(32) || u32 n || (device_id || epoch u64 || var(box))*n
    enrol_device  device || uik_sig(64)     (authored by that new device itself)
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass

from . import primitives as prim
from .devcert import DeviceCert
from .encoding import Reader, fixed, pack_list, u8, u64, uuid_bytes, var
from .errors import CryptoError
from .roster import Role, Roster, RosterUser, parse_role

LEAVE_TAG = b"CR1/leave\x00"
HISTORY_TAG = b"CR1/history\x00"
ENROL_TAG = b"CR1/enrol\x00"
# box(HISTORY_TAG || case_id || epoch u64 || device_id || K) = MAC + 84 bytes
HISTORY_CT_LEN = 16 + len(HISTORY_TAG) + 16 + 8 + 16 + 32
MAX_BODY = 1 << 20
MAX_BODY_ITEMS = 8192


class Action(enum.IntEnum):
    CREATE = 1
    ADD_USER = 2
    REMOVE_USER = 3
    ADD_DEVICE = 4
    REMOVE_DEVICE = 5
    ROTATE = 6
    SET_ROLE = 7
    SHARE_HISTORY = 8
    ENROL_DEVICE = 9


def parse_action(value: int) -> Action:
    try:
        return Action(value)
    except ValueError as exc:
        raise CryptoError("bad_action", f"unknown action {value}") from exc


@dataclass(frozen=True)
class CreateBody:
    uik_pub: bytes
    devices: tuple[DeviceCert, ...]

    def encode(self) -> bytes:
        return fixed(self.uik_pub, 32, "uik_pub") + pack_list(self.devices, DeviceCert.encode)


@dataclass(frozen=True)
class AddUserBody:
    user_id: uuid.UUID
    role: Role
    uik_pub: bytes
    devices: tuple[DeviceCert, ...]

    def encode(self) -> bytes:
        return (
            uuid_bytes(self.user_id)
            + u8(self.role)
            + fixed(self.uik_pub, 32, "uik_pub")
            + pack_list(self.devices, DeviceCert.encode)
        )


@dataclass(frozen=True)
class LeaveRequest:
    """Signed by one of the leaving user's devices; any remaining member may
    commit it, so the leaver never authors the entry that removes them."""

    device_id: uuid.UUID
    epoch: int  # log head epoch the leaver saw
    signature: bytes


def leave_bytes(case_id: uuid.UUID, user_id: uuid.UUID, device_id: uuid.UUID, epoch: int) -> bytes:
    return (
        LEAVE_TAG + uuid_bytes(case_id) + uuid_bytes(user_id) + uuid_bytes(device_id) + u64(epoch)
    )


def sign_leave(
    dsk_seed: bytes, case_id: uuid.UUID, user_id: uuid.UUID, device_id: uuid.UUID, epoch: int
) -> LeaveRequest:
    return LeaveRequest(
        device_id, epoch, prim.sign(dsk_seed, leave_bytes(case_id, user_id, device_id, epoch))
    )


@dataclass(frozen=True)
class RemoveUserBody:
    user_id: uuid.UUID
    leave: LeaveRequest | None = None

    def encode(self) -> bytes:
        out = uuid_bytes(self.user_id)
        if self.leave is None:
            return out + u8(0)
        lv = self.leave
        return (
            out
            + u8(1)
            + uuid_bytes(lv.device_id)
            + u64(lv.epoch)
            + fixed(lv.signature, 64, "leave sig")
        )


@dataclass(frozen=True)
class AddDeviceBody:
    device: DeviceCert

    def encode(self) -> bytes:
        return self.device.encode()


def enrol_bytes(
    case_id: uuid.UUID, epoch: int, prev_hash: bytes, device: DeviceCert
) -> bytes:
    """What a user's identity key signs to let its own new device join one case at one
    position of its log (so the signature cannot be replayed elsewhere)."""
    return (
        ENROL_TAG + uuid_bytes(case_id) + u64(epoch) + fixed(prev_hash, 64, "prev_hash")
        + device.encode()
    )


@dataclass(frozen=True)
class EnrolDeviceBody:
    """A user's identity key (UIK) admits that user's own newly certified device; the new
    device authors the entry, so no other device of the user needs to be online."""

    device: DeviceCert
    uik_sig: bytes

    def encode(self) -> bytes:
        return self.device.encode() + fixed(self.uik_sig, 64, "uik_sig")


def sign_enrol(
    uik_seed: bytes, case_id: uuid.UUID, epoch: int, prev_hash: bytes, device: DeviceCert
) -> EnrolDeviceBody:
    """The body for entry ``epoch`` (the head's epoch + 1) over ``prev_hash`` (the head)."""
    return EnrolDeviceBody(device, prim.sign(uik_seed, enrol_bytes(case_id, epoch, prev_hash,
                                                                   device)))


@dataclass(frozen=True)
class RemoveDeviceBody:
    user_id: uuid.UUID
    device_id: uuid.UUID

    def encode(self) -> bytes:
        return uuid_bytes(self.user_id) + uuid_bytes(self.device_id)


@dataclass(frozen=True)
class RotateBody:
    def encode(self) -> bytes:
        return b""


@dataclass(frozen=True)
class SetRoleBody:
    user_id: uuid.UUID
    role: Role

    def encode(self) -> bytes:
        return uuid_bytes(self.user_id) + u8(self.role)


@dataclass(frozen=True)
class HistoryWrap:
    device_id: uuid.UUID
    epoch: int  # the earlier epoch whose key is re-wrapped
    ciphertext: bytes


@dataclass(frozen=True)
class ShareHistoryBody:
    hepk: bytes  # fresh ephemeral X25519 public key for these wraps
    items: tuple[HistoryWrap, ...]  # sorted by device_id bytes, then epoch

    def encode(self) -> bytes:
        return fixed(self.hepk, 32, "hepk") + pack_list(
            self.items, lambda w: uuid_bytes(w.device_id) + u64(w.epoch) + var(w.ciphertext)
        )


Body = (
    CreateBody
    | AddUserBody
    | RemoveUserBody
    | AddDeviceBody
    | RemoveDeviceBody
    | RotateBody
    | SetRoleBody
    | ShareHistoryBody
    | EnrolDeviceBody
)


def _read_body(action: Action, r: Reader) -> Body:
    if action == Action.CREATE:
        return CreateBody(r.take(32), tuple(r.list(DeviceCert.read, MAX_BODY_ITEMS)))
    if action == Action.ADD_USER:
        uid, role, uik = r.uuid(), parse_role(r.u8()), r.take(32)
        return AddUserBody(uid, role, uik, tuple(r.list(DeviceCert.read, MAX_BODY_ITEMS)))
    if action == Action.REMOVE_USER:
        uid, flag = r.uuid(), r.u8()
        if flag == 0:
            return RemoveUserBody(uid)
        if flag != 1:
            raise CryptoError("bad_action", "has_leave must be 0 or 1")
        return RemoveUserBody(uid, LeaveRequest(r.uuid(), r.u64(), r.take(64)))
    if action == Action.ADD_DEVICE:
        return AddDeviceBody(DeviceCert.read(r))
    if action == Action.REMOVE_DEVICE:
        return RemoveDeviceBody(r.uuid(), r.uuid())
    if action == Action.ROTATE:
        return RotateBody()
    if action == Action.SET_ROLE:
        return SetRoleBody(r.uuid(), parse_role(r.u8()))
    if action == Action.ENROL_DEVICE:
        return EnrolDeviceBody(DeviceCert.read(r), r.take(64))
    hepk = r.take(32)
    items = r.list(lambda rr: HistoryWrap(rr.uuid(), rr.u64(), rr.var(1024)), MAX_BODY_ITEMS)
    return ShareHistoryBody(hepk, tuple(items))


def parse_body(action: Action, data: bytes) -> Body:
    """Exact parse; the body must re-encode to the same bytes."""
    if len(data) > MAX_BODY:
        raise CryptoError("too_large", "action body too large")
    r = Reader(data)
    try:
        body = _read_body(action, r)
        r.done()
    except CryptoError as exc:
        raise CryptoError(
            "bad_action", f"malformed {action.name.lower()} body: {exc.code}"
        ) from exc
    if body.encode() != data:
        raise CryptoError("bad_action", "non-canonical action body")
    return body


# --- authorisation -----------------------------------------------------------

_MANAGERS = (Role.OWNER, Role.ADMIN)


def _deny(why: str) -> CryptoError:
    return CryptoError("unauthorized_author", why)


def authorize(
    prev: Roster | None,
    *,
    case_id: uuid.UUID,
    prev_epoch: int,
    author_user_id: uuid.UUID,
    action: Action,
    body: Body,
    prev_hash: bytes = b"",
) -> None:
    """The authorisation table (docs/protocol-crypto.md) against the PREVIOUS roster."""
    if prev is None:
        if action != Action.CREATE:
            raise CryptoError("bad_action", "the genesis entry must be create")
        return
    author = prev.user(author_user_id)
    if author is None:
        raise _deny("author is not in the previous roster")
    role = author.role
    if isinstance(body, CreateBody):
        raise CryptoError("bad_action", "create is only valid at genesis")
    if isinstance(body, AddUserBody):
        if role not in _MANAGERS:
            raise _deny("only an owner or admin adds users")
        if body.role == Role.OWNER and role != Role.OWNER:
            raise _deny("only an owner adds an owner")
    elif isinstance(body, RemoveUserBody):
        target = prev.user(body.user_id)
        if body.leave is not None:
            _check_leave(prev, case_id, prev_epoch, body.user_id, body.leave)
        elif role not in _MANAGERS:
            raise _deny("only an owner or admin removes users (others may commit a signed leave)")
        elif target is not None and target.role == Role.OWNER and role != Role.OWNER:
            raise _deny("only an owner removes an owner")
    elif isinstance(body, AddDeviceBody):
        if body.device.user_id != author_user_id:
            raise _deny("a user adds only their own devices")
    elif isinstance(body, RemoveDeviceBody):
        if body.user_id != author_user_id:
            target = prev.user(body.user_id)
            if role not in _MANAGERS:
                raise _deny("a user removes only their own devices")
            if target is not None and target.role == Role.OWNER and role != Role.OWNER:
                raise _deny("only an owner revokes an owner's device")
    elif isinstance(body, SetRoleBody):
        target = prev.user(body.user_id)
        if role not in _MANAGERS:
            raise _deny("only an owner or admin sets roles")
        touches_owner = body.role == Role.OWNER or (
            target is not None and target.role == Role.OWNER
        )
        if touches_owner and role != Role.OWNER:
            raise _deny("only an owner grants or revokes owner")
    elif isinstance(body, ShareHistoryBody) and role not in _MANAGERS:
        raise _deny("only an owner or admin shares history")
    elif isinstance(body, EnrolDeviceBody):
        if body.device.user_id != author_user_id:
            raise _deny("an identity key enrols only its own user's devices")
        msg = enrol_bytes(case_id, prev_epoch + 1, prev_hash, body.device)
        prim.verify(author.uik_pub, msg, body.uik_sig)
    # RotateBody: any member of the previous roster.


def _check_leave(
    prev: Roster, case_id: uuid.UUID, prev_epoch: int, user_id: uuid.UUID, lv: LeaveRequest
) -> None:
    user = prev.user(user_id)
    device = prev.device(lv.device_id)
    if user is None or device is None or device.user_id != user_id:
        raise _deny("leave request is not from a device of the leaving user")
    # since_epoch bounds replay of an old request after the user was re-added.
    if not user.since_epoch <= lv.epoch <= prev_epoch:
        raise _deny("leave request epoch outside the user's membership")
    prim.verify(device.dsk_pub, leave_bytes(case_id, user_id, lv.device_id, lv.epoch), lv.signature)


# --- roster transition ---------------------------------------------------------


def apply_action(
    prev: Roster | None, *, epoch: int, author_user_id: uuid.UUID, body: Body
) -> Roster:
    """The roster that must result from `body`; raises bad_action if impossible."""
    if isinstance(body, CreateBody):
        if prev is not None:
            raise CryptoError("bad_action", "create is only valid at genesis")
        if any(d.user_id != author_user_id for d in body.devices):
            raise CryptoError("bad_action", "create lists another user's device")
        return Roster.build(
            [RosterUser(author_user_id, Role.OWNER, body.uik_pub, epoch)], list(body.devices)
        )
    if prev is None:
        raise CryptoError("bad_action", "the genesis entry must be create")
    users, devices = list(prev.users), list(prev.devices)
    if isinstance(body, AddUserBody):
        if prev.user(body.user_id) is not None:
            raise CryptoError("bad_action", "user is already in the roster")
        if any(d.user_id != body.user_id for d in body.devices):
            raise CryptoError("bad_action", "add_user lists another user's device")
        if any(prev.device(d.device_id) is not None for d in body.devices):
            raise CryptoError("bad_action", "device is already in the roster")
        users.append(RosterUser(body.user_id, body.role, body.uik_pub, epoch))
        devices.extend(body.devices)
    elif isinstance(body, RemoveUserBody):
        if prev.user(body.user_id) is None:
            raise CryptoError("bad_action", "user is not in the roster")
        users = [u for u in users if u.user_id != body.user_id]
        devices = [d for d in devices if d.user_id != body.user_id]
    elif isinstance(body, AddDeviceBody | EnrolDeviceBody):
        if prev.user(body.device.user_id) is None:
            raise CryptoError("bad_action", "device of a user not in the roster")
        if prev.device(body.device.device_id) is not None:
            raise CryptoError("bad_action", "device is already in the roster")
        devices.append(body.device)
    elif isinstance(body, RemoveDeviceBody):
        d = prev.device(body.device_id)
        if d is None or d.user_id != body.user_id:
            raise CryptoError("bad_action", "no such device for that user")
        devices = [x for x in devices if x.device_id != body.device_id]
    elif isinstance(body, SetRoleBody):
        u = prev.user(body.user_id)
        if u is None:
            raise CryptoError("bad_action", "user is not in the roster")
        if u.role == body.role:
            raise CryptoError("bad_action", "role is unchanged")
        users = [
            RosterUser(x.user_id, body.role, x.uik_pub, x.since_epoch) if x == u else x
            for x in users
        ]
    elif isinstance(body, ShareHistoryBody):
        keys = [w.device_id.bytes + u64(w.epoch) for w in body.items]
        if not keys or keys != sorted(set(keys)):
            raise CryptoError("bad_action", "history wraps empty or not strictly sorted")
        prim.check_x25519_public(body.hepk)
        for w in body.items:
            if prev.device(w.device_id) is None or w.epoch >= epoch:
                raise CryptoError(
                    "bad_action", "history wrap for an unknown device or a future epoch"
                )
            if len(w.ciphertext) != HISTORY_CT_LEN:
                raise CryptoError("bad_action", "history wrap has the wrong length")
    return Roster.build(users, devices)
