"""Emission tests: one per AuditAction, each driving the real path (a view, a socket
frame or a management command) and asserting the event it writes.

Mark each test with ``@emits(AuditAction.X)``; ``test_every_action`` fails when an
action has no test here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def emits(*actions: str) -> Callable[[F], F]:
    def mark(test: F) -> F:
        test.__emits__ = tuple(actions)  # type: ignore[attr-defined]
        return test

    return mark
