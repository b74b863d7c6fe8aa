"""Audit events as FHIR R4 AuditEvent resources in a collection Bundle (plain JSON dicts)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from django.utils import timezone

from collab.audit import canonical, conf
from collab.audit.models import AuditAction, AuditEvent, Outcome

DCM = "http://dicom.nema.org/resources/ontology/DCM"
EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
RESTFUL = "http://hl7.org/fhir/restful-interaction"
COLLAB_ACTION = "urn:collab:audit-action"
URI = "urn:ietf:rfc:3986"

_USER_AUTH = (DCM, "110114", "User Authentication")
_SECURITY_ALERT = (DCM, "110113", "Security Alert")
_PATIENT_RECORD = (DCM, "110110", "Patient Record")
_EXPORT = (DCM, "110106", "Export")
_AUDIT_LOG_USED = (DCM, "110101", "Audit Log Used")
_APP_ACTIVITY = (DCM, "110100", "Application Activity")

_LOGIN = (DCM, "110122", "Login")
_LOGOUT = (DCM, "110123", "Logout")
_USER_SECURITY_CHANGED = (DCM, "110137", "User Security Attributes Changed")
_RESTRICTED_FUNCTION = (DCM, "110132", "Use of Restricted Function")
_CREATE = (RESTFUL, "create", "create")
_READ = (RESTFUL, "read", "read")
_UPDATE = (RESTFUL, "update", "update")
_SEARCH = (RESTFUL, "search-type", "search type")
_DELETE = (RESTFUL, "delete", "delete")

Code = tuple[str, str, str]
A = AuditAction

# action -> (type, standard subtype or None, FHIR action C/R/U/D/E)
_MAPPING: dict[AuditAction, tuple[Code, Code | None, str]] = {
    A.SIGN_IN: (_USER_AUTH, _LOGIN, "E"),
    A.SIGN_IN_FAILED: (_USER_AUTH, _LOGIN, "E"),
    A.OTP_FAILED: (_USER_AUTH, _LOGIN, "E"),
    A.OTP_THROTTLED: (_USER_AUTH, _LOGIN, "E"),
    A.TOTP_ENROLLED: (_SECURITY_ALERT, _USER_SECURITY_CHANGED, "U"),
    A.SIGN_OUT: (_USER_AUTH, _LOGOUT, "E"),
    A.AUTO_SIGN_OUT: (_USER_AUTH, _LOGOUT, "E"),
    A.DEVICE_REGISTERED: (_SECURITY_ALERT, _USER_SECURITY_CHANGED, "C"),
    A.DEVICE_REVOKED: (_SECURITY_ALERT, _USER_SECURITY_CHANGED, "D"),
    A.IDENTITY_REGISTERED: (_SECURITY_ALERT, _USER_SECURITY_CHANGED, "C"),
    A.CASE_OPENED: (_PATIENT_RECORD, _CREATE, "C"),
    A.CASE_STATUS_CHANGED: (_PATIENT_RECORD, _UPDATE, "U"),
    A.LOG_ENTRY_COMMITTED: (_PATIENT_RECORD, _UPDATE, "U"),
    A.JOIN_REQUESTED: (_PATIENT_RECORD, _CREATE, "C"),
    A.JOIN_DECLINED: (_PATIENT_RECORD, _UPDATE, "U"),
    A.JOIN_WITHDRAWN: (_PATIENT_RECORD, _UPDATE, "U"),
    A.MESSAGE_STORED: (_PATIENT_RECORD, _CREATE, "C"),
    A.HISTORY_READ: (_PATIENT_RECORD, _READ, "R"),
    A.ATTACHMENT_UPLOADED: (_PATIENT_RECORD, _CREATE, "C"),
    A.ATTACHMENT_DOWNLOADED: (_PATIENT_RECORD, _READ, "R"),
    A.INVITATION_CREATED: (_PATIENT_RECORD, _CREATE, "C"),
    A.INVITATION_OPENED: (_PATIENT_RECORD, _READ, "R"),
    A.INVITATION_ACCEPTED: (_PATIENT_RECORD, _UPDATE, "U"),
    A.INVITATION_REVOKED: (_PATIENT_RECORD, _UPDATE, "U"),
    A.INVITATION_EXPIRED: (_PATIENT_RECORD, _UPDATE, "U"),
    A.INVITATION_PROOF: (_PATIENT_RECORD, _UPDATE, "U"),
    A.IDENTITY_PINS_STORED: (_SECURITY_ALERT, _USER_SECURITY_CHANGED, "U"),
    A.AUDIT_EXPORTED: (_EXPORT, _AUDIT_LOG_USED, "E"),
    A.AUDIT_VIEWED: (_AUDIT_LOG_USED, _SEARCH, "R"),
    A.CHECKPOINT_SIGNED: (_APP_ACTIVITY, None, "E"),
    A.ACCESS_DENIED: (_SECURITY_ALERT, _RESTRICTED_FUNCTION, "E"),
    A.KEY_BACKUP_STORED: (_SECURITY_ALERT, _USER_SECURITY_CHANGED, "C"),
    A.KEY_BACKUP_READ: (_PATIENT_RECORD, _READ, "R"),
    A.DEVICE_SESSIONS_ENDED: (_USER_AUTH, _LOGOUT, "E"),
    A.IDENTITY_BACKUP_REPLACED: (_SECURITY_ALERT, _USER_SECURITY_CHANGED, "U"),
    A.UPLOAD_EXPIRED: (_PATIENT_RECORD, _UPDATE, "D"),
    A.IDENTITY_RESET: (_SECURITY_ALERT, _USER_SECURITY_CHANGED, "D"),
    A.LEAVE_REQUESTED: (_PATIENT_RECORD, _CREATE, "C"),
    A.URGENT_ACKNOWLEDGED: (_PATIENT_RECORD, _UPDATE, "U"),
    A.WRAPS_READ: (_PATIENT_RECORD, _READ, "R"),
    A.LOG_READ: (_PATIENT_RECORD, _READ, "R"),
    A.IDENTITY_BACKUP_READ: (_SECURITY_ALERT, _READ, "R"),
    A.MESSAGES_DELIVERED: (_PATIENT_RECORD, _READ, "R"),
    A.ONCALL_CHANGED: (_APP_ACTIVITY, _UPDATE, "U"),
    A.CONSULT_OFFERED: (_PATIENT_RECORD, _UPDATE, "U"),
    A.URGENT_REMINDED: (_PATIENT_RECORD, None, "E"),
    A.URGENT_ESCALATED: (_PATIENT_RECORD, _UPDATE, "U"),
    A.ESCALATION_POLICY_CHANGED: (_APP_ACTIVITY, _UPDATE, "U"),
    A.MESSAGE_RECALLED: (_PATIENT_RECORD, _DELETE, "D"),
    A.RETENTION_POLICY_CHANGED: (_APP_ACTIVITY, _UPDATE, "U"),
    A.LEGAL_HOLD_PLACED: (_PATIENT_RECORD, _UPDATE, "U"),
    A.LEGAL_HOLD_RELEASED: (_PATIENT_RECORD, _UPDATE, "U"),
    A.CASE_CONTENT_PURGED: (_PATIENT_RECORD, _DELETE, "D"),
}

# Failures that a throttle or lock answered are serious (8); other refusals minor (4).
_SERIOUS_FAILURES = {A.OTP_THROTTLED}


def _coding(code: Code) -> dict[str, str]:
    system, value, display = code
    return {"system": system, "code": value, "display": display}


def _uuid_identifier(value: Any) -> dict[str, str]:
    return {"system": URI, "value": f"urn:uuid:{value}"}


def _outcome(event: AuditEvent) -> str:
    if event.outcome == Outcome.SUCCESS:
        return "0"
    return "8" if event.action in _SERIOUS_FAILURES or event.reason == "locked_out" else "4"


def _requestor(event: AuditEvent) -> dict[str, Any]:
    agent: dict[str, Any] = {"requestor": True}
    actor = event.actor if event.actor_id is not None else None
    if event.actor_id is not None:
        kind = "Patient" if actor is not None and actor.role == "patient" else "Practitioner"
        agent["who"] = {
            "reference": f"{kind}/{event.actor_id}",
            "identifier": _uuid_identifier(event.actor_id),
            "display": str(actor) if actor is not None else f"user {event.actor_id}",
        }
    else:
        agent["who"] = {"display": "unauthenticated client"}
    if event.client_address:
        agent["network"] = {"address": event.client_address, "type": "2"}
    return agent


def _entities(event: AuditEvent) -> list[dict[str, Any]]:
    entities: list[dict[str, Any]] = []
    detail = [
        {"type": key, "valueString": _detail_text(event.details[key])}
        for key in sorted(event.details or {})
    ]
    if event.case_id is not None:
        case: dict[str, Any] = {
            "what": {"identifier": _uuid_identifier(event.case_id), "display": "case"},
            "type": {
                "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                "code": "2",
                "display": "System Object",
            },
        }
        if event.target:
            case["name"] = event.target
        entities.append(case)
    elif event.target:
        entities.append({"what": {"display": event.target}, "name": event.target})
    agent_detail = [{"type": "user_agent", "valueString": event.user_agent}]
    if not event.user_agent:
        agent_detail = []
    chain = {
        "what": {"identifier": {"system": "urn:collab:audit-chain", "value": str(event.seq)}},
        "name": "audit chain position",
        "detail": [
            {"type": "hash", "valueString": event.hash},
            {"type": "prev_hash", "valueString": event.prev_hash},
            *agent_detail,
            *detail,
        ],
    }
    entities.append(chain)
    return entities


def _detail_text(value: Any) -> str:
    return value if isinstance(value, str) else canonical_json(value)


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def event_resource(event: AuditEvent) -> dict[str, Any]:
    type_code, subtype, action = _MAPPING[AuditAction(event.action)]
    subtypes = [_coding(subtype)] if subtype else []
    subtypes.append(
        {
            "system": COLLAB_ACTION,
            "code": event.action,
            "display": AuditAction(event.action).label,
        }
    )
    agents = [_requestor(event)]
    if event.device_id is not None:
        agents.append(
            {
                "requestor": False,
                "who": {"identifier": _uuid_identifier(event.device_id), "display": "device"},
            }
        )
    resource: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": f"collab-audit-{event.seq}",
        "type": _coding(type_code),
        "subtype": subtypes,
        "action": action,
        "recorded": canonical.timestamp(event.recorded_at),
        "outcome": _outcome(event),
        "agent": agents,
        "source": {
            "site": conf.installation_name(),
            "observer": {"display": conf.installation_name()},
            "type": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                    "code": "4",
                    "display": "Application Server",
                }
            ],
        },
        "entity": _entities(event),
    }
    if event.outcome != Outcome.SUCCESS and event.reason:
        resource["outcomeDesc"] = event.reason
    return resource


def bundle(events: Iterable[AuditEvent]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": canonical.timestamp(timezone.now()),
        "entry": [{"resource": event_resource(event)} for event in events],
    }
