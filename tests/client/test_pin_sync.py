"""Pin sync against a fake pins endpoint: merge, next version, 409 retry, and what the
server cannot do (roll back, forge, delete)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from collab.client.errors import ServerRefusedError
from collab.client.keys import DeviceKeys, Identity
from collab.client.keystore import KeystoreState
from collab.client.pins import PinBook, document_bytes, fit
from collab.client.sdk import CollabClient
from collab.crypto.errors import CryptoError
from collab.crypto.pins import MAX_BLOB, open_pins, seal_pins, sign_pins
from collab.crypto.wire import b64d, b64e

BOB = uuid.UUID("22222222-2222-4222-8222-222222222222")
K1, K2 = b"\x01" * 32, b"\x02" * 32


class FakePins:
    """GET/PUT /api/identity/pins as spec'd: version must be current + 1."""

    def __init__(self) -> None:
        self.stored: dict[str, Any] | None = None
        self.puts = 0
        self.conflicts = 0  # answer this many PUTs with 409 stale_pins

    def __call__(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        assert path == "/api/identity/pins"
        if method == "GET":
            if self.stored is None:
                raise ServerRefusedError("no pins", code="no_pins", status=404)
            return dict(self.stored)
        assert method == "PUT" and body is not None
        current = self.stored["version"] if self.stored else 0
        if self.conflicts or body["version"] != current + 1:
            self.conflicts = max(0, self.conflicts - 1)
            raise ServerRefusedError("stale", code="stale_pins", status=409,
                                     body={"version": current})
        self.puts += 1
        self.stored = dict(body)
        return {"version": body["version"]}


def device_client(identity: Identity, fake: FakePins) -> CollabClient:
    device = DeviceKeys.generate(identity.user_id)
    state = KeystoreState(server="http://127.0.0.1:9", user_id=identity.user_id,
                          identity=identity, device=device, cert=identity.certify(device))
    client = CollabClient(state=state)
    client.call = fake  # type: ignore[method-assign]
    return client


def stored_book(fake: FakePins, identity: Identity) -> PinBook:
    assert fake.stored is not None
    plain = open_pins(identity.uik_seed, b64d(fake.stored["blob"]))
    return PinBook.from_document(json.loads(plain))


def test_a_pin_change_is_stored_sealed_and_reaches_the_other_device() -> None:
    identity, fake = Identity.generate(uuid.uuid4()), FakePins()
    one, two = device_client(identity, fake), device_client(identity, fake)
    one.pins.observe(BOB, K1, None, 1000)
    one.pins.verify(BOB, K1, 1500)
    one.sync_pins()
    assert fake.stored is not None and fake.stored["version"] == 1
    assert b64e(K1) not in json.dumps(fake.stored)  # sealed
    assert stored_book(fake, identity).state(BOB, K1) == "verified"
    two.sync_pins()
    assert two.pins.state(BOB, K1) == "verified" and two.state.pins_version == 1
    puts = fake.puts
    two.sync_pins()  # nothing new: nothing written
    assert fake.puts == puts


def test_another_device_writing_first_means_merge_and_retry() -> None:
    identity, fake = Identity.generate(uuid.uuid4()), FakePins()
    client = device_client(identity, fake)
    client.pins.observe(BOB, K1, None, 1000)
    fake.conflicts = 2
    client.sync_pins()
    assert fake.stored is not None and fake.stored["version"] == 1
    fake.conflicts = 10
    client.pins.verify(BOB, K1, 2000)
    with pytest.raises(ServerRefusedError) as gave_up:
        client.sync_pins()
    assert gave_up.value.code == "stale_pins"


def test_rolled_back_deleted_or_forged_pin_books_are_refused() -> None:
    identity, fake = Identity.generate(uuid.uuid4()), FakePins()
    client = device_client(identity, fake)
    client.pins.observe(BOB, K1, None, 1000)
    client.sync_pins()
    old = dict(fake.stored or {})
    client.pins.verify(BOB, K1, 2000)
    client.sync_pins()
    assert client.state.pins_version == 2

    fake.stored = old  # the server serves the older, validly signed version
    with pytest.raises(CryptoError) as rolled_back:
        client.sync_pins()
    assert rolled_back.value.code == "rollback"

    fake.stored = None  # ... or pretends there never was one
    with pytest.raises(CryptoError) as deleted:
        client.sync_pins()
    assert deleted.value.code == "rollback"

    other = Identity.generate(identity.user_id)  # a book signed with someone else's key
    blob = seal_pins(other.uik_seed, json.dumps(PinBook().document()).encode())
    fake.stored = {"version": 3, "blob": b64e(blob),
                   "sig": b64e(sign_pins(other.uik_seed, identity.user_id, 3, blob))}
    with pytest.raises(CryptoError) as forged:
        client.sync_pins()
    assert forged.value.code == "bad_signature"
    assert client.pins.state(BOB, K1) == "verified" and client.state.pins_version == 2


def test_a_pending_change_seen_elsewhere_survives_the_merge() -> None:
    identity, fake = Identity.generate(uuid.uuid4()), FakePins()
    one, two = device_client(identity, fake), device_client(identity, fake)
    one.pins.observe(BOB, K1, None, 1000)
    one.sync_pins()
    two.sync_pins()
    two.pins.observe(BOB, K2, uuid.UUID(int=7), 2000)
    two.sync_pins()
    one.sync_pins()
    assert [(c.old, c.new) for c in one.pins.changes()] == [(K1, K2)]


def test_a_book_too_large_to_sync_keeps_every_decision_and_the_newest_pins() -> None:
    book = PinBook()
    for i in range(3000):
        book.observe(uuid.UUID(int=i + 1), i.to_bytes(32, "big"), None, 1000 + i)
    book.verify(BOB, K1, 10)  # old, but a person's decision
    limit = 64 * 1024
    synced = fit(book, limit)
    assert len(document_bytes(synced)) <= limit
    assert synced.state(BOB, K1) == "verified"
    newest = uuid.UUID(int=3000)
    assert synced.get(newest) is not None and synced.get(uuid.UUID(int=1)) is None
    assert fit(synced, limit) == synced and len(book.records) == 3001  # nothing lost here

    identity, fake = Identity.generate(uuid.uuid4()), FakePins()
    client = device_client(identity, fake)
    client.state.pins = book
    client.sync_pins()
    assert fake.stored is not None and len(b64d(fake.stored["blob"])) <= MAX_BLOB
    assert stored_book(fake, identity).state(BOB, K1) == "verified"
    puts = fake.puts
    client.sync_pins()  # the stored part is current: nothing written again
    assert fake.puts == puts
