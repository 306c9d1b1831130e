#!/usr/bin/env bash
# The Redis wake-up tests need Redis on 127.0.0.1:6379. Start it (installing it on Debian if
# missing) when it is down.
set -euo pipefail
ping() { python3 -c "import socket,sys; s=socket.create_connection(('127.0.0.1',6379),1); s.sendall(b'PING\r\n'); sys.exit(0 if s.recv(16).startswith(b'+PONG') else 1)" 2>/dev/null; }
if ping; then exit 0; fi
if ! command -v redis-server >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server) >/dev/null 2>&1 || true
fi
if command -v redis-server >/dev/null 2>&1; then
  redis-server --bind 127.0.0.1 --port 6379 --daemonize yes --save "" --appendonly no >/dev/null
  for _ in $(seq 1 30); do ping && exit 0; sleep 0.2; done
fi
echo "Redis is not running on 127.0.0.1:6379 and could not be started (Debian: apt-get install redis-server)." >&2
exit 1
