"""The live case list: content-free doorbells for the members' inbox sockets.

Each case has one activity group (``realtime.activity_group``) that the inbox sockets
of its members join (collab.consumers.inbox). The services ring it after commit:

- a stored batch: ONE ``case.activity`` per case in the batch (case id and last_seq),
  in the same hop to the event loop as the batch's ``case.messages``: never one per
  member or per message;
- a status change: ``case.activity_status``;
- a membership-log entry: ``case.activity_roster`` with the roster's user ids, so a
  removed member's inbox sockets leave the group; users the entry added hear
  ``case.activity_added`` on their own inbox group (``realtime.inbox_group``).

No message content, names or keys travel here: ids, a seq and a status.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from collab.realtime import activity_group, inbox_group, publish_many_after_commit


def activity_events(last_seqs: dict[uuid.UUID, int]) -> list[tuple[str, dict[str, Any]]]:
    """The inbox doorbells of one stored batch: one per case, with its new last_seq."""
    return [
        (activity_group(case_id), {"type": "case.activity", "case": str(case_id),
                                   "last_seq": last_seq})
        for case_id, last_seq in last_seqs.items()
    ]


def status_changed(*, case_id: uuid.UUID, status: str, at: datetime) -> None:
    publish_many_after_commit(
        [(activity_group(case_id), {"type": "case.activity_status", "case": str(case_id),
                                    "status": status, "at": at.isoformat()})]
    )


def roster_changed(
    *, case_id: uuid.UUID, users: Iterable[uuid.UUID], added: Iterable[uuid.UUID]
) -> None:
    """After a log entry: who is in the case now (inbox sockets of others leave), and a
    doorbell for each user it added (their inbox sockets join)."""
    events: list[tuple[str, dict[str, Any]]] = [
        (activity_group(case_id), {"type": "case.activity_roster", "case": str(case_id),
                                   "users": sorted(str(u) for u in users)})
    ]
    events += [
        (inbox_group(user_id), {"type": "case.activity_added", "case": str(case_id)})
        for user_id in added
    ]
    publish_many_after_commit(events)
