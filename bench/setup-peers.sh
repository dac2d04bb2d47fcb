#!/usr/bin/env bash
# Installs what bench/peers/ and bench/limits/ need on a fresh Debian bookworm
# machine, and only what is missing. Idempotent; runs as root (or via sudo).
#
#   bench/setup-peers.sh            # Debian packages + node_modules
#   bench/setup-peers.sh --check    # only report what is missing (exit 1 if anything)
#
# Debian packages: redis-server (Redis 7.0), ruby-sidekiq (Sidekiq 6.4),
# python3-celery (Celery 5.2) + python3-redis, postgresql + postgresql-contrib
# (server, pgbench), postgresql-client (psql), nodejs + npm (only if no node).
# npm: bench/peers/node/package-lock.json (BullMQ 6.7, graphile-worker 0.17),
# installed with `npm ci` into bench/peers/node/node_modules (git-ignored).
#
# No service is started: package post-install scripts are kept from starting
# redis-server etc. system-wide (policy-rc.d), the benchmarks start private
# servers of their own.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CHECK=0
[ "${1:-}" = "--check" ] && CHECK=1

log() { printf '==> %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

PACKAGES=(redis-server ruby-sidekiq ruby-redis python3-celery python3-redis
  postgresql postgresql-contrib postgresql-client)
# Node: any node >= 18 with npm will do (this machine may carry a non-Debian
# build); if there is none, Debian's.
command -v node >/dev/null 2>&1 || PACKAGES+=(nodejs)
command -v npm >/dev/null 2>&1 || PACKAGES+=(npm)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$p")
done

# node_modules is current when it was installed from this very lock file
# (a stamp written after `npm ci`).
NODE_DIR=$HERE/peers/node
STAMP=$NODE_DIR/node_modules/.drover-lock.sha256
lock_sum() { sha256sum "$NODE_DIR/package-lock.json" | cut -d' ' -f1; }
node_ok=0
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(lock_sum)" ]; then
  node_ok=1
fi

if [ "$CHECK" -eq 1 ]; then
  [ ${#missing[@]} -gt 0 ] && log "missing Debian packages: ${missing[*]}"
  [ "$node_ok" -eq 0 ] && log "missing: bench/peers/node/node_modules (npm ci)"
  [ ${#missing[@]} -eq 0 ] && [ "$node_ok" -eq 1 ] && { log "all present"; exit 0; }
  exit 1
fi

if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  # Keep post-install scripts from starting system-wide services, unless the
  # machine already has such a policy (containers usually do).
  made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    as_root sh -c 'printf "#!/bin/sh\nexit 101\n" > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d'
    made_policy=1
  fi
  cleanup_policy() { [ "$made_policy" -eq 1 ] && as_root rm -f /usr/sbin/policy-rc.d; return 0; }
  trap cleanup_policy EXIT
  as_root apt-get update -q >&2
  as_root env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
  # Should a service have started anyway (e.g. under systemd), stop it: the
  # benchmarks run private servers only.
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    for p in "${missing[@]}"; do
      case "$p" in
        redis-server) as_root systemctl disable --now redis-server >/dev/null 2>&1 || true ;;
        postgresql) as_root systemctl disable --now postgresql >/dev/null 2>&1 || true ;;
      esac
    done
  fi
  cleanup_policy
  trap - EXIT
else
  log "Debian packages: all present"
fi

if [ "$node_ok" -eq 0 ]; then
  log "installing npm packages in bench/peers/node (npm ci)"
  (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error >&2)
  lock_sum > "$STAMP"
else
  log "npm packages: present"
fi

log "versions:"
{
  printf '  redis-server %s\n' "$(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/')"
  printf '  sidekiq %s\n' "$(dpkg-query -W -f='${Version}' ruby-sidekiq)"
  printf '  celery %s\n' "$(dpkg-query -W -f='${Version}' python3-celery)"
  printf '  pgbench %s\n' "$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)/pgbench"
  printf '  node %s\n' "$(node --version)"
  (cd "$HERE/peers/node" && node -e 'for (const p of ["bullmq","ioredis","graphile-worker","pg"]) console.log("  " + p + " " + require(p + "/package.json").version)')
} >&2
