from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_demo(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env.update(COLLAB_DEMO="1", COLLAB_DATA_DIR=str(tmp_path))
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=300,
    )


def test_demo_creates_accounts_and_an_encrypted_case_once(tmp_path: Path) -> None:
    first = run_demo(tmp_path, "demo")
    assert first.returncode == 0, first.stderr
    assert "pcp      password demo-pcp-2026!" in first.stdout
    assert "Demo case " in first.stdout and "recovery key" in first.stdout
    assert (tmp_path / "demo" / "pcp" / "keystore.json").stat().st_mode & 0o077 == 0
    code = run_demo(tmp_path, "demo_code", "pcp")
    assert code.returncode == 0 and code.stdout[:6].isdigit()
    again = run_demo(tmp_path, "demo")
    assert again.returncode == 0, again.stderr
    assert "exists already" in again.stdout
