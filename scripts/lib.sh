# Shared by scripts/run and scripts/test. Source it; do not run it.
#
# Installs what a fresh Debian bookworm machine lacks, configures and builds
# the project, and manages the private PostgreSQL under .drover/.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE_DIR=${DROVER_STATE_DIR:-$ROOT/.drover}
JOBS=${DROVER_JOBS:-$(nproc)}

# Debian packages the build and the tests need.
PACKAGES=(g++ cmake make pkgconf ccache libcaf-dev capnproto libcapnp-dev
  libpq-dev postgresql libboost-program-options-dev libboost-dev catch2
  libssl-dev openssl curl libspdlog-dev uidmap dpkg-dev file
  chromium nodejs python3 python3-prometheus-client)

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# The unprivileged account a node started as root switches to (drover-node
# --run-as; docs/security.md, "exec"): a system user without a login shell
# or home, created when missing. Prints nothing; exports DROVER_RUN_AS.
RUN_AS_USER=${DROVER_RUN_AS:-drover}
# First id of the subordinate range granted to the node's user.
EXEC_USER_RANGE_START=2000000000

ensure_run_as_user() {
  [ "$(id -u)" -eq 0 ] || return 0
  if ! id -u "$RUN_AS_USER" >/dev/null 2>&1; then
    log "creating system user '$RUN_AS_USER' (the node runs as it, not as root)"
    useradd --system --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin "$RUN_AS_USER"
  fi
  export DROVER_RUN_AS=$RUN_AS_USER
  # A subordinate id range, for running exec programs as a user of their
  # own (exec_user_args; the tests use it too).
  if ! grep -q "^$RUN_AS_USER:" /etc/subuid 2>/dev/null \
      || ! grep -q "^$RUN_AS_USER:" /etc/subgid 2>/dev/null; then
    local end=$((EXEC_USER_RANGE_START + 65535))
    usermod --add-subuids "$EXEC_USER_RANGE_START-$end" \
      --add-subgids "$EXEC_USER_RANGE_START-$end" "$RUN_AS_USER"
  fi
}

# Per-job cgroups for exec programs (runtime/exec_cgroup.hpp): as root, on
# a machine with cgroup v1 pids and memory hierarchies, makes a directory
# below this shell's own cgroup in each and delegates it to the node's
# user; fills the array EXEC_CGROUP_ARGS with the --exec-cgroup options.
# Nothing where that is not possible (not root, cgroup v2 only: there the
# service manager delegates, docs/handlers.md), and it says so.
exec_cgroup_args() {
  EXEC_CGROUP_ARGS=()
  [ "$(id -u)" -eq 0 ] || return 0
  local controller own dir
  for controller in pids memory; do
    own=$(sed -n "s/^[0-9]*:$controller:\(.*\)$/\1/p" /proc/self/cgroup)
    [ -n "$own" ] && [ -f "/sys/fs/cgroup/$controller/cgroup.procs" ] || continue
    dir=/sys/fs/cgroup/$controller${own%/}/drover-exec
    # Used only if the node's user can make a child there, as the node will.
    if mkdir -p "$dir" 2>/dev/null && chown "$RUN_AS_USER:" "$dir" \
        && runuser -u "$RUN_AS_USER" -- mkdir "$dir/drover-probe-$$" 2>/dev/null; then
      rmdir "$dir/drover-probe-$$"
      EXEC_CGROUP_ARGS+=(--exec-cgroup "$dir")
    fi
  done
  if [ ${#EXEC_CGROUP_ARGS[@]} -eq 0 ]; then
    log "no cgroup v1 pids/memory hierarchy to delegate: exec jobs get rlimits only"
  fi
}

# A user of their own for exec programs (runtime/exec_user.hpp): as root,
# checks that the node's user (its subordinate id range granted by
# ensure_run_as_user) can run a program as the range's first id in a user
# namespace, and fills EXEC_USER_ARGS with --exec-user-id. Where that is
# not possible it says so and programs run as the node's user.
exec_user_args() {
  EXEC_USER_ARGS=()
  [ "$(id -u)" -eq 0 ] || return 0
  local start
  start=$(sed -n "s/^$RUN_AS_USER:\([0-9]*\):[0-9]*$/\1/p" /etc/subuid | head -n 1)
  if [ -n "$start" ] && runuser -u "$RUN_AS_USER" -- unshare --user \
      --map-users="$start,$start,1" --map-groups="$start,$start,1" \
      --setuid "$start" --setgid "$start" true 2>/dev/null; then
    EXEC_USER_ARGS=(--exec-user-id "$start")
  else
    log "exec programs run as '$RUN_AS_USER': no user namespace with a subordinate id here"
  fi
}

# The headless Chromium test's driver: playwright-core at the version
# tests/browser/package-lock.json pins (Debian's chromium is the browser;
# never `playwright install`). npm comes with the machine's Node.js, or
# from Debian's npm package when it does not.
install_browser_test_packages() {
  if ! command -v npm >/dev/null 2>&1; then
    as_root env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -q --no-install-recommends npm
  fi
  if [ ! -f "$ROOT/tests/browser/node_modules/playwright-core/package.json" ]; then
    log "installing the browser test's npm packages (npm ci in tests/browser)"
    (cd "$ROOT/tests/browser" && npm ci --no-audit --no-fund)
  fi
}

install_packages() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
      || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# build <build-dir> [extra cmake args...]
# DROVER_BUILD_TARGETS (space-separated) builds only those targets (.ci/run
# builds only the unit tests under ASan).
build() {
  local dir=$1; shift
  if [ ! -f "$dir/CMakeCache.txt" ]; then
    log "configuring $dir"
    cmake -S "$ROOT" -B "$dir" -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
  fi
  log "building $dir${DROVER_BUILD_TARGETS:+ ($DROVER_BUILD_TARGETS)}"
  local targets=()
  for t in ${DROVER_BUILD_TARGETS:-}; do targets+=(--target "$t"); done
  cmake --build "$dir" -j "$JOBS" "${targets[@]}"
}

# --- private PostgreSQL -------------------------------------------------
# Data in $STATE_DIR/pg/data, socket in $STATE_DIR/pg/run, no TCP listener,
# never the machine's default cluster. Exports DROVER_PG_URL.

PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
PG_DIR=$STATE_DIR/pg

# Runs a PostgreSQL binary as the owner of the data directory: initdb and
# postgres refuse to run as root, so root uses the 'postgres' account.
pg_run() {
  if [ "$(id -u)" -eq 0 ]; then
    # From /, which 'postgres' can always enter.
    (cd / && runuser -u postgres -- "$@")
  else
    "$@"
  fi
}

# PostgreSQL refuses to run as root, so as root the server runs as
# 'postgres', which must be able to reach the data folder; and a unix socket
# path may not exceed 107 bytes. When the project folder fails either test
# (e.g. a clone under /root), the private cluster lives in /var/tmp instead.
pg_choose_dir() {
  local sock="$PG_DIR/run/.s.PGSQL.5432"
  local ok=1
  [ ${#sock} -gt 100 ] && ok=0
  if [ "$ok" -eq 1 ] && [ "$(id -u)" -eq 0 ]; then
    mkdir -p "$PG_DIR/run"
    chown -R postgres:postgres "$PG_DIR"
    runuser -u postgres -- test -w "$PG_DIR/run" || ok=0
  fi
  if [ "$ok" -eq 0 ]; then
    PG_DIR=/var/tmp/drover-pg-$(printf '%s' "$ROOT" | md5sum | cut -c1-12)
  fi
}

pg_start() {
  pg_choose_dir
  mkdir -p "$PG_DIR/run"
  if [ "$(id -u)" -eq 0 ]; then chown -R postgres:postgres "$PG_DIR"; fi
  if [ ! -f "$PG_DIR/data/PG_VERSION" ]; then
    log "initialising private PostgreSQL in $PG_DIR/data"
    pg_run "$PG_BIN/initdb" -D "$PG_DIR/data" -U drover -A trust \
      --no-instructions >"$PG_DIR/initdb.log" 2>&1 \
      || { cat "$PG_DIR/initdb.log" >&2; return 1; }
  fi
  if ! pg_run "$PG_BIN/pg_ctl" -D "$PG_DIR/data" status >/dev/null 2>&1; then
    log "starting private PostgreSQL (socket in $PG_DIR/run)"
    pg_run "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w \
      -o "-k $PG_DIR/run -c listen_addresses=''" start >/dev/null \
      || { tail -n 20 "$PG_DIR/server.log" >&2; return 1; }
  fi
  if ! pg_run "$PG_BIN/psql" -h "$PG_DIR/run" -U drover -d postgres -tAc \
      "select 1 from pg_database where datname = 'drover'" | grep -q 1; then
    pg_run "$PG_BIN/createdb" -h "$PG_DIR/run" -U drover drover
  fi
  export DROVER_PG_URL="postgresql:///drover?host=$PG_DIR/run&user=drover"
}

pg_stop() {
  pg_choose_dir
  if [ -f "$PG_DIR/data/postmaster.pid" ]; then
    pg_run "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null || true
  fi
}
