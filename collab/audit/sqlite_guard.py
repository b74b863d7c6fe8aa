"""The SQL function SQLite's audit triggers ask before they let a DELETE through.

Migration ``audit.0007`` puts ``BEFORE UPDATE``, ``BEFORE DELETE`` and ``BEFORE INSERT``
triggers on the audit tables. The UPDATE trigger always aborts. The INSERT trigger
aborts when the new row's unique key (``id``; and ``seq`` for events) is already
stored: ``INSERT OR REPLACE`` would otherwise delete the stored row without firing
the DELETE trigger (SQLite fires it only with recursive_triggers on), and
``INSERT ... ON CONFLICT DO UPDATE`` is refused by it (and by the UPDATE trigger).
The DELETE trigger aborts unless ``collab_audit_may_delete()`` returns true, and that
function exists only on Django's own connections (registered below for every new
one) and returns true only inside ``audit_deletes_allowed`` on that connection, which
only the ``flush`` command opens, and only outside production. Any other connection
(the ``sqlite3`` shell, a script) has no such function, so its DELETE fails to
prepare: the guard fails closed.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper

FUNCTION = "collab_audit_may_delete"


class _Permit:
    __slots__ = ("open",)

    def __init__(self) -> None:
        self.open = False

    def __call__(self) -> int:
        return int(self.open)


# One permit per Django connection wrapper (one per thread and alias), closed by default.
_permits: weakref.WeakKeyDictionary[BaseDatabaseWrapper, _Permit] = weakref.WeakKeyDictionary()


def register(sender: Any, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    """connection_created receiver: give every new SQLite connection the closed function."""
    if connection.vendor != "sqlite":
        return
    permit = _permits.setdefault(connection, _Permit())
    permit.open = False  # a fresh connection starts closed, whatever the last one did
    connection.connection.create_function(FUNCTION, 0, permit)


@contextmanager
def audit_deletes_allowed(connection: BaseDatabaseWrapper) -> Iterator[None]:
    """Let this connection's DELETEs on audit rows through while the block runs.

    UPDATE stays refused. The caller decides whether emptying the trail is allowed
    (``flush`` does, outside production only)."""
    if connection.vendor != "sqlite":
        yield
        return
    wrapper = connections[connection.alias]  # the wrapper itself, not django.db.connection
    wrapper.ensure_connection()
    permit = _permits[wrapper]
    permit.open = True
    try:
        yield
    finally:
        permit.open = False
