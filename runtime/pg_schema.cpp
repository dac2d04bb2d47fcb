// Drover's PostgreSQL schema as versioned migrations (see runtime/pg.hpp).
// A migration that has shipped never changes: add a new version instead.

#include "runtime/pg.hpp"

namespace drover::pg {

namespace {

// Version 1: the audit log, the current-state projection and retention.
const char* const v1_sql = R"sql(
-- Privileges ------------------------------------------------------------------
--
-- Development clusters (scripts/lib.sh) connect as a superuser that owns
-- everything. A production deployment separates the roles:
--
--   drover_owner   NOLOGIN. Owns schema drover, its tables and functions and
--                  applies migrations (an operator or a migration job does
--                  SET ROLE drover_owner and runs the node's migrate step).
--                  Nodes never connect as the owner: an owner can ALTER the
--                  tables and DISABLE the append-only trigger.
--   drover_app     What nodes log in as. Once the schema is current,
--                  session::migrate() only reads drover.schema_migrations.
--                    GRANT USAGE ON SCHEMA drover TO drover_app;
--                    GRANT SELECT ON drover.schema_migrations TO drover_app;
--                    GRANT SELECT, INSERT ON drover.events TO drover_app;
--                    GRANT SELECT, INSERT, UPDATE ON drover.jobs TO drover_app;
--                  and nothing else: no UPDATE, DELETE or TRUNCATE on the
--                  log, no DELETE on the projection. Retention goes through
--                    GRANT EXECUTE ON FUNCTION
--                      drover.purge_finished(bigint, integer) TO drover_app;
--                  (or to a separate retention role instead).
--
-- Superusers bypass privileges (not triggers, though they may disable
-- them): never run nodes as a superuser outside development.

-- The audit log ---------------------------------------------------------------

-- One row per state transition, never changed. payload is the Cap'n Proto
-- JobEvent (schemas/job_event.capnp); the other columns repeat what queries
-- and operators need without decoding it. No foreign key to drover.jobs:
-- it would cost an index probe per appended event, and the store writes an
-- event and its projection in one transaction anyway.
CREATE TABLE drover.events (
  job_id  text COLLATE "C" NOT NULL,
  seq     bigint   NOT NULL CHECK (seq >= 1),
  attempt integer  NOT NULL CHECK (attempt >= 0),
  kind    smallint NOT NULL CHECK (kind >= 0),
  at_ms   bigint   NOT NULL,
  payload bytea    NOT NULL,
  PRIMARY KEY (job_id, seq)
);

COMMENT ON TABLE drover.events IS
  'Drover audit log: one row per job state transition; append-only.';

-- Refuses every change to the log. The one exception is retention:
-- drover.purge_finished() runs with drover.retention = 'on' (its own SET
-- clause, so the setting ends with the function) and as the owner of the
-- log (SECURITY DEFINER). Anybody may set a custom setting, so the setting
-- alone opens nothing: the current user must also own the table, and in
-- production the application role is not the owner and has no DELETE
-- privilege in the first place.
CREATE FUNCTION drover.refuse_event_change() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF TG_OP = 'DELETE'
     AND current_setting('drover.retention', true) = 'on'
     AND current_user = (SELECT pg_get_userbyid(c.relowner)
                           FROM pg_class c WHERE c.oid = TG_RELID) THEN
    RETURN OLD;
  END IF;
  RAISE EXCEPTION 'drover.events is append-only: % refused', TG_OP
    USING ERRCODE = 'restrict_violation',
          HINT = 'The audit log only grows; finished jobs are removed by '
                 'drover.purge_finished().';
END
$$;

CREATE TRIGGER events_append_only
  BEFORE UPDATE OR DELETE ON drover.events
  FOR EACH ROW EXECUTE FUNCTION drover.refuse_event_change();

CREATE TRIGGER events_no_truncate
  BEFORE TRUNCATE ON drover.events
  FOR EACH STATEMENT EXECUTE FUNCTION drover.refuse_event_change();

REVOKE UPDATE, DELETE, TRUNCATE ON drover.events FROM PUBLIC;

-- The current-state projection ------------------------------------------------

-- One row per job: its record after the last applied event (seq). Written
-- in the same transaction as the events it reflects, so it never
-- contradicts the log. record is the Cap'n Proto JobRecord
-- (schemas/job_record.capnp); the other columns are what queries filter on.
-- Collation "C": job ids sort bytewise, like the ids' own order and the
-- in-memory store's. fillfactor 80 leaves room for HOT updates (progress
-- changes no indexed column).
CREATE TABLE drover.jobs (
  job_id          text COLLATE "C" PRIMARY KEY,
  tenant          text COLLATE "C" NOT NULL,
  type            text COLLATE "C" NOT NULL,
  -- NULL when the job has none.
  idempotency_key text COLLATE "C" CHECK (idempotency_key <> ''),
  -- JobStatus: 0 queued, 1 scheduled, 2 processing, 3 retrying,
  -- 4 completed, 5 failed, 6 cancelled.
  status          smallint NOT NULL CHECK (status BETWEEN 0 AND 6),
  -- Priority: 0 high, 1 normal, 2 low.
  priority        smallint NOT NULL CHECK (priority BETWEEN 0 AND 2),
  dead_lettered   boolean  NOT NULL DEFAULT false,
  created_at_ms   bigint   NOT NULL,
  -- Time of the last applied event.
  updated_at_ms   bigint   NOT NULL,
  -- Time of the terminal transition; NULL while not terminal.
  completed_at_ms bigint,
  seq             bigint   NOT NULL CHECK (seq >= 1),
  record          bytea    NOT NULL,
  CONSTRAINT jobs_dlq_holds_failed CHECK (NOT dead_lettered OR status = 5)
) WITH (fillfactor = 80);

COMMENT ON TABLE drover.jobs IS
  'Drover jobs: current state, derived from drover.events.';

-- One job per (tenant, idempotency key).
CREATE UNIQUE INDEX jobs_idempotency ON drover.jobs (tenant, idempotency_key)
  WHERE idempotency_key IS NOT NULL;
-- Status queries, paged by job id.
CREATE INDEX jobs_status ON drover.jobs (status, job_id);
-- The dead-letter queue.
CREATE INDEX jobs_dlq ON drover.jobs (job_id) WHERE dead_lettered;
-- Recovery: the non-terminal jobs (queries must repeat this predicate).
CREATE INDEX jobs_live ON drover.jobs (job_id) WHERE status IN (0, 1, 2, 3);
-- A tenant's jobs.
CREATE INDEX jobs_tenant ON drover.jobs (tenant, job_id);
-- Retention: what drover.purge_finished() may remove, oldest first.
CREATE INDEX jobs_purgeable ON drover.jobs (completed_at_ms)
  WHERE status IN (4, 5, 6) AND NOT dead_lettered;

REVOKE DELETE, TRUNCATE ON drover.jobs FROM PUBLIC;

-- Retention -------------------------------------------------------------------

-- Policy: a job leaves the database, events and projection together, once
-- it is finished for good -- completed, cancelled, or failed and NOT in the
-- dead-letter queue (a dead-lettered job can still be redriven) -- and its
-- completion is older than before_ms. Live jobs are never touched: a job
-- is a candidate only through its projection row, which must exist, be
-- terminal and be old; a row that is being written is skipped (SKIP
-- LOCKED) and one that changed is re-checked. At most max_jobs jobs per
-- call, oldest first, so callers purge in short transactions. Returns the
-- number of jobs removed.
--
-- SECURITY DEFINER: runs as the owner, the only role the append-only
-- trigger lets delete, and only while drover.retention is 'on' -- which
-- this function's SET clause does for its own duration. In production the
-- application role is not the owner; it may only EXECUTE this function.
CREATE FUNCTION drover.purge_finished(before_ms bigint, max_jobs integer)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET drover.retention = 'on'
AS $$
DECLARE
  purged bigint;
BEGIN
  IF before_ms IS NULL OR max_jobs IS NULL OR max_jobs <= 0 THEN
    RETURN 0;
  END IF;
  WITH victims AS (
    SELECT j.job_id
      FROM drover.jobs j
     WHERE j.status IN (4, 5, 6) AND NOT j.dead_lettered
       AND j.completed_at_ms < before_ms
     ORDER BY j.completed_at_ms
     LIMIT max_jobs
       FOR UPDATE SKIP LOCKED
  ), gone AS (
    DELETE FROM drover.jobs j
     USING victims v
     WHERE j.job_id = v.job_id
    RETURNING j.job_id
  ), gone_events AS (
    DELETE FROM drover.events e
     USING gone g
     WHERE e.job_id = g.job_id
  )
  SELECT count(*) INTO purged FROM gone;
  RETURN purged;
END
$$;

REVOKE ALL ON FUNCTION drover.purge_finished(bigint, integer) FROM PUBLIC;
)sql";

// Version 2: the webhooks jobs still owe (JobRecord.webhookPendingSequence
// <> 0), so a node resumes webhook deliveries after a restart without
// decoding every finished job's record. Rows written before this version
// read false: their jobs finished before Drover delivered webhooks.
const char* const v2_sql = R"sql(
ALTER TABLE drover.jobs
  ADD COLUMN webhook_pending boolean NOT NULL DEFAULT false;

COMMENT ON COLUMN drover.jobs.webhook_pending IS
  'The job is terminal, has a callback URL and its webhook has no final '
  'delivery outcome yet (record.webhookPendingSequence <> 0).';

-- Webhook resumption: the jobs that owe one (queries must repeat the
-- predicate).
CREATE INDEX jobs_webhook_pending ON drover.jobs (job_id)
  WHERE webhook_pending;
)sql";

// Version 3: transitions between live statuses (queued -> processing ->
// retrying -> processing ...) become HOT updates. Before, `status` was a
// key or predicate column of four indexes, so every transition wrote a new
// entry into every index of drover.jobs (0 HOT updates in a drain:
// docs/benchmarks.md). Now the indexes look at final_status, which is NULL
// while a job is live and its terminal status after: only the transition
// into (or out of, by a redrive) a terminal status touches the indexes.
// Retention also keeps finished jobs that still owe a webhook.
const char* const v3_sql = R"sql(
ALTER TABLE drover.jobs ADD COLUMN final_status smallint;
-- Room on each page for the new versions of its rows: a HOT update must
-- fit on the page of the old version.
ALTER TABLE drover.jobs SET (fillfactor = 50);
UPDATE drover.jobs SET final_status = status WHERE status IN (4, 5, 6);
ALTER TABLE drover.jobs ADD CONSTRAINT jobs_final_status_is_terminal_status
  CHECK (final_status IS NOT DISTINCT FROM
         CASE WHEN status IN (4, 5, 6) THEN status END);

COMMENT ON COLUMN drover.jobs.final_status IS
  'status once the job is terminal (4 completed, 5 failed, 6 cancelled); '
  'NULL while it is live. Indexed instead of status, so that live '
  'transitions are HOT updates.';

DROP INDEX drover.jobs_status;
DROP INDEX drover.jobs_live;
DROP INDEX drover.jobs_purgeable;

-- Recovery and live-status queries: the non-terminal jobs (queries must
-- repeat the predicate and filter status on the row).
CREATE INDEX jobs_live ON drover.jobs (job_id) WHERE final_status IS NULL;
-- Terminal-status queries, paged by job id.
CREATE INDEX jobs_finished ON drover.jobs (final_status, job_id)
  WHERE final_status IS NOT NULL;
-- Retention: what drover.purge_finished() may remove, oldest first.
CREATE INDEX jobs_purgeable ON drover.jobs (completed_at_ms)
  WHERE final_status IS NOT NULL AND NOT dead_lettered;

-- Version 1's policy on the new predicate, and one more rule: a finished
-- job that still owes its webhook (webhook_pending) stays, or the delivery a
-- restarted node resumes from drover.jobs would be lost.
CREATE OR REPLACE FUNCTION drover.purge_finished(before_ms bigint,
                                                 max_jobs integer)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET drover.retention = 'on'
AS $$
DECLARE
  purged bigint;
BEGIN
  IF before_ms IS NULL OR max_jobs IS NULL OR max_jobs <= 0 THEN
    RETURN 0;
  END IF;
  WITH victims AS (
    SELECT j.job_id
      FROM drover.jobs j
     WHERE j.final_status IS NOT NULL AND NOT j.dead_lettered
       AND NOT j.webhook_pending
       AND j.completed_at_ms < before_ms
     ORDER BY j.completed_at_ms
     LIMIT max_jobs
       FOR UPDATE SKIP LOCKED
  ), gone AS (
    DELETE FROM drover.jobs j
     USING victims v
     WHERE j.job_id = v.job_id
    RETURNING j.job_id
  ), gone_events AS (
    DELETE FROM drover.events e
     USING gone g
     WHERE e.job_id = g.job_id
  )
  SELECT count(*) INTO purged FROM gone;
  RETURN purged;
END
$$;

REVOKE ALL ON FUNCTION drover.purge_finished(bigint, integer) FROM PUBLIC;
)sql";

// Version 4: one coordinator per database (runtime/pg_lease.hpp,
// docs/storage.md, decision 0006). The job space has P partitions, fixed
// here when the database is created; a coordinator owns a partition through
// its lease row. Today one coordinator takes all P; the cluster (issue 13)
// spreads them over several, with the same rows and the same fencing.
const char* const v4_sql = R"sql(
-- P is chosen once: drover.partitions if the creating session sets it
-- (e.g. options='-c drover.partitions=16' in the connection string), else
-- 64. It never changes afterwards: a job's partition must stay its own.
CREATE TABLE drover.partitioning (
  singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  partitions integer NOT NULL CHECK (partitions BETWEEN 1 AND 4096)
);

COMMENT ON TABLE drover.partitioning IS
  'The number of partitions of this database (one row, never changed).';

INSERT INTO drover.partitioning (partitions)
  VALUES (coalesce(nullif(current_setting('drover.partitions', true), '')
                     ::integer, 64));

-- One lease per partition. owner is the owning process's instance id (node
-- id, host, pid and a random part: two processes never share one); NULL =
-- released. epoch grows by one at every change of owner, and every write
-- transaction of the owner checks (owner, epoch) with its rows locked FOR
-- SHARE, so a successor's takeover waits for the writes in flight and no
-- write of a deposed owner lands after it. expires_at is PostgreSQL's
-- clock (now()); an unexpired lease of another instance is never taken.
-- Renewals rewrite every row each interval: fillfactor leaves room for
-- HOT updates.
CREATE TABLE drover.partition_leases (
  partition   integer PRIMARY KEY CHECK (partition >= 0),
  owner       text,
  owner_node  text,
  owner_host  text,
  owner_pid   bigint,
  epoch       bigint NOT NULL DEFAULT 0 CHECK (epoch >= 0),
  expires_at  timestamptz NOT NULL DEFAULT '-infinity',
  acquired_at timestamptz
) WITH (fillfactor = 50);

COMMENT ON TABLE drover.partition_leases IS
  'Who coordinates each partition, until when (server clock), at which '
  'epoch. Writes of the owner are fenced by (owner, epoch).';

INSERT INTO drover.partition_leases (partition)
  SELECT generate_series(0, partitions - 1) FROM drover.partitioning;

-- Production privileges (see version 1): nodes read the partition count
-- and take, renew, check and release leases.
--   GRANT SELECT ON drover.partitioning TO drover_app;
--   GRANT SELECT, UPDATE ON drover.partition_leases TO drover_app;
)sql";

// Version 5: the coordinators of this database announce themselves
// (docs/cluster.md, Membership): the active one with every lease renewal,
// a standby while it stands by. Rows of coordinators not heard from for an
// hour are pruned by the renewals.
const char* const v5_sql = R"sql(
CREATE TABLE drover.coordinators (
  instance        text PRIMARY KEY,
  node_id         text NOT NULL,
  host            text NOT NULL,
  pid             bigint NOT NULL,
  cluster_address text NOT NULL DEFAULT '',
  started_at      timestamptz NOT NULL DEFAULT now(),
  heartbeat_at    timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE drover.coordinators IS
  'Coordinators of this database and their last heartbeat (server clock): '
  'the lease holder while it renews, standbys while they stand by. Which '
  'one is active follows from drover.partition_leases.';

-- Production privileges (see version 1):
--   GRANT SELECT, INSERT, UPDATE, DELETE ON drover.coordinators TO drover_app;
)sql";

// Version 6: the control log of rate limiters and circuit breakers
// (runtime/flow_control.hpp, docs/jobs.md): every state change, never in a
// job's history, never changed. A change is fenced like a job write by a
// partition's lease (FOR SHARE, epoch compared) and carries the epoch: a
// setting by the key's partition's, a state change by that one if the
// writer holds it, else by one it holds (pg::session::append_control).
const char* const v6_sql = R"sql(
CREATE TABLE drover.control_log (
  sequence   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  at         timestamptz NOT NULL,
  kind       text NOT NULL CHECK (kind IN ('rate_limit', 'breaker')),
  key        text NOT NULL CHECK (length(key) BETWEEN 1 AND 1024),
  state      text NOT NULL CHECK (length(state) BETWEEN 1 AND 64),
  detail     text NOT NULL DEFAULT '' CHECK (length(detail) <= 4096),
  partition  integer NOT NULL CHECK (partition >= 0),
  epoch      bigint NOT NULL CHECK (epoch >= 0),
  owner_node text NOT NULL DEFAULT ''
);

COMMENT ON TABLE drover.control_log IS
  'State changes of rate limiters and circuit breakers, append-only, each '
  'with the epoch of the partition lease it was written under.';

CREATE FUNCTION drover.refuse_control_change() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  RAISE EXCEPTION 'drover.control_log is append-only: % refused', TG_OP
    USING ERRCODE = 'restrict_violation';
END
$$;

CREATE TRIGGER control_log_append_only
  BEFORE UPDATE OR DELETE ON drover.control_log
  FOR EACH ROW EXECUTE FUNCTION drover.refuse_control_change();

CREATE TRIGGER control_log_no_truncate
  BEFORE TRUNCATE ON drover.control_log
  FOR EACH STATEMENT EXECUTE FUNCTION drover.refuse_control_change();

REVOKE UPDATE, DELETE, TRUNCATE ON drover.control_log FROM PUBLIC;

-- Production privileges (see version 1):
--   GRANT SELECT, INSERT ON drover.control_log TO drover_app;
)sql";

// Version 7: coordinators that each own a subset of the partitions
// (issue 13). A job's partition is part of its id (runtime/partition.hpp);
// drover.partition_of computes it in SQL exactly as partition_of_id does in
// C++, so that one partition's live jobs are read from an index (recovery
// of a partition a coordinator takes over) and retention deletes only in
// the partitions its coordinator owns.
const char* const v7_sql = R"sql(
-- The decimal after the job id's last '-' when it is 1 to 4 digits below
-- 4096, else 0 (ids from before partitioning): runtime/partition.cpp's
-- partition_of_id, which is part of the data format. A digit run directly
-- after the last '-' up to the end is what the pattern finds (a longer run
-- or anything else after the '-' does not match: 0). One expression, no
-- subquery, so that PostgreSQL inlines it into queries and into the index
-- below, where it is computed once per row version.
CREATE FUNCTION drover.partition_of(job_id text) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
  SELECT CASE
           WHEN pg_catalog.substring(job_id, '-([0-9]{1,4})$')::integer < 4096
           THEN pg_catalog.substring(job_id, '-([0-9]{1,4})$')::integer
           ELSE 0
         END
$$;

COMMENT ON FUNCTION drover.partition_of(text) IS
  'The partition of a job id (runtime/partition.cpp, partition_of_id).';

-- Recovery of one partition: its live jobs in job-id order (queries must
-- repeat the expression and jobs_live's predicate). job_id never changes
-- and final_status only at the terminal transition, so live transitions
-- stay HOT updates (version 3).
CREATE INDEX jobs_live_partition
  ON drover.jobs (drover.partition_of(job_id), job_id)
  WHERE final_status IS NULL;

-- Version 3's retention policy within the partitions a coordinator owns:
-- with several coordinators, each purges only its own partitions, fenced
-- by their leases like its job writes.
CREATE FUNCTION drover.purge_finished(before_ms bigint, max_jobs integer,
                                      partitions integer[])
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET drover.retention = 'on'
AS $$
DECLARE
  purged bigint;
BEGIN
  IF before_ms IS NULL OR max_jobs IS NULL OR max_jobs <= 0
     OR partitions IS NULL OR cardinality(partitions) = 0 THEN
    RETURN 0;
  END IF;
  WITH victims AS (
    SELECT j.job_id
      FROM drover.jobs j
     WHERE j.final_status IS NOT NULL AND NOT j.dead_lettered
       AND NOT j.webhook_pending
       AND j.completed_at_ms < before_ms
       AND drover.partition_of(j.job_id) = ANY (partitions)
     ORDER BY j.completed_at_ms
     LIMIT max_jobs
       FOR UPDATE SKIP LOCKED
  ), gone AS (
    DELETE FROM drover.jobs j
     USING victims v
     WHERE j.job_id = v.job_id
    RETURNING j.job_id
  ), gone_events AS (
    DELETE FROM drover.events e
     USING gone g
     WHERE e.job_id = g.job_id
  )
  SELECT count(*) INTO purged FROM gone;
  RETURN purged;
END
$$;

REVOKE ALL ON FUNCTION drover.purge_finished(bigint, integer, integer[])
  FROM PUBLIC;

-- Production privileges (see version 1): a node with a fence purges
-- through the new function.
--   GRANT EXECUTE ON FUNCTION
--     drover.purge_finished(bigint, integer, integer[]) TO drover_app;
)sql";

// Version 8: coordinators that share the partitions (--share-partitions,
// runtime/pg_share.hpp) say so: only they are counted when the shares are
// computed (a --standby coordinator announces itself too and takes none).
const char* const v8_sql = R"sql(
ALTER TABLE drover.coordinators
  ADD COLUMN shares boolean NOT NULL DEFAULT false;

COMMENT ON COLUMN drover.coordinators.shares IS
  'true for a coordinator that shares the partitions with the others '
  '(--share-partitions): the shares are computed over these.';
)sql";

// Version 9: a job type's concurrency limit across coordinators that share
// the partitions (--concurrency-limit TYPE=N, runtime/pg_permits.cpp): one
// row per job holding a permit of its type's key. A row counts while its
// job runs (status processing), or, granted but not started yet, while no
// attempt of the job started after seq (the job's at the grant) and the
// partition's lease is still at the epoch it was granted under (a dead or
// deposed owner's grants lapse with its lease). Rows that no longer count are
// deleted by the next grant of their key.
const char* const v9_sql = R"sql(
CREATE TABLE drover.concurrency_permits (
  type       text COLLATE "C" NOT NULL,
  -- '' for a limit across tenants; the tenant for a limit per tenant.
  tenant     text COLLATE "C" NOT NULL,
  job_id     text COLLATE "C" NOT NULL,
  seq        bigint  NOT NULL,
  partition  integer NOT NULL CHECK (partition >= 0),
  epoch      bigint  NOT NULL CHECK (epoch >= 0),
  granted_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (type, tenant, job_id)
);

COMMENT ON TABLE drover.concurrency_permits IS
  'Permits of job types'' concurrency limits held by jobs, across the '
  'coordinators sharing the partitions (runtime/pg_permits.cpp).';

-- The first job each coordinator has waiting for a key it was refused a
-- permit of, refreshed at every ask: a grant leaves room for the waiters
-- of other coordinators whose job came first (job ids sort by submission),
-- so one coordinator's stream of jobs does not starve another's. A row not
-- refreshed for 5 s no longer counts.
CREATE TABLE drover.concurrency_waiters (
  type     text COLLATE "C" NOT NULL,
  tenant   text COLLATE "C" NOT NULL,
  instance text COLLATE "C" NOT NULL,
  job_id   text COLLATE "C" NOT NULL,
  seen_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (type, tenant, instance)
);

COMMENT ON TABLE drover.concurrency_waiters IS
  'The first waiting job of each coordinator refused a permit of a job '
  'type''s concurrency limit (runtime/pg_permits.cpp).';

-- Production privileges (see version 1):
--   GRANT SELECT, INSERT, DELETE ON drover.concurrency_permits TO drover_app;
--   GRANT SELECT, INSERT, UPDATE, DELETE ON drover.concurrency_waiters
--     TO drover_app;
)sql";

// Version 10 (with process_space: where its pid means something, so that a
// coordinator restarted on the same host sees at once that its predecessor
// is gone; and lease_ttl_ms: each member is judged by its own lease TTL, so
// coordinators with different TTLs do not see each other come and go): a
// sharing coordinator announces the key its share is computed
// over (its node id, runtime/pg_share.hpp share_keys), so that one restarted
// under its node id takes its predecessor's place. NULL: a binary before
// this version (it computes the shares over instance ids; while one is a
// member, every coordinator does).
const char* const v10_sql = R"sql(
ALTER TABLE drover.coordinators ADD COLUMN share_key text;
ALTER TABLE drover.coordinators ADD COLUMN process_space text;
ALTER TABLE drover.coordinators ADD COLUMN lease_ttl_ms bigint;

COMMENT ON COLUMN drover.coordinators.share_key IS
  'What the shares are computed over (the node id) for a sharing '
  'coordinator of schema version 10 or later; NULL for older ones.';
COMMENT ON COLUMN drover.coordinators.process_space IS
  'Where its pid means something (boot id and pid namespace): a process '
  'of the same space can tell whether it is gone.';
COMMENT ON COLUMN drover.coordinators.lease_ttl_ms IS
  'A sharing coordinator''s lease TTL: it counts as a member that long '
  'after each heartbeat (NULL: the reader''s own TTL).';
)sql";

} // namespace

const std::vector<migration>& migrations() {
  static const std::vector<migration> all{
      {1, "audit log, job projection, retention", v1_sql},
      {2, "webhooks owed by finished jobs", v2_sql},
      {3,
       "live transitions as HOT updates (final_status); retention keeps "
       "jobs that owe a webhook",
       v3_sql},
      {4, "partition leases: one coordinator per database", v4_sql},
      {5, "coordinators announce themselves", v5_sql},
      {6, "control log of rate limiters and circuit breakers", v6_sql},
      {7,
       "partition_of(job_id), live jobs by partition, retention per "
       "partition",
       v7_sql},
      {8, "coordinators that share the partitions", v8_sql},
      {9, "concurrency permits of job types across coordinators", v9_sql},
      {10, "sharing coordinators keyed by node id", v10_sql},
  };
  return all;
}

} // namespace drover::pg
