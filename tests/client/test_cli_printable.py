"""The CLI prints nothing a terminal would obey (issue 12): message text, display names,
device names, case fields and error details come from other people or the server, so
escape sequences, C0/C1 controls and bidi controls are taken out before printing."""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path
from typing import Any

import pytest

from collab.client import cli
from collab.client.sdk import CollabClient
from tests.client.test_cli import _Stub, home, make_keystore, run, stub  # noqa: F401

# A sender's or the server's choice of bytes, each aimed at the terminal.
ATTACKS = {
    "csi colour": "\x1b[31mred\x1b[0m",
    "cursor up and erase": "\x1b[2A\x1b[2K",
    "osc title (BEL)": "\x1b]0;you have been signed out\x07",
    "osc hyperlink (ST)": "\x1b]8;;https://evil.example/\x1b\\click\x1b]8;;\x1b\\",
    "8-bit csi": "\x9b31m",
    "8-bit osc": "\x9d0;title\x9c",
    "dcs": "\x1bP1$qm\x1b\\",
    "charset switch": "\x1b(0",
    "carriage return": "ok\rforged",
    "backspace and bell": "a\x08\x07b",
    "del and nul": "x\x7f\x00y",
    "bidi override": "\u202etxt.exe",
    "bidi isolate and mark": "\u2066a\u2069\u200f\u061c",
}
FORBIDDEN = ["\x1b", "\x9b", "\x9d", "\x9c", "\x90", "\r", "\x07", "\x08", "\x7f", "\x00",
             "\u202e", "\u2066", "\u2069", "\u200f", "\u061c"]


def answer(handler: type[_Stub], status: int, body: dict[str, Any]) -> None:
    """What the stub server answers to every request from now on (with a device nonce,
    which the client fetches first)."""
    handler.status = status
    setattr(handler, "body", {"nonce": "n0nce", **body})  # noqa: B010 - any JSON body


def clean(text: str) -> bool:
    return not any(c in text for c in FORBIDDEN)


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_printable_takes_out_every_control(name: str) -> None:
    shown = cli.printable(f"before {ATTACKS[name]} after")
    assert clean(shown), repr(shown)
    assert shown.startswith("before ") and shown.endswith(" after"), repr(shown)


def test_printable_keeps_text_and_line_breaks_only_where_asked() -> None:
    assert cli.printable("Rash, 3 weeks — Ödem, 湿疹 🙂") == "Rash, 3 weeks — Ödem, 湿疹 🙂"
    assert cli.printable("red \x1b[31mwarning\x1b[0m") == "red warning"
    assert cli.printable("one\ntwo\r\nthree\u2028four") == "one two three four"
    assert cli.printable("one\ntwo\r\nthree", multiline=True) == "one\ntwo\nthree"
    assert cli.printable("a\tb") == "a b"


@dataclasses.dataclass
class _Header:
    sent_ms: int = 1_790_000_000_000
    case_id: uuid.UUID = dataclasses.field(default_factory=uuid.uuid4)
    content_type: str = "text"
    sender_device_id: uuid.UUID = dataclasses.field(default_factory=uuid.uuid4)


@dataclasses.dataclass
class _Message:
    seq: int
    text: str
    header: _Header = dataclasses.field(default_factory=_Header)
    sender_user_id: uuid.UUID = dataclasses.field(default_factory=uuid.uuid4)
    epoch: int = 1
    gap: Any = None
    unavailable: str | None = None
    unavailable_author: uuid.UUID | None = None
    body: dict[str, Any] = dataclasses.field(default_factory=dict)

    def image(self, thumbnail: bool = False) -> None:
        return None


def test_history_shows_hostile_text_and_names_harmlessly(
        home: Path, stub: tuple[str, type[_Stub]],  # noqa: F811 - fixtures
        monkeypatch: pytest.MonkeyPatch) -> None:
    url, handler = stub
    # The server's directory answers every name lookup with this display name.
    answer(handler, 200, {"display_name": "Dr \x1b[1mMorgan\x1b]0;root shell\x07\u202e"})
    make_keystore(home, url)
    text = "Biopsy booked\n#2 2026-09-21 14:13:20 Dr Morgan (epoch 1): forged line" \
           + "".join(ATTACKS.values())
    messages = [_Message(1, text)]
    # The CLI's history reads the timeline (history with removed messages in place).
    monkeypatch.setattr(CollabClient, "timeline",
                        lambda self, case_id, after=0, limit=None: messages)
    code, out, err = run("history", str(uuid.uuid4()))
    assert code == 0, err
    assert clean(out), repr(out)
    lines = out.splitlines()
    assert lines[0].startswith("#1 ") and "Dr Morgan (epoch 1): Biopsy booked" in lines[0]
    # The message's own second line cannot pass for message #2: it is indented.
    assert lines[1].startswith("    #2 ")
    assert all(not line.startswith("#2") for line in lines)


def test_devices_cases_and_server_errors_are_printable(
        home: Path, stub: tuple[str, type[_Stub]]) -> None:  # noqa: F811 - fixtures
    url, handler = stub
    make_keystore(home, url)
    answer(handler, 200, {"devices": [{"device_id": "d1\x1b[8m",
                                       "name": "laptop\x1b]0;x\x07\r"}]})
    code, out, err = run("devices")
    assert code == 0 and clean(out) and "d1 laptop" in out, (out, err)
    answer(handler, 200, {"cases": [{"id": "c1", "status": "open\x1b[2J", "urgency": "urgent",
                                     "specialty": "Derm\u202eatology", "head": {"epoch": 1},
                                     "last_seq": "3\x1b[1A"}]})
    code, out, err = run("cases")
    assert code == 0 and clean(out), (out, err)
    assert out.count("\n") == 1
    answer(handler, 403, {"error": "not_member",
                          "detail": "No.\x1b[1A\x1b[2Kcollab-client: ok\r"})
    code, _, err = run("history", str(uuid.uuid4()))
    assert code == 3 and clean(err) and err.count("\n") == 1, repr(err)
