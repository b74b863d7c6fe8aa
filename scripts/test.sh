#!/usr/bin/env bash
# Install everything the tests need and run all of them: lint, types, Python and JS tests.
# DATABASE_URL / REDIS_URL select PostgreSQL + Redis; unset, the embedded default is used.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh dev
.venv/bin/ruff check .
.venv/bin/mypy collab tests
.venv/bin/python -m collab.crypto.vectors --check
.venv/bin/python -m pytest "$@"
