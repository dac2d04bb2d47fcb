#!/usr/bin/env bash
# Profiles the D2 drain (B1, no-op jobs) of drover_bench_drain with perf,
# system-wide (so PostgreSQL's backends are seen too), sampling only while
# the drain runs (perf's control FIFO, driven by --perf-ctl), and prints
# where the process's and PostgreSQL's CPU goes per job
# (bench/drover/perf_breakdown.py).
#
#   bench/drover/profile.sh [--jobs 20000] [--slots 32] [--out DIR] [--reuse]
#
# --reuse analyses DIR/perf.data again without a new recording.
#
# Needs perf (Debian linux-perf) with cpu-clock sampling. DIR keeps
# perf.data and the perf script dumps (default /tmp/drover-profile).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/../peers/lib.sh"
BUILD=${DROVER_BUILD:-$BENCH_ROOT/build-bench}
jobs=20000; slots=32; out=/tmp/drover-profile; reuse=0
while [ $# -gt 0 ]; do
  case "$1" in
    --jobs) jobs=$2; shift 2 ;;
    --slots) slots=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --reuse) reuse=1; shift ;;
    *) bdie "unknown option $1" ;;
  esac
done
command -v perf >/dev/null || bdie "perf is missing (apt-get install linux-perf)"
[ -x "$BUILD/benchmarks/drover_bench_drain" ] || bdie "build drover_bench_drain in $BUILD first"
if [ $reuse -eq 0 ]; then
trap cleanup EXIT
pg_up
mkdir -p "$out"
rm -f "$out/ctl"; mkfifo "$out/ctl"
blog "profiling a D2 drain of $jobs no-op jobs, $slots slots (load: $(cut -d' ' -f1-3 /proc/loadavg))"
perf record -a -F 999 --call-graph dwarf,8192 -D -1 --control "fifo:$out/ctl" \
  -o "$out/perf.data" -- "$BUILD/benchmarks/drover_bench_drain" --store postgres \
  --pg-url "$PG_ADMIN_URL" --jobs "$jobs" --slots "$slots" --perf-ctl "$out/ctl" \
  | tee "$out/result.json"
fi
pid=$(perf script -i "$out/perf.data" -F comm,pid 2>/dev/null | awk '$1 ~ /^drover_bench_dr/ {print $2; exit}' || true)
[ -n "$pid" ] || bdie "no samples of the benchmark process"
perf script -i "$out/perf.data" --pid "$pid" -F comm,tid,ip,sym,dso 2>/dev/null >"$out/drover.script"
perf script -i "$out/perf.data" --comms postgres -F comm,tid,ip,sym,dso 2>/dev/null >"$out/postgres.script"
perf report -i "$out/perf.data" --no-children --sort comm -g none --stdio 2>/dev/null \
  | grep -v '^#' | grep -v '^$' | head -12 >&2
/usr/bin/python3 "$HERE/perf_breakdown.py" "$out/drover.script" --jobs "$jobs" \
  --postgres-script "$out/postgres.script"
