#!/usr/bin/env bash
# Install, create the demo accounts and case, and serve on http://127.0.0.1:8000
# on the embedded default (SQLite, in-memory channel layer, one process).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export COLLAB_DEMO=1
.venv/bin/python manage.py demo
exec .venv/bin/daphne -b 127.0.0.1 -p "${PORT:-8000}" collab.asgi:application
