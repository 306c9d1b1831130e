#!/usr/bin/env bash
# The tests need PostgreSQL on 127.0.0.1:5432 (user postgres, trust auth). Start it if it is down.
# The chaos suite and the database-restart tests also make clusters of their own with Debian's
# postgresql-common (pg_createcluster): install it when it is missing and we may.
set -euo pipefail
if ! command -v pg_createcluster >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing postgresql-common (pg_createcluster, for the chaos suite)" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql-common >/dev/null \
    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql-common >/dev/null; } \
    || echo "could not install postgresql-common: the chaos suite will fail" >&2
fi
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
