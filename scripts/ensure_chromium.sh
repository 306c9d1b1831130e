#!/usr/bin/env bash
# Debian's Chromium for the dashboard browser tests (Playwright drives it; `playwright install`
# cannot download browsers here). Idempotent and quiet; needs root (CI and the dev container are).
set -euo pipefail
[ -x /usr/bin/chromium ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure_chromium: /usr/bin/chromium is missing and apt-get is not available; install Chromium" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
install() { apt-get install -y -qq --no-install-recommends chromium >/dev/null; }
install 2>/dev/null || { apt-get update -qq >/dev/null && install; }
