#!/usr/bin/python3
"""Writes the pgbench scripts of bench/limits into a folder.

  gen.py OUTDIR [--batch 1000] [--copy-rows 100000] [--copy-files N]
         [--extra-bool-cols a,b]   (boolean columns of drover.jobs added by
                                    later migrations; written as false)

Each pgbench "transaction" (one run of a script) handles a whole batch, so
jobs/s = pgbench's tps x batch size. Unique keys come from a sequence read
at the start of each script run (`SELECT nextval(...) AS b \\gset`, then
:b inside the literals).

Row shapes follow what Drover writes (runtime/pg.cpp, session::write):
  submit    INSERT INTO drover.jobs (14 columns) SELECT * FROM unnest(arrays)
              ON CONFLICT DO NOTHING RETURNING job_id
            INSERT INTO drover.events (6 columns) SELECT * FROM unnest(arrays)
  start     INSERT INTO drover.events ... (kind 3 started)
            UPDATE drover.jobs AS j SET ... FROM unnest(arrays) AS v(...)
              WHERE j.job_id = v.job_id AND j.seq < v.seq RETURNING j.job_id
  complete  the same with kind 7 completed, status 4, completed_at_ms and
            final_status set
Drover prepares these statements once per connection and binds one binary
array per column; pgbench cannot bind arrays, so the arrays are constants
here (ARRAY[...]::type[]): the statements have Drover's shape and plan, but
pgbench parses and plans them on every run, which Drover does not.
"""
import os
import random
import sys

STATUS_QUEUED, STATUS_PROCESSING, STATUS_COMPLETED = 0, 2, 4
KIND_SUBMITTED, KIND_STARTED, KIND_COMPLETED = 0, 3, 7
PRIO_NORMAL = 1
T0 = 1767225600000  # at_ms of the rows; its value does not matter

# Payload sizes measured on Drover rows (Cap'n Proto): a no-op job's record
# ~250-330 bytes, a submitted event ~200, started / completed ~100.
RECORD_BYTES = 280
SUBMITTED_BYTES = 200
EVENT_BYTES = 100
RAW_PAYLOAD_BYTES = 100

rng = random.Random(6)


def blob(n):
    return "'\\x" + bytes(rng.getrandbits(8) for _ in range(n)).hex() + "'"


def arg(name, default):
    if f"--{name}" in sys.argv:
        return int(sys.argv[sys.argv.index(f"--{name}") + 1])
    return default


def jid(i):
    # job ids like Drover's (~12 characters), unique per batch number :b
    return f"'j-:b-{i:05d}'"


def arr(values, sql_type):
    """An array constant: ARRAY[v1, v2, ...]::type[] (values are SQL literals)."""
    return "ARRAY[" + ",".join(values) + f"]::{sql_type}[]"


def events_insert(batch, seq, attempt, kind, size):
    n = range(batch)
    return ("INSERT INTO drover.events (job_id, seq, attempt, kind, at_ms, payload) "
            "SELECT * FROM unnest("
            + ", ".join([arr([jid(i) for i in n], "text"), arr([str(seq)] * batch, "int8"),
                         arr([str(attempt)] * batch, "int4"), arr([str(kind)] * batch, "int2"),
                         arr([str(T0)] * batch, "int8"), arr([blob(size) for _ in n], "bytea")])
            + ");\n")


# Boolean columns of drover.jobs that this script does not know by name
# (later migrations), which Drover's write() sets too: written as false.
EXTRA_BOOLS = []


def jobs_insert(batch):
    n = range(batch)
    cols = [arr([jid(i) for i in n], "text"), arr(["'default'"] * batch, "text"),
            arr(["'noop'"] * batch, "text"), arr(["NULL"] * batch, "text"),
            arr([str(STATUS_QUEUED)] * batch, "int2"), arr([str(PRIO_NORMAL)] * batch, "int2"),
            arr(["false"] * batch, "bool"), arr([str(T0)] * batch, "int8"),
            arr([str(T0)] * batch, "int8"), arr(["NULL"] * batch, "int8"),
            arr(["1"] * batch, "int8"), arr([blob(RECORD_BYTES) for _ in n], "bytea"),
            arr(["false"] * batch, "bool"), arr(["NULL"] * batch, "int2")]
    cols += [arr(["false"] * batch, "bool") for _ in EXTRA_BOOLS]
    extra = "".join(f", {c}" for c in EXTRA_BOOLS)
    return ("INSERT INTO drover.jobs (job_id, tenant, type, idempotency_key, status, priority, dead_lettered, "
            f"created_at_ms, updated_at_ms, completed_at_ms, seq, record, webhook_pending, final_status{extra}) "
            "SELECT * FROM unnest(" + ", ".join(cols) + ") ON CONFLICT DO NOTHING RETURNING job_id;\n")


def jobs_update(batch, status, seq, completed):
    n = range(batch)
    done = str(T0) if completed else "NULL"
    final = str(status) if completed else "NULL"
    cols = [arr([jid(i) for i in n], "text"), arr([str(status)] * batch, "int2"),
            arr([str(PRIO_NORMAL)] * batch, "int2"), arr(["false"] * batch, "bool"),
            arr([str(T0)] * batch, "int8"), arr([done] * batch, "int8"),
            arr([str(seq)] * batch, "int8"), arr([blob(RECORD_BYTES) for _ in n], "bytea"),
            arr(["false"] * batch, "bool"), arr([final] * batch, "int2")]
    cols += [arr(["false"] * batch, "bool") for _ in EXTRA_BOOLS]
    sets = "".join(f", {c} = v.{c}" for c in EXTRA_BOOLS)
    extra = "".join(f", {c}" for c in EXTRA_BOOLS)
    return ("UPDATE drover.jobs AS j SET status = v.status, priority = v.priority, "
            "dead_lettered = v.dead_lettered, updated_at_ms = v.updated_at_ms, "
            "completed_at_ms = v.completed_at_ms, seq = v.seq, record = v.record, "
            f"webhook_pending = v.webhook_pending, final_status = v.final_status{sets} "
            "FROM unnest(" + ", ".join(cols) + ") "
            f"AS v(job_id, status, priority, dead_lettered, updated_at_ms, completed_at_ms, seq, record, "
            f"webhook_pending, final_status{extra}) "
            "WHERE j.job_id = v.job_id AND j.seq < v.seq RETURNING j.job_id;\n")


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def main():
    out = sys.argv[1]
    batch = arg("batch", 1000)
    copy_rows = arg("copy-rows", 100000)
    copy_files = arg("copy-files", 0)
    if "--extra-bool-cols" in sys.argv:
        v = sys.argv[sys.argv.index("--extra-bool-cols") + 1]
        EXTRA_BOOLS.extend(c for c in v.split(",") if c)
    os.makedirs(out, exist_ok=True)
    nextb = "SELECT nextval('drover_bench_batch') AS b \\gset\n"

    # (a) hand-written SKIP LOCKED queue: claim 100 in one transaction, then
    # complete (delete) them in another -- a worker whose handler runs
    # outside the claiming transaction.
    write(f"{out}/skip_locked.sql",
          "BEGIN;\n"
          "WITH c AS (UPDATE bench_queue SET locked_at = now(), attempts = attempts + 1 "
          "WHERE id IN (SELECT id FROM bench_queue WHERE locked_at IS NULL ORDER BY id "
          "LIMIT 100 FOR UPDATE SKIP LOCKED) RETURNING id) "
          "SELECT coalesce(quote_literal(array_agg(id)::text), 'NULL') AS ids FROM c \\gset\n"
          "COMMIT;\n"
          "DELETE FROM bench_queue WHERE id = ANY(:ids::bigint[]);\n")
    # ... and the one-transaction form: claim, run and delete together.
    write(f"{out}/skip_locked_delete.sql",
          "DELETE FROM bench_queue WHERE id IN (SELECT id FROM bench_queue WHERE locked_at IS NULL "
          "ORDER BY id LIMIT 100 FOR UPDATE SKIP LOCKED) RETURNING id;\n")

    # (b) raw multi-row INSERT of event-shaped rows, `batch` rows per statement.
    rows = []
    for i in range(batch):
        rows.append(f"({jid(i)}, 1, 3, {T0}, {blob(RAW_PAYLOAD_BYTES)})")
    write(f"{out}/insert.sql", nextb
          + "INSERT INTO bench_events (job_id, seq, kind, at_ms, payload) VALUES "
          + ",".join(rows) + ";\n")

    # (b) COPY: server-side files, one per COPY (distinct keys), text format.
    if copy_files:
        for n in range(1, copy_files + 1):
            with open(f"{out}/copy-{n}.txt", "w") as f:
                payload = "\\\\x" + bytes(rng.getrandbits(8) for _ in range(RAW_PAYLOAD_BYTES)).hex()
                for i in range(copy_rows):
                    f.write(f"j-{n}-{i:06d}\t1\t3\t{T0}\t{payload}\n")
        write(f"{out}/copy.sql",
              "SELECT nextval('drover_bench_batch') AS f \\gset\n"
              f"COPY bench_events (job_id, seq, kind, at_ms, payload) FROM '{out}/copy-:f.txt';\n")

    # (c) Drover's lifecycle, `batch` jobs per transaction.
    submit = "BEGIN;\n" + jobs_insert(batch) + events_insert(batch, 1, 0, KIND_SUBMITTED, SUBMITTED_BYTES) + "COMMIT;\n"
    start = ("BEGIN;\n" + events_insert(batch, 2, 1, KIND_STARTED, EVENT_BYTES)
             + jobs_update(batch, STATUS_PROCESSING, 2, False) + "COMMIT;\n")
    complete = ("BEGIN;\n" + events_insert(batch, 3, 1, KIND_COMPLETED, EVENT_BYTES)
                + jobs_update(batch, STATUS_COMPLETED, 3, True) + "COMMIT;\n")
    # start and complete in one batch: both events, one projection update
    merged = ("BEGIN;\n" + events_insert(batch, 2, 1, KIND_STARTED, EVENT_BYTES)
              + events_insert(batch, 3, 1, KIND_COMPLETED, EVENT_BYTES)
              + jobs_update(batch, STATUS_COMPLETED, 3, True) + "COMMIT;\n")
    write(f"{out}/lifecycle.sql", nextb + submit + start + complete)
    write(f"{out}/lifecycle_merged.sql", nextb + submit + merged)
    # the log alone: the three events, no projection
    write(f"{out}/lifecycle_events_only.sql", nextb
          + "BEGIN;\n" + events_insert(batch, 1, 0, KIND_SUBMITTED, SUBMITTED_BYTES) + "COMMIT;\n"
          + "BEGIN;\n" + events_insert(batch, 2, 1, KIND_STARTED, EVENT_BYTES)
          + events_insert(batch, 3, 1, KIND_COMPLETED, EVENT_BYTES) + "COMMIT;\n")


if __name__ == "__main__":
    main()
