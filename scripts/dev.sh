#!/usr/bin/env bash
# Run the product: server + example worker on the embedded SQLite database, port 9850.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh server
exec .venv/bin/aiki dev "$@"
