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
from collab.client.pins import PinBook, commit_check, merge, own_check
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


def roster(pairs: list[list[str]]) -> list[tuple[uuid.UUID, bytes]]:
    return [(USERS[u], KEYS[k]) for u, k in pairs]


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
                            step["now"])
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


@pytest.mark.parametrize("scenario", SCENARIOS["pins"], ids=lambda s: s["name"])
def test_pin_scenario(scenario: dict[str, Any]) -> None:
    book = PinBook()
    for number, step in enumerate(scenario["steps"]):
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
