"""The inbox socket: /ws/inbox/. The live case list of the signed-in user.

It follows the activity group of each case the user is in (collab.cases.services.inbox):
a new last_seq, a status change, and the roster's users (a removed member's socket
leaves the case at once, and is told ``case_removed``). Cases the user is added to
arrive on the user's own inbox group (``case_added``). Notifications (escalations,
reminders, consults offered) come as on every socket (``notify``). Content-free: ids,
a seq and a status. The session rules are the base socket's (idle and absolute
sign-out, a user made inactive, revoked devices' sessions: close 4401); membership is
read again every ``COLLAB_SESSION_CHECK_SECONDS`` too (by the session sweep, for all
inbox sockets at once), so a doorbell lost while the channel layer was down cannot
leave a removed member following a case.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from channels.db import database_sync_to_async
from django.db import DatabaseError

from collab.cases import access, selectors
from collab.consumers.base import AuthenticatedConsumer
from collab.realtime import activity_group, inbox_group

log = logging.getLogger("collab.realtime")


class InboxConsumer(AuthenticatedConsumer):
    """Nothing it receives is a person's action: an open case list signs out when idle."""

    cases: set[uuid.UUID]

    async def authorise(self) -> bool:
        self.cases = set(await database_sync_to_async(selectors.inbox_case_ids)(user=self.user))
        await self.join_groups(
            [inbox_group(self.user.pk)] + [activity_group(case) for case in sorted(self.cases)]
        )
        return True

    async def on_open(self) -> None:
        await self.send_json(
            {"type": "hello", "user": str(self.user.pk), "cases": sorted(map(str, self.cases))}
        )

    async def layer_recovered(self) -> None:
        """The channel layer was down and works again: doorbells may have been lost, so
        once the groups are joined the client hears ``hello`` with ``resync: true`` (and
        fetches its list again)."""
        if self.closing or not await self.join_missing_groups():
            return
        await self.send_json({"type": "hello", "user": str(self.user.pk),
                              "cases": sorted(map(str, self.cases)), "resync": True})

    @classmethod
    def sweep_reads(
        cls, sockets: list[AuthenticatedConsumer]
    ) -> dict[AuthenticatedConsumer, Any]:
        """Every SESSION_CHECK_SECONDS, for the session sweep: the cases each inbox's user
        is in now, for all inbox sockets in one query (given to on_swept)."""
        inboxes = [s for s in sockets if isinstance(s, InboxConsumer)]
        cases = selectors.inbox_case_ids_of({s.user.pk for s in inboxes})
        return {s: set(cases[s.user.pk]) for s in inboxes}

    async def on_swept(self, read: Any) -> None:
        """Follow exactly the cases the user is in now. A doorbell may have moved the
        socket on while the sweep read (an added or removed member), so each difference
        is read again before it is acted on: a stale read never drops a case the user
        is in, nor follows one they left."""
        if self.closing:
            return
        now: set[uuid.UUID] = read
        changed = sorted(self.cases ^ now)
        if not changed:
            return
        try:
            member = await database_sync_to_async(self._membership_of)(changed)
        except DatabaseError as error:  # the next sweep tries again
            log.warning("inbox membership check failed: %r", error)
            return
        for case in changed:
            if member[case]:
                await self.follow_case(case)
            else:
                await self.leave_case(case)

    def _membership_of(self, cases: list[uuid.UUID]) -> dict[uuid.UUID, bool]:
        return {case: access.is_case_member(user=self.user, case_id=case) for case in cases}

    async def leave_case(self, case: uuid.UUID) -> None:
        if case not in self.cases:
            return
        self.cases.discard(case)
        group = activity_group(case)
        if group in self.joined_groups:
            self.joined_groups.remove(group)
        if group in self.missing_groups:
            self.missing_groups.remove(group)
        try:
            await asyncio.wait_for(
                self.channel_layer.group_discard(group, self.channel_name), 2.0
            )
        except Exception as error:  # nothing more is relayed for it either way
            log.warning("inbox group discard failed: %r", error)
        await self.send_json({"type": "case_removed", "case": str(case)})

    async def follow_case(self, case: uuid.UUID) -> None:
        if case in self.cases:
            return
        self.cases.add(case)
        await self.join_groups([activity_group(case)])
        await self.send_json({"type": "case_added", "case": str(case)})

    # --- events from the channel layer ------------------------------------------

    async def case_activity(self, event: dict[str, Any]) -> None:
        """A stored batch in one of the user's cases: its new last_seq."""
        if uuid.UUID(event["case"]) in self.cases:
            await self.send_json(
                {"type": "case_activity", "case": event["case"], "last_seq": event["last_seq"]}
            )

    async def case_activity_status(self, event: dict[str, Any]) -> None:
        if uuid.UUID(event["case"]) in self.cases:
            await self.send_json(
                {
                    "type": "case_status",
                    "case": event["case"],
                    "status": event["status"],
                    "at": event["at"],
                }
            )

    async def case_activity_roster(self, event: dict[str, Any]) -> None:
        """A log entry: a user no longer in the roster stops following the case now."""
        if str(self.user.pk) not in event["users"]:
            await self.leave_case(uuid.UUID(event["case"]))

    async def case_activity_added(self, event: dict[str, Any]) -> None:
        """The user was added to a case: follow it, once the database agrees."""
        case = uuid.UUID(event["case"])
        try:
            member = await database_sync_to_async(access.is_case_member)(
                user=self.user, case_id=case
            )
        except DatabaseError as error:  # the next session sweep picks it up
            log.warning("inbox membership check failed: %r", error)
            return
        if member:
            await self.follow_case(case)
