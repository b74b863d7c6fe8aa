"""The client trust policy on the shared scenarios (tests/policy/trust_scenarios.json);
the browser runs the same file (frontend/tests/trust.test.mjs)."""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from collab.client.admission import review_admission
from collab.client.errors import IdentityChangedError
from collab.client.pins import (
    MAX_CASES,
    MAX_PREVIOUS,
    PinBook,
    commit_check,
    merge,
    own_check,
)
from collab.crypto.errors import CryptoError

SCENARIOS = json.loads(
    (Path(__file__).resolve().parents[1] / "policy" / "trust_scenarios.json").read_text()
)
USERS = {k: uuid.UUID(v) for k, v in SCENARIOS["users"].items()}
KEYS = {k: base64.b64decode(v) for k, v in SCENARIOS["keys"].items()}
CASES = {k: uuid.UUID(v) for k, v in SCENARIOS["cases"].items()}
NAMES_OF_USERS = {v: k for k, v in USERS.items()}
NAMES_OF_KEYS = {v: k for k, v in KEYS.items()}
NAMES_OF_CASES = {v: k for k, v in CASES.items()}
OPS = {"state", "observe", "observe_cases", "change_cases", "accept", "verify", "unverify",
       "changes", "blocking", "own", "commit"}


def roster(pairs: list[list[str]]) -> list[tuple[uuid.UUID, bytes]]:
    return [(USERS[u], KEYS[k]) for u, k in pairs]


def numbered_case(i: int) -> uuid.UUID:
    return uuid.UUID(f"{i:08x}-0000-4000-8000-000000000000")


def outcome(check: Any) -> str:
    try:
        check()
    except CryptoError as error:
        return error.code
    except IdentityChangedError as error:
        return error.code
    return "ok"


def run_step(book: PinBook, step: dict[str, Any]) -> Any:
    op = step["op"]
    if op == "state":
        return book.state(USERS[step["user"]], KEYS[step["uik"]])
    if op == "observe":
        return book.observe(USERS[step["user"]], KEYS[step["uik"]], CASES[step["case"]],
                            step["now"], historical=step.get("historical", False))
    if op == "observe_cases":
        for i in range(1, step["count"] + 1):
            book.observe(USERS[step["user"]], KEYS[step["uik"]], numbered_case(i), step["now"])
        return None
    if op == "change_cases":
        record = book.get(USERS[step["user"]])
        assert record is not None and record.changed is not None
        cases = [str(c) for c in record.changed.cases]
        assert len(cases) == step["expect_count"]
        assert (cases[0], cases[-1]) == (step["expect_first"], step["expect_last"])
        return None
    if op == "accept":
        return book.accept(USERS[step["user"]], KEYS[step["uik"]], step["now"])
    if op == "verify":
        return book.verify(USERS[step["user"]], KEYS[step["uik"]], step["now"])
    if op == "unverify":
        return book.unverify(USERS[step["user"]], step["now"])
    if op == "changes":
        return [{"user": NAMES_OF_USERS[c.user], "old": NAMES_OF_KEYS[c.old],
                 "new": NAMES_OF_KEYS[c.new], "cases": [NAMES_OF_CASES[x] for x in c.cases],
                 "was_verified": c.was_verified} for c in book.changes()]
    if op == "blocking":
        return [NAMES_OF_USERS[u] for u in book.blocking(roster(step["roster"]),
                                                         USERS[step["me"]])]
    if op == "own":
        return outcome(lambda: own_check(roster(step["roster"]), USERS[step["me"]],
                                         KEYS[step["my_uik"]]))
    if op == "commit":
        return outcome(lambda: commit_check(book, roster(step["roster"]), USERS[step["me"]],
                                            KEYS[step["my_uik"]]))
    raise AssertionError(f"unknown op {op}")


def test_every_scenario_op_is_run_and_the_limits_are_shared() -> None:
    used = {step["op"] for s in SCENARIOS["pins"] for step in s["steps"]}
    assert used <= OPS, used - OPS
    assert SCENARIOS["limits"] == {"cases_per_change": MAX_CASES, "previous": MAX_PREVIOUS}


@pytest.mark.parametrize("scenario", SCENARIOS["pins"], ids=lambda s: s["name"])
def test_pin_scenario(scenario: dict[str, Any]) -> None:
    book = PinBook()
    for number, step in enumerate(scenario["steps"]):
        assert step["op"] in OPS, step
        got = run_step(book, step)
        if "expect" in step:
            assert got == step["expect"], f"step {number}: {step}"
        # Every state survives the document round trip unchanged.
        assert PinBook.from_document(json.loads(json.dumps(book.document()))) == book


@pytest.mark.parametrize(
    "case", SCENARIOS["admission"],
    ids=lambda c: f"{c['pin']}-{c['kind']}-{c['binding']}-"
                  f"{int(c['accept_changed'])}{int(c['code_compared'])}",
)
def test_admission_scenario(case: dict[str, Any]) -> None:
    review = review_admission(pin=case["pin"], kind=case["kind"], binding=case["binding"],
                              accept_changed=case["accept_changed"],
                              code_compared=case["code_compared"])
    assert {"allowed": review.allowed, "blockers": list(review.blockers)} == case["expect"]


def named(book: dict[str, Any]) -> dict[str, Any]:
    """Scenario records (names) -> the document's pins map (ids and base64)."""
    out = {}
    for user, r in book.items():
        changed = r["changed"]
        out[str(USERS[user])] = {
            **r, "uik": SCENARIOS["keys"][r["uik"]],
            "previous": [SCENARIOS["keys"][k] for k in r["previous"]],
            "changed": None if changed is None else {
                **changed, "uik": SCENARIOS["keys"][changed["uik"]],
                "cases": [str(CASES[c]) for c in changed["cases"]]},
        }
    return out


@pytest.mark.parametrize("scenario", SCENARIOS["merge"], ids=lambda s: s["name"])
def test_merge_scenario(scenario: dict[str, Any]) -> None:
    local = PinBook.from_json(named(scenario["local"]))
    remote = PinBook.from_json(named(scenario["remote"]))
    assert merge(local, remote).to_json() == named(scenario["expect"])


def test_commit_refusal_names_the_change_with_both_safety_numbers() -> None:
    book = PinBook()
    me, bob = USERS["me"], USERS["bob"]
    book.observe(bob, KEYS["K1"], CASES["C1"], 1000)
    book.observe(bob, KEYS["K2"], CASES["C2"], 2000)
    with pytest.raises(IdentityChangedError) as refused:
        commit_check(book, [(me, KEYS["K4"]), (bob, KEYS["K2"])], me, KEYS["K4"])
    (change,) = refused.value.changes
    assert change.user == bob and (change.old_uik, change.new_uik) == (KEYS["K1"], KEYS["K2"])
    assert change.cases == (CASES["C2"],) and not change.was_verified
    assert len(change.old_safety) == 12 and change.old_safety != change.new_safety
    assert refused.value.exit_code == 4


def test_malformed_documents_are_refused() -> None:
    with pytest.raises(CryptoError):
        PinBook.from_document({"format": "something-else", "pins": {}})
    with pytest.raises(CryptoError):
        PinBook.from_json({str(USERS["bob"]): {"uik": "AAAA", "state": "pinned",
                                               "updated_ms": 1, "previous": [],
                                               "changed": None}})
    with pytest.raises(CryptoError):
        PinBook.from_json({str(USERS["bob"]): {"uik": SCENARIOS["keys"]["K1"],
                                               "state": "trusted", "updated_ms": 1}})
    with pytest.raises(CryptoError):
        PinBook.from_json({"not-a-uuid": {"uik": SCENARIOS["keys"]["K1"], "state": "pinned",
                                          "updated_ms": 1}})


def test_a_fresh_devices_first_use_pin_never_replaces_a_verified_key() -> None:
    """The attack: a new device first-uses the server's key B (a later time) while
    another device verified Bob's key A; merged either way A stays, B is a change."""
    bob, a, b = USERS["bob"], KEYS["K1"], KEYS["K2"]
    laptop = PinBook()
    laptop.observe(bob, a, CASES["C1"], 500)
    laptop.verify(bob, a, 1000)
    phone = PinBook()
    assert phone.observe(bob, b, CASES["C1"], 2000) == "new"
    for merged in (merge(phone, laptop), merge(laptop, merge(phone, laptop))):
        assert merged.state(bob, a) == "verified" and merged.state(bob, b) == "changed"
        (change,) = merged.changes()
        assert (change.old, change.new, change.was_verified) == (a, b, True)
    # The honest twin: on the phone (which now knows A) the person accepts B; that
    # record holds A in `previous` and supersedes the laptop's verification.
    phone = merge(phone, laptop)
    phone.accept(bob, b, 3000)
    merged = merge(laptop, phone)
    assert merged.state(bob, b) == "pinned" and merged.changes() == []


def test_oversized_lists_are_truncated_on_parsing_never_refused() -> None:
    bob = str(USERS["bob"])
    cases = [str(numbered_case(i)) for i in range(1, 5000)]
    previous = [base64.b64encode(bytes([i]) * 32).decode() for i in range(1, 40)]
    record = {"uik": SCENARIOS["keys"]["K1"], "state": "pinned", "updated_ms": 1,
              "previous": previous, "changed": {"uik": SCENARIOS["keys"]["K2"],
                                                "seen_ms": 2, "cases": cases[::-1]}}
    loaded = PinBook.from_json({bob: record}).get(USERS["bob"])
    assert loaded is not None and loaded.changed is not None
    assert [str(c) for c in loaded.changed.cases] == cases[::-1][-MAX_CASES:]  # newest observed
    assert [base64.b64encode(p).decode() for p in loaded.previous] == previous[-MAX_PREVIOUS:]
    # The honest twin: lists within the limits load unchanged.
    record["previous"], record["changed"]["cases"] = previous[:3], cases[:MAX_CASES]
    again = PinBook.from_json({bob: record}).to_json()[bob]
    assert again["previous"] == previous[:3] and again["changed"]["cases"] == cases[:MAX_CASES]


def test_previous_keys_are_bounded_when_written() -> None:
    book, bob = PinBook(), USERS["bob"]
    keys = [bytes([i]) * 32 for i in range(1, MAX_PREVIOUS + 5)]
    for now, key in enumerate(keys, 1):
        book.accept(bob, key, now)
    record = book.get(bob)
    assert record is not None and record.previous == tuple(keys[-MAX_PREVIOUS - 1:-1])


def test_too_many_pins_keep_the_decisions_when_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    import collab.client.pins as pins

    monkeypatch.setattr(pins, "MAX_PINS", 2)
    book = PinBook()
    users = [uuid.UUID(int=i + 1) for i in range(4)]
    for now, user in enumerate(users, 1):
        book.observe(user, KEYS["K1"], None, now * 10)
    book.verify(users[0], KEYS["K1"], 1)  # oldest, but a decision
    loaded = PinBook.from_json(book.to_json())
    assert sorted(loaded.records) == [users[0], users[3]]
