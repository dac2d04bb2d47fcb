#pragma once

// The blocking PostgreSQL layer under the store: libpq behind RAII wrappers,
// the schema's migrations and one `session` per connection with the
// operations the store actor needs (batched writes, reads, recovery,
// retention).
//
// Threading: every call blocks on the network. Call it from a dedicated
// thread (a detached actor or the store's own thread), never from a CAF
// scheduler thread. A `connection` or `session` is used by one thread at a
// time; distinct sessions are independent.
//
// Errors are values, nothing here throws (allocation failure aside):
//   unavailable    the connection is missing or broke (context holds
//                  libpq's message), the server refused service (shutdown,
//                  out of resources) or a transient conflict (serialization
//                  failure, deadlock) rolled the transaction back; retry
//                  after `reconnect()` when `ok()` is false. A write whose
//                  COMMIT was sent but not answered says "outcome unknown":
//                  ask `committed()` before retrying.
//   conflict       a unique key is taken (an event sequence or a job id that
//                  exists), a projection is not older than its update, or
//                  `committed()` found only part of a batch.
//   not_found      no such job.
//   invalid_value  a constraint or value the database refused, a value that
//                  does not fit its column, text with NUL bytes, a batch
//                  that contradicts itself.
//   invalid_request  a list query outside its limits.
//   malformed, truncated, too_large, ...  a stored payload that does not
//                  decode (runtime/codec); a corrupt row is an error, never
//                  a crash.
//   bad_config     the database schema is newer than this binary or its
//                  migrations were edited.
//
// What a failure means for the caller (`failure_class_of`): connection
// class (reconnect), data class (this data fails again, other data may
// pass: `session::write_isolated` finds the offending jobs), or other
// (fail what was asked, keep the connection).
//
// SQL is parameterised everywhere: values travel as parameters (bytea in
// binary), never spliced into statement text. The only unparameterised text
// is the migrations' own constant SQL.

#include "runtime/codec.hpp"
#include "runtime/job_api.hpp"
#include "runtime/model.hpp"
#include "runtime/pg_params.hpp"

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

// libpq's handle types (PGconn, PGresult), declared here so that this
// header does not pull in libpq-fe.h.
struct pg_conn;
struct pg_result;

namespace drover::pg {

// -- connections --------------------------------------------------------------

/// Notices the server sent (RAISE NOTICE, "relation exists, skipping"...).
/// They are collected, never printed: the last `capacity` are kept.
struct notice_log {
  static constexpr size_t capacity = 64;
  bool keep = true;
  std::deque<std::string> items;
};

/// The fallback_application_name of this process's connections from now
/// on (what pg_stat_activity shows): a node sets "drover <node id>", so an
/// operator, or a fault test, can tell its sessions from another node's.
/// Cut to PostgreSQL's 63 bytes.
void set_application_name(std::string name);

/// Owns one PGconn (PQfinish on destruction) and its notice processor.
class connection {
public:
  /// Connects. `conninfo` is a libpq connection string or URI. Defaults
  /// that `conninfo` may override: connect_timeout=10, TCP keepalives
  /// (idle 30 s, interval 10 s, 3 probes), fallback_application_name
  /// (set_application_name; "drover" by default). Always: client_encoding
  /// UTF8. Fails with `unavailable`.
  static caf::expected<connection> open(const std::string& conninfo);

  connection() noexcept;
  connection(connection&&) noexcept;
  connection& operator=(connection&&) noexcept;
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;
  ~connection();

  /// True if the connection exists and libpq considers it healthy. A broken
  /// socket is noticed by the next call, not before.
  bool connection_ok() const;

  /// Runs one statement with `ps` (PQexecParams). Rows come back as text,
  /// or in binary with `binary_results`. Any failure is an error (see the
  /// header comment); `what` prefixes its context.
  caf::expected<result> exec(const std::string& sql, const params& ps = {},
                             bool binary_results = false,
                             std::string_view what = {});

  /// Runs `sql` as the prepared statement `name` of this connection: the
  /// first call prepares it (PQprepare, with the parameter types of `ps`),
  /// later calls only bind and execute (PQexecPrepared). `name` must always
  /// come with the same `sql` and parameter types. Failures as exec().
  caf::expected<result> exec_prepared(const std::string& name,
                                      const std::string& sql, const params& ps,
                                      bool binary_results = false,
                                      std::string_view what = {});

  /// Runs constant SQL that may hold several statements and no parameters
  /// (PQexec). For migrations only; never pass values in `sql`.
  caf::error exec_script(const std::string& sql, std::string_view what = {});

  /// True inside a transaction block (open or failed).
  bool in_transaction() const;

  /// The server process of this connection (pg_backend_pid()), 0 if none.
  int backend_pid() const;

  /// Returns and clears the collected notices.
  std::vector<std::string> take_notices();
  /// Drops notices instead of collecting them.
  void drop_notices();

  pg_conn* get() const noexcept {
    return conn_;
  }

private:
  explicit connection(pg_conn* conn);
  caf::error failure(pg_result* res, std::string_view what) const;
  /// Refuses `ps` if it cannot be sent; `none` if it can.
  caf::error check_params(const params& ps, std::string_view what) const;
  /// Turns a finished PGresult into a result or an error.
  caf::expected<result> finish(result res, std::string_view what);

  pg_conn* conn_ = nullptr;
  /// Statements prepared on this connection (by name).
  std::set<std::string> prepared_;
  /// Heap-allocated so its address, given to libpq, survives moves.
  std::unique_ptr<notice_log> notices_;
};

/// `conninfo` with `settings` (libpq keywords such as "dbname", "user")
/// replaced or added; everything else kept. Lets tests and tools point at
/// another database of the same server.
caf::expected<std::string>
conninfo_with(const std::string& conninfo,
              const std::vector<std::pair<std::string, std::string>>& settings);

// -- schema -------------------------------------------------------------------

/// One schema change. Versions are consecutive from 1; a released
/// migration never changes (its description is checked at start).
struct migration {
  int32_t version;
  const char* description;
  /// Constant SQL, run in the migrating transaction.
  const char* sql;
};

/// All migrations in version order (runtime/pg_schema.cpp).
const std::vector<migration>& migrations();

// -- failures -----------------------------------------------------------------

/// What an error of this layer says about the connection and the data.
enum class failure_class : uint8_t {
  /// The connection is gone or the server is going away: SQLSTATE 08xxx
  /// (connection exception), 57Pxx (admin/crash shutdown, cannot connect
  /// now), and every failure libpq raises itself (no SQLSTATE: lost
  /// socket, "outcome unknown"). Reconnect before the next call.
  connection,
  /// The data of the statement was refused and would be again: 22xxx (data
  /// exception, e.g. 22021 invalid UTF-8), 23xxx (integrity constraint; the
  /// idempotency index never raises, submits skip taken keys), 54xxx
  /// (program limit, e.g. an index row too large for a key), and the
  /// session's own checks (text holding NUL, a batch contradicting the
  /// stored state: conflict, not_found, invalid_value without SQLSTATE).
  data,
  /// Anything else: transient server conditions (40xxx serialization or
  /// deadlock, 53xxx out of resources, 55xxx lock not available, 57014
  /// statement cancelled, 58xxx, XX000), configuration (42xxx, 28xxx, 3Dxxx),
  /// a fenced write (errc::not_owner), a corrupt row. The connection is
  /// still usable; what was asked failed as a whole.
  other,
};

/// The class of an SQLSTATE (five characters; anything else: `other`).
failure_class classify_sqlstate(std::string_view sqlstate);

/// The SQLSTATE an error of this layer records (PostgreSQL refused the
/// statement), or empty.
std::string sqlstate_of(const caf::error& err);

/// The class of an error returned by this layer (from its errc and the
/// SQLSTATE it records in its context). Errors of other origins: `other`.
failure_class failure_class_of(const caf::error& err);

// -- sessions -----------------------------------------------------------------

/// One group commit: what a batch of store operations changes, written in
/// one transaction.
struct write_batch {
  /// New jobs: their record after the `submitted` event (and whatever else
  /// the batch applies, if the caller folds it in). Job ids unique.
  std::vector<job_record> submits;
  /// Every event of the batch, the submitted ones included, with sequences
  /// assigned. Each event's job appears in `submits` or `updates`.
  std::vector<job_event> events;
  /// Projections of existing jobs after the batch (or of new jobs after
  /// more events than their submit record holds). Job ids unique.
  std::vector<job_record> updates;
  /// For write_isolated only: groups of jobs that must commit or fail
  /// together (one operation touched them all). Jobs in no group are units
  /// of their own.
  std::vector<std::vector<std::string>> linked;
};

struct write_result {
  /// Submits not written because another job holds their (tenant,
  /// idempotency key): created earlier or earlier in the same batch. Their
  /// events and updates were skipped. Look the holder up with
  /// `find_by_key`.
  std::vector<std::string> duplicate_submits;
};

/// Outcome of `session::write_isolated`: every job of the batch is either
/// committed or named in `failed`.
struct isolated_write_result {
  /// As write(), for the part that committed.
  write_result committed;
  /// Jobs not written, with why: a data-class error for the jobs whose data
  /// PostgreSQL refused (their own, or that of a job linked to them), or
  /// the connection- or other-class error that stopped the isolation
  /// before their part was written. Contexts carry PostgreSQL's words: for
  /// the server log, never for clients.
  std::vector<std::pair<std::string, caf::error>> failed;
  /// Write transactions run: 1 when the batch went in whole; with one
  /// offending unit among n, at most 2 + ceil(log2(n)).
  uint32_t transactions = 0;
};

/// Ownership of the partition leases (runtime/pg_lease.hpp) that every write
/// transaction of a session checks first (runtime/pg_fence.cpp): a job
/// write locks the lease rows of the partitions it writes FOR SHARE and
/// compares owner and epoch, so a takeover of one of them waits until the
/// write has ended; retention, which deletes in every partition of the
/// fence, does so for all of them. Expiry is by PostgreSQL's clock.
struct write_fence {
  std::string instance;
  /// Ascending.
  std::vector<int32_t> partitions;
  /// Parallel to `partitions`.
  std::vector<int64_t> epochs;
  /// PostgreSQL ends a fenced session's transaction that stays idle longer
  /// than this (idle_in_transaction_session_timeout, set once per
  /// connection; 0 = the server's setting). The coordinator sets its lease
  /// TTL: a paused coordinator (SIGSTOP, a VM frozen) cannot hold the
  /// lease rows it locked FOR SHARE, and with them its successor's
  /// takeover, longer than its lease.
  int64_t idle_limit_ms = 0;

  /// The epoch `partition` is held at; -1 if it is not held.
  int64_t epoch_of(int32_t partition) const;
};

/// The partitions whose jobs `batch` writes (runtime/partition.hpp),
/// ascending, each once.
std::vector<int32_t> partitions_of(const write_batch& batch);

/// One connection to Drover's database. Not thread-safe: one thread at a
/// time. Movable.
class session {
public:
  /// Connects (see connection::open) and makes sure the session commits
  /// synchronously (a server default of synchronous_commit=off is raised to
  /// on for this session; stronger settings are kept). Does not migrate.
  static caf::expected<session> open(const std::string& conninfo,
                                     decode_limits limits = {});

  /// Applies the missing migrations in one transaction under a
  /// transaction-level advisory lock: safe to run twice and from several
  /// processes at once. A role that may not create anything can still call
  /// it once the schema is current (it then only reads
  /// drover.schema_migrations).
  caf::error migrate();

  /// Schema version in the database (0 = none).
  caf::expected<int32_t> schema_version();

  bool ok() const {
    return conn_.connection_ok();
  }

  /// Replaces the connection with a new one to the same database. On
  /// failure the session stays broken and `ok()` false.
  caf::error reconnect();

  /// Writes `batch` in one transaction (committed synchronously): inserts
  /// the submits (skipping those whose idempotency key is taken, see
  /// write_result), appends the events of the others, updates the
  /// projections (each must be newer than the stored one). All or nothing:
  /// on any error the transaction is rolled back, except when the
  /// connection broke during COMMIT: then the error is `unavailable` with
  /// "outcome unknown" in its context, and `committed()` tells.
  caf::expected<write_result> write(const write_batch& batch);

  /// write(), except that a data-class failure (failure_class::data) does
  /// not fail the whole batch: the batch is cut into units (a job with its
  /// submit or update and its events; jobs named together in
  /// `batch.linked` form one unit) and written again in halves, bisecting
  /// only the half known to hold a refused unit, until the refused units
  /// are alone; halves not known to hold one are written together at the
  /// end. One offending unit among n costs at most ceil(log2(n)) + 1
  /// transactions more than the batch, k of them at most k times that; a
  /// unit is refused only after a transaction holding it alone or with
  /// units that then committed failed, so every other unit commits. A failure
  /// of another class during the isolation stops it: units not written by
  /// then are `failed` with that error. An error is returned only when
  /// nothing was written (the first attempt failed with a connection- or
  /// other-class error, "outcome unknown" included; see write()).
  caf::expected<isolated_write_result> write_isolated(const write_batch& batch);

  /// Checks `fence` at the start of every later write transaction (write,
  /// write_isolated, purge_finished, append_control); null = no check. May
  /// be called between transactions with another fence (a coordinator's
  /// partitions change): the next transaction checks that one. A failed
  /// check is
  /// errc::not_owner (superseded: another instance or epoch holds a lease
  /// of a partition the transaction writes; see stale_partitions())
  /// or errc::unavailable with "lease expired" (still ours, not renewed in
  /// time); the transaction writes nothing.
  void set_fence(std::shared_ptr<const write_fence> fence) {
    if (fence_ != fence)
      fence_applied_ = false;
    fence_ = std::move(fence);
  }

  /// The fence of set_fence() (may be null).
  const std::shared_ptr<const write_fence>& fence() const {
    return fence_;
  }

  /// After write() failed with errc::not_owner: the partitions of its
  /// batch that this session does not own (any more), ascending. The
  /// batch's other partitions may still be written (write_isolated does).
  const std::vector<int32_t>& stale_partitions() const {
    return stale_partitions_;
  }

  /// After "outcome unknown": whether `batch` is in the database. true =
  /// every event of the batch is stored (as written), false = none is
  /// (writing it again is safe), error `conflict` = only some are or some
  /// differ. Events of submits that are absent while another job holds
  /// their idempotency key don't count (a retry reports them as
  /// duplicates); a batch without events is judged by its submits and
  /// updates.
  caf::expected<bool> committed(const write_batch& batch);

  /// The job's current record; `not_found` if unknown.
  caf::expected<job_record> load_job(const std::string& job_id);

  /// The current records of those of `job_ids` that exist, in no
  /// particular order: one query for the lot.
  caf::expected<std::vector<job_record>>
  load_jobs(const std::vector<std::string>& job_ids);

  /// The job's events in sequence order; `not_found` if it has none.
  caf::expected<std::vector<job_event>> load_events(const std::string& job_id);
  /// Its events with a sequence above `after`, in order, at most `limit`
  /// (an index range: a long job's log is not read again from its start);
  /// none is an empty list.
  caf::expected<std::vector<job_event>>
  load_events(const std::string& job_id, uint64_t after, uint32_t limit);

  /// Jobs matching `q` in job-id order (the memory store's semantics:
  /// status, dead_lettered, tenant and type filters, `after` cursor,
  /// limit within [1, 10000]).
  caf::expected<std::vector<job_record>> list(const job_query& q);

  /// Non-terminal jobs (queued, scheduled, processing, retrying) in job-id
  /// order, for recovery; paged by `after` and `limit` (0 = all).
  caf::expected<std::vector<job_record>>
  live_jobs(const std::string& after = {}, uint32_t limit = 0);

  /// The non-terminal jobs of `partition` (drover.partition_of(job_id),
  /// runtime/partition.hpp) in job-id order after `after`, at most `limit`
  /// (within [1, 100000]): one partition's recovery, read from the index
  /// jobs_live_partition (schema version 7), never a scan of every live
  /// job. A partition outside [0, max_partitions) is `invalid_request`.
  caf::expected<std::vector<job_record>>
  live_jobs_of(int32_t partition, const std::string& after, uint32_t limit);

  /// Jobs that still owe a webhook (record.webhook_pending_sequence != 0)
  /// in job-id order after `after`, at most `limit` (within [1, 10000],
  /// else `invalid_request`).
  caf::expected<std::vector<job_record>>
  pending_webhooks(const std::string& after, uint32_t limit);

  /// pending_webhooks() among the jobs of `partitions` only (any order;
  /// none = no job).
  caf::expected<std::vector<job_record>>
  pending_webhooks(const std::string& after, uint32_t limit,
                   const std::vector<int32_t>& partitions);

  /// The job holding (tenant, key); `not_found` if none.
  caf::expected<job_record> find_by_key(const std::string& tenant,
                                        const std::string& key);

  /// Deletes up to `max_jobs` finished jobs (completed, cancelled, failed
  /// outside the dead-letter queue, no webhook owed) whose completion is
  /// older than `before_ms`, with their events (drover.purge_finished).
  /// Returns how many jobs went. With a fence (set_fence), only jobs of the
  /// fence's partitions, in a transaction that checks and locks their
  /// lease rows like a job write (errc::not_owner if one is not ours, and
  /// nothing is deleted); a fence without partitions purges nothing.
  /// Without a fence, every partition's.
  caf::expected<uint64_t> purge_finished(int64_t before_ms, int32_t max_jobs);

  /// Appends one rate-limiter or breaker state change to drover.control_log
  /// (runtime/pg_control.cpp), fenced by the lease of the key's partition
  /// (partition_of_key(kind, key, P)): errc::not_owner once it was taken
  /// over. A state change (not "configured") of a key whose partition the
  /// fence does not hold is fenced by the fence's first partition instead:
  /// each coordinator sharing the partitions records its own limiters' and
  /// breakers' changes; one holding none is refused.
  caf::error append_control(int64_t at_ms, const std::string& kind,
                            const std::string& key, const std::string& state,
                            const std::string& detail);
  /// Grants permits of the concurrency key (`type`, `tenant`; tenant ""
  /// for a limit across tenants) to the first of `job_ids` (waiting jobs
  /// of partitions this session's fence writes, in the order they wait),
  /// at most `most_new` of them, while fewer than `limit` count, in one
  /// transaction serialised per key (runtime/pg_permits.cpp, schema
  /// version 9). Returns the ids that hold a permit now: those granted and
  /// those of `job_ids` that held one already (wherever in the list). Ids
  /// of partitions the fence does not write, and of jobs not waiting
  /// (running, finished, unknown), are not granted. While another
  /// transaction grants the key, nothing is granted (the caller asks
  /// again): a session paused while it holds the key never makes the
  /// others' writes wait.
  caf::expected<std::vector<std::string>>
  grant_permits(const std::string& type, const std::string& tenant,
                uint32_t limit, uint32_t most_new,
                const std::vector<std::string>& job_ids);
  /// The last state of every key of `kind` in the control log, and apart
  /// from it its last run-time setting (state "configured"): (key, state,
  /// Unix ms, detail) quadruples, flattened.
  caf::expected<std::vector<std::string>> control_last(const std::string& kind);
  /// The control log's run-time settings (state "configured") and breaker
  /// openings after sequence `after`, whoever wrote them, in sequence
  /// order, at most `limit`: (sequence, kind, key, state, Unix ms, detail)
  /// sextuples, flattened (a range of the primary key).
  caf::expected<std::vector<std::string>>
  control_followed(int64_t after, uint32_t limit = 1000);
  /// The last run-time setting of every key over the whole log, as
  /// control_followed's sextuples, one per key.
  caf::expected<std::vector<std::string>> control_settings();
  /// The control log's last sequence (0: empty), from its primary key: what
  /// a poll for new settings reads before it reads them.
  caf::expected<int64_t> control_sequence();
  /// The newest `limit` control-log entries, newest first, as a JSON array.
  caf::expected<std::string> control_json(uint32_t limit);

  /// The underlying connection (administration, tests).
  connection& conn() noexcept {
    return conn_;
  }

private:
  session(std::string conninfo, connection conn, decode_limits limits);
  caf::error prepare_connection();
  caf::error rollback_quietly();
  caf::expected<std::vector<job_record>> query_records(const std::string& sql,
                                                       const params& ps,
                                                       std::string_view what);
  caf::expected<job_record> decode_record(std::string_view job_id,
                                          std::string_view bytes) const;

  /// The fence check of the partitions `touched` (if fenced): sets
  /// stale_partitions_ and fails with not_owner when some are not ours.
  caf::error check_partitions(const std::vector<int32_t>& touched);
  /// Starts a job write transaction that writes the partitions `touched`
  /// and checks them; on failure nothing is left open.
  caf::error begin_write(const std::vector<int32_t>& touched, const char* what);
  /// Once per connection: the fence's idle limit.
  caf::error apply_fence_settings();

  std::string conninfo_;
  connection conn_;
  decode_limits limits_;
  std::shared_ptr<const write_fence> fence_;
  /// Whether this connection has the fence's session settings.
  bool fence_applied_ = false;
  std::vector<int32_t> stale_partitions_;
};

} // namespace drover::pg
