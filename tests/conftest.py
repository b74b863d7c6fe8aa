from __future__ import annotations

import os

import pytest
from django.db import connection

ON_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
# Set by CI for its PostgreSQL + Redis pass: the run fails unless it really ran on
# PostgreSQL and ran postgres-marked tests (and the fault suite) rather than deselecting
# them all.
EXPECT_POSTGRES = os.environ.get("COLLAB_EXPECT_POSTGRES", "") == "1"
POSTGRES_SCHEMES = ("postgres", "postgresql", "pgsql", "postgis")
# Marks whose tests must have run in a pass that expects PostgreSQL.
REQUIRED_IN_POSTGRES_PASS = ("postgres", "faults")
_ran: dict[str, int] = dict.fromkeys(REQUIRED_IN_POSTGRES_PASS, 0)


def on_postgres() -> bool:
    """The pass is decided by the database Django really uses, not by the URL's text."""
    return connection.vendor == "postgresql"


def pytest_configure(config: pytest.Config) -> None:
    url = os.environ.get("DATABASE_URL", "")
    asks_postgres = EXPECT_POSTGRES or url.split(":", 1)[0].lower() in POSTGRES_SCHEMES
    if asks_postgres and not on_postgres():
        raise pytest.UsageError(
            f"PostgreSQL expected (DATABASE_URL={url!r}) but Django's connection is "
            f"{connection.vendor}: the PostgreSQL pass would run nothing of its own"
        )
    if EXPECT_POSTGRES and not os.environ.get("REDIS_URL"):
        raise pytest.UsageError("the PostgreSQL pass runs with Redis: set REDIS_URL")
    _install_schema_check()


def _install_schema_check() -> None:
    """Every /api/ answer and socket frame checked against collab/schema (switch:
    tests/support/schema_check.py DEFAULT, or COLLAB_SCHEMA_CHECK=1)."""
    from tests.support import schema_check

    if not schema_check.ENABLED:
        return
    from django.conf import settings

    hook = "tests.support.schema_check.SchemaCheckMiddleware"
    if hook not in settings.MIDDLEWARE:
        settings.MIDDLEWARE = [hook, *settings.MIDDLEWARE]  # outermost: sees every answer
    schema_check.install_socket_hooks()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" and not report.skipped:
        for mark in REQUIRED_IN_POSTGRES_PASS:
            if mark in report.keywords:
                _ran[mark] += 1


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not EXPECT_POSTGRES or exitstatus != pytest.ExitCode.OK:
        return
    missing = [mark for mark, count in _ran.items() if count == 0]
    if missing:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(
                f"FAILED: the PostgreSQL pass ran no test marked {' or '.join(missing)}",
                red=True,
            )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Tests marked postgres belong to the PostgreSQL pass of the suite, tests marked
    # sqlite to the embedded-default pass; each is deselected in the other pass (a
    # configuration choice, not a missing service).
    other = "sqlite" if on_postgres() else "postgres"
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


@pytest.fixture(autouse=True)
def _schema_conformance(request: pytest.FixtureRequest):
    """Fails the test (at teardown) for any /api/ answer or socket frame it saw that
    the descriptions do not allow; ``@pytest.mark.hostile_input`` exempts what the
    test itself sends, never what the server answers."""
    from tests.support import schema_check

    if not schema_check.ENABLED:
        yield
        return
    schema_check.VIOLATIONS.clear()
    schema_check.STATE.hostile = request.node.get_closest_marker("hostile_input") is not None
    schema_check.STATE.server_error = request.node.get_closest_marker("server_error") is not None
    schema_check.STATE.test = request.node.nodeid
    yield
    found = list(schema_check.VIOLATIONS)
    schema_check.VIOLATIONS.clear()
    schema_check.STATE.hostile = schema_check.STATE.server_error = False
    if found:
        pytest.fail(
            f"{len(found)} exchange(s) outside collab/schema:\n" + "\n".join(found[:20]),
            pytrace=False,
        )


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
