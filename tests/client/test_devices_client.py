"""Device proofs as the SDK builds them, enrolment of a new device and the key backup,
against the in-process adversarial server (tests/client/fake_server.py)."""

from __future__ import annotations

import base64
import time
import uuid

import pytest

from collab.client.http import HttpSession
from collab.client.keys import DeviceKeys
from collab.client.keystore import KeystoreState
from collab.client.sdk import CollabClient
from collab.crypto import primitives as prim
from collab.crypto.actions import Action, RotateBody
from collab.crypto.devproof import verify_http_proof
from collab.crypto.errors import CryptoError
from collab.crypto.keybackup import backup_key, seal_backup_item
from collab.crypto.wire import b64d, b64e
from tests.client.fake_server import FakeServer, Person


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_the_proof_signs_the_full_path_body_and_nonce_with_a_fresh_jti() -> None:
    device = DeviceKeys.generate(uuid.uuid4())
    http = HttpSession("http://127.0.0.1:9/collab", str(device.device_id), device.dsk_seed)
    http._nonce, http._nonce_at = "server-nonce", time.monotonic()
    proofs = [http.proof("POST", "/api/cases/x/log?a=1", b'{"entry":"..."}') for _ in range(2)]
    jtis = set()
    for proof in proofs:
        time_ms, nonce, jti, sig = proof.split(".")
        assert nonce == "server-nonce" and abs(int(time_ms) - time.time() * 1000) < 5000
        jtis.add(jti)
        verify_http_proof(device.dsk_pub, _unb64url(sig), device_id=device.device_id,
                          time_ms=int(time_ms), method="POST",
                          path="/collab/api/cases/x/log?a=1", body=b'{"entry":"..."}',
                          nonce=nonce, jti=_unb64url(jti))
        # Any other path, query or body does not verify.
        for path, body in (("/collab/api/cases/x/log?a=2", b'{"entry":"..."}'),
                           ("/collab/api/cases/x/log?a=1", b'{"entry":".."}')):
            with pytest.raises(CryptoError):
                verify_http_proof(device.dsk_pub, _unb64url(sig), device_id=device.device_id,
                                  time_ms=int(time_ms), method="POST", path=path, body=body,
                                  nonce=nonce, jti=_unb64url(jti))
    assert len(jtis) == 2  # never reused
    # Without the device's key nothing is signed (the header is left out).
    bare = HttpSession("http://127.0.0.1:9", str(device.device_id))
    assert bare._request("GET", "/api/x", None, None).get_header("X-collab-proof") is None


def _second_device(server: FakeServer, person: Person) -> CollabClient:
    device = DeviceKeys.generate(person.id)
    state = KeystoreState(server="http://fake", user_id=person.id, identity=person.identity,
                          device=device, cert=person.identity.certify(device))
    client = CollabClient(state=state)
    client.call = lambda method, path, body=None: server.call(  # type: ignore[method-assign]
        method, path, body, person.id)
    return client


@pytest.fixture
def world() -> tuple[FakeServer, Person, Person, uuid.UUID]:
    server, pcp, derm = FakeServer(), Person("pcp"), Person("derm")
    server.keys[derm.id] = derm.keys()
    case_id = server.new_case(pcp)
    first = server.client(pcp)
    first.add_member(case_id, derm.id)
    first._commit(case_id, lambda _s: RotateBody())
    return server, pcp, derm, case_id


def test_a_new_device_enrols_itself_and_restores_the_backed_up_keys(
        world: tuple[FakeServer, Person, Person, uuid.UUID]) -> None:
    server, pcp, derm, case_id = world
    assert sorted(server.backup[(pcp.id, case_id)]) == [0, 1, 2]
    new = _second_device(server, pcp)
    assert new.enrol(case_id) == "enrolled"
    assert new.enrol(case_id) == "already"
    state = new.sync(case_id)
    assert state.head.action == Action.ENROL_DEVICE
    assert state.restored == {0, 1, 2} and sorted(state.keys) == [0, 1, 2, 3]
    # The other member verifies the entry; the new epoch's key went to the backup.
    assert server.client(derm).sync(case_id).head.roster.device(new.device.device_id)
    assert sorted(server.backup[(pcp.id, case_id)]) == [0, 1, 2, 3]
    # A user not in the roster does not enrol.
    outsider = Person("outsider")
    assert server.client(outsider).enrol(case_id) == "not_in_roster"


def test_tampered_swapped_and_injected_items_leave_their_epochs_unavailable(
        world: tuple[FakeServer, Person, Person, uuid.UUID]) -> None:
    server, pcp, _derm, case_id = world
    held = server.backup[(pcp.id, case_id)]
    flipped = bytearray(b64d(held[0]))
    flipped[-1] ^= 1
    held[0] = b64e(bytes(flipped))
    held[1] = held[2]  # epoch 2's item served as epoch 1's
    held[2] = b64e(seal_backup_item(backup_key(pcp.identity.uik_seed), case_id, 2,
                                    prim.random_bytes(32)))  # right seal, wrong key
    held[5] = b64e(seal_backup_item(prim.random_bytes(32), case_id, 5, prim.random_bytes(32)))
    new = _second_device(server, pcp)
    new.enrol(case_id)
    state = new.sync(case_id)
    assert state.backup_refused == {0: "decrypt_failed", 1: "bad_wrap",
                                    2: "key_commit_mismatch"}
    assert state.restored == set() and sorted(state.keys) == [3]
    assert 5 not in state.keys  # an item for an epoch that does not exist is ignored
