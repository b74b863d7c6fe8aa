"""The sealed pin book the server keeps for each user: only the next version, only signed
by the user's registered identity key, bounded, audited without content."""

from __future__ import annotations

import json
import os
import threading
from typing import Any

import pytest
from django.conf import settings
from django.db import connection

from collab.accounts.models import IdentityPins
from collab.audit.models import AuditAction, AuditEvent
from collab.crypto.pins import seal_pins, sign_pins
from collab.crypto.wire import b64e
from tests.support.actor import Actor
from tests.support.users import verified_client

pytestmark = pytest.mark.django_db

PATH = "/api/identity/pins"
LIMIT = 262_144
Body = dict[str, Any]


@pytest.fixture
def pcp() -> Actor:
    return Actor("pcp").register()


def book(actor: Actor, version: int, text: bytes = b'{"format":"collab-pins","pins":{}}') -> Body:
    blob = seal_pins(actor.identity.uik_seed, text)
    return signed(actor, version, blob)


def signed(actor: Actor, version: int, blob: bytes, seed: bytes | None = None) -> Body:
    sig = sign_pins(seed or actor.identity.uik_seed, actor.user.pk, version, blob)
    return {"version": version, "blob": b64e(blob), "sig": b64e(sig)}


def put(actor: Actor, body: dict[str, Any]) -> Any:
    return actor.call("PUT", PATH, body)


def stored(actor: Actor) -> tuple[int, bytes] | None:
    row = IdentityPins.objects.filter(user=actor.user).first()
    return (row.version, bytes(row.blob)) if row else None


def events() -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=AuditAction.IDENTITY_PINS_STORED).order_by("seq"))


def test_no_pins_yet_is_404(pcp: Actor) -> None:
    response = pcp.call("GET", PATH)
    assert response.status_code == 404 and response.json()["error"] == "no_pins"


def test_first_version_is_1_and_comes_back_as_stored(pcp: Actor) -> None:
    first = book(pcp, 1)
    response = put(pcp, first)
    assert response.status_code == 200, response.content
    assert response.json() == {"version": 1}
    assert pcp.call("GET", PATH).json() == first
    (event,) = events()
    assert (event.actor_id, event.target) == (pcp.user.pk, f"user:{pcp.user.pk}")
    size = len(stored(pcp)[1])  # type: ignore[index]
    assert event.details == {"version": 1, "size": size}
    assert first["blob"] not in json.dumps(event.details)


def test_each_write_is_the_next_version(pcp: Actor) -> None:
    assert put(pcp, book(pcp, 1)).status_code == 200
    second = book(pcp, 2, b"second")
    assert put(pcp, second).status_code == 200
    assert pcp.call("GET", PATH).json() == second
    assert [e.details["version"] for e in events()] == [1, 2]


def test_stale_or_skipping_version_is_refused_with_the_current_version(pcp: Actor) -> None:
    response = put(pcp, book(pcp, 2))
    assert response.status_code == 409
    assert (response.json()["error"], response.json()["version"]) == ("stale_pins", 0)
    assert put(pcp, book(pcp, 1)).status_code == 200
    kept = stored(pcp)
    for version in (1, 3, 7):
        response = put(pcp, book(pcp, version, b"other"))
        assert response.status_code == 409
        assert (response.json()["error"], response.json()["version"]) == ("stale_pins", 1)
    assert stored(pcp) == kept
    assert len(events()) == 1


def test_replayed_put_of_an_old_version_is_refused(pcp: Actor) -> None:
    """A validly signed old book, sent again (by the server or anyone who saw it), does
    not roll the stored one back."""
    old = book(pcp, 1, b"old")
    assert put(pcp, old).status_code == 200
    assert put(pcp, book(pcp, 2, b"new")).status_code == 200
    current = stored(pcp)
    response = put(pcp, old)
    assert response.status_code == 409 and response.json()["version"] == 2
    assert stored(pcp) == current


def test_two_writers_of_the_same_version_store_one(pcp: Actor) -> None:
    """Two devices both read version 1 and both write version 2: the second is told to
    merge (the compare-and-swap is one conditional update, checked concurrently below)."""
    assert put(pcp, book(pcp, 1)).status_code == 200
    laptop = book(pcp, 2, b"laptop")
    phone = book(pcp, 2, b"phone")
    assert put(pcp, laptop).status_code == 200
    response = put(pcp, phone)
    assert (response.status_code, response.json()["version"]) == (409, 2)
    assert pcp.call("GET", PATH).json() == laptop


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_puts_of_the_same_version_store_exactly_one() -> None:
    pcp = Actor("pcp").register()
    assert put(pcp, book(pcp, 1)).status_code == 200
    bodies = [book(pcp, 2, f"writer {i}".encode()) for i in range(4)]
    clients = [verified_client(pcp.user) for _ in bodies]
    barrier = threading.Barrier(len(bodies))
    results: dict[int, tuple[int, Any]] = {}

    def write(i: int) -> None:
        try:
            barrier.wait()
            response = clients[i].put(
                PATH, data=json.dumps(bodies[i]), content_type="application/json"
            )
            results[i] = (response.status_code, response.json())
        finally:
            connection.close()

    threads = [threading.Thread(target=write, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, (status, _) in results.items() if status == 200]
    assert len(winners) == 1
    losers = [answer for status, answer in results.values() if status != 200]
    assert all(a["error"] == "stale_pins" and a["version"] == 2 for a in losers)
    assert len(losers) == len(bodies) - 1
    assert pcp.call("GET", PATH).json() == bodies[winners[0]]
    assert [e.details["version"] for e in events()] == [1, 2]


def test_bad_signature_is_refused_and_nothing_stored(pcp: Actor) -> None:
    blob = seal_pins(pcp.identity.uik_seed, b"pins")
    other = Actor("other").register()
    attempts = [
        signed(pcp, 1, blob, seed=os.urandom(32)),  # not the registered UIK
        {**signed(pcp, 2, blob), "version": 1},  # signed for another version
        {**signed(pcp, 1, blob), "blob": b64e(blob + b"x")},  # another blob
        {**signed(other, 1, blob, seed=other.identity.uik_seed)},  # another user's book
    ]
    for body in attempts:
        response = put(pcp, body)
        assert response.status_code == 400, body
        assert response.json()["error"] in {"bad_signature", "non_canonical_signature"}
    assert stored(pcp) is None
    assert not events()


def test_blob_over_256_kib_is_refused(pcp: Actor) -> None:
    response = put(pcp, signed(pcp, 1, os.urandom(LIMIT + 1)))
    assert response.status_code == 413
    assert (response.json()["error"], response.json()["max_bytes"]) == ("too_large", LIMIT)
    assert stored(pcp) is None
    assert put(pcp, signed(pcp, 1, os.urandom(LIMIT))).status_code == 200


def test_pins_need_a_registered_identity() -> None:
    actor = Actor("fresh")  # not registered
    response = put(actor, book(actor, 1))
    assert response.status_code == 409 and response.json()["error"] == "no_identity"


def test_malformed_fields_are_refused(pcp: Actor) -> None:
    good = book(pcp, 1)
    for version in ("1", 0, -1, True, None, 2**63):
        assert put(pcp, {**good, "version": version}).json()["error"] == "bad_field", version
    assert put(pcp, {**good, "blob": "not base64"}).json()["error"] == "bad_base64"
    assert put(pcp, {**good, "blob": ""}).json()["error"] == "bad_field"
    assert put(pcp, {**good, "sig": b64e(bytes(63))}).json()["error"] == "bad_length"
    assert stored(pcp) is None


def test_each_user_sees_only_their_own_pins(pcp: Actor) -> None:
    assert put(pcp, book(pcp, 1)).status_code == 200
    other = Actor("other").register()
    assert other.call("GET", PATH).status_code == 404
    assert put(other, book(other, 1)).status_code == 200
    assert pcp.call("GET", PATH).json()["version"] == 1
    assert IdentityPins.objects.count() == 2


def test_put_needs_the_csrf_token(pcp: Actor) -> None:
    client = verified_client(pcp.user)
    client.handler.enforce_csrf_checks = True
    body = json.dumps(book(pcp, 1))
    refused = client.put(PATH, data=body, content_type="application/json")
    assert refused.status_code == 403 and refused.json()["error"] == "csrf_failed"
    assert stored(pcp) is None
    token = "a" * 32
    client.cookies[settings.CSRF_COOKIE_NAME] = token
    allowed = client.put(PATH, data=body, content_type="application/json", HTTP_X_CSRFTOKEN=token)
    assert allowed.status_code == 200, allowed.content
