"""Schemathesis against a live demo server: every described operation, fed generated
requests as the signed-in demo provider, answers no 5xx, only described statuses and
content types, and bodies that match their schemas.

The server under test is the README's demo (``manage.py demo``, then daphne) in a data
directory of its own, on a PostgreSQL database of its own (created and dropped here)
with the in-memory channel layer of the one-process demo. PostgreSQL rather than the
demo's SQLite: it is the production database, and it refuses input SQLite stores (a NUL
byte in the directory query was a 500 there only); a database of its own because what
schemathesis writes (backups, refused devices, audit events) must touch neither the
test database nor another test's. It runs once, in the PostgreSQL pass.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import requests

from tests.conftest import require
from tests.support.live import ROOT, free_port, wait_for_port

# Seeding the demo, signing in and the run: past the suite-wide 300 s on a busy box.
pytestmark = [pytest.mark.postgres, pytest.mark.e2e, pytest.mark.timeout(420)]

DEMO_USER, DEMO_PASSWORD = "pcp", "demo-pcp-2026!"  # collab/demo/users.py
MAX_EXAMPLES = "10"  # per operation: the whole test stays well under 4 minutes
CHECKS = ",".join(
    [
        "not_a_server_error",
        "response_schema_conformance",
        "status_code_conformance",
        "content_type_conformance",
    ]
)
# Left out, and why:
# - POST /accounts/logout/ ends the session every other operation runs in.
# - POST /accounts/login/ and /accounts/otp/: the session is signed in already (the
#   sign-in below exercises both for real); generated passwords and codes would only
#   lock the demo accounts out, and a success would rotate the session key.
EXCLUDE = ["accountsLogout", "accountsLogin", "accountsOtp"]


def _demo_env(data: Path, database_url: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    if database_url:
        env["DATABASE_URL"] = database_url
    env.update(
        DJANGO_SETTINGS_MODULE="collab.settings",
        COLLAB_DEMO="1",
        COLLAB_DATA_DIR=str(data),
        COLLAB_MEDIA_DIR=str(data / "media"),
        PYTHONUNBUFFERED="1",
    )
    return env


def _manage(env: dict[str, str], *argv: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def own_database() -> Iterator[str]:
    """A PostgreSQL database for the server under test, beside the run's own."""
    run_url = os.environ.get("DATABASE_URL", "")
    require(run_url.startswith("postgres"), "DATABASE_URL names no PostgreSQL database")
    parts = urlsplit(run_url)
    name = f"{parts.path.lstrip('/')}_schemathesis"
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def demo_server(tmp_path: Path, own_database: str) -> Iterator[tuple[str, dict[str, str]]]:
    env = _demo_env(tmp_path, own_database)
    _manage(env, "demo")
    port = free_port()
    log = (tmp_path / "daphne.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "collab.asgi:application",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}", env
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _sign_in(base: str, env: dict[str, str]) -> requests.Session:
    """Password, then the TOTP code of the demo account's seeded authenticator."""
    session = requests.Session()
    page = session.get(f"{base}/accounts/login/", timeout=30)
    assert page.status_code == 200
    token = session.cookies["csrftoken"]
    step_one = session.post(
        f"{base}/accounts/login/",
        data={"username": DEMO_USER, "password": DEMO_PASSWORD, "csrfmiddlewaretoken": token},
        allow_redirects=False,
        timeout=30,
    )
    assert step_one.status_code == 302, step_one.text
    assert step_one.headers["Location"].startswith("/accounts/otp/")
    # A code near the end of its 30 s step could expire in flight: wait for the next.
    shown = _manage(env, "demo_code", DEMO_USER)
    code, remaining = re.match(r"(\d{6})\s+\(valid for (\d+)", shown).groups()  # type: ignore[union-attr]
    if int(remaining) < 5:
        time.sleep(int(remaining) + 1)
        code = _manage(env, "demo_code", DEMO_USER).split()[0]
    step_two = session.post(
        f"{base}/accounts/otp/",
        data={"code": code, "csrfmiddlewaretoken": session.cookies["csrftoken"]},
        allow_redirects=False,
        timeout=30,
    )
    assert step_two.status_code == 302, step_two.text
    devices = session.get(f"{base}/api/devices", timeout=30)
    assert devices.status_code == 200, devices.text  # the second factor is passed
    return session


def test_schemathesis_finds_no_failure_on_the_live_demo(
    demo_server: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    schemathesis = Path(sys.executable).with_name("schemathesis")
    require(schemathesis.exists(), "the schemathesis CLI is not installed")
    base, env = demo_server
    session = _sign_in(base, env)
    csrf, sessionid = session.cookies["csrftoken"], session.cookies["sessionid"]
    # Real identifiers for the path parameters, so the operations on them answer what
    # a member sees (not only 403 and 404 for random ids): the demo case and the
    # provider's own user id. Schemathesis reads schemathesis.toml in its directory.
    case_id = session.get(f"{base}/api/cases", timeout=30).json()["cases"][0]["id"]
    user_id = session.get(f"{base}/api/identity", timeout=30).json()["user_id"]
    (tmp_path / "schemathesis.toml").write_text(
        f'[parameters]\n"path.case_id" = "{case_id}"\n"path.user_id" = "{user_id}"\n'
    )
    argv = [
        str(schemathesis),
        "run",
        f"{base}/api/openapi.json",
        "--checks",
        CHECKS,
        "--mode",
        "positive",
        # The coverage phase ignores --max-examples (it enumerates boundary values of
        # every field) and alone outlasts the time budget on two cores.
        "--phases",
        "examples,fuzzing",
        "--no-shrink",
        "--max-examples",
        MAX_EXAMPLES,
        "--seed",
        "1",
        "--workers",
        "1",
        "--no-color",
        "--request-timeout",
        "30",
        # Every run starts afresh: no examples replayed from an earlier run's database.
        "--generation-database",
        "none",
        # Only the session below authenticates: generated cookies or proofs would
        # replace it and test nothing but the sign-in check.
        "--generation-with-security-parameters",
        "false",
        "--header",
        f"Cookie: sessionid={sessionid}; csrftoken={csrf}",
        "--header",
        f"X-CSRFToken: {csrf}",
        "--header",
        "X-Collab-Background: 1",
    ]
    for operation_id in EXCLUDE:
        argv += ["--exclude-operation-id", operation_id]
    started = time.monotonic()
    run = subprocess.run(
        argv,
        cwd=tmp_path,  # its config above; its .schemathesis folder stays out of the checkout
        capture_output=True,
        text=True,
        timeout=270,
        check=False,
        env=env,
    )
    print(run.stdout[-20000:])  # schemathesis' summary, shown with -s or on failure
    print(run.stderr[-5000:], file=sys.stderr)
    assert time.monotonic() - started < 240
    assert run.returncode == 0, "schemathesis reported failures (summary above)"
    assert re.search(r"\d+ passed", run.stdout), "schemathesis tested nothing"
    assert "schemathesis.toml" in run.stdout, "the identifiers were not used"
    # The run did not end the session it was testing with.
    assert session.get(f"{base}/api/devices", timeout=30).status_code == 200
