"""Every AuditAction has an emission test in this package."""

from __future__ import annotations

import importlib
import pkgutil

import tests.audit.emissions as package
from collab.audit.models import AuditAction


def _covered() -> set[str]:
    covered: set[str] = set()
    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("test_"):
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for value in vars(module).values():
            covered.update(getattr(value, "__emits__", ()))
    return covered


def test_every_audit_action_has_an_emission_test() -> None:
    missing = sorted(set(AuditAction.values) - _covered())
    assert not missing, f"AuditAction values without an emission test: {missing}"


def test_emission_tests_name_only_real_actions() -> None:
    unknown = sorted(_covered() - set(AuditAction.values))
    assert not unknown, f"emission tests name unknown actions: {unknown}"
