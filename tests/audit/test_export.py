from __future__ import annotations

import json
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone
from fhir.resources.R4B.auditevent import AuditEvent as FhirAuditEvent
from fhir.resources.R4B.bundle import Bundle

from collab.audit.models import AuditEvent
from collab.audit.services import AuditAction, Outcome, RequestMeta, audit_record
from collab.audit.verify import chain_verify
from tests.support.users import make_user, verified_client

pytestmark = pytest.mark.django_db

EXPORT = "/api/audit/export"
DCM = "http://dicom.nema.org/resources/ontology/DCM"


@pytest.fixture
def admin():
    return make_user("boss", role="admin")


@pytest.fixture
def scene():
    pcp = make_user("pcp")
    pat = make_user("pat", role="patient", totp=False)
    case_a, case_b = uuid.uuid4(), uuid.uuid4()
    meta = RequestMeta(address="10.1.2.3", user_agent="collab-web")
    audit_record(
        action=AuditAction.CASE_OPENED,
        actor=pcp,
        device_id=uuid.uuid4(),
        case_id=case_a,
        target=f"case:{case_a}",
        meta=meta,
        details={"specialty": "dermatology"},
    )
    audit_record(
        action=AuditAction.HISTORY_READ,
        actor=pat,
        case_id=case_a,
        meta=meta,
        details={"from_seq": 1, "to_seq": 3},
    )
    audit_record(action=AuditAction.ATTACHMENT_DOWNLOADED, actor=pcp, case_id=case_b, meta=meta)
    audit_record(
        action=AuditAction.SIGN_IN_FAILED,
        outcome=Outcome.FAILURE,
        reason="bad_credentials",
        meta=meta,
    )
    return {"pcp": pcp, "pat": pat, "case_a": case_a, "case_b": case_b}


def resources(response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/fhir+json"
    data = response.json()
    bundle = Bundle.model_validate(data)
    assert bundle.type == "collection"
    for entry in data["entry"]:
        FhirAuditEvent.model_validate(entry["resource"])
    return [entry["resource"] for entry in data["entry"]]


def test_export_is_a_valid_fhir_bundle_with_the_required_elements(admin, scene) -> None:
    exported = resources(verified_client(admin).get(EXPORT))
    assert len(exported) == 4
    opened, read, _, failed = exported
    assert opened["type"] == {"system": DCM, "code": "110110", "display": "Patient Record"}
    assert {"system": "http://hl7.org/fhir/restful-interaction", "code": "create"}.items() <= (
        opened["subtype"][0].items()
    )
    assert opened["subtype"][-1]["code"] == "case_opened"
    assert (opened["action"], opened["outcome"]) == ("C", "0")
    assert opened["recorded"].endswith("Z")
    requestor = opened["agent"][0]
    assert requestor["requestor"] is True
    assert requestor["who"]["reference"] == f"Practitioner/{scene['pcp'].pk}"
    assert requestor["who"]["display"] == "Pcp"
    assert requestor["network"] == {"address": "10.1.2.3", "type": "2"}
    assert opened["agent"][1]["requestor"] is False  # the device
    assert opened["source"]["observer"]["display"] == "collab"
    case_entity = opened["entity"][0]
    assert case_entity["what"]["identifier"]["value"] == f"urn:uuid:{scene['case_a']}"
    assert read["action"] == "R"
    assert read["agent"][0]["who"]["reference"] == f"Patient/{scene['pat'].pk}"
    assert failed["type"]["code"] == "110114" and failed["subtype"][0]["code"] == "110122"
    assert (failed["outcome"], failed["outcomeDesc"]) == ("4", "bad_credentials")
    assert failed["agent"][0]["who"] == {"display": "unauthenticated client"}


def test_every_action_maps_to_a_valid_resource(admin) -> None:
    for action in AuditAction:
        audit_record(action=action, outcome=Outcome.FAILURE, reason="x", case_id=uuid.uuid4())
    exported = resources(verified_client(admin).get(EXPORT))
    assert {r["subtype"][-1]["code"] for r in exported} == {a.value for a in AuditAction}
    assert {r["action"] for r in exported} <= {"C", "R", "U", "D", "E"}
    assert {r["outcome"] for r in exported} <= {"0", "4", "8"}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("case={case_a}", ["case_opened", "history_read"]),
        ("user={pcp}", ["case_opened", "attachment_downloaded"]),
        ("action=HISTORY_READ", ["history_read"]),
        ("action=sign_in_failed,history_read", ["history_read", "sign_in_failed"]),
        ("case={case_a}&user={pat}", ["history_read"]),
    ],
)
def test_export_filters(admin, scene, query: str, expected: list[str]) -> None:
    url = (
        EXPORT
        + "?"
        + query.format(case_a=scene["case_a"], pcp=scene["pcp"].pk, pat=scene["pat"].pk)
    )
    exported = resources(verified_client(admin).get(url))
    assert [r["subtype"][-1]["code"] for r in exported] == expected


def test_export_time_range(admin, scene) -> None:
    client = verified_client(admin)
    last = AuditEvent.objects.order_by("-seq")[0]
    since = (last.recorded_at - timedelta(microseconds=1)).isoformat()
    only_last = resources(client.get(EXPORT, {"from": since}))
    assert [r["id"] for r in only_last] == [f"collab-audit-{last.seq}"]
    before_all = (timezone.now() - timedelta(days=1)).isoformat()
    assert resources(client.get(EXPORT, {"to": before_all})) == []
    # Four scene events plus the two exports above, each audited before it answered.
    everything = resources(client.get(EXPORT, {"from": "2000-01-01", "to": "2999-01-01"}))
    assert len(everything) == 6


@pytest.mark.parametrize(
    ("query", "detail"),
    [
        ({"case": "not-a-uuid"}, "case must be a UUID"),
        ({"user": "42"}, "user must be a UUID"),
        ({"action": "DROP_TABLES"}, "unknown action"),
        ({"from": "yesterday"}, "from must be an ISO 8601"),
        ({"from": "2025-02-01", "to": "2025-01-01"}, "from is after to"),
        ({"patient": "x"}, "unknown filter 'patient'"),
    ],
)
def test_malformed_filter_is_a_400_with_the_reason(admin, query, detail: str) -> None:
    response = verified_client(admin).get(EXPORT, query)
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "bad_filter" and detail in body["detail"]
    assert not AuditEvent.objects.filter(action=AuditAction.AUDIT_EXPORTED).exists()


def test_exporting_is_itself_audited(admin, scene) -> None:
    verified_client(admin).get(EXPORT, {"case": str(scene["case_a"])})
    event = AuditEvent.objects.get(action=AuditAction.AUDIT_EXPORTED)
    assert event.actor_id == admin.pk and event.case_id == scene["case_a"]
    assert event.details == {"case": str(scene["case_a"]), "count": 2}
    assert chain_verify().ok


def test_non_admin_gets_403_and_the_attempt_is_audited(scene) -> None:
    pcp = scene["pcp"]
    response = verified_client(pcp).get(EXPORT)
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"
    denied = AuditEvent.objects.get(action=AuditAction.ACCESS_DENIED)
    assert (denied.actor_id, denied.outcome, denied.target) == (pcp.pk, "failure", "audit:export")
    assert not AuditEvent.objects.filter(action=AuditAction.AUDIT_EXPORTED).exists()


def test_signed_out_client_gets_401(client) -> None:
    response = client.get(EXPORT)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthenticated"


def test_admin_without_second_factor_is_stopped_by_the_middleware(admin, client) -> None:
    client.force_login(admin, backend="django.contrib.auth.backends.ModelBackend")
    response = client.get(EXPORT)
    assert response.status_code == 403
    assert response.json()["error"] == "second_factor_required"


def test_export_command_writes_a_valid_bundle(scene, tmp_path: Path) -> None:
    out = tmp_path / "export.json"
    call_command("audit_export", "--action", "case_opened", "--output", str(out))
    data = json.loads(out.read_text())
    Bundle.model_validate(data)
    assert [e["resource"]["subtype"][-1]["code"] for e in data["entry"]] == ["case_opened"]
    assert AuditEvent.objects.filter(action=AuditAction.AUDIT_EXPORTED).count() == 1
    with pytest.raises(CommandError, match="case must be a UUID"):
        call_command("audit_export", "--case", "nope")
