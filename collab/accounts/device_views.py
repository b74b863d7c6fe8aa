"""Identity and device endpoints."""

from __future__ import annotations

import uuid

from django.db.models import Q
from django.http import HttpRequest, HttpResponse, JsonResponse

from collab.accounts import backup, devices, proofs
from collab.accounts.models import Device, IdentityBackup, IdentityKey, IdentityPins, User
from collab.api import api, json_body, user_of
from collab.audit.services import RequestMeta
from collab.crypto.devcert import DeviceCert
from collab.crypto.wire import b64d, b64e
from collab.errors import Forbidden, NotFound, ServiceError


@api(("GET", "POST"))
def identity(request: HttpRequest) -> HttpResponse:
    user = user_of(request)
    if request.method == "POST":
        uik_pub = b64d(json_body(request).get("uik_pub"), 32)
        devices.identity_register(
            user=user, uik_pub=uik_pub, meta=RequestMeta.from_request(request)
        )
    key = IdentityKey.objects.filter(user=user).first()
    if key is None:
        raise NotFound("no_identity", "No identity key registered yet.")
    return JsonResponse({"user_id": str(user.pk), "uik_pub": b64e(bytes(key.uik_pub))})


@api(("GET", "PUT"))
def identity_backup(request: HttpRequest) -> HttpResponse:
    user = user_of(request)
    if request.method == "PUT":
        body = json_body(request)
        backup.identity_backup_put(
            request=request,
            user=user,
            ciphertext=b64d(body.get("ciphertext")),
            password=body.get("password"),
        )
        stored = IdentityBackup.objects.filter(user=user).first()
        if stored is None:
            raise NotFound("no_backup", "No identity backup stored.")
        # The bytes the caller just stored, echoed back: not a read of the backup.
        return JsonResponse({"ciphertext": b64e(bytes(stored.ciphertext))})
    ciphertext = backup.identity_backup_read(user=user, meta=RequestMeta.from_request(request))
    return JsonResponse({"ciphertext": b64e(ciphertext)})


@api(("GET", "PUT"))
def identity_pins(request: HttpRequest) -> HttpResponse:
    """The caller's sealed, signed pin book (opaque here): GET it, PUT the next version."""
    user = user_of(request)
    if request.method == "PUT":
        body = json_body(request)
        version = body.get("version")
        if isinstance(version, bool) or not isinstance(version, int):
            raise ServiceError("bad_field", "version must be an integer.")
        stored = devices.identity_pins_store(
            user=user,
            version=version,
            blob=b64d(body.get("blob")),
            sig=b64d(body.get("sig"), 64),
            meta=RequestMeta.from_request(request),
        )
        return JsonResponse({"version": stored.version})
    pins = IdentityPins.objects.filter(user=user).first()
    if pins is None:
        raise NotFound("no_pins", "No pins stored yet.")
    return JsonResponse(
        {"version": pins.version, "blob": b64e(bytes(pins.blob)), "sig": b64e(bytes(pins.sig))}
    )


@api(("GET", "POST"))
def device_list(request: HttpRequest) -> HttpResponse:
    user = user_of(request)
    if request.method == "POST":
        body = json_body(request)
        cert = DeviceCert.from_wire(body.get("cert") or {})
        device = devices.device_register(
            user=user,
            cert=cert,
            name=str(body.get("name", "")),
            meta=RequestMeta.from_request(request),
        )
        return JsonResponse(devices.device_wire(device), status=201)
    return JsonResponse({"devices": [devices.device_wire(d) for d in user.devices.all()]})


@api(("POST",))
def device_revoke(request: HttpRequest, device_id: uuid.UUID) -> HttpResponse:
    device = devices.device_revoke(
        actor=user_of(request),
        device_id=device_id,
        reason=str(json_body(request).get("reason", "")),
        meta=RequestMeta.from_request(request),
    )
    key = request.session.session_key
    if key and not request.session.exists(key):
        # This session was one the revoked device acted in: it has ended.
        request.session.flush()
    return JsonResponse(devices.device_wire(device))


@api(("GET",))
def user_keys(request: HttpRequest, user_id: uuid.UUID) -> HttpResponse:
    """A provider's public keys, for adding them to a case. Patients see no directory."""
    viewer = user_of(request)
    target = User.objects.filter(pk=user_id).first()
    if target is None:
        raise NotFound("no_user", "No such user.")
    if viewer.is_patient and target != viewer:
        raise Forbidden("patients_no_directory", "Patients cannot look up other users.")
    key = IdentityKey.objects.filter(user=target).first()
    active = Device.objects.filter(user=target, revoked_at__isnull=True)
    return JsonResponse(
        {
            "user_id": str(target.pk),
            "display_name": target.display_name,
            "role": target.role,
            "specialty": target.specialty,
            "uik_pub": b64e(bytes(key.uik_pub)) if key else None,
            "devices": [devices.device_wire(d) for d in active],
        }
    )


DIRECTORY_LIMIT = 20


@api(("GET",))
def directory(request: HttpRequest) -> HttpResponse:
    """Providers matching ``q`` (name, username, specialty or organisation), for adding
    someone to a case. Only providers and admins may search; patients see no directory."""
    viewer = user_of(request)
    if viewer.is_patient:
        raise Forbidden("patients_no_directory", "Patients cannot search the directory.")
    # NUL never matches a name, and PostgreSQL refuses it in a query (a 500 otherwise).
    query = str(request.GET.get("q", "")).replace("\x00", "").strip()[:80]
    if len(query) < 2:
        return JsonResponse({"users": []})
    matches = (
        User.objects.filter(role="provider", is_active=True)
        .filter(
            Q(display_name__icontains=query)
            | Q(username__icontains=query)
            | Q(specialty__icontains=query)
            | Q(organisation__icontains=query)
        )
        .exclude(pk=viewer.pk)
        .order_by("display_name", "username")[:DIRECTORY_LIMIT]
    )
    return JsonResponse(
        {
            "users": [
                {
                    "id": str(u.pk),
                    "display_name": u.display_name or u.username,
                    "specialty": u.specialty,
                    "organisation": u.organisation,
                }
                for u in matches
            ]
        }
    )


@api(("GET",))
def device_nonce(request: HttpRequest) -> HttpResponse:
    """A fresh server nonce for the next device proof (session only, no proof)."""
    response = JsonResponse({"nonce": proofs.nonce_issue()})
    response["Cache-Control"] = "no-store"
    return response
