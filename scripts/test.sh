#!/usr/bin/env bash
# Install everything the tests need and run all of them: lint, types, the shared test
# vectors, the Python suite and the JavaScript suite.
# DATABASE_URL / REDIS_URL select PostgreSQL + Redis; unset, the embedded default is used.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh dev
if [ -f frontend/package-lock.json ]; then
  (cd frontend && npm ci --no-audit --no-fund --loglevel=error)
fi
.venv/bin/ruff check .
.venv/bin/mypy collab tests
.venv/bin/python -m collab.crypto.vectors --check
if [ -d frontend/tests ]; then
  node --test frontend/tests/
fi
.venv/bin/python -m pytest "$@"
