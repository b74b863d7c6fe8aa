"""The fault suite's own PostgreSQL and Redis, and the test database repointed to them.

The services start once per run (only when a fault test is selected); each test's
in-process database connection points at the private cluster for the test's duration,
so the ORM calls of the test (users, sessions, checks) see what its daphne processes see.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.core.management import call_command
from django.db import connections
from pytest_django import DjangoDbBlocker

from tests.conftest import require
from tests.faults.harness import LOG_DIR, Stack, repointed
from tests.support.services import OwnPostgres, OwnRedis, missing_binaries, own_services

DB_NAME = "collab_faults"


@pytest.fixture(scope="session")
def fault_services(django_db_blocker: DjangoDbBlocker) -> Iterator[tuple[OwnPostgres, OwnRedis]]:
    missing = missing_binaries()
    require(not missing, f"the fault suite needs {', '.join(missing)}")
    LOG_DIR.mkdir(exist_ok=True)
    with own_services(LOG_DIR) as (pg, redis), django_db_blocker.unblock():
        pg.create_database(DB_NAME)
        with repointed(pg, DB_NAME):
            call_command("migrate", verbosity=0, interactive=False)
        yield pg, redis


@pytest.fixture
def stack(fault_services: tuple[OwnPostgres, OwnRedis],
          django_db_blocker: DjangoDbBlocker) -> Iterator[Stack]:
    pg, redis = fault_services
    with django_db_blocker.unblock(), repointed(pg, DB_NAME):
        fault_stack = Stack(pg, redis)
        try:
            yield fault_stack
        finally:
            fault_stack.stop_servers()
            # Shown by pytest only when the test failed: what its servers logged.
            print("--- daphne logs of this test (tail) ---")
            print(fault_stack.logs()[-8000:])
            # A test that failed mid-outage leaves the services as the next one needs them.
            if not pg.running:
                pg.start()
            if redis.proc is None:
                redis.start()
            connections.close_all()
