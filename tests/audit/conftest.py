from __future__ import annotations

import base64

import pytest

# A fixed test key, so checkpoints verify across the test process and its subprocesses.
TEST_SEED_B64 = base64.b64encode(bytes(range(32))).decode()


@pytest.fixture(autouse=True)
def _audit_signing_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("COLLAB_AUDIT_SIGNING_KEY", TEST_SEED_B64)
    monkeypatch.delenv("COLLAB_AUDIT_TRUSTED_KEYS", raising=False)
    monkeypatch.delenv("COLLAB_AUDIT_CHECKPOINT_EVERY", raising=False)
    return TEST_SEED_B64
