"""Delivered / read / acknowledged per recipient (docs/workflow.md "Receipts and the live
case list"), as the browser's app/receipts.js: the same states and the same words.

``CaseReceipts`` is the answer of ``GET /api/cases/<id>/receipts`` checked field by field
(the server's claim about its members' marks; nothing here is signed, so a lying server
can fake or hide a mark or an acknowledgement, protocol.md §7). Only users of the
verified roster the client holds are kept: anyone else the server names is dropped, never
shown, and no trust or access decision is made from a receipt. ``DeliveredReporter``
sends the ``delivered`` frame of a watching client, debounced: the highest seq it received,
once a burst, never lower than what it sent before.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Any

from collab.client.errors import ClientError, ServerRefusedError

WORDS = {
    "acknowledged": "acknowledged by",
    "read": "read by",
    "delivered": "delivered to",
    "pending": "not yet delivered to",
}
STATES = tuple(WORDS)
# Whose word the receipts are, as the browser's title on the receipt line says.
SERVER_REPORTED = ("as reported by the server: receipts are not signed, so they are not "
                   "proof that someone received, read or acknowledged a message")
# A watcher's delivered report waits this long for more messages (one frame a burst).
DELIVERED_DELAY_SECONDS = 0.3


def _bad(what: str) -> ServerRefusedError:
    return ServerRefusedError(f"malformed receipts from the server: {what}",
                              code="bad_receipts", status=200)


@dataclass(frozen=True)
class Mark:
    up_to: int
    at: str


@dataclass(frozen=True)
class MemberReceipt:
    user_id: uuid.UUID
    read: Mark | None
    delivered: Mark | None


def _mark(value: Any) -> Mark | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _bad("a mark is not an object")
    up_to, at = value.get("up_to"), value.get("at")
    if isinstance(up_to, bool) or not isinstance(up_to, int) or up_to < 1 \
            or not isinstance(at, str):
        raise _bad("a mark needs up_to >= 1 and at")
    return Mark(up_to, at)


def _user(value: Any) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise _bad(f"not a user id: {value!r}") from None


@dataclass(frozen=True)
class CaseReceipts:
    case_id: uuid.UUID
    last_seq: int
    members: tuple[MemberReceipt, ...]
    # Urgent message seq -> who acknowledged it, in order: (user, at).
    acknowledged: dict[int, tuple[tuple[uuid.UUID, str], ...]]

    @classmethod
    def from_wire(cls, body: Any, roster_users: Collection[uuid.UUID]) -> CaseReceipts:
        """The answer, checked, keeping only users in ``roster_users`` (the user ids of
        the verified head roster): members and acknowledgements of anyone else are
        dropped, whatever marks the server gives them."""
        verified = frozenset(roster_users)
        if not isinstance(body, dict) or not isinstance(body.get("members"), list) \
                or not isinstance(body.get("urgent"), list):
            raise _bad("members and urgent must be lists")
        last_seq = body.get("last_seq")
        if isinstance(last_seq, bool) or not isinstance(last_seq, int) or last_seq < 0:
            raise _bad("last_seq")
        members = []
        for item in body["members"]:
            if not isinstance(item, dict):
                raise _bad("a member is not an object")
            member = MemberReceipt(_user(item.get("user")), _mark(item.get("read")),
                                   _mark(item.get("delivered")))
            if member.user_id in verified:
                members.append(member)
        acknowledged: dict[int, tuple[tuple[uuid.UUID, str], ...]] = {}
        for item in body["urgent"]:
            seq = item.get("seq") if isinstance(item, dict) else None
            acks = item.get("acknowledged") if isinstance(item, dict) else None
            if isinstance(seq, bool) or not isinstance(seq, int) or not isinstance(acks, list):
                raise _bad("an urgent item needs seq and acknowledged")
            pairs = ((_user(a.get("user")), str(a.get("at"))) for a in acks if isinstance(a, dict))
            acknowledged[seq] = tuple((user, at) for user, at in pairs if user in verified)
        return cls(_user(body.get("case")), last_seq, tuple(members), acknowledged)

    def state(self, user_id: uuid.UUID, seq: int) -> str:
        """acknowledged, read, delivered or pending: read implies delivered."""
        if any(user == user_id for user, _ in self.acknowledged.get(seq, ())):
            return "acknowledged"
        member = next((m for m in self.members if m.user_id == user_id), None)
        if member is not None and member.read is not None and member.read.up_to >= seq:
            return "read"
        if member is not None and member.delivered is not None \
                and member.delivered.up_to >= seq:
            return "delivered"
        return "pending"

    def by_state(self, seq: int, sender: uuid.UUID) -> dict[str, list[uuid.UUID]]:
        """The recipients of message ``seq`` (every member the server lists who is in the
        verified roster, but its sender), per state."""
        groups: dict[str, list[uuid.UUID]] = {state: [] for state in STATES}
        for member in self.members:
            if member.user_id != sender:
                groups[self.state(member.user_id, seq)].append(member.user_id)
        return groups

    def summary(self, seq: int, sender: uuid.UUID, name: Callable[[uuid.UUID], str]) -> str:
        """e.g. "Read by Dr Gold · delivered to Sam Patient"; alone: "Delivered"."""
        groups = self.by_state(seq, sender)
        parts = [f"{WORDS[s]} {', '.join(name(u) for u in groups[s])}"
                 for s in STATES if groups[s]]
        if not parts:
            return "Delivered"
        line = " · ".join(parts)
        return line[0].upper() + line[1:]


class DeliveredReporter:
    """``note(seq)`` after a received message; ``send(up_to)`` runs once the notes stop
    for ``delay`` seconds, with the highest seq noted. A send that fails (the connection
    went) is retried with the next note."""

    def __init__(self, send: Callable[[int], Awaitable[None]],
                 delay: float = DELIVERED_DELAY_SECONDS) -> None:
        self.send = send
        self.delay = delay
        self.highest = 0
        self.sent = 0
        self.task: asyncio.Task[None] | None = None

    def note(self, seq: int) -> None:
        self.highest = max(self.highest, seq)
        if self.highest <= self.sent:
            return
        self.cancel()
        self.task = asyncio.get_running_loop().create_task(self._later())

    async def _later(self) -> None:
        await asyncio.sleep(self.delay)
        await self.flush()

    async def flush(self) -> None:
        if self.highest <= self.sent:
            return
        up_to = self.highest
        with contextlib.suppress(ClientError):
            await self.send(up_to)
            self.sent = max(self.sent, up_to)

    def cancel(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self.task = None
