"""collab-client export against a real server: the Bundle of a consult holds every
message (decrypted on this device), the images byte for byte, the report and the time
summary, the status history, and nothing of another case; it validates with
fhir.resources and the R4 JSON schema. The HTML page escapes hostile text. The server
never receives the export: every request made while exporting is recorded."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from PIL import Image as PilImage

from collab.client import sdk
from collab.client.export.model import gather
from collab.client.http import HttpSession
from collab.client.sdk import CollabClient, _outbox_key
from tests.client.export.support import HOSTILE, T0, png, validate_bundle
from tests.support.clients import PASS, new_member, run_cli
from tests.support.live import daphne_servers

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]


@pytest.fixture(scope="module")
def server(django_db_setup: None, django_db_blocker: Any) -> Iterator[str]:
    with django_db_blocker.unblock(), daphne_servers(1) as urls:
        yield urls[0]


@pytest.fixture
def requests(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, bytes]]:
    """Every HTTP request any client makes: (method, path, body)."""
    seen: list[tuple[str, str, bytes]] = []
    real = HttpSession._request

    def spied(self: HttpSession, method: str, path: str, data: bytes | None,
              content_type: str | None, **kw: Any) -> Any:
        seen.append((method, path, data or b""))
        return real(self, method, path, data, content_type, **kw)

    monkeypatch.setattr(HttpSession, "_request", spied)
    return seen


def send(client: CollabClient, case_id: uuid.UUID, content_type: str,
         body: dict[str, Any]) -> int:
    key = _outbox_key(case_id, content_type, json.dumps(body, sort_keys=True).encode())
    sent = asyncio.run(client._send_envelope(case_id, body, content_type, (), None, key, None))
    return sent.seq


REQUEST = {"text": "Lesion: melanoma?", "consult": {
    "reason": "Pigmented lesion, left forearm", "question": "Excise or watch?",
    "history": "3 months", "medications": "None", "tried": "Nothing", "urgency": "urgent",
    "callback": {"method": "message", "detail": ""}, "patient_consent": True}}


def consult(server: str, home: Path) -> tuple[CollabClient, CollabClient, uuid.UUID, bytes]:
    pcp = new_member(server, "pcp", home)
    derm = new_member(server, "derm", home, specialty="Dermatology")
    case_id = pcp.open_case(specialty="Dermatology", urgency="urgent")
    pcp.add_member(case_id, derm.user_id)
    other = pcp.open_case()
    asyncio.run(pcp.send_text(other, "OTHER CASE: not for this export"))
    send(pcp, case_id, "consult_request", REQUEST)
    asyncio.run(pcp.send_text(case_id, HOSTILE))
    source = home / "forearm.png"
    source.write_bytes(png((200, 30, 30), (40, 30)))
    asyncio.run(pcp.send_image(case_id, source, caption="day 3"))
    derm.call("POST", f"/api/cases/{case_id}/status", {"status": "accepted"})
    send(derm, case_id, "time_entry", {"text": "Time: 12 min", "time": {
        "kind": "manual", "minutes": 12, "start_ms": T0, "end_ms": T0, "note": ""}})
    send(derm, case_id, "consult_report", {"text": "Report", "report": {
        "assessment": "Naevus.", "recommendations": "Excise.", "follow_up": "Histology.",
        "referral_needed": True, "supersedes": None,
        "time": {"minutes": 12, "first_date": "2025-12-02", "last_date": "2025-12-02"}}})
    return pcp, derm, case_id, source.read_bytes()


def rgb_pixels(image: PilImage.Image) -> tuple[tuple[int, ...], ...]:
    """Every pixel of an RGB image as its (r, g, b): get_flattened_data's answer for an
    image of several bands (the flat tuple of numbers is a single band's)."""
    assert image.mode == "RGB"
    return cast(tuple[tuple[int, ...], ...], image.get_flattened_data())


def export(home: Path, case_id: uuid.UUID, fmt: str, target: Path) -> str:
    code, out, err = run_cli("--home", str(home), "export", str(case_id), "--format", fmt,
                             "-o", str(target))
    assert code == 0, err
    return out


def test_cli_exports_a_valid_bundle_of_the_whole_consult(
        server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        requests: list[tuple[str, str, bytes]]) -> None:
    monkeypatch.setenv("COLLAB_PASSPHRASE", PASS)
    pcp, derm, case_id, source = consult(server, tmp_path)
    stored = derm.history(case_id)
    requests.clear()
    target = tmp_path / "out" / "consult.json"
    target.parent.mkdir()
    out = export(tmp_path / "derm", case_id, "fhir", target)
    assert f"{len(stored)} messages, 1 images" in out
    assert target.stat().st_mode & 0o777 == 0o600
    text = target.read_text()
    bundle = json.loads(text)
    validate_bundle(bundle)
    resources = [e["resource"] for e in bundle["entry"]]
    comms = [r for r in resources if r["resourceType"] == "Communication"]
    assert [c["category"][0]["text"] for c in comms] == [m.header.content_type for m in stored]
    assert [p["contentString"] for c in comms for p in c.get("payload", [])
            if "contentString" in p][:2] == ["Lesion: melanoma?", HOSTILE]
    # The image: what the sender encrypted (sanitised: a JPEG of the source's pixels).
    (attachment,) = [p["contentAttachment"] for c in comms for p in c.get("payload", [])
                     if "contentAttachment" in p]
    data = base64.b64decode(attachment["data"])
    image_msg = next(m for m in stored if m.header.content_type == "image")
    manifest = image_msg.image()
    assert manifest is not None and data == derm.download_bytes(manifest)
    got = PilImage.open(io.BytesIO(data)).convert("RGB")
    want = PilImage.open(io.BytesIO(source)).convert("RGB")
    assert got.size == want.size and attachment["contentType"] == manifest.mime
    assert max(abs(a - b) for p, q in zip(rgb_pixels(got), rgb_pixels(want), strict=True)
               for a, b in zip(p, q, strict=True)) <= 4
    (sr,) = [r for r in resources if r["resourceType"] == "ServiceRequest"]
    assert sr["priority"] == "asap" and sr["reasonCode"][0]["text"].startswith("Pigmented")
    (task,) = [r for r in resources if r["resourceType"] == "Task"]
    assert any("accepted" in n["text"] for n in task["note"])
    assert task["owner"]["reference"] == f"urn:uuid:{derm.user_id}"
    (report,) = [r for r in resources if r["resourceType"] == "Composition"]
    time = next(s for s in report["section"] if s["title"] == "Time")["text"]["div"]
    assert "Minutes in the author&#x27;s time entries now: 12" in time
    assert "Advice: A face-to-face referral is recommended" in time  # the room's advice
    people = {r["id"] for r in resources if r["resourceType"] == "Practitioner"}
    assert people == {str(pcp.user_id), str(derm.user_id)}
    assert "OTHER CASE" not in text
    # Nothing of the export went to the server: reads only, or the client's own
    # background writes, none carrying anything of the export.
    assert requests
    for method, path, body in requests:
        assert method == "GET" or b"Bundle" not in body, (method, path)
        assert HOSTILE.encode() not in body and b"resourceType" not in body


def test_cli_exports_printable_html_with_hostile_text_escaped(
        server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        requests: list[tuple[str, str, bytes]]) -> None:
    monkeypatch.setenv("COLLAB_PASSPHRASE", PASS)
    _pcp, _derm, case_id, _source = consult(server, tmp_path)
    requests.clear()
    target = tmp_path / "consult.html"
    export(tmp_path / "pcp", case_id, "html", target)
    page = target.read_text()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert 'src="data:image/' in page and "@media print" in page
    assert "OTHER CASE" not in page
    assert not [p for m, p, b in requests if m != "GET" and b"DOCTYPE" in b]


def test_an_outsider_cannot_export(server: str, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLLAB_PASSPHRASE", PASS)
    _pcp, _derm, case_id, _source = consult(server, tmp_path)
    new_member(server, "outsider", tmp_path)
    target = tmp_path / "nope.json"
    code, _out, err = run_cli("--home", str(tmp_path / "outsider"), "export", str(case_id),
                              "--format", "fhir", "-o", str(target))
    assert code == 3 and "(not_member)" in err
    assert not target.exists()


def test_gather_reads_every_page_and_epoch_and_reports_progress(
        server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLLAB_PASSPHRASE", PASS)
    pcp, derm, case_id, _source = consult(server, tmp_path)
    third = new_member(server, "third", tmp_path)
    pcp.add_member(case_id, third.user_id)  # a new epoch
    for i in range(3):
        asyncio.run(pcp.send_text(case_id, f"epoch 2 message {i}"))
    monkeypatch.setattr(sdk, "HISTORY_PAGE", 2)
    calls: list[tuple[int, int, str]] = []
    export_model = gather(derm, case_id, lambda done, total, what: calls.append(
        (done, total, what)))
    seqs = [m.seq for m in export_model.messages]
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) == 8
    assert {m.body["text"] for m in export_model.messages if m.body} >= {
        "epoch 2 message 2", HOSTILE}
    pages = [c for c in calls if c[2] == "messages"]
    assert len(pages) >= 4 and pages[-1][:2] == (8, 8)
    assert [c for c in calls if c[2] == "images"] == [(1, 1, "images")]
    assert {m.role for m in export_model.members} == {"owner", "member"}
    assert {m.user_id for m in export_model.members} == {
        str(pcp.user_id), str(derm.user_id), str(third.user_id)}
    # -o - writes the page to stdout.
    code, out, err = run_cli("--home", str(tmp_path / "third"), "export", str(case_id),
                             "--format", "html", "-o", "-")
    assert code == 0, err
    assert out.startswith("<!DOCTYPE html>") and "epoch 2 message 2" in out
