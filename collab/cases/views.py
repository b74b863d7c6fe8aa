"""Case endpoints: parse, call one service, answer."""

from __future__ import annotations

import re
import uuid
from typing import Any

import qrcode
import qrcode.image.svg
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.urls import reverse
from django.utils import timezone

from collab.accounts.models import User
from collab.api import (
    api,
    int_param,
    json_body,
    optional_proven_device,
    parse_uuid,
    proven_device,
    proven_streamed_device,
    stream_file,
    user_of,
)
from collab.audit.services import RequestMeta
from collab.cases import models as m
from collab.cases import selectors
from collab.cases.access import access_case, access_case_device, access_provider
from collab.cases.services import (
    blobs,
    consults,
    history,
    invitations,
    joins,
    keybackup,
    membership,
    notifications,
    receipts,
)
from collab.cases.wire import (
    b64_or_none,
    case_wire,
    join_request_wire,
    log_entry_wire,
)
from collab.crypto.log import LogEntry
from collab.crypto.wire import MAX_SAFE_INT, b64d, b64e
from collab.errors import NotFound, RangeNotSatisfiable, ServiceError
from collab.escalation import selectors as escalation_selectors
from collab.retention.schedule import policy_current, retention_wire


def _entry(body: dict[str, object], name: str = "entry") -> LogEntry:
    return LogEntry.decode(b64d(body.get(name)))


@api(("GET", "POST"))
def case_list(request: HttpRequest) -> HttpResponse:
    user = user_of(request)
    if request.method == "POST":
        device_id = proven_device(request)
        access_provider(user, "Only providers open cases.")
        body = json_body(request)
        case = membership.case_open(
            user=user,
            device_id=device_id,
            genesis=_entry(body, "genesis"),
            specialty=str(body.get("specialty", "")),
            urgency=str(body.get("urgency", "routine")),
            meta=RequestMeta.from_request(request),
        )
        return JsonResponse(case_wire(case), status=201)
    cases = list(selectors.cases_for_user(user=user))
    urgent = selectors.unacknowledged_urgent_counts(user=user, case_ids=[c.pk for c in cases])
    unread = receipts.unread_counts(user=user, case_ids=[c.pk for c in cases])
    retention = policy_current()  # one read for the page (docs/workflow.md "Retention")
    return JsonResponse(
        {
            "cases": [
                {
                    **case_wire(c),
                    "unacknowledged_urgent": urgent.get(c.pk, 0),
                    "unread": unread.get(c.pk, 0),
                    "retention": retention_wire(c, retention),
                }
                for c in cases
            ]
        }
    )


@api(("GET",))
def case_detail(request: HttpRequest, case_id: uuid.UUID) -> HttpResponse:
    case = access_case(user_of(request), case_id)
    return JsonResponse(
        {
            **case_wire(case),
            "join_requests": [
                join_request_wire(r) for r in selectors.pending_joins(case_id=case.pk)
            ],
            "leave_requests": [_leave_wire(r) for r in selectors.pending_leaves(case_id=case.pk)],
            "status_history": [_status_wire(c) for c in selectors.status_history(case_id=case.pk)],
            "revoked_devices": [
                str(d)
                for d in m.MemberDevice.objects.filter(
                    case=case, device__revoked_at__isnull=False
                ).values_list("device_id", flat=True)
            ],
            "retention": retention_wire(case),
        }
    )


@api(("GET", "POST"))
def case_log(request: HttpRequest, case_id: uuid.UUID) -> HttpResponse:
    user = user_of(request)
    if request.method == "POST":
        device_id = proven_device(request)
        access_case(user, case_id)  # before the body is parsed: no probing for cases
        submitted = membership.log_entry_submit(
            user=user,
            device_id=device_id,
            case_id=case_id,
            entry=_entry(json_body(request)),
            meta=RequestMeta.from_request(request),
        )
        return JsonResponse(
            {**log_entry_wire(submitted.record), "duplicate": submitted.duplicate},
            status=200 if submitted.duplicate else 201,
        )
    access_case(user, case_id)
    after = int_param(request, "after", -1, -1, 2**62)
    # Paged by count and by bytes: every entry carries the whole roster.
    entries, more = selectors.log_page(
        case_id=case_id, after=after, max_bytes=settings.LOG_PAGE_MAX_BYTES
    )
    history.log_read_record(
        user=user,
        case_id=case_id,
        after=after,
        epochs=[e.epoch for e in entries],
        meta=RequestMeta.from_request(request),
    )
    return JsonResponse({"entries": [log_entry_wire(e) for e in entries], "more": more})


@api(("GET",))
def case_wraps(request: HttpRequest, case_id: uuid.UUID) -> HttpResponse:
    """The caller's device's epoch-key wraps (sealed; only that device opens them)."""
    user = user_of(request)
    device_id = proven_device(request)
    access_case_device(user, case_id, device_id)
    wraps = history.wraps_read(
        user=user, device_id=device_id, case_id=case_id, meta=RequestMeta.from_request(request)
    )
    return JsonResponse(
        {
            "wraps": [
                {
                    "epoch": w.epoch,
                    "ciphertext": b64e(bytes(w.ciphertext)),
                    "shared_in_epoch": w.shared_in_epoch,
                }
                for w in wraps
            ]
        }
    )


@api(("GET", "POST"))
def case_join_requests(request: HttpRequest, case_id: uuid.UUID) -> HttpResponse:
    requester = user_of(request)
    if request.method == "POST":
        body = json_body(request)
        kind = str(body.get("kind", ""))
        target = requester
        if kind == m.JoinKind.CLAIM:
            join = consults.consult_claim(
                user=requester, case_id=case_id, meta=RequestMeta.from_request(request)
            )
            return JsonResponse(
                {"id": join.pk, "user": str(join.user_id), "kind": join.kind}, status=201
            )
        if kind == m.JoinKind.INVITE:
            found = User.objects.filter(pk=parse_uuid(body.get("user"), "user")).first()
            if found is None:
                raise NotFound("no_user", "No such user.")
            target = found
        join = joins.join_request_create(
            requester=requester,
            case_id=case_id,
            user=target,
            kind=kind,
            meta=RequestMeta.from_request(request),
        )
        return JsonResponse(
            {"id": join.pk, "user": str(join.user_id), "kind": join.kind}, status=201
        )
    access_case(requester, case_id)
    return JsonResponse(
        {"join_requests": [join_request_wire(r) for r in selectors.pending_joins(case_id=case_id)]}
    )


@api(("GET",))
def my_join_requests(request: HttpRequest) -> HttpResponse:
    """The caller's own pending requests: as the person asked for or as the requester."""
    return JsonResponse(
        {
            "join_requests": [
                {
                    "id": r.pk,
                    "case": str(r.case_id),
                    "user": str(r.user_id),
                    "kind": r.kind,
                    "status": r.status,
                    "created_at": r.created_at.isoformat(),
                }
                for r in selectors.pending_joins_for_user(user=user_of(request))[:200]
            ]
        }
    )


def _resolved_wire(join: m.JoinRequest) -> dict[str, Any]:
    return {
        "id": join.pk,
        "case": str(join.case_id),
        "user": str(join.user_id),
        "kind": join.kind,
        "status": join.status,
        "resolved_at": join.resolved_at.isoformat() if join.resolved_at else None,
    }


@api(("POST",))
def join_request_decline(request: HttpRequest, join_id: int) -> HttpResponse:
    reason = json_body(request).get("reason", "")
    if not isinstance(reason, str):
        raise ServiceError("bad_field", "reason must be a string.")
    join = joins.join_request_decline(
        user=user_of(request),
        join_id=join_id,
        reason=reason,
        meta=RequestMeta.from_request(request),
    )
    return JsonResponse(_resolved_wire(join))


@api(("POST",))
def join_request_withdraw(request: HttpRequest, join_id: int) -> HttpResponse:
    join = joins.join_request_withdraw(
        user=user_of(request), join_id=join_id, meta=RequestMeta.from_request(request)
    )
    return JsonResponse(_resolved_wire(join))


@api(("GET",))
def case_messages(request: HttpRequest, case_id: uuid.UUID) -> HttpResponse:
    """History, paged, for the epochs the caller's device holds keys for."""
    user = user_of(request)
    device_id = proven_device(request)
    # The device decides which epochs are readable: it must be the caller's own, active.
    access_case_device(user, case_id, device_id)
    after = int_param(request, "after", 0, 0, 2**62)
    limit = int_param(request, "limit", 100, 1, settings.HISTORY_PAGE_MAX)
    page = selectors.history_page(
        case_id=case_id,
        device_id=device_id,
        after=after,
        limit=limit,
        max_bytes=settings.HISTORY_PAGE_MAX_BYTES,
    )
    history.history_read_record(
        user=user, device_id=device_id, case_id=case_id, page=page,
        meta=RequestMeta.from_request(request),
    )
    return JsonResponse({"messages": page.items, "more": page.more})


@api(("POST",))
def blob_create(request: HttpRequest, case_id: uuid.UUID) -> HttpResponse:
    body = json_body(request)
    size = body.get("size")
    if not isinstance(size, int) or isinstance(size, bool):
        raise ServiceError("bad_field", "size must be an integer (ciphertext bytes).")
    blob = blobs.blob_create(
        user=user_of(request), device_id=proven_device(request), case_id=case_id, size=size
    )
    return JsonResponse(
        {
            "blob_id": str(blob.pk),
            "size": blob.size,
            "chunk_count": blob.chunk_count,
            "max_part_bytes": blobs.MAX_PART_BYTES,
        },
        status=201,
    )


@api(("PUT",))
def blob_part(request: HttpRequest, blob_id: uuid.UUID, offset: int) -> HttpResponse:
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise ServiceError("bad_part", "Content-Length is required.") from None
    device_id, body = proven_streamed_device(request)
    try:
        received = blobs.blob_part_put(
            user=user_of(request),
            device_id=device_id,
            blob_id=blob_id,
            offset=offset,
            length=length,
            read=body.read,
            verify=body.verify,
        )
    except ServiceError:
        body.verify()  # a refusal, too, is answered only to the proven device
        raise
    return JsonResponse({"received_bytes": received})


@api(("POST",))
def blob_complete(request: HttpRequest, blob_id: uuid.UUID) -> HttpResponse:
    blob = blobs.blob_complete(
        user=user_of(request),
        device_id=optional_proven_device(request),
        blob_id=blob_id,
        root=b64d(json_body(request).get("root"), 64),
        meta=RequestMeta.from_request(request),
    )
    return JsonResponse({"blob_id": str(blob.pk), "size": blob.size, "status": blob.status})


_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


@api(("GET",))
def blob_upload(request: HttpRequest, blob_id: uuid.UUID) -> HttpResponse:
    """Where the caller's own upload stands, to resume it (owner device only)."""
    blob = blobs.blob_upload_status(
        user=user_of(request), device_id=proven_device(request), blob_id=blob_id
    )
    return JsonResponse(
        {
            "blob_id": str(blob.pk),
            "status": blob.status,
            "size": blob.size,
            "received_bytes": blob.received_bytes,
        }
    )


@api(("GET",))
def blob_download(request: HttpRequest, blob_id: uuid.UUID) -> HttpResponseBase:
    """The whole blob, or a ``Range: bytes=a-b`` of it (at most 1 MiB a request).

    Clients should fetch in ranges: the ASGI server does not apply backpressure, so a
    whole-blob response to a slow reader is buffered in server memory.
    """
    match = _RANGE.match(request.META.get("HTTP_RANGE", "bytes=0-"))
    if match is None:
        raise ServiceError("bad_range", "Use Range: bytes=<start>-<end>.")
    partial = "HTTP_RANGE" in request.META
    try:
        blob, handle, start, end = blobs.blob_download(
            user=user_of(request),
            device_id=proven_device(request),
            blob_id=blob_id,
            start=int(match.group(1)),
            end=int(match.group(2)) if partial and match.group(2) else None,
            meta=RequestMeta.from_request(request),
        )
    except RangeNotSatisfiable as refused:
        answer = JsonResponse(refused.as_dict(), status=refused.status)
        answer["Content-Range"] = f"bytes */{refused.extra['size']}"
        return answer
    if not partial:
        end = blob.size - 1  # no Range: the whole blob, one response
    length = end - start + 1
    response = StreamingHttpResponse(
        stream_file(handle, limit=length),
        content_type="application/octet-stream",
        status=206 if partial else 200,
    )
    response["Content-Length"] = str(length)
    response["Accept-Ranges"] = "bytes"
    if partial:
        response["Content-Range"] = f"bytes {start}-{end}/{blob.size}"
    response["Cache-Control"] = "no-store"
    return response


# --- consult workflow, patients, notifications ---------------------------------------


def _leave_wire(r: m.LeaveRequest) -> dict[str, Any]:
    return {
        "id": r.pk,
        "user": str(r.user_id),
        "device": str(r.device_id),
        "epoch": r.epoch,
        "signature": b64e(bytes(r.signature)),
        "created_at": r.created_at.isoformat(),
    }


def _status_wire(change: m.CaseStatusChange) -> dict[str, Any]:
    return {
        "from": change.from_status,
        "to": change.to_status,
        "by": str(change.changed_by_id),
        "at": change.changed_at.isoformat(),
        "reason": change.reason,
    }


def _qr_svg(text: str) -> str:
    image = qrcode.make(text, image_factory=qrcode.image.svg.SvgPathImage, box_size=8)
    return str(image.to_string(encoding="unicode"))


def _invitation_wire(invitation: m.Invitation) -> dict[str, Any]:
    return {
        "id": str(invitation.pk),
        "case": str(invitation.case_id),
        "created_by": str(invitation.created_by_id),
        "created_at": invitation.created_at.isoformat(),
        "expires_at": invitation.expires_at.isoformat(),
        "state": invitations.invitation_state(invitation).value,
        "used_by": str(invitation.used_by_id) if invitation.used_by_id else None,
        "used_at": invitation.used_at.isoformat() if invitation.used_at else None,
        "revoked_at": invitation.revoked_at.isoformat() if invitation.revoked_at else None,
        "invite_pub": b64_or_none(invitation.invite_pub),
        "proof": invitation.proof_sig is not None,
    }


_BINDING_FIELDS = ("invite_pub", "invite_sig", "inviter_device", "created_ms")


def _invite_binding(body: dict[str, Any]) -> invitations.InviteBinding | None:
    """The optional link binding: all four fields, or none of them."""
    given = [name for name in _BINDING_FIELDS if body.get(name) is not None]
    if not given:
        return None
    if len(given) != len(_BINDING_FIELDS):
        raise ServiceError("bad_field", f"Give all of {', '.join(_BINDING_FIELDS)}, or none.")
    created_ms = body["created_ms"]
    if (
        isinstance(created_ms, bool)
        or not isinstance(created_ms, int)
        or not 0 <= created_ms <= MAX_SAFE_INT
    ):
        raise ServiceError("bad_field", "created_ms must be a non-negative integer.")
    return invitations.InviteBinding(
        inviter_device_id=parse_uuid(body["inviter_device"], "inviter_device"),
        invite_pub=b64d(body["invite_pub"], 32),
        invite_sig=b64d(body["invite_sig"], 64),
        created_ms=created_ms,
    )


@api(("GET", "POST"))
def case_invitations(request: HttpRequest, case_id: uuid.UUID) -> HttpResponse:
    """POST: a provider member invites the patient (the link is shown once). GET: members."""
    user = user_of(request)
    if request.method == "POST":
        # The body is optional here (older clients post none).
        binding = _invite_binding(
            json_body(request) if request.content_type == "application/json" else {}
        )
        if binding is not None and proven_device(request) != binding.inviter_device_id:
            raise ServiceError(
                "unregistered_device", "inviter_device must be the device making this request."
            )
        invitation, token = invitations.invitation_create(
            user=user,
            case_id=case_id,
            binding=binding,
            meta=RequestMeta.from_request(request),
        )
        link = request.build_absolute_uri(reverse("invite", args=[token]))
        response = JsonResponse(
            {**_invitation_wire(invitation), "link": link, "qr_svg": _qr_svg(link)}, status=201
        )
        response["Cache-Control"] = "no-store"
        return response
    access_case(user, case_id)
    return JsonResponse(
        {
            "invitations": [
                _invitation_wire(i) for i in selectors.invitations_for_case(case_id=case_id)
            ]
        }
    )


@api(("POST",))
def invitation_revoke(request: HttpRequest, invitation_id: uuid.UUID) -> HttpResponse:
    invitation = invitations.invitation_revoke(
        user=user_of(request), invitation_id=invitation_id, meta=RequestMeta.from_request(request)
    )
    return JsonResponse(_invitation_wire(invitation))


@api(("GET",))
def my_invitations(request: HttpRequest) -> HttpResponse:
    """The invitations the signed-in patient accepted, and where each join request stands."""
    return JsonResponse(
        {
            "invitations": [
                {
                    "id": str(i.pk),
                    "case": str(i.case_id),
                    "invite_pub": b64_or_none(i.invite_pub),
                    "proof": i.proof_sig is not None,
                    "join_status": status,
                }
                for i, status in selectors.accepted_invitations(user=user_of(request))
            ]
        }
    )


@api(("POST",))
def invitation_proof(request: HttpRequest, invitation_id: uuid.UUID) -> HttpResponse:
    invitation = invitations.invitation_proof_store(
        user=user_of(request),
        invitation_id=invitation_id,
        proof_sig=b64d(json_body(request).get("proof_sig"), 64),
        meta=RequestMeta.from_request(request),
    )
    return JsonResponse({"id": str(invitation.pk), "case": str(invitation.case_id), "proof": True})


@api(("POST",))
def case_status(request: HttpRequest, case_id: uuid.UUID) -> HttpResponse:
    change = consults.case_status_change(
        user=user_of(request),
        case_id=case_id,
        status=str(json_body(request).get("status", "")),
        meta=RequestMeta.from_request(request),
    )
    return JsonResponse({"case": str(case_id), "status": change.to_status, **_status_wire(change)})


@api(("GET",))
def consult_queue(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    items = consults.consult_queue(user=user_of(request))
    return JsonResponse({"consults": [item.wire(now) for item in items]})


@api(("POST",))
def consult_claim(request: HttpRequest, case_id: uuid.UUID) -> HttpResponse:
    join = consults.consult_claim(
        user=user_of(request), case_id=case_id, meta=RequestMeta.from_request(request)
    )
    return JsonResponse(
        {"id": join.pk, "case": str(case_id), "user": str(join.user_id), "kind": join.kind},
        status=201,
    )


@api(("GET",))
def case_urgent(request: HttpRequest, case_id: uuid.UUID) -> HttpResponse:
    access_case(user_of(request), case_id)
    items = selectors.urgent_status(case_id=case_id)
    timers = escalation_selectors.escalations_by_seq(case_id=case_id)
    for item in items:  # reminders and escalations so far (docs/workflow.md "Escalation")
        item["escalation"] = timers.get(item["seq"])
    by_member: dict[str, list[int]] = {}
    for item in items:
        for user_id in item["unacknowledged"]:
            by_member.setdefault(user_id, []).append(item["seq"])
    return JsonResponse({"messages": items, "unacknowledged_by_member": by_member})


@api(("POST",))
def case_leave(request: HttpRequest, case_id: uuid.UUID) -> HttpResponse:
    """Store the caller's signed CR1 leave request for another member to commit."""
    body = json_body(request)
    epoch = body.get("epoch")
    if not isinstance(epoch, int) or isinstance(epoch, bool):
        raise ServiceError("bad_field", "epoch must be an integer.")
    leave = consults.leave_request_create(
        user=user_of(request),
        case_id=case_id,
        device_id=parse_uuid(body.get("device"), "device"),
        epoch=epoch,
        signature=b64d(body.get("signature"), 64),
        meta=RequestMeta.from_request(request),
    )
    return JsonResponse(_leave_wire(leave), status=201)


@api(("GET",))
def notification_list(request: HttpRequest) -> HttpResponse:
    user = user_of(request)
    unread = request.GET.get("unread") in {"1", "true"}
    notices = selectors.notifications_for_user(user=user, unread_only=unread)[:200]
    return JsonResponse(
        {
            "notifications": [
                {
                    "id": n.pk,
                    "kind": n.kind,
                    "case": str(n.case_id) if n.case_id else None,
                    "created_at": n.created_at.isoformat(),
                    "read": n.read_at is not None,
                }
                for n in notices
            ]
        }
    )


@api(("POST",))
def notification_read(request: HttpRequest, notification_id: int) -> HttpResponse:
    notice = notifications.notification_read(user=user_of(request), notification_id=notification_id)
    return JsonResponse({"id": notice.pk, "read": True})


# --- key backup ------------------------------------------------------------------------


def _backup_items(body: dict[str, Any]) -> list[keybackup.BackupItem]:
    raw = body.get("items")
    if not isinstance(raw, list) or not 1 <= len(raw) <= keybackup.MAX_ITEMS:
        raise ServiceError("bad_field", f"items must be a list of 1 to {keybackup.MAX_ITEMS}.")
    items = []
    for entry in raw:
        if not isinstance(entry, dict):
            raise ServiceError("bad_field", "Each item is an object {case, epoch, item}.")
        epoch = entry.get("epoch")
        if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch <= MAX_SAFE_INT:
            raise ServiceError("bad_field", "epoch must be a non-negative integer.")
        items.append(
            keybackup.BackupItem(
                case_id=parse_uuid(entry.get("case"), "case"),
                epoch=epoch,
                item=b64d(entry.get("item")),
            )
        )
    return items


@api(("GET", "PUT"))
def key_backup(request: HttpRequest) -> HttpResponse:
    """PUT: store sealed epoch-key items; GET ?case=&after=: this user's items for a case."""
    user = user_of(request)
    device_id = proven_device(request)
    if request.method == "PUT":
        result = keybackup.key_backup_store(
            user=user,
            device_id=device_id,
            items=_backup_items(json_body(request)),
            meta=RequestMeta.from_request(request),
        )
        return JsonResponse({"stored": result.stored, "kept": result.kept})
    page, more = keybackup.key_backup_read(
        user=user,
        device_id=device_id,
        case_id=parse_uuid(request.GET.get("case"), "case"),
        after=int_param(request, "after", -1, -1, MAX_SAFE_INT),
        meta=RequestMeta.from_request(request),
    )
    return JsonResponse(
        {"items": [{"epoch": i.epoch, "item": b64e(bytes(i.item))} for i in page], "more": more}
    )
