#!/usr/bin/env bash
# The tests need PostgreSQL on 127.0.0.1:5432 (user postgres, trust auth). Start it if it is down.
set -euo pipefail
if pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then exit 0; fi
if command -v pg_ctlcluster >/dev/null 2>&1; then
  version=$(ls /etc/postgresql 2>/dev/null | sort -n | tail -1)
  if [ -n "$version" ]; then
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && exit 0; sleep 1; done
  fi
fi
echo "PostgreSQL is not running on 127.0.0.1:5432 and could not be started." >&2
echo "Install PostgreSQL 15 (Debian: apt-get install postgresql) with trust auth for user postgres." >&2
exit 1
