"""The FHIR R4 Bundle built from a consult model: valid for fhir.resources and for the
R4 JSON schema, with the request, the status history, every message, the images byte for
byte, the reports with their time summary, and the people."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from typing import Any

import pytest
from pydantic import ValidationError

from collab.client.export.fhir import build_bundle, fhir_text
from collab.client.export.model import ConsultExport
from tests.client.export.support import HOSTILE, sample, schema_errors, validate_bundle


def by_type(bundle: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


@pytest.fixture
def bundle() -> dict[str, Any]:
    return build_bundle(sample())


def test_bundle_validates_with_fhir_resources_and_the_r4_schema(bundle: dict[str, Any]) -> None:
    parsed = validate_bundle(bundle)
    assert parsed.type == "collection"
    assert parsed.entry is not None and len(parsed.entry) == len(bundle["entry"])


def test_a_broken_bundle_fails_both_checks(bundle: dict[str, Any]) -> None:
    broken = copy.deepcopy(bundle)
    comm = next(e["resource"] for e in broken["entry"]
                if e["resource"]["resourceType"] == "Communication")
    comm["colour"] = "red"  # no such element
    assert schema_errors(comm)
    with pytest.raises(ValidationError):
        validate_bundle(broken)
    del comm["colour"]
    comm["sent"] = "yesterday"  # not a dateTime
    assert any(p.startswith("sent:") for p in schema_errors(comm))
    with pytest.raises(ValidationError):
        validate_bundle(broken)


def test_every_message_is_a_communication_in_order(bundle: dict[str, Any]) -> None:
    export = sample()
    comms = by_type(bundle, "Communication")
    assert len(comms) == len(export.messages)
    for comm, msg in zip(comms, export.messages, strict=True):
        assert comm["category"][0]["text"] == msg.content_type
        assert comm["sender"]["reference"] == f"urn:uuid:{msg.sender}"
        assert comm["sent"].endswith("Z")
        if msg.text:
            assert comm["payload"][0]["contentString"] == fhir_text(msg.text)
    hostile = comms[1]["payload"][0]["contentString"]
    assert hostile == HOSTILE  # a text payload is data: kept as it was sent
    # FHIR strings allow no odd whitespace or controls: replaced by spaces.
    assert comms[12]["payload"][0]["contentString"] == "Thank you doctor !"
    assert "payload" not in comms[11] and "not available" in comms[11]["note"][0]["text"]


def test_images_are_attachments_equal_to_what_was_sent(bundle: dict[str, Any]) -> None:
    export = sample()
    sent = export.messages[2].images
    attachments = [p["contentAttachment"] for p in by_type(bundle, "Communication")[2]["payload"]
                   if "contentAttachment" in p]
    assert len(attachments) == 2
    for attachment, image in zip(attachments, sent, strict=True):
        data = base64.b64decode(attachment["data"])
        assert data == image.data
        assert attachment["contentType"] == "image/png"
        assert attachment["size"] == len(data)
        assert base64.b64decode(attachment["hash"]) == hashlib.sha1(data).digest()  # noqa: S324
    assert "unmarked original" in attachments[1]["title"]


def test_the_request_is_the_latest_and_maps_urgency(bundle: dict[str, Any]) -> None:
    (sr,) = by_type(bundle, "ServiceRequest")
    assert sr["priority"] == "urgent"  # soon
    assert sr["reasonCode"] == [{"text": "Pigmented lesion, left forearm"}]
    notes = [n["text"] for n in sr["note"]]
    assert "Question: Excise, watch, or biopsy first?" in notes  # the amendment
    assert "Amends: the request of message #1" in notes
    assert "Patient consent: noted by the requester" in notes
    assert sr["performerType"] == {"text": "Dermatology"}
    assert sr["requester"]["reference"].endswith(sample().case["opened_by"])
    assert sr["subject"]["reference"] == f"urn:uuid:{sample().members[2].user_id}"


def test_task_carries_the_status_history(bundle: dict[str, Any]) -> None:
    (task,) = by_type(bundle, "Task")
    assert task["status"] == "completed" and task["businessStatus"]["text"] == "answered"
    assert [n["text"] for n in task["note"]] == [
        "status requested (opened)", "status requested → accepted (claim_committed)",
        "status accepted → answered (report)"]
    assert task["owner"]["reference"].endswith(sample().members[1].user_id)


def test_reports_are_compositions_with_the_time_summary(bundle: dict[str, Any]) -> None:
    first, second = by_type(bundle, "Composition")  # the non-consultant's is not a report
    assert "superseded" in first["title"] and first["status"] == "final"
    assert second["status"] == "amended"
    assert second["relatesTo"][0]["targetReference"]["reference"] == \
        next(e["fullUrl"] for e in bundle["entry"] if e["resource"] is first)
    assert second["event"] == [{"period": {"start": "2025-12-02", "end": "2025-12-03"}}]
    time = next(s for s in second["section"] if s["title"] == "Time")["text"]["div"]
    # 6 + 15 minutes from the valid entries; the absurd and the over-long ones do not count.
    assert "Minutes in the author&#x27;s time entries now: 21" in time
    assert "21 minutes in 2 entries, 2025-12-02 to 2025-12-03" in time
    assert "Cumulative minutes stated on this report: 21 (2025-12-02 to 2025-12-03)" in time
    for field in ("Request reason present: yes", "Written report present: yes",
                  "Patient consent noted by the requester: yes"):
        assert field in time
    first_time = next(s for s in first["section"] if s["title"] == "Time")["text"]["div"]
    assert "Cumulative minutes stated on this report: 20" in first_time
    assert "Dr Sam Patel &lt;b&gt;" in time  # names are escaped in the narrative
    rec = next(s for s in second["section"] if s["title"] == "Recommendations")
    assert "Punch biopsy first." in rec["text"]["div"]


def test_people_are_practitioners_and_the_patient(bundle: dict[str, Any]) -> None:
    kinds = {r["id"]: r["resourceType"] for r in by_type(bundle, "Practitioner")
             + by_type(bundle, "Patient")}
    members = sample().members
    assert kinds == {members[0].user_id: "Practitioner", members[1].user_id: "Practitioner",
                     members[2].user_id: "Patient"}


def test_same_model_same_ids_and_round_trip_of_the_model(bundle: dict[str, Any]) -> None:
    again = build_bundle(ConsultExport.from_json(json.loads(json.dumps(sample().to_json()))))
    assert again == bundle


def test_without_a_request_or_patient_it_still_validates() -> None:
    export = sample()
    export.messages = [m for m in export.messages if m.content_type == "text"]
    patient = export.members[2].user_id
    export.messages = [m for m in export.messages if m.sender != patient]
    export.members = [m for m in export.members if not m.patient]
    bundle = build_bundle(export)
    validate_bundle(bundle)
    (sr,) = by_type(bundle, "ServiceRequest")
    assert "reasonCode" not in sr and sr["subject"] == {
        "display": f"The patient of case {export.case['id']}"}
    assert not by_type(bundle, "Composition")


def test_bodies_of_any_shape_still_give_a_valid_bundle() -> None:
    from tests.client.export.support import hostile_bodies

    export = hostile_bodies()
    bundle = build_bundle(export)
    validate_bundle(bundle)
    # Invalid bodies do not count: the last valid request and the two valid reports stand.
    (sr,) = by_type(bundle, "ServiceRequest")
    assert sr["reasonCode"] == [{"text": "Pigmented lesion, left forearm"}]
    assert sr["priority"] == "urgent"
    assert len(by_type(bundle, "Composition")) == 2
    comms = by_type(bundle, "Communication")
    assert comms[-1]["category"] == [{"text": "<content type>"}]
    assert comms[-1]["payload"] == [{"contentString": "\u202e"}]


def test_the_rooms_billing_advice_goes_with_the_report() -> None:
    export = sample()
    report = next(m for m in export.messages if m.seq == 11)
    assert report.body is not None
    report.body["report"]["referral_needed"] = True
    bundle = build_bundle(export)
    validate_bundle(bundle)
    time = next(s for s in by_type(bundle, "Composition")[-1]["section"]
                if s["title"] == "Time")["text"]["div"]
    assert "Advice: A face-to-face referral is recommended" in time
