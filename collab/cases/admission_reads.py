"""The case-room handshake's reads as two plain SQL statements.

Every socket that opens (and every one of thousands reconnecting after a restart)
runs these. Built with the ORM (Exists and Subquery annotations, nested subqueries)
the two statements cost about 10 ms of Python to compile on a small server, fifty
times what the database takes to answer them: a reconnect storm waited on query
compilation. The rules are the ORM's, and tests/consumers/test_room_admission.py
checks these statements against them (access.access_device, access_roster_device,
selectors.readable_epochs) for every kind of caller.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from django.db import connection

from collab.accounts.models import Device, DeviceSession, IdentityKey, User
from collab.cases import models as m


def _table(model: Any) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _uuid(model: Any, value: uuid.UUID) -> Any:
    """A primary key as the database stores it (hex text on SQLite, uuid elsewhere)."""
    return model._meta.pk.get_db_prep_value(value, connection)


@dataclass(frozen=True)
class DeviceAdmission:
    device: Device  # the user's device by that id, revoked or not
    case_exists: bool
    in_roster: bool  # the device is in the case's head roster
    session_proven: bool | None  # this session's record of acting as the device, if any


def device_admission(
    *, user_id: uuid.UUID, case_id: uuid.UUID, device_id: uuid.UUID, session_key: str
) -> DeviceAdmission | None:
    """The user's device by that id and the three facts beside it, in one statement;
    None when the user has no device by that id."""
    # Table names come from the models; every value is a parameter.
    sql = (
        f"SELECT d.*,"  # noqa: S608
        f" EXISTS (SELECT 1 FROM {_table(m.Case)} c WHERE c.id = %s) AS case_exists,"
        f" EXISTS (SELECT 1 FROM {_table(m.MemberDevice)} md"
        f"   WHERE md.case_id = %s AND md.device_id = d.id) AS in_roster,"
        f" (SELECT ds.proven FROM {_table(DeviceSession)} ds"
        f"   WHERE ds.session_key = %s AND ds.device_id = d.id) AS session_proven"
        f" FROM {_table(Device)} d WHERE d.id = %s AND d.user_id = %s"
    )
    case = _uuid(m.Case, case_id)
    params = [case, case, session_key, _uuid(Device, device_id), _uuid(User, user_id)]
    for device in Device.objects.raw(sql, params):
        facts = device.__dict__  # the three extra columns, as the driver gave them
        proven = facts.pop("session_proven")
        return DeviceAdmission(
            device, bool(facts.pop("case_exists")), bool(facts.pop("in_roster")),
            None if proven is None else bool(proven),
        )
    return None


def case_exists(case_id: uuid.UUID) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT 1 FROM {_table(m.Case)} WHERE id = %s",  # noqa: S608
            [_uuid(m.Case, case_id)],
        )
        return cursor.fetchone() is not None


def readable_epochs(*, case_id: uuid.UUID, device_id: uuid.UUID) -> tuple[int, ...]:
    """selectors.readable_epochs, in ascending order: the epochs some device of the
    device's user holds a wrap of, counting only devices certified by the identity key
    the user has now."""
    sql = (
        f"SELECT DISTINCT w.epoch FROM {_table(m.KeyWrap)} w"  # noqa: S608
        f" JOIN {_table(Device)} d ON d.id = w.device_id"
        f" JOIN {_table(Device)} me ON me.user_id = d.user_id"
        f" JOIN {_table(IdentityKey)} k ON k.user_id = d.user_id AND k.uik_pub = d.uik_pub"
        f" WHERE w.case_id = %s AND me.id = %s ORDER BY w.epoch"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [_uuid(m.Case, case_id), _uuid(Device, device_id)])
        return tuple(int(epoch) for (epoch,) in cursor.fetchall())


def case_head(case_id: uuid.UUID) -> dict[str, int]:
    """The case's head epoch and last seq, as the hello gives them (read on every
    socket that opens, after it joined the room's groups)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT head_epoch, last_seq FROM {_table(m.Case)} WHERE id = %s",  # noqa: S608
            [_uuid(m.Case, case_id)],
        )
        row = cursor.fetchone()
    if row is None:
        raise m.Case.DoesNotExist
    return {"head_epoch": int(row[0]), "last_seq": int(row[1])}
