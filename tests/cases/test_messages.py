"""message_send: every envelope check, idempotent retries, gapless numbering, constant queries."""

from __future__ import annotations

import dataclasses

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from collab.cases.models import Message
from collab.cases.services.messages import message_send
from collab.crypto.envelope import Envelope, Header
from collab.crypto.primitives import sha512
from collab.errors import ServiceError
from tests.support.actor import Actor

pytestmark = pytest.mark.django_db

L = 2**252 + 27742317777372353535851937790883648493


@pytest.fixture
def room() -> tuple[Actor, Actor, object]:
    pcp = Actor("pcp").register()
    derm = Actor("derm", specialty="Dermatology").register()
    state = pcp.open_case()
    pcp.add(state, derm)
    derm.join(state.case_id)
    return pcp, derm, state


def send(actor: Actor, envelope: Envelope):
    return message_send(
        user=actor.user,
        device_id=actor.device.device_id,
        case_id=envelope.header.case_id,
        envelope=envelope,
    )


def refused(actor: Actor, envelope: Envelope) -> str:
    before = Message.objects.count()
    with pytest.raises(ServiceError) as error:
        send(actor, envelope)
    assert Message.objects.count() == before
    return error.value.code


def test_send_assigns_gapless_sequence_and_receiver_decrypts(room) -> None:
    pcp, derm, state = room
    acks = [send(pcp, state.seal({"text": f"note {i}"})) for i in range(3)]
    assert [a.seq for a in acks] == [1, 2, 3]
    stored = Message.objects.get(seq=2)
    wire = Envelope(
        Header.decode(bytes(stored.header)), bytes(stored.ciphertext), bytes(stored.signature)
    )
    opened = derm.cases[state.case_id].open(wire)
    assert opened.body == {"text": "note 1"}


def test_retry_returns_original_ack_and_stores_nothing_new(room) -> None:
    pcp, _, state = room
    envelope = state.seal({"text": "once"})
    first = send(pcp, envelope)
    again = send(pcp, envelope)
    assert (again.seq, again.duplicate, first.duplicate) == (first.seq, True, False)
    assert Message.objects.count() == 1


def test_reused_client_msg_id_with_other_content_is_refused(room) -> None:
    pcp, _, state = room
    first = state.seal({"text": "original"})
    send(pcp, first)
    other = state.seal({"text": "different"}, client_msg_id=first.header.client_msg_id)
    assert refused(pcp, other) == "client_msg_id_reused"


def test_bad_signature_is_refused(room) -> None:
    pcp, _, state = room
    envelope = state.seal({"text": "x"})
    assert refused(pcp, dataclasses.replace(envelope, sig=bytes(64))) == "bad_signature"


def test_non_canonical_signature_is_refused(room) -> None:
    pcp, _, state = room
    envelope = state.seal({"text": "x"})
    s = int.from_bytes(envelope.sig[32:], "little") + L
    malleated = envelope.sig[:32] + s.to_bytes(32, "little")
    assert refused(pcp, dataclasses.replace(envelope, sig=malleated)) == "non_canonical_signature"


def test_altered_ciphertext_is_refused(room) -> None:
    pcp, _, state = room
    envelope = state.seal({"text": "x"})
    tampered = bytes([envelope.ct[0] ^ 1]) + envelope.ct[1:]
    assert refused(pcp, dataclasses.replace(envelope, ct=tampered)) == "bad_hash"


def test_wrong_epoch_and_stale_head_are_refused(room) -> None:
    pcp, _, state = room
    envelope = state.seal({"text": "x"})
    header = dataclasses.replace(envelope.header, epoch=7)
    wrong_epoch = dataclasses.replace(envelope, header=header)
    assert refused(pcp, wrong_epoch) == "wrong_epoch"
    header = dataclasses.replace(envelope.header, log_head=sha512(b"elsewhere"))
    assert refused(pcp, dataclasses.replace(envelope, header=header)) == "stale_head"


def test_sender_seq_must_increase(room) -> None:
    pcp, _, state = room
    send(pcp, state.seal({"text": "a"}))
    state.sender_seq -= 1
    assert refused(pcp, state.seal({"text": "b"})) == "sender_seq_not_increasing"


def test_sender_not_in_roster_is_refused(room) -> None:
    pcp, derm, state = room
    derm_state = derm.cases[state.case_id]
    pcp.remove(state, derm)
    # derm still holds epoch 1's key and signs correctly: the roster says no.
    assert refused(derm, derm_state.seal({"text": "still here?"})) == "not_in_roster"


def test_envelope_naming_another_sender_is_refused(room) -> None:
    _, derm, state = room
    envelope = state.seal({"text": "x"})
    with pytest.raises(ServiceError) as error:
        message_send(
            user=derm.user,
            device_id=derm.device.device_id,
            case_id=state.case_id,
            envelope=envelope,
        )
    assert error.value.code == "wrong_sender"


def test_message_storage_costs_constant_queries_whatever_the_room_size() -> None:
    owner = Actor("owner").register()
    small = owner.open_case()
    large = owner.open_case()
    for i in range(12):
        owner.add(large, Actor(f"member{i}").register())
    send(owner, small.seal({"text": "warm-up"}))
    send(owner, large.seal({"text": "warm-up"}))
    counts = []
    for state in (small, large):
        with CaptureQueriesContext(connection) as ctx:
            send(owner, state.seal({"text": "count me"}))
        counts.append(len(ctx.captured_queries))
    assert counts[0] == counts[1], counts
