"""The SDK and CLI import collab.crypto, never Django."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULES = ["collab.client", "collab.client.admission", "collab.client.case_state",
           "collab.client.cli", "collab.client.pins",
           "collab.client.errors", "collab.client.http", "collab.client.images",
           "collab.client.keys", "collab.client.keystore", "collab.client.room",
           "collab.client.recall", "collab.client.recall_cli",
           "collab.client.receipts", "collab.client.receipts_cli",
           "collab.client.markup", "collab.client.markup_cli",
           "collab.client.consult", "collab.client.consult_cli", "collab.client.consult_client",
           "collab.client.retention", "collab.client.sdk"]
# The export package (collab/client/export/): checked too, though the glob below sees
# only the top-level modules.
MODULES += ["collab.client.export", "collab.client.export.cli", "collab.client.export.fhir",
            "collab.client.export.html", "collab.client.export.model",
            "collab.client.export.record"]


def test_client_imports_no_django() -> None:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    code = (
        "import importlib, sys\n"
        f"for name in {MODULES!r}: importlib.import_module(name)\n"
        "leaked = sorted(m for m in sys.modules if m == 'django' or m.startswith('django.'))\n"
        "assert not leaked, leaked\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_every_client_module_is_checked() -> None:
    found = {f"collab.client.{p.stem}" for p in (ROOT / "collab" / "client").glob("*.py")
             if p.stem != "__init__"}
    assert found <= set(MODULES)


def test_cli_runs_as_a_module_without_django() -> None:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run([sys.executable, "-m", "collab.client.cli", "--help"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    for command in ("login", "send-image", "watch", "fetch-image", "safety-number"):
        assert command in result.stdout
