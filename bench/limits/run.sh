#!/usr/bin/env bash
# PostgreSQL limits on this machine, at D2 (fsync on, synchronous_commit on),
# in the project's private cluster (scripts/pg), in a database of our own
# that is dropped afterwards.
#
#   bench/limits/run.sh <name> [--clients C] [--seconds S] [--batch B] [--no-index]
#   bench/limits/run.sh all [--seconds S]
#
#   skip_locked            hand-written SKIP LOCKED queue: claim 100 jobs per
#                          transaction, then delete them in a second one;
#                          4 clients; 400,000 preloaded jobs
#   skip_locked_delete     the same queue, claim+delete in one transaction
#   insert                 multi-row INSERT of event-shaped rows (job_id text,
#                          seq int, kind smallint, at_ms bigint, payload bytea
#                          100 bytes), 1,000 rows per statement; 2 clients
#   copy                   COPY of the same rows from server-side files,
#                          100,000 rows per COPY; 2 clients
#   lifecycle              the SQL Drover issues per job (runtime/pg.cpp),
#                          1,000 jobs per transaction: submit (jobs INSERT +
#                          events INSERT), start (events INSERT + jobs UPDATE),
#                          complete (events INSERT + jobs UPDATE); 2 clients
#   lifecycle_merged       submit, then start and complete in one transaction
#                          (2 events + 1 jobs UPDATE per job)
#   lifecycle_events_only  the three events per job, no jobs table
#   commit_latency         one client, one one-row INSERT per transaction:
#                          the latency of a single durable commit (p50/p99
#                          from pgbench's per-transaction log), the floor
#                          under any D2 acknowledgement (B2, B3)
#   --no-index             insert/copy: no primary key on (job_id, seq)
#
# One JSON line per name on stdout; everything else on stderr.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/../peers/lib.sh"

usage() { sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 1 ] || usage
name=$1; shift

if [ "$name" = all ]; then
  rc=0
  for n in skip_locked skip_locked_delete insert copy lifecycle lifecycle_merged lifecycle_events_only commit_latency; do
    blog "=== $n ==="
    "$0" "$n" "$@" || { rc=1; blog "FAILED: $n"; }
  done
  exit $rc
fi

clients=""; seconds=10; batch=1000; index=1
while [ $# -gt 0 ]; do
  case "$1" in
    --clients) clients=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    --no-index) index=0; shift ;;
    -h|--help) usage ;;
    *) blog "unknown option $1"; usage ;;
  esac
done

PGBENCH=$PG_BIN/pgbench
[ -x "$PGBENCH" ] || bdie "no pgbench in $PG_BIN: run bench/setup-peers.sh"

WORK=""
cleanup_limits() {
  local rc=$?
  [ -n "$WORK" ] && rm -rf "$WORK"
  cleanup || true
  return $rc
}
trap cleanup_limits EXIT
trap 'exit 130' INT TERM

pg_up
pg_db_create drover_bench_limits
URL=$PG_DB_URL
q() { psql "$URL" -XAtq -v ON_ERROR_STOP=1 "$@"; }

fsync=$(q -c 'show fsync'); sc=$(q -c 'show synchronous_commit')
[ "$fsync" = on ] && [ "$sc" = on ] || bdie "not D2: fsync=$fsync synchronous_commit=$sc"
version=$(q -c 'show server_version' | cut -d' ' -f1)

mkdir -p "$BENCH_STATE"
WORK=$(mktemp -d "$BENCH_STATE/limits.XXXXXX")
chmod 755 "$WORK"
q -c "CREATE SEQUENCE drover_bench_batch"

gen_args=(--batch "$batch")
copy_files=0
case "$name" in
  skip_locked|skip_locked_delete)
    clients=${clients:-4}
    per_client=1000
    preload=$((clients * per_client * 100))
    blog "preloading $preload jobs"
    q -c "CREATE TABLE bench_queue (
            id bigserial PRIMARY KEY,
            task text NOT NULL DEFAULT 'noop',
            payload jsonb NOT NULL DEFAULT '{}',
            attempts int NOT NULL DEFAULT 0,
            locked_at timestamptz,
            created_at timestamptz NOT NULL DEFAULT now())" \
      -c "CREATE INDEX bench_queue_ready ON bench_queue (id) WHERE locked_at IS NULL" \
      -c "INSERT INTO bench_queue (payload) SELECT jsonb_build_object('i', g) FROM generate_series(1, $preload) g" \
      -c "VACUUM ANALYZE bench_queue" -c "CHECKPOINT"
    run_args=(-t "$per_client")
    settings="claim 100 per transaction (UPDATE .. WHERE id IN (SELECT .. ORDER BY id LIMIT 100 FOR UPDATE SKIP LOCKED) RETURNING), then DELETE them in a second transaction; partial index on ready jobs; $preload preloaded"
    [ "$name" = skip_locked_delete ] && settings="DELETE .. WHERE id IN (SELECT .. ORDER BY id LIMIT 100 FOR UPDATE SKIP LOCKED) RETURNING id: claim+complete in one transaction; $preload preloaded"
    ;;
  commit_latency)
    clients=1
    q -c "CREATE TABLE bench_events (job_id text COLLATE \"C\" NOT NULL, seq int NOT NULL,
            kind smallint NOT NULL, at_ms bigint NOT NULL, payload bytea NOT NULL, PRIMARY KEY (job_id, seq))"
    run_args=(-T "$seconds" --log --log-prefix "$WORK/txlog")
    settings="1 client, INSERT of one event-shaped row per transaction (autocommit); primary key (job_id, seq)"
    ;;
  insert|copy)
    clients=${clients:-2}
    pk=""; [ "$index" -eq 1 ] && pk=", PRIMARY KEY (job_id, seq)"
    q -c "CREATE TABLE bench_events (job_id text COLLATE \"C\" NOT NULL, seq int NOT NULL,
            kind smallint NOT NULL, at_ms bigint NOT NULL, payload bytea NOT NULL $pk)"
    if [ "$name" = insert ]; then
      run_args=(-T "$seconds")
      settings="INSERT .. VALUES x $batch rows per statement (autocommit); payload 100 bytes"
    else
      per_client=3
      copy_files=$((clients * per_client))
      gen_args+=(--copy-files "$copy_files" --copy-rows 100000)
      run_args=(-t "$per_client")
      settings="COPY .. FROM server-side text file, 100000 rows per COPY (autocommit); payload 100 bytes"
    fi
    [ "$index" -eq 1 ] && settings="$settings; primary key (job_id, seq)" || settings="$settings; no index"
    ;;
  lifecycle|lifecycle_merged|lifecycle_events_only)
    clients=${clients:-2}
    # Drover's own schema, from its migrations (runtime/pg_schema.cpp).
    q -c "CREATE SCHEMA drover"
    # Every migration's raw string, in file order (= version order).
    sed -n '/R"sql(/,/)sql"/p' "$BENCH_ROOT/runtime/pg_schema.cpp" \
      | sed -e 's/.*R"sql(//' -e 's/)sql".*//' >"$WORK/schema.sql"
    [ -s "$WORK/schema.sql" ] || bdie "no schema found in runtime/pg_schema.cpp"
    q -f "$WORK/schema.sql" >/dev/null
    # Columns of drover.jobs that later migrations added: booleans are
    # written (as false) like Drover's write() does; anything else is unknown.
    known="'job_id','tenant','type','idempotency_key','status','priority','dead_lettered','created_at_ms','updated_at_ms','completed_at_ms','seq','record','webhook_pending','final_status'"
    extra_bools=$(q -c "select coalesce(string_agg(column_name, ',' order by ordinal_position), '') from information_schema.columns
      where table_schema = 'drover' and table_name = 'jobs' and column_name not in ($known) and data_type = 'boolean'")
    others=$(q -c "select coalesce(string_agg(column_name, ','), '') from information_schema.columns
      where table_schema = 'drover' and table_name = 'jobs' and column_name not in ($known) and data_type <> 'boolean'")
    [ -z "$others" ] || blog "WARNING: drover.jobs has columns this script does not write: $others (update bench/limits/gen.py)"
    [ -n "$extra_bools" ] && gen_args+=(--extra-bool-cols "$extra_bools")
    run_args=(-T "$seconds")
    case "$name" in
      lifecycle) settings="per $batch jobs: submit tx (jobs INSERT .. ON CONFLICT DO NOTHING RETURNING + events INSERT), start tx (events INSERT + jobs UPDATE .. FROM VALUES), complete tx (events INSERT + jobs UPDATE); Drover's schema and indexes" ;;
      lifecycle_merged) settings="per $batch jobs: submit tx (jobs INSERT + events INSERT), start+complete tx (2 events INSERTs + 1 jobs UPDATE); Drover's schema and indexes" ;;
      *) settings="per $batch jobs: submitted events tx, started+completed events tx; drover.events only" ;;
    esac
    ;;
  *) bdie "unknown limit '$name'" ;;
esac

if [ -n "${extra_bools:-}" ]; then settings="$settings; drover.jobs also gets $extra_bools (false)"; fi
blog "generating scripts in $WORK"
/usr/bin/python3 "$HERE/gen.py" "$WORK" "${gen_args[@]}"
[ "$name" = commit_latency ] && printf '%s\n' \
  "INSERT INTO bench_events (job_id, seq, kind, at_ms, payload) VALUES ('c', nextval('drover_bench_batch'), 3, 0, '\\x00');" \
  >"$WORK/commit_latency.sql"
chown -R postgres:postgres "$WORK" 2>/dev/null || true
q -c "CHECKPOINT"

blog "pgbench $name: ${clients} clients, ${run_args[*]}"
set +e
"$PGBENCH" -n -r -c "$clients" -j "$clients" "${run_args[@]}" -f "$WORK/$name.sql" "$URL" >"$WORK/pgbench.out" 2>&1
prc=$?
set -e
cut -c1-240 "$WORK/pgbench.out" >&2
[ $prc -eq 0 ] || bdie "pgbench failed (exit $prc)"
grep -q 'number of failed transactions: 0 ' "$WORK/pgbench.out" || bdie "pgbench reports failed transactions"

tx=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$WORK/pgbench.out")
tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time).*/\1/p' "$WORK/pgbench.out")
[ -n "$tx" ] && [ -n "$tps" ] || bdie "cannot read pgbench's output"
elapsed=$(awk -v t="$tx" -v r="$tps" 'BEGIN { printf "%.3f", t / r }')

# Verification from the database itself.
case "$name" in
  skip_locked*)
    left=$(q -c "select count(*) from bench_queue")
    verified=$((preload - left))
    [ "$verified" -ge $((tx * 100 * 99 / 100)) ] || bdie "only $verified jobs processed by $tx transactions of 100"
    unit=jobs; per_tx=100 ;;
  insert)
    verified=$(q -c "select count(*) from bench_events")
    [ "$verified" -eq $((tx * batch)) ] || bdie "$verified rows, expected $((tx * batch))"
    unit=rows; per_tx=$batch ;;
  copy)
    verified=$(q -c "select count(*) from bench_events")
    [ "$verified" -eq $((tx * 100000)) ] || bdie "$verified rows, expected $((tx * 100000))"
    unit=rows; per_tx=100000 ;;
  lifecycle|lifecycle_merged)
    verified=$(q -c "select count(*) from drover.jobs where status = 4")
    events=$(q -c "select count(*) from drover.events")
    [ "$verified" -ge $((tx * batch)) ] || bdie "$verified completed jobs, expected $((tx * batch))"
    [ "$events" -ge $((verified * 3)) ] || bdie "$events events for $verified completed jobs"
    unit=jobs; per_tx=$batch ;;
  commit_latency)
    verified=$(q -c "select count(*) from bench_events")
    [ "$verified" -eq "$tx" ] || bdie "$verified rows, expected $tx"
    # Field 3 of pgbench's per-transaction log: the latency in us.
    read -r p50 p99 < <(cat "$WORK"/txlog.* | awk '{ print $3 }' | sort -n \
      | awk '{ v[NR] = $1 } END { printf "%.3f %.3f\n", v[int(NR * 0.5 + 0.5)] / 1000, v[int(NR * 0.99 + 0.5)] / 1000 }')
    extra_json=",\"commit_ms_p50\":$p50,\"commit_ms_p99\":$p99"
    unit=commits; per_tx=1 ;;
  lifecycle_events_only)
    events=$(q -c "select count(*) from drover.events where kind = 7")
    verified=$events
    [ "$verified" -ge $((tx * batch)) ] || bdie "$verified completed events, expected $((tx * batch))"
    unit=jobs; per_tx=$batch ;;
esac
rate=$(awk -v t="$tx" -v n="$per_tx" -v e="$elapsed" 'BEGIN { printf "%d", t * n / e }')
done_units=$((tx * per_tx))
[ "$unit" = jobs ] && [ "${name#skip_locked}" != "$name" ] && { done_units=$verified; rate=$(awk -v v="$verified" -v e="$elapsed" 'BEGIN { printf "%d", v / e }'); }
load=$(cut -d' ' -f1 /proc/loadavg)

printf '{"limit":"%s","system":"postgresql","version":"%s","durability":"D2","fsync":"%s","synchronous_commit":"%s","settings":"%s","clients":%s,"transactions":%s,"%s":%s,"verified":%s,"seconds":%s,"%s_per_s":%s,"loadavg_1m_at_end":%s,"machine":"%s cores"%s}\n' \
  "$name" "$version" "$fsync" "$sc" "$settings" "$clients" "$tx" "$unit" "$done_units" "$verified" \
  "$elapsed" "$unit" "$rate" "$load" "$(nproc)" "${extra_json:-}"
