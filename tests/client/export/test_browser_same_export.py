"""The browser's export modules (export-fhir.js, export-html.js, run by node) build the
same Bundle and the same HTML page as the Python client from the same model, so the
browser's download validates wherever the Python one does."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from collab.client.export.fhir import build_bundle
from collab.client.export.html import build_html
from collab.client.export.model import ConsultExport
from tests.client.export.support import sample, validate_bundle

SCRIPT = Path(__file__).with_name("build_with_js.mjs")


def js_build(export: ConsultExport, tmp_path: Path) -> dict[str, object]:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is needed for the browser's export modules")
    model = tmp_path / "model.json"
    model.write_text(json.dumps(export.to_json()))
    result = subprocess.run([node, str(SCRIPT), str(model)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    out: dict[str, object] = json.loads(result.stdout)
    return out


def test_js_builds_the_same_bundle_and_page(tmp_path: Path) -> None:
    export = sample()
    out = js_build(export, tmp_path)
    assert out["bundle"] == build_bundle(export)
    assert out["html"] == build_html(export)
    assert isinstance(out["bundle"], dict)
    validate_bundle(out["bundle"])


def test_js_and_python_agree_on_a_case_without_request_or_report(tmp_path: Path) -> None:
    export = sample()
    export.messages = [m for m in export.messages if m.content_type in ("text", "image")]
    export.case["status"] = "closed"
    out = js_build(export, tmp_path)
    assert out["bundle"] == build_bundle(export)
    assert out["html"] == build_html(export)


def test_js_and_python_agree_on_bodies_of_any_shape(tmp_path: Path) -> None:
    from tests.client.export.support import hostile_bodies

    export = hostile_bodies()
    out = js_build(export, tmp_path)
    assert out["bundle"] == build_bundle(export)
    assert out["html"] == build_html(export)
    assert "<script>x" not in str(out["html"])


def test_js_and_python_agree_on_the_billing_advice(tmp_path: Path) -> None:
    export = sample()
    report = next(m for m in export.messages if m.seq == 11)
    assert report.body is not None
    report.body["report"]["referral_needed"] = True
    out = js_build(export, tmp_path)
    assert out["bundle"] == build_bundle(export)
    assert out["html"] == build_html(export) and "face-to-face referral" in build_html(export)


def test_js_and_python_agree_on_a_lying_server(tmp_path: Path) -> None:
    """opened_by decides nothing (the model's requester, the genesis author, does) and a
    removed message is the same one line in both; the Bundle still validates."""
    from collab.client.export.record import consult_request
    from tests.client.export.support import lying_server

    export = lying_server()
    out = js_build(export, tmp_path)
    assert out["bundle"] == build_bundle(export)
    assert out["html"] == build_html(export)
    assert isinstance(out["bundle"], dict)
    validate_bundle(out["bundle"])
    request = consult_request(export)
    assert request is not None and request.message.sender == export.requester
    notes = [r["note"][0]["text"] for e in out["bundle"]["entry"]
             if (r := e["resource"])["resourceType"] == "Communication"
             and r["status"] == "entered-in-error"]
    assert notes == ["Message #30 recalled by the sender at 2025-12-02T00:00:00.123Z",
                     "Message #31 removed by the server at 2025-12-03T00:00:00.000Z "
                     "(no valid recall from its sender: bad_signature)",
                     "Message #32 removed by the server at ? (retention policy)"]
    assert "[recalled by the sender at 2025-12-02T00:00:00.123Z]" in str(out["html"])
