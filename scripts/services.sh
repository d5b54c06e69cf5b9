#!/usr/bin/env bash
# Makes sure the real servers the test suite talks to are here and running:
# Prometheus + promtool (Debian package), PostgreSQL and Redis (started if installed but down).
# Needs root for apt-get; without it, missing pieces are reported and their tests skip
# (or fail, under TRACKER_REQUIRE_SERVERS=1 as in CI).
set -uo pipefail

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo -n "$@"; else return 1; fi; }

if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null || ! command -v amtool >/dev/null || ! command -v openssl >/dev/null; then
  echo "services: installing Prometheus and Alertmanager (Debian packages)"
  if command -v apt-get >/dev/null; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null &&
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus prometheus-alertmanager openssl >/dev/null ||
      echo "services: could not install prometheus"
  fi
fi
# The package starts a Prometheus of its own on :9090 where it can; tests start their own.

if command -v pg_isready >/dev/null && ! pg_isready -q -h 127.0.0.1 -p 5432; then
  echo "services: starting PostgreSQL"
  for version in $(ls /etc/postgresql 2>/dev/null); do
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  done
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.5; done
fi

if command -v redis-server >/dev/null && ! (command -v redis-cli >/dev/null && redis-cli -h 127.0.0.1 ping >/dev/null 2>&1); then
  echo "services: starting Redis"
  as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
    --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
fi

for tool in prometheus promtool amtool openssl pg_isready redis-cli; do
  command -v "$tool" >/dev/null || echo "services: $tool is not available"
done
exit 0
