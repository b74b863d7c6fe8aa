"""Run as a separate process: append N audit events once the test says go."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import django


def main() -> None:
    count, tag, ready, go = int(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "collab.settings")
    django.setup()
    from collab.audit.services import AuditAction, audit_record

    ready.touch()
    deadline = time.monotonic() + 30
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    for i in range(count):
        audit_record(action=AuditAction.AUDIT_VIEWED, target=f"{tag}:{i}", details={"i": i})


if __name__ == "__main__":
    main()
