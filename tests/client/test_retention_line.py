"""The command line's retention line says what the browser says, on the shared scenarios
(tests/policy/retention_lines.json, also read by frontend/tests/retention.test.mjs)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from collab.client.retention import retention_line
from tests.client.test_cli import _Stub, home, make_keystore, run, stub  # noqa: F401
from tests.client.test_cli_printable import answer

VECTORS: list[dict[str, Any]] = json.loads(
    (Path(__file__).resolve().parents[1] / "policy" / "retention_lines.json").read_text("utf-8")
)["vectors"]


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_the_line_matches_the_browsers(vector: dict[str, Any]) -> None:
    now = datetime.fromisoformat(vector["now"].replace("Z", "+00:00"))
    assert retention_line(vector["retention"], now=now) == (vector["state"], vector["text"])


def test_the_cases_command_prints_the_line_under_each_case(
        home: Path, stub: tuple[str, type[_Stub]]) -> None:  # noqa: F811 - fixtures
    url, handler = stub
    make_keystore(home, url)
    held = dict(VECTORS[2]["retention"])
    answer(handler, 200, {"cases": [
        {"id": "c1", "status": "closed", "urgency": "routine", "specialty": "Dermatology",
         "head": {"epoch": 1}, "last_seq": 3, "retention": held},
        {"id": "c2", "status": "requested", "urgency": "routine", "specialty": "",
         "head": {"epoch": 1}, "last_seq": 0},
    ]})
    code, out, err = run("cases")
    assert code == 0, err
    assert out.splitlines() == [
        "c1 closed routine Dermatology epoch 1 messages 3",
        "    On legal hold: nothing will be deleted.",
        "c2 requested routine - epoch 1 messages 0",
    ]
