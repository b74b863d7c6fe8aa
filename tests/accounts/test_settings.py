from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STRONG_KEY = "k" * 20 + "-production-secret-for-the-deploy-check-0123456789"
AUDIT_KEY = base64.b64encode(bytes(range(32))).decode()


def run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DEBUG", "COLLAB_DEMO"}}
    base.update(env)
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=base, capture_output=True, text=True, timeout=120
    )


def test_production_refuses_empty_secret_key() -> None:
    result = run(["manage.py", "check"], COLLAB_PRODUCTION="1", ALLOWED_HOSTS="collab.example")
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_production_refuses_debug() -> None:
    result = run(["manage.py", "check"], COLLAB_PRODUCTION="1", DEBUG="1", SECRET_KEY=STRONG_KEY)
    assert result.returncode != 0
    assert "DEBUG must be off" in result.stderr


def test_production_refuses_device_proofs_off() -> None:
    result = run(["manage.py", "check"], COLLAB_PRODUCTION="1", SECRET_KEY=STRONG_KEY,
                 ALLOWED_HOSTS="collab.example", COLLAB_AUDIT_SIGNING_KEY=AUDIT_KEY,
                 COLLAB_DEVICE_PROOF_REQUIRED="0")
    assert result.returncode != 0
    assert "Device proofs cannot be turned off in production" in result.stderr


def test_check_deploy_is_clean_in_production_mode() -> None:
    result = run(
        ["manage.py", "check", "--deploy", "--fail-level", "DEBUG"],
        COLLAB_PRODUCTION="1",
        SECRET_KEY=STRONG_KEY,
        ALLOWED_HOSTS="collab.example",
        COLLAB_AUDIT_SIGNING_KEY=AUDIT_KEY,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.parametrize("command", [["manage.py", "demo"], ["manage.py", "demo_code", "pcp"]])
def test_demo_helpers_refused_outside_demo_mode(command: list[str]) -> None:
    result = run(command)
    assert result.returncode != 0
    assert "Refused" in result.stderr


def test_demo_mode_is_off_in_production() -> None:
    result = run(
        ["manage.py", "demo_code", "pcp"],
        COLLAB_DEMO="1",
        COLLAB_PRODUCTION="1",
        SECRET_KEY=STRONG_KEY,
        ALLOWED_HOSTS="x.example",
        COLLAB_AUDIT_SIGNING_KEY=AUDIT_KEY,
    )
    assert result.returncode != 0
    assert "Refused" in result.stderr
