#!/usr/bin/env bash
# The whole test suite, as CI runs it: lint, types, import contracts, then pytest on both databases.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh dev
scripts/ensure_postgres.sh
scripts/ensure_redis.sh
scripts/ensure_chromium.sh
# The dashboard browser tests write screenshots of the main pages here (not committed).
export AIKI_SCREENSHOTS="${AIKI_SCREENSHOTS:-$PWD/test-artifacts/screenshots}"
. .venv/bin/activate
echo "== ruff"; ruff check aiki tests bench examples; ruff format --check aiki tests bench examples
echo "== mypy --strict aiki"; mypy aiki
echo "== import-linter"; lint-imports
echo "== pytest"
workers="${AIKI_TEST_WORKERS:-2}"
status=0
pytest -n "$workers" --dist loadfile -q "$@" || status=$?
echo "== dashboard screenshots: $AIKI_SCREENSHOTS"
exit "$status"
