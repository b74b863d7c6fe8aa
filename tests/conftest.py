from __future__ import annotations

import os

import pytest
from django.db import connection

ON_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Tests marked postgres belong to the PostgreSQL pass of the suite, tests marked
    # sqlite to the embedded-default pass; each is deselected in the other pass (a
    # configuration choice, not a missing service).
    on_postgres = os.environ.get("DATABASE_URL", "").startswith(("postgres", "postgresql"))
    other = "sqlite" if on_postgres else "postgres"
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        (dropped if item.get_closest_marker(other) else keep).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


@pytest.fixture(autouse=True)
def _fresh_axes_and_cache(settings):
    from django.core.cache import cache

    cache.clear()
    yield


def require(condition: bool, reason: str) -> None:
    """Skip outside CI; under CI a missing service or browser is a failure."""
    if condition:
        return
    if ON_CI:
        pytest.fail(f"required under CI: {reason}")
    pytest.skip(reason)


@pytest.fixture
def uses_postgres() -> bool:
    return connection.vendor == "postgresql"


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix: None) -> None:
    """Close connections after each use in tests: ones held open by worker threads
    would stop the test database being dropped at the end."""
    from django.conf import settings

    settings.DATABASES["default"]["CONN_MAX_AGE"] = 0
    connection.settings_dict["CONN_MAX_AGE"] = 0
