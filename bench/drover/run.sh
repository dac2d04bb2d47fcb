#!/usr/bin/env bash
# Drover's own workloads of issue 6, one JSON line per result on stdout
# (everything else on stderr), each labelled with its durability level:
# D0 = memory store, D2 = PostgreSQL store, acknowledged after COMMIT with
# fsync and synchronous_commit on (the programs refuse anything weaker).
#
#   bench/drover/run.sh <workload> [--quick] [--runs R] [--jobs N] [--slots S]
#
#   B1     preload N jobs (default 100,000), drain with durable completion:
#          D0 and D2, no-op, 1 ms and 10 ms jobs (a job that sleeps), 128
#          slots; --runs R runs of the no-op drains (default 3), one run of
#          the 1 ms and 10 ms ones (--runs-sleep R to change)
#   B7     the same drain as slots are added: 1,2,4,8,32,128, no-op and 1 ms
#          jobs, D2, N = 5,000 per point
#   B3     submit -> handler start, idle, then half-loaded (background
#          submissions at half the steady-state rate measured just before),
#          D2; with CAF's stealing and sharing schedulers; --runs R times
#   B2     open-loop submissions at fixed rates to saturation: ack latency
#          p50/p99/p99.9 per rate, highest rate with bounded p99, D2; both
#          schedulers; --runs R times
#   B4     1,000,000 queued jobs with no workers of their class: bytes per
#          queued job in the process and in PostgreSQL; then the drain rate of
#          the first 100,000 from that deep queue, D2
#   B5     SIGKILL a drover-node holding 100,000, then 1,000,000 unfinished
#          jobs (--jobs "N ..." to change), restart it:
#          time to dispatch again, to full speed; zero lost (audit log), D2
#   caf    CAF's raw rates on this machine: local send, request/response,
#          spawn, and request/response over TCP loopback (a limit)
#   all    every workload above
#
#   --quick   small sizes (a smoke run of a few minutes in all)
#
# The binaries come from $DROVER_BUILD (default build-bench/ in the
# repository; built with CMake Release there if missing). PostgreSQL is the
# project's private cluster (scripts/pg), in databases of the programs' own,
# dropped afterwards.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/../peers/lib.sh"
ROOT=$BENCH_ROOT
BUILD=${DROVER_BUILD:-$ROOT/build-bench}

usage() { sed -n '2,36p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 1 ] || usage
workload=$1; shift
quick=0; runs=""; jobs=""; slots=""; runs_sleep=1
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1; shift ;;
    --runs) runs=$2; shift 2 ;;
    --runs-sleep) runs_sleep=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --slots) slots=$2; shift 2 ;;
    -h|--help) usage ;;
    *) blog "unknown option $1"; usage ;;
  esac
done

if [ "$workload" = all ]; then
  rc=0
  for w in caf B1 B7 B3 B2 B4 B5; do
    blog "=== drover $w ==="
    args=()
    [ $quick -eq 1 ] && args+=(--quick)
    [ -n "$runs" ] && args+=(--runs "$runs")
    "$0" "$w" "${args[@]+"${args[@]}"}" || { rc=1; blog "FAILED: drover $w"; }
  done
  exit $rc
fi

TARGETS=(drover_bench_drain drover_bench_latency drover_bench_deep
  drover_bench_recovery drover_bench_caf drover-node)
need_build=0
for t in "${TARGETS[@]}"; do
  case $t in drover-node) f=$BUILD/nodes/$t ;; *) f=$BUILD/benchmarks/$t ;; esac
  [ -x "$f" ] || need_build=1
done
if [ $need_build -eq 1 ]; then
  blog "building ${TARGETS[*]} in $BUILD"
  cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >&2
  cmake --build "$BUILD" -j2 --target "${TARGETS[@]}" >&2
fi
B=$BUILD/benchmarks

trap cleanup EXIT
trap 'exit 130' INT TERM
pg_up
URL=$PG_ADMIN_URL

# Every result line gets the git commit and the machine's core count.
commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(git -C "$ROOT" status --porcelain -- actors runtime benchmarks 2>/dev/null | head -c1 | wc -c)
tag() {
  local extra="\"commit\":\"$commit$([ "$dirty" -gt 0 ] && echo +dirty)\",\"machine\":\"$(nproc) cores\""
  sed -u "s/^{/{$extra,/"
}

case "$workload" in
  B1)
    n=${jobs:-$([ $quick -eq 1 ] && echo 20000 || echo 100000)}
    r=${runs:-$([ $quick -eq 1 ] && echo 1 || echo 3)}
    s=${slots:-128}
    for store in postgres memory; do
      for us in 0 1000 10000; do
        rr=$r; [ "$us" -gt 0 ] && rr=$runs_sleep
        blog "B1: $store, job $us us, $n jobs, $s slots, $rr run(s)"
        "$B/drover_bench_drain" --workload B1 --store "$store" --pg-url "$URL" \
          --jobs "$n" --slots "$s" --job-us "$us" --runs "$rr" | tag
      done
    done
    ;;
  B7)
    n=${jobs:-$([ $quick -eq 1 ] && echo 2000 || echo 5000)}
    r=${runs:-1}
    s=${slots:-1,2,4,8,32,128}
    for us in 0 1000; do
      blog "B7: postgres, job $us us, slots $s, $n jobs"
      "$B/drover_bench_drain" --workload B7 --store postgres --pg-url "$URL" \
        --jobs "$n" --slots "$s" --job-us "$us" --runs "$r" | tag
    done
    ;;
  B3)
    s=${slots:-32}
    probes=$([ $quick -eq 1 ] && echo 100 || echo 300)
    n=$([ $quick -eq 1 ] && echo 5000 || echo 20000)
    r=${runs:-1}
    rc=0
    for sched in stealing sharing; do
      # This scheduler's rates, now: half of the steady state is the
      # background load. In the steady state a job is submitted AND run:
      # the full rate is 1 / (1/drain + 1/submit).
      blog "B3: measuring the D2 drain rate ($n jobs, $s slots, scheduler $sched)"
      lines=$("$B/drover_bench_drain" --workload B3-drain --store postgres --pg-url "$URL" \
               --jobs "$n" --slots "$s" --runs 1 --scheduler "$sched" | tag)
      printf '%s\n' "$lines"
      rate=$(printf '%s\n' "$lines" | jq -r 'select(.summary == true) | .drain_jobs_per_s_median')
      sub=$(printf '%s\n' "$lines" | jq -r 'select(.summary == true) | .preload_submits_per_s_median')
      full=$(awk -v r="$rate" -v s="$sub" 'BEGIN { printf "%d", 1 / (1 / r + 1 / s) }')
      bg=$(awk -v f="$full" 'BEGIN { printf "%d", f / 2 }')
      blog "B3: background load $bg jobs/s (half of $full = 1/(1/$rate drained + 1/$sub submitted))"
      for run in $(seq 1 "$r"); do
        blog "B3: run $run of $r, scheduler $sched"
        # A failed run (a probe that never started) is reported and the
        # next one still runs.
        "$B/drover_bench_latency" --workload B3 --pg-url "$URL" --slots "$s" \
          --scheduler "$sched" --probes "$probes" --bg-rate "$bg" | tag || rc=1
      done
    done
    exit $rc
    ;;
 B2)
    s=${slots:-32}
    r=${runs:-1}
    # Both CAF scheduling policies (--scheduler-policy of drover-node).
    for run in $(seq 1 "$r"); do
      for sched in stealing sharing; do
        blog "B2: run $run of $r, scheduler $sched"
        if [ $quick -eq 1 ]; then
          "$B/drover_bench_latency" --workload B2 --pg-url "$URL" --slots "$s" \
            --scheduler "$sched" --rates 500,2000,8000,16000,32000 --seconds 2 | tag
        else
          "$B/drover_bench_latency" --workload B2 --pg-url "$URL" --slots "$s" \
            --scheduler "$sched" \
            --rates 250,500,1000,2000,3000,4000,6000,8000,12000,16000,24000,32000 \
            --seconds 5 | tag
        fi
      done
    done
    ;;
 B4)
    n=${jobs:-$([ $quick -eq 1 ] && echo 50000 || echo 1000000)}
    d=$([ $quick -eq 1 ] && echo 10000 || echo 100000)
    late=$([ $quick -eq 1 ] && echo 0 || echo 31)
    s=${slots:-32}
    blog "B4: $n queued jobs, then a drain of $d with $s slots"
    "$B/drover_bench_deep" --pg-url "$URL" --jobs "$n" --drain-jobs "$d" \
      --slots "$s" --late-s "$late" | tag
    ;;
  B5)
    sizes=${jobs:-$([ $quick -eq 1 ] && echo 20000 || echo "100000 1000000")}
    k=$([ $quick -eq 1 ] && echo 3000 || echo 10000)
    s=${slots:-32}
    for u in $sizes; do
      # A million jobs run for 60 s after the restart, then SIGTERM: the
      # rest must still be queued (checked), which saves minutes.
      d=0; [ "$u" -ge 1000000 ] && d=60
      blog "B5: $u unfinished jobs at the SIGKILL ($k run before), $s slots, drain ${d}s (0 = all)"
      "$B/drover_bench_recovery" --node "$BUILD/nodes/drover-node" --pg-url "$URL" \
        --unfinished "$u" --run-before-kill "$k" --slots "$s" --drain-seconds "$d" | tag || rc=1
    done
    exit ${rc:-0}
    ;;
  caf)
    m=$([ $quick -eq 1 ] && echo 200000 || echo 1000000)
    "$B/drover_bench_caf" --msgs "$m" | tag
    ;;
  *) bdie "unknown workload '$workload' (B1 B2 B3 B4 B5 B7 caf all)" ;;
esac
