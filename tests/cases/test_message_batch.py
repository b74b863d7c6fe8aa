"""message_send_batch: many sends in one transaction, each item answered in its slot.

A refused item changes nothing; the others are stored with gapless seqs; each case
hears of its new messages once per batch, in seq order; the query count per batch does
not depend on the batch's size or the room's size.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import uuid
from typing import Any

import pytest
from django.db import DatabaseError, IntegrityError, OperationalError, connection
from django.test.utils import CaptureQueriesContext

from collab import realtime
from collab.audit.models import AuditEvent
from collab.audit.services import audit_record_many
from collab.audit.verify import chain_verify
from collab.cases.models import Case, Message, Notification
from collab.cases.services import consults, messages
from collab.cases.services.membership import log_entry_submit
from collab.cases.services.messages import Ack, SendRequest, message_send, message_send_batch
from collab.crypto.actions import RemoveUserBody
from collab.crypto.envelope import Envelope
from collab.errors import ServiceError
from tests.support.rooms import Member, build_room

pytestmark = pytest.mark.django_db


def request(member: Member, envelope: Envelope, *, urgent: bool = False) -> SendRequest:
    return SendRequest(
        user=member.user,
        device_id=member.device.device_id,
        case_id=envelope.header.case_id,
        envelope=envelope,
        urgent=urgent,
    )


def sealed(member: Member, text: str, **kwargs: Any) -> SendRequest:
    return request(member, member.state.seal({"text": text}, **kwargs))


def codes(results: list[Ack | ServiceError]) -> list[str | int]:
    """A refusal's code, or the seq an ack names (negative when a duplicate)."""
    out: list[str | int] = []
    for result in results:
        if isinstance(result, ServiceError):
            out.append(result.code)
        else:
            out.append(-result.seq if result.duplicate else result.seq)
    return out


def seqs(case_id: uuid.UUID) -> list[int]:
    stored = Message.objects.filter(case_id=case_id).order_by("seq")
    return list(stored.values_list("seq", flat=True))


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    """What reaches the channel layer (after commit)."""
    sent: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(realtime, "publish_now", lambda group, event: sent.append((group, event)))

    async def publish_many(events: Any) -> None:
        sent.extend(events)

    monkeypatch.setattr(realtime, "publish_many", publish_many)
    return sent


def test_mixed_batch_answers_each_slot_and_stores_only_the_good_ones(
    published, django_capture_on_commit_callbacks
) -> None:
    a, b, _ = room = build_room(3, "mix")
    (other,) = build_room(1, "out")
    second = build_room(2, "two")
    case_id, second_id = a.state.case_id, second[0].state.case_id
    epoch = a.state.head.epoch
    earlier = sealed(a, "stored before")
    with django_capture_on_commit_callbacks(execute=True):
        assert message_send_batch([earlier]) == [
            Ack(1, earlier.envelope.header.client_msg_id, epoch, duplicate=False)
        ]
    published.clear()

    later_seq = b.state.seal({"text": "sealed first, sent second"})
    high = sealed(b, "sealed second, sent first")
    good = sealed(a, "fine")
    reused = request(a, a.state.seal({"text": "other"},
                                     client_msg_id=earlier.envelope.header.client_msg_id))
    outsider = other.state.seal({"text": "not mine"})
    outsider = dataclasses.replace(
        outsider, header=dataclasses.replace(outsider.header, case_id=case_id)
    )
    outsider_req = SendRequest(other.user, other.device.device_id, case_id, outsider)
    wrong_epoch_env = a.state.seal({"text": "old"})
    wrong_epoch = request(a, dataclasses.replace(
        wrong_epoch_env, header=dataclasses.replace(wrong_epoch_env.header, epoch=7)))
    bad_sig_env = a.state.seal({"text": "forged"})
    bad_sig = request(a, dataclasses.replace(bad_sig_env, sig=bytes(64)))
    in_second = sealed(second[1], "another case")
    in_second_too = sealed(second[0], "another case again")
    twice = sealed(a, "twice")
    twice_other = request(a, a.state.seal(
        {"text": "twice, other content"}, client_msg_id=twice.envelope.header.client_msg_id))
    no_case = dataclasses.replace(good.envelope, header=dataclasses.replace(
        good.envelope.header, case_id=uuid.uuid4()))
    batch = [
        good,                                  # 2
        earlier,                               # duplicate of 1
        reused,                                # client_msg_id_reused
        outsider_req,                          # not_in_roster
        in_second,                             # case two: 1
        high,                                  # 3
        request(b, later_seq),                 # lower sender_seq after a higher one
        wrong_epoch,                           # wrong_epoch
        bad_sig,                               # bad_signature
        twice,                                 # 4
        twice,                                 # duplicate of 4 within the batch
        twice_other,                           # reused within the batch
        in_second_too,                         # case two: 2
        SendRequest(a.user, a.device.device_id, no_case.header.case_id, no_case),
    ]
    before = AuditEvent.objects.count()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        results = message_send_batch(batch)
    assert codes(results) == [
        2, -1, "client_msg_id_reused", "not_in_roster", 1, 3, "sender_seq_not_increasing",
        "wrong_epoch", "bad_signature", 4, -4, "client_msg_id_reused", 2, "no_case",
    ]
    refusal = results[6]
    assert isinstance(refusal, ServiceError)
    assert refusal.extra == {"last_sender_seq": high.envelope.header.sender_seq}
    assert refusal.as_dict()["last_sender_seq"] == high.envelope.header.sender_seq
    assert isinstance(results[7], ServiceError) and results[7].extra == {"head_epoch": epoch}
    assert seqs(case_id) == [1, 2, 3, 4]
    assert seqs(second_id) == [1, 2]
    assert Case.objects.get(pk=case_id).last_seq == 4
    assert Case.objects.get(pk=second_id).last_seq == 2
    stored = Message.objects.get(case_id=case_id, seq=3)
    assert stored.sender_seq == high.envelope.header.sender_seq
    assert bytes(stored.ciphertext) == high.envelope.ct
    assert AuditEvent.objects.count() == before + 5
    assert chain_verify().ok

    # Nothing reaches the layer before commit; then one event per case, in seq order.
    assert published == []
    for callback in callbacks:
        callback()
    rooms = [(group, event) for group, event in published if group.startswith("case.")]
    events = dict(rooms)
    assert len(rooms) == 2
    # And one content-free doorbell per case for the inbox sockets (services.inbox).
    assert sorted((g, e) for g, e in published if g.startswith("activity.")) == sorted([
        (realtime.activity_group(case_id),
         {"type": "case.activity", "case": str(case_id), "last_seq": 4}),
        (realtime.activity_group(second_id),
         {"type": "case.activity", "case": str(second_id), "last_seq": 2}),
    ])
    assert len(published) == 4
    assert set(events) == {realtime.case_group(case_id), realtime.case_group(second_id)}
    first = events[realtime.case_group(case_id)]
    assert first["type"] == "case.messages"
    frames = [json.loads(text) for _, text in first["frames"]]
    assert [f["seq"] for f in frames] == [2, 3, 4]
    assert [e for e, _ in first["frames"]] == [epoch] * 3
    assert all(f["type"] == "message" for f in frames)
    assert frames[1]["envelope"] == high.envelope.to_wire()
    assert first["frames"][0][1] == json.dumps(frames[0], separators=(",", ":"))
    assert [json.loads(t)["seq"] for _, t in events[realtime.case_group(second_id)]["frames"]] \
        == [1, 2]
    assert room  # the third member only widens the roster


def test_a_batch_of_refusals_writes_nothing_and_publishes_nothing(
    published, django_capture_on_commit_callbacks
) -> None:
    a, _ = build_room(2, "none")
    env = a.state.seal({"text": "x"})
    with django_capture_on_commit_callbacks(execute=True):
        results = message_send_batch([request(a, dataclasses.replace(env, sig=bytes(64)))])
    assert codes(results) == ["bad_signature"]
    assert Message.objects.count() == 0
    assert published == []


def test_message_send_raises_the_refusal_with_last_sender_seq() -> None:
    a, _ = build_room(2, "one")
    first = a.state.seal({"text": "a"})
    message_send(user=a.user, device_id=a.device.device_id, case_id=a.state.case_id,
                 envelope=first)
    a.state.sender_seq -= 1
    with pytest.raises(ServiceError) as error:
        message_send(user=a.user, device_id=a.device.device_id, case_id=a.state.case_id,
                     envelope=a.state.seal({"text": "b"}))
    assert error.value.code == "sender_seq_not_increasing"
    assert error.value.extra["last_sender_seq"] == first.header.sender_seq
    assert Message.objects.count() == 1


def test_urgent_messages_each_notify(monkeypatch: pytest.MonkeyPatch) -> None:
    a, _ = build_room(2, "urg")
    told: list[int] = []
    monkeypatch.setattr(
        consults, "urgent_sent", lambda *, message: told.append(message.seq)
    )
    results = message_send_batch([
        request(a, a.state.seal({"text": "1"}), urgent=True),
        sealed(a, "2"),
        request(a, a.state.seal({"text": "3"}), urgent=True),
    ])
    assert codes(results) == [1, 2, 3]
    assert told == [1, 3]
    assert list(Message.objects.order_by("seq").values_list("urgent", flat=True)) == [
        True, False, True
    ]


def test_a_race_on_the_unique_id_reruns_each_item_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process stores the same (device, client_msg_id) between the read and the
    insert: the batch fails on the constraint, and each item then answers for itself."""
    a, _ = build_room(2, "race")
    raced = sealed(a, "stored by the other process")
    message_send_batch([raced])
    real_read = messages._batch_read
    calls: list[int] = []

    def read_missing_the_race(requests):
        batch = real_read(requests)
        if not calls:
            batch.stored.clear()  # as if read just before the other process committed
            batch.last_sender_seq.clear()
        calls.append(len(requests))
        return batch

    monkeypatch.setattr(messages, "_batch_read", read_missing_the_race)
    fresh = sealed(a, "mine")
    results = message_send_batch([raced, fresh])
    assert calls == [2, 1, 1]
    assert codes(results) == [-1, 2]
    assert seqs(a.state.case_id) == [1, 2]
    assert chain_verify().ok


def _conflict() -> DatabaseError:
    cause = Exception("deadlock detected")
    cause.sqlstate = "40P01"  # type: ignore[attr-defined]
    error = DatabaseError("deadlock detected")
    error.__cause__ = cause
    return error


@pytest.mark.parametrize("where", ["audit", "urgent"])
def test_a_deadlock_retries_the_whole_batch(
    where: str, monkeypatch: pytest.MonkeyPatch, published, django_capture_on_commit_callbacks
) -> None:
    """The conflict strikes after the batch wrote: its messages and case rows (and, for
    ``audit``, its audit events; for ``urgent``, its doorbells too) are in the rolled-back
    attempt. The retry stores every item once, gapless, with a chain that verifies, and
    each case hears of them once."""
    a, b = build_room(2, "dead")
    (other,) = build_room(1, "dead2")
    before = AuditEvent.objects.count()
    failed: list[str] = []
    real_urgent = consults.urgent_sent

    def audit_then_deadlock(records):
        events = audit_record_many(records)
        if where == "audit" and not failed:
            failed.append(where)
            raise OperationalError("deadlock detected") from _conflict().__cause__
        return events

    def urgent_then_deadlock(*, message):
        real_urgent(message=message)
        if where == "urgent" and not failed:
            failed.append(where)  # after the batch's doorbells were registered
            raise OperationalError("deadlock detected") from _conflict().__cause__

    monkeypatch.setattr(f"{messages.__name__}.audit_record_many", audit_then_deadlock)
    monkeypatch.setattr(consults, "urgent_sent", urgent_then_deadlock)
    batch = [
        request(a, a.state.seal({"text": "1"}), urgent=True),
        sealed(b, "2"),
        sealed(other, "elsewhere"),
        sealed(a, "3"),
    ]
    with django_capture_on_commit_callbacks(execute=True):
        results = message_send_batch(batch)
    assert failed == [where]
    assert codes(results) == [1, 2, 1, 3]
    assert seqs(a.state.case_id) == [1, 2, 3]
    assert seqs(other.state.case_id) == [1]
    assert Message.objects.count() == 4
    assert Case.objects.get(pk=a.state.case_id).last_seq == 3
    stored = AuditEvent.objects.filter(action="message_stored")
    assert sorted(stored.values_list("target", flat=True)) == sorted(
        ["message:1", "message:2", "message:3", "message:1"]
    )
    assert AuditEvent.objects.count() - before == 4
    assert chain_verify().ok
    # The urgent notice once (the rolled-back attempt's notice went with it).
    assert list(Notification.objects.values_list("user_id", flat=True)) == [b.user.pk]
    # One publish per case (and one inbox doorbell per case) and one notice, from the
    # attempt that committed.
    assert sorted(group for group, _ in published) == sorted([
        realtime.case_group(a.state.case_id), realtime.case_group(other.state.case_id),
        realtime.activity_group(a.state.case_id), realtime.activity_group(other.state.case_id),
        realtime.user_group(b.user.pk),
    ])
    first = dict(published)[realtime.case_group(a.state.case_id)]
    assert [json.loads(t)["seq"] for _, t in first["frames"]] == [1, 2, 3]


def test_a_lasting_conflict_or_another_database_error_is_raised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a, _ = build_room(2, "fail")
    attempts: list[int] = []

    def always(requests):
        attempts.append(1)
        raise _conflict()

    monkeypatch.setattr(messages, "_store_batch", always)
    with pytest.raises(DatabaseError):
        message_send_batch([sealed(a, "1")])
    assert len(attempts) == 1 + messages.RETRIES_ON_CONFLICT

    attempts.clear()

    def broken(requests):
        attempts.append(1)
        raise DatabaseError("disk full")

    monkeypatch.setattr(messages, "_store_batch", broken)
    with pytest.raises(DatabaseError):
        message_send_batch([sealed(a, "1")])
    assert len(attempts) == 1
    assert Message.objects.count() == 0


def test_an_integrity_error_that_persists_alone_is_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    a, _ = build_room(2, "integ")
    attempts: list[int] = []

    def always(requests):
        attempts.append(len(requests))
        raise IntegrityError("constraint")

    monkeypatch.setattr(messages, "_store_batch", always)
    with pytest.raises(IntegrityError):
        message_send_batch([sealed(a, "1")])
    assert attempts == [1, 1]


def _batch_queries(room: list[Member], size: int) -> int:
    batch = [sealed(room[i % len(room)], f"n{i}") for i in range(size)]
    with CaptureQueriesContext(connection) as ctx:
        results = message_send_batch(batch)
    assert all(isinstance(r, Ack) and not r.duplicate for r in results), codes(results)
    return len(ctx.captured_queries)


def test_queries_per_batch_are_constant_whatever_the_batch_and_room_size(settings) -> None:
    settings.AUDIT_CHECKPOINT_EVERY = 0  # a checkpoint is one more insert when one is due
    small, large = build_room(2, "small"), build_room(20, "large")
    for room in (small, large):
        _batch_queries(room, 1)  # warm-up: the audit head row exists from here on
    counts = {
        (len(room), size): _batch_queries(room, size)
        for room in (small, large)
        for size in (1, 10, 50)
    }
    assert len(set(counts.values())) == 1, counts
    for room in (small, large):
        assert seqs(room[0].state.case_id) == list(range(1, 1 + 1 + 1 + 10 + 50))
    assert chain_verify().ok


def test_the_previous_epoch_is_accepted_for_its_grace_only(settings) -> None:
    settings.AUDIT_CHECKPOINT_EVERY = 0
    owner, member, leaver = build_room(3, "grace")
    case_id = owner.state.case_id
    message_send_batch([sealed(owner, "warm-up")])
    old = [sealed(member, f"old {i}") for i in range(3)]
    stale_env = member.state.seal({"text": "stale"})
    stale = request(member, dataclasses.replace(
        stale_env, header=dataclasses.replace(stale_env.header, log_head=bytes(64))))
    by_leaver = sealed(leaver, "from the removed member")
    late = sealed(member, "late")
    entry = owner.state.next_entry(RemoveUserBody(leaver.user.pk))
    log_entry_submit(user=owner.user, device_id=owner.device.device_id, case_id=case_id,
                     entry=entry)
    assert Case.objects.get(pk=case_id).head_epoch == old[0].envelope.header.epoch + 1

    with CaptureQueriesContext(connection) as one:
        assert codes(message_send_batch(old[:1])) == [2]
    with CaptureQueriesContext(connection) as many:
        results = message_send_batch([*old[1:], stale, by_leaver])
    assert codes(results) == [3, 4, "stale_head", "not_in_roster"]
    # The previous epoch's entry is read once per batch, whatever the number naming it.
    assert len(one.captured_queries) == len(many.captured_queries)

    settings.EPOCH_GRACE_SECONDS = 0
    assert codes(message_send_batch([late])) == ["wrong_epoch"]
    assert seqs(case_id) == [1, 2, 3, 4]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_batches_over_the_same_cases_stay_gapless(caplog) -> None:
    """Two writers, each batch touching both cases, named in opposite orders: the rows
    are locked in id order, so neither waits on the other in a cycle."""
    first, second = build_room(2, "c1"), build_room(2, "c2")
    rounds = 15
    batches = {
        "x": [[sealed(first[0], f"x{i}"), sealed(second[0], f"x{i}")] for i in range(rounds)],
        "y": [[sealed(second[1], f"y{i}"), sealed(first[1], f"y{i}")] for i in range(rounds)],
    }
    barrier = threading.Barrier(2)
    answers: dict[str, list[Ack | ServiceError]] = {"x": [], "y": []}
    errors: list[BaseException] = []

    def writer(name: str) -> None:
        try:
            barrier.wait()
            for batch in batches[name]:
                answers[name].extend(message_send_batch(batch))
        except BaseException as error:  # reported below, in the test's thread
            errors.append(error)
        finally:
            connection.close()

    with caplog.at_level(logging.INFO, logger="collab.cases.messages"):
        threads = [threading.Thread(target=writer, args=(n,)) for n in batches]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
    assert all(isinstance(a, Ack) and not a.duplicate for a in answers["x"] + answers["y"])
    for room in (first, second):
        assert seqs(room[0].state.case_id) == list(range(1, 2 * rounds + 1))
    assert not [r for r in caplog.records if "retried" in r.getMessage()]
    assert AuditEvent.objects.filter(action="message_stored").count() == 4 * rounds
    assert chain_verify().ok
