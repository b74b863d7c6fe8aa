"""The consult as this device reads it, gathered for an export (FHIR Bundle or HTML).

Everything comes from verified, decrypted history (``CollabClient.history``: every page,
every epoch this device holds a key for) and the server's case detail (status and its
history). The export is built here, on the client; nothing of it is sent anywhere.

The model is plain JSON (``to_json``/``from_json``) and is the same one the browser
builds (frontend/static/collab/app/export.js), so both produce the same Bundle from it
(tests/client/export/ compares them)."""

from __future__ import annotations

import base64
import contextlib
import datetime
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from collab.client.recall import PURGED, RECALLED, Removed
from collab.crypto.roster import Role

if TYPE_CHECKING:  # the SDK is only needed to gather
    from collab.client.sdk import CollabClient, Received

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)

ROLE_NAMES = {Role.OWNER: "owner", Role.ADMIN: "admin", Role.MEMBER: "member",
              Role.PATIENT: "patient"}
IMAGE_MIMES = ("image/jpeg", "image/png", "image/webp", "image/gif")
# A server timestamp is copied only when it is a FHIR instant/dateTime with a time zone.
_INSTANT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
                      r"(Z|[+-][0-9]{2}:[0-9]{2})")
# (done, total, what): messages read, then images downloaded.
ExportProgress = Callable[[int, int, str], None]


def instant(text: object) -> str | None:
    return text if isinstance(text, str) and _INSTANT.fullmatch(text) else None


def ms_instant(ms: int) -> str:
    """Milliseconds since the epoch as ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (what JS's
    ``toISOString`` writes, so both clients write the same text)."""
    when = datetime.datetime.fromtimestamp(ms // 1000, datetime.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def ms_date(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms // 1000, datetime.UTC).strftime("%Y-%m-%d")


def _str(value: object, default: str = "") -> str:
    return value if isinstance(value, str) else default


def removal_of(removed: Removed) -> dict[str, Any]:
    """A removed message as the model keeps it: the room's verdict (collab.client.recall),
    its time in ms and, when a claimed recall was not honoured, why."""
    at = None if removed.at is None else (removed.at - _EPOCH) // datetime.timedelta(
        milliseconds=1)
    return {"verdict": removed.verdict, "at_ms": at, "detail": removed.detail}


def removal_line(removal: dict[str, Any]) -> str:
    """The one line exported in place of a removed message (never its content); the
    browser's export-record.js writes the same."""
    at = removal.get("at_ms")
    when = ms_instant(at) if isinstance(at, int) and not isinstance(at, bool) else "?"
    if removal.get("verdict") == RECALLED:
        return f"recalled by the sender at {when}"
    if removal.get("verdict") == PURGED:
        return f"removed by the server at {when} (retention policy)"
    detail = _str(removal.get("detail"))
    why = f": {detail}" if detail else ""
    return f"removed by the server at {when} (no valid recall from its sender{why})"


@dataclass
class Member:
    user_id: str
    role: str  # owner | admin | member | patient (the verified roster's role)
    display_name: str = ""
    specialty: str = ""

    @property
    def patient(self) -> bool:
        return self.role == "patient"


@dataclass
class Image:
    index: int  # into the message's attachments
    mime: str
    width: int
    height: int
    data: bytes  # decrypted and verified (manifest root)
    kind: str = "full"  # full | original


@dataclass
class Message:
    seq: int
    sender: str
    sent_ms: int
    content_type: str
    body: dict[str, Any] | None  # None: not readable on this device, or removed
    unavailable: str | None = None
    images: list[Image] = field(default_factory=list)
    # Recalled or purged (a tombstone, judged as the room does: removal_of); then the
    # body is None, sent_ms 0 and content_type "", and sender is set only for a
    # verified recall (the server's claim of who sent it is not copied).
    removed: dict[str, Any] | None = None

    @property
    def text(self) -> str:
        return _str((self.body or {}).get("text"))


@dataclass
class ConsultExport:
    case: dict[str, Any]
    status_history: list[dict[str, Any]]
    members: list[Member]
    messages: list[Message]
    exported_at: str
    exported_by: str
    # The genesis log entry's author, from the verified chain: whose request counts and
    # who is not a consultant (as in the room). The case detail's opened_by is only the
    # server's claim and decides nothing.
    requester: str

    def member(self, user_id: str) -> Member | None:
        return next((m for m in self.members if m.user_id == user_id), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "case": self.case, "status_history": self.status_history,
            "members": [vars(m) for m in self.members],
            "messages": [{
                "seq": m.seq, "sender": m.sender, "sent_ms": m.sent_ms,
                "content_type": m.content_type, "body": m.body, "unavailable": m.unavailable,
                "images": [{"index": i.index, "mime": i.mime, "width": i.width,
                            "height": i.height, "kind": i.kind,
                            "data": base64.b64encode(i.data).decode("ascii")}
                           for i in m.images],
                "removed": m.removed,
            } for m in self.messages],
            "exported_at": self.exported_at, "exported_by": self.exported_by,
            "requester": self.requester,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ConsultExport:
        return cls(
            case=dict(d["case"]), status_history=list(d["status_history"]),
            members=[Member(**m) for m in d["members"]],
            messages=[Message(
                seq=m["seq"], sender=m["sender"], sent_ms=m["sent_ms"],
                content_type=m["content_type"], body=m["body"], unavailable=m["unavailable"],
                images=[Image(index=i["index"], mime=i["mime"], width=i["width"],
                              height=i["height"], kind=i["kind"],
                              data=base64.b64decode(i["data"])) for i in m["images"]],
                removed=m.get("removed"),
            ) for m in d["messages"]],
            exported_at=d["exported_at"], exported_by=d["exported_by"],
            requester=d["requester"],
        )


CASE_FIELDS = ("id", "specialty", "urgency", "status", "opened_by", "opened_at",
               "status_changed_at")


def _image_indexes(body: dict[str, Any]) -> list[tuple[str, int]]:
    info = body.get("image")
    out: list[tuple[str, int]] = []
    if isinstance(info, dict):
        for kind in ("full", "original"):
            index = info.get(kind)
            if isinstance(index, int) and not isinstance(index, bool) and index >= 0:
                out.append((kind, index))
    return out


def _history(client: CollabClient, case_id: uuid.UUID,
             progress: Callable[[int], None]) -> list[Received | Removed]:
    """``CollabClient.timeline`` page by page (every message verified, then decrypted;
    every removed one judged by the room's recall policy), saying how far it got after
    each page."""
    from collab.client.sdk import HISTORY_PAGE

    client.sync(case_id)
    out: list[Received | Removed] = []
    after = 0
    while True:
        page = client.call("GET", f"/api/cases/{case_id}/messages?after={after}"
                                  f"&limit={HISTORY_PAGE}")
        start = after
        for item in page.get("messages") or []:
            seq = item.get("seq") if isinstance(item, dict) else None
            if isinstance(seq, int) and not isinstance(seq, bool):
                after = max(after, seq)
            out.append(client.tombstone(case_id, item)[0]
                       if isinstance(item, dict) and "removed" in item
                       else client.open_item(case_id, item))
        progress(after)
        if not page.get("more") or after <= start:
            break
    client.save()
    return out


def gather(client: CollabClient, case_id: uuid.UUID,
           progress: ExportProgress | None = None) -> ConsultExport:
    """Read the whole case on this device: verified history (all pages, all readable
    epochs), the full images (and unmarked originals) decrypted, the members of every
    verified roster, and the status history from the case detail."""
    from collab.client.consult_client import participants

    report = progress or (lambda done, total, what: None)
    detail = client.case_detail(case_id)
    last_seq = detail.get("last_seq")
    total = last_seq if isinstance(last_seq, int) else 0
    timeline = _history(client, case_id, lambda done: report(done, max(total, done), "messages"))
    requester, _ = participants(client, case_id)
    history = [m for m in timeline if not isinstance(m, Removed)]
    state = client.cases[case_id]
    roles: dict[uuid.UUID, Role] = {}
    for epoch in sorted(state.chain):  # the latest role wins; who left stays listed
        for user in state.chain[epoch].roster.users:
            roles[user.user_id] = user.role
    members = []
    for user_id, role in roles.items():
        name = specialty = ""
        with contextlib.suppress(Exception):  # best effort: patients see no directory
            keys = client.call("GET", f"/api/users/{user_id}/keys")
            name, specialty = _str(keys.get("display_name")), _str(keys.get("specialty"))
        members.append(Member(str(user_id), ROLE_NAMES[role], name, specialty))
    wanted = [(msg, kind, index) for msg in history if msg.unavailable is None
              for kind, index in _image_indexes(msg.body) if index < len(msg.attachments)]
    messages: dict[int, Message] = {}
    for msg in timeline:
        if isinstance(msg, Removed):
            sender = msg.sender_user_id if msg.verdict == RECALLED else None
            messages[msg.seq] = Message(seq=msg.seq, sender=str(sender or ""), sent_ms=0,
                                        content_type="", body=None, removed=removal_of(msg))
            continue
        messages[msg.seq] = Message(
            seq=msg.seq, sender=str(msg.sender_user_id), sent_ms=msg.header.sent_ms,
            content_type=msg.header.content_type,
            body=None if msg.unavailable is not None else dict(msg.body),
            unavailable=msg.unavailable)
    for done, (msg, kind, index) in enumerate(wanted, 1):
        manifest = msg.attachments[index]
        mime = manifest.mime if manifest.mime in IMAGE_MIMES else "application/octet-stream"
        messages[msg.seq].images.append(Image(index, mime, manifest.width, manifest.height,
                                              client.download_bytes(manifest), kind))
        report(done, len(wanted), "images")
    case = {k: detail.get(k) for k in CASE_FIELDS}
    case["id"] = str(case_id)
    history_rows = [{k: row.get(k) for k in ("from", "to", "by", "at", "reason")}
                    for row in detail.get("status_history") or [] if isinstance(row, dict)]
    now = int(datetime.datetime.now(datetime.UTC).timestamp() * 1000)
    return ConsultExport(case, history_rows, members, list(messages.values()),
                         ms_instant(now), str(client.user_id), str(requester))
