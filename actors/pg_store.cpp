#include "actors/pg_store.hpp"

#include "actors/queue.hpp"
#include "runtime/backoff.hpp"
#include "runtime/errors.hpp"
#include "runtime/job_state.hpp"
#include "runtime/log.hpp"
#include "runtime/log_caf.hpp"
#include "runtime/pg.hpp"
#include "runtime/pg_lease.hpp"

#include <caf/actor_system.hpp>
#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <algorithm>
#include <deque>
#include <map>
#include <memory>
#include <set>
#include <unordered_map>

// Local-only messages between the store and its I/O threads.
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(drover::pg::write_batch)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::shared_ptr<const drover::pg::write_fence>)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(drover::pg::write_result)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(drover::pg::isolated_write_result)

namespace drover {

namespace {

using write_atom = caf::atom_constant<caf::atom("pg_write")>;
using committed_atom = caf::atom_constant<caf::atom("pg_commtd")>;
using key_atom = caf::atom_constant<caf::atom("pg_key")>;
using reconnect_atom = caf::atom_constant<caf::atom("pg_reconn")>;
using retention_atom = caf::atom_constant<caf::atom("pg_retain")>;
using reopen_atom = caf::atom_constant<caf::atom("pg_reopen")>;

using fence_ptr = std::shared_ptr<const pg::write_fence>;

/// What the store asks its I/O actors (writer and reader alike; only the
/// writer is sent writes). Local only: the batches and fences are shared
/// pointers and unsafe message types, never serialized.
using pg_io_actor = caf::typed_actor<
    caf::replies_to<write_atom, pg::write_batch,
                    fence_ptr>::with<pg::isolated_write_result>,
    caf::replies_to<committed_atom, pg::write_batch>::with<bool>,
    caf::replies_to<get_atom, std::string>::with<job_record>,
    caf::replies_to<get_atom,
                    std::vector<std::string>>::with<std::vector<job_record>>,
    caf::replies_to<events_atom, std::string>::with<std::vector<job_event>>,
    caf::replies_to<list_atom, job_query>::with<std::vector<job_record>>,
    caf::replies_to<recover_atom, int32_t, std::string,
                    uint32_t>::with<std::vector<job_record>>,
    caf::replies_to<webhooks_atom, std::string,
                    uint32_t>::with<std::vector<job_record>>,
    caf::replies_to<webhooks_atom, std::string, uint32_t,
                    std::vector<int32_t>>::with<std::vector<job_record>>,
    caf::replies_to<nodes_atom, int64_t>::with<std::string>,
    caf::replies_to<control_atom, fence_ptr, int64_t, std::string, std::string,
                    std::string, std::string>::with<ok_atom>,
    caf::replies_to<control_atom, std::string>::with<std::vector<std::string>>,
    caf::replies_to<control_atom, uint32_t>::with<std::string>,
    caf::replies_to<key_atom, std::string, std::string>::with<job_record>,
    caf::replies_to<retention_atom, fence_ptr, int64_t,
                    int32_t>::with<uint64_t>,
    caf::replies_to<ping_atom>::with<ok_atom>>;

/// The store's own interface: the store protocol plus the messages it
/// sends itself (reconnect timer, reopening the partitions gate, retention
/// timer). Only spawn_pg_store sees it; everyone else holds a store_actor.
using pg_store_impl_actor = store_actor::extend<caf::reacts_to<reconnect_atom>,
                                                caf::reacts_to<reopen_atom>,
                                                caf::reacts_to<retention_atom>>;

// -- I/O actor: one connection, blocking calls, its own thread ----------------

struct io_state {
  std::string conninfo;
  bool migrate = false;
  /// Checked by the write transactions of this connection (writer only):
  /// the fence the last write came with. Every write names the fence it
  /// was accepted under, so that a partitions change takes effect exactly
  /// between two writes of the store's pipeline.
  fence_ptr fence;
  std::unique_ptr<pg::session> db;

  static inline const char* name = "drover.pg_io";
};

using io_ptr = pg_io_actor::stateful_pointer<io_state>;

/// The session, connected (and migrated, for the writer) — or the error.
caf::expected<pg::session*> connected(io_ptr self) {
  auto& st = self->state;
  if (st.db && st.db->ok())
    return st.db.get();
  if (st.db) {
    if (auto err = st.db->reconnect())
      return err;
  } else {
    auto s = pg::session::open(st.conninfo);
    if (!s)
      return std::move(s.error());
    st.db = std::make_unique<pg::session>(std::move(*s));
    st.db->set_fence(st.fence);
  }
  if (st.migrate)
    if (auto err = st.db->migrate())
      return err;
  return st.db.get();
}

/// The fence the next write transaction checks.
void use_fence(io_ptr self, const fence_ptr& fence) {
  auto& st = self->state;
  st.fence = fence;
  if (st.db)
    st.db->set_fence(fence);
}

template <class F>
auto with_db(io_ptr self, F f) -> decltype(f(std::declval<pg::session&>())) {
  auto db = connected(self);
  if (!db)
    return std::move(db.error());
  return f(**db);
}

/// For reads, which are safe to repeat: a connection found broken (e.g.
/// the server restarted since the last call) is reopened and the read
/// tried once more.
template <class F>
auto read_db(io_ptr self, F f) -> decltype(f(std::declval<pg::session&>())) {
  auto r = with_db(self, f);
  if (!r && is(r.error(), errc::unavailable) && self->state.db
      && !self->state.db->ok())
    return with_db(self, f);
  return r;
}

pg_io_actor::behavior_type io_impl(io_ptr self, std::string conninfo,
                                   bool migrate) {
  self->state.conninfo = std::move(conninfo);
  self->state.migrate = migrate;
  // Only the store talks to an I/O actor, and only by request: an error
  // message outside a request is unexpected, worth a line, never fatal.
  self->set_error_handler([](caf::error& err) {
    log::warn("store", "I/O actor got an unexpected error message",
              {{"error", describe(err)}});
  });
  return {
      [self](write_atom, const pg::write_batch& b,
             const fence_ptr& fence) -> caf::result<pg::isolated_write_result> {
        use_fence(self, fence);
        auto r = with_db(self,
                         [&](pg::session& db) { return db.write_isolated(b); });
        if (!r)
          return std::move(r.error());
        return std::move(*r);
      },
      [self](committed_atom, const pg::write_batch& b) -> caf::result<bool> {
        auto r
            = with_db(self, [&](pg::session& db) { return db.committed(b); });
        if (!r)
          return std::move(r.error());
        return *r;
      },
      [self](get_atom, const std::string& id) -> caf::result<job_record> {
        auto r
            = read_db(self, [&](pg::session& db) { return db.load_job(id); });
        if (!r)
          return std::move(r.error());
        return std::move(*r);
      },
      [self](get_atom, const std::vector<std::string>& ids)
          -> caf::result<std::vector<job_record>> {
        auto r
            = read_db(self, [&](pg::session& db) { return db.load_jobs(ids); });
        if (!r)
          return std::move(r.error());
        return std::move(*r);
      },
      [self](events_atom,
             const std::string& id) -> caf::result<std::vector<job_event>> {
        auto r = read_db(self,
                         [&](pg::session& db) { return db.load_events(id); });
        if (!r)
          return std::move(r.error());
        return std::move(*r);
      },
      [self](list_atom,
             const job_query& q) -> caf::result<std::vector<job_record>> {
        auto r = read_db(self, [&](pg::session& db) { return db.list(q); });
        if (!r)
          return std::move(r.error());
        return std::move(*r);
      },
      [self](recover_atom, int32_t partition, const std::string& after,
             uint32_t limit) -> caf::result<std::vector<job_record>> {
        auto r = read_db(self, [&](pg::session& db) {
          return db.live_jobs_of(partition, after, limit);
        });
        if (!r)
          return std::move(r.error());
        return std::move(*r);
      },
      [self](webhooks_atom, const std::string& after,
             uint32_t limit) -> caf::result<std::vector<job_record>> {
        auto r = read_db(self, [&](pg::session& db) {
          return db.pending_webhooks(after, limit);
        });
        if (!r)
          return std::move(r.error());
        return std::move(*r);
      },
      [self](webhooks_atom, const std::string& after, uint32_t limit,
             const std::vector<int32_t>& partitions)
          -> caf::result<std::vector<job_record>> {
        auto r = read_db(self, [&](pg::session& db) {
          return db.pending_webhooks(after, limit, partitions);
        });
        if (!r)
          return std::move(r.error());
        return std::move(*r);
      },
      [self](nodes_atom, int64_t stale_ms) -> caf::result<std::string> {
        auto r = read_db(self, [&](pg::session& db) {
          return pg::members_json(db, std::chrono::milliseconds{stale_ms});
        });
        if (!r)
          return std::move(r.error());
        return std::move(*r);
      },
      [self](control_atom, const fence_ptr& fence, int64_t at_ms,
             const std::string& kind, const std::string& key,
             const std::string& state,
             const std::string& detail) -> caf::result<ok_atom> {
        use_fence(self, fence);
        auto r = with_db(self, [&](pg::session& db) -> caf::expected<ok_atom> {
          if (auto err = db.append_control(at_ms, kind, key, state, detail))
            return err;
          return ok_atom::value;
        });
        if (!r)
          return std::move(r.error());
        return ok_atom::value;
      },
      [self](control_atom,
             const std::string& kind) -> caf::result<std::vector<std::string>> {
        auto r = read_db(
            self, [&](pg::session& db) { return db.control_last(kind); });
        if (!r)
          return std::move(r.error());
        return std::move(*r);
      },
      [self](control_atom, uint32_t limit) -> caf::result<std::string> {
        auto r = read_db(
            self, [&](pg::session& db) { return db.control_json(limit); });
        if (!r)
          return std::move(r.error());
        return std::move(*r);
      },
      [self](key_atom, const std::string& tenant,
             const std::string& key) -> caf::result<job_record> {
        auto r = read_db(
            self, [&](pg::session& db) { return db.find_by_key(tenant, key); });
        if (!r)
          return std::move(r.error());
        return std::move(*r);
      },
      [self](retention_atom, const fence_ptr& fence, int64_t before_ms,
             int32_t max_jobs) -> caf::result<uint64_t> {
        use_fence(self, fence);
        auto r = with_db(self, [&](pg::session& db) {
          return db.purge_finished(before_ms, max_jobs);
        });
        if (!r)
          return std::move(r.error());
        return *r;
      },
      [self](ping_atom) -> caf::result<ok_atom> {
        auto db = connected(self);
        if (!db)
          return std::move(db.error());
        // A connection can look healthy and be dead (the server restarted
        // while it sat idle); the store trusts a successful ping to accept
        // writes again, so only a round trip counts.
        auto r = (*db)->conn().exec("SELECT 1", {}, false, "pinging");
        if (!r)
          return std::move(r.error());
        return ok_atom::value;
      },
  };
}

// -- the store actor ----------------------------------------------------------

/// Called once the batch holding an operation committed (or failed).
using completion_fn
    = std::function<void(const caf::error&, const pg::write_result*)>;

struct batch {
  /// Jobs created in this batch, and jobs that got events (in order).
  std::vector<std::string> submitted;
  std::set<std::string> touched;
  std::vector<job_event> events;
  std::vector<completion_fn> completions;
  /// The jobs each operation (completion) depends on, in the same order:
  /// an operation fails if a job of its own is refused.
  std::vector<std::vector<std::string>> op_jobs;
  uint64_t generation = 0;
  /// The fence its operations were accepted under, which its transaction
  /// checks, and that fence's number (pg_store_state::fence_seq).
  fence_ptr fence;
  uint64_t fence_seq = 0;
  /// What the batch writes, taken when it was sealed (see
  /// pg_store_state::sealed); null = take it when it leaves.
  std::shared_ptr<pg::write_batch> frozen;

  bool empty() const {
    return completions.empty();
  }
};

using load_waiter = std::function<void(const job_record*, const caf::error&)>;

/// Most jobs one read loads.
constexpr size_t max_load_batch = 1000;

/// A partitions change (partitions_atom) whose answer waits until nothing
/// accepted under an earlier fence is still being written.
struct fence_change {
  uint64_t fence_seq;
  caf::typed_response_promise<ok_atom> rp;
};

struct pg_store_state {
  pg_store_config cfg;
  pg_io_actor writer;
  pg_io_actor reader;
  /// Current record per job as of the accepted (possibly uncommitted)
  /// events: validation works on it.
  std::unordered_map<std::string, job_record> cache;
  /// Jobs with accepted events not committed yet -> last batch touching
  /// them. A read of such a job goes to PostgreSQL (committed state).
  std::unordered_map<std::string, uint64_t> dirty;
  /// (tenant, idempotency key) -> job id, for jobs in the cache.
  std::map<std::pair<std::string, std::string>, std::string> keys;
  /// Jobs being loaded from PostgreSQL, with the operations waiting for
  /// them. A waiter gets the committed record, or null when the job does
  /// not exist, or the error that stopped the read.
  std::unordered_map<std::string, std::vector<load_waiter>> loading;
  /// Jobs to load once the read in flight is back: loads are batched like
  /// commits (one `= ANY($1)` query for all of them), so a deep or
  /// recovered queue, whose jobs are no longer cached, is not read one row
  /// per round trip.
  std::vector<std::string> load_queue;
  bool load_inflight = false;
  batch pending;
  /// Batches that reached max_batch operations while another transaction
  /// was in flight, oldest first. They leave one by one before `pending`,
  /// which keeps every transaction within max_batch operations.
  std::deque<batch> sealed;
  std::unique_ptr<batch> inflight;
  uint64_t next_generation = 1;
  bool available = true;
  /// While true, enqueue_op neither seals nor flushes: a batch submit
  /// puts all its items into one transaction.
  bool hold = false;
  /// Failed reconnect attempts since PostgreSQL was lost (the backoff).
  uint32_t reconnect_failures = 0;
  bool reconnecting = false;
  /// A write found the partition leases taken over (see deposed()).
  bool deposed = false;
  /// The partitions this store writes, with their epochs (cfg.fence at
  /// spawn, then each partitions_atom); null = no fence, every partition.
  /// New operations are accepted under it: a job of a partition it does
  /// not hold is refused with not_owner, and never cached.
  fence_ptr fence;
  /// Numbers the fences: a batch or direct write carries the number of the
  /// fence it was accepted under.
  uint64_t fence_seq = 0;
  /// Partitions changes applied, oldest first, each answered once no batch
  /// and no direct write of an earlier fence is left (settle_changes).
  std::deque<fence_change> changes;
  /// Direct writes (control log, retention) in flight, by fence number.
  std::multiset<uint64_t> direct_writes;
  /// Appends received but not accepted yet (their jobs are being read).
  /// A partitions change waits for them, so that every write received
  /// before it is written under the fence it was received under.
  size_t unaccepted = 0;
  /// While a change waits for `unaccepted` to drain (the gate is closed):
  /// that change, and the writes and changes received after it, in order.
  bool gate_closed = false;
  std::function<void()> waiting_change;
  std::deque<std::function<void()>> held;

  static inline const char* name = "drover.pg_store";
};

using self_ptr = pg_store_impl_actor::stateful_pointer<pg_store_state>;

caf::error unavailable(const std::string& why) {
  return make_error(errc::unavailable, "the job store is unavailable: " + why);
}

void log(const std::string& what, log::level lv = log::level::warn) {
  log::write(lv, "store", {}, what);
}

/// The wait before the next reconnect attempt (runtime/backoff.hpp: from
/// reconnect_min, doubling up to reconnect_max, equal jitter, never below
/// reconnect_min).
std::chrono::milliseconds reconnect_wait(self_ptr self) {
  auto& st = self->state;
  backoff_schedule schedule{st.cfg.reconnect_min, st.cfg.reconnect_max, 2.0,
                            0.5, st.cfg.reconnect_min};
  return schedule.delay(st.reconnect_failures++, jitter_draw());
}

void flush(self_ptr self);
void start_reconnect(self_ptr self);

/// What a client is told when PostgreSQL refused an operation's data: which
/// kind of value, never PostgreSQL's words (they quote the bytes, and a
/// batch's error may quote another request's).
caf::error refused_data(const caf::error& detail) {
  auto state = pg::sqlstate_of(detail);
  if (state == "23505"
      || (state.empty()
          && (is(detail, errc::conflict) || is(detail, errc::not_found))))
    return make_error(errc::conflict,
                      "the job was changed by another writer meanwhile; "
                      "read it again before retrying");
  std::string why;
  if (state == "22021")
    why = "a text field (job id, tenant, type or idempotency key) is not "
          "valid UTF-8";
  else if (state.empty()
           && describe(detail).find("NUL byte") != std::string::npos)
    why = "a text field (job id, tenant, type or idempotency key) holds a "
          "NUL byte";
  else if (state.substr(0, 2) == "54")
    why = "a value is too large for the job store (e.g. a very long "
          "idempotency key)";
  else
    why = "the job store refused a value of this request";
  return make_error(errc::invalid_value, why);
}

/// The error a client gets for a failed store operation: Drover's own
/// refusals with their own text; anything PostgreSQL said is replaced by a
/// message without SQL, SQLSTATE or data (the caller logs the detail).
caf::error for_client(const caf::error& err) {
  switch (pg::failure_class_of(err)) {
    case pg::failure_class::connection:
      return unavailable("PostgreSQL is unreachable; retry later");
    case pg::failure_class::data:
      return refused_data(err);
    case pg::failure_class::other:
      break;
  }
  if (is(err, errc::not_owner))
    return unavailable("this node no longer coordinates the database's jobs");
  if (describe(err).find("partition lease expired") != std::string::npos)
    return unavailable("this node's coordinator lease awaits renewal; retry "
                       "later");
  return unavailable("PostgreSQL could not complete the write; retry later");
}

/// A read's error for its client: not_found and limits as they are,
/// everything else as for_client (logged).
caf::error read_error_for_client(const caf::error& err) {
  if (pg::sqlstate_of(err).empty()
      && (is(err, errc::not_found) || is(err, errc::invalid_request)))
    return err;
  log("a read failed: " + describe(err));
  return for_client(err);
}

/// The node's coordinator lease is gone: says so once, then leaves what to
/// do to the node (on_deposed: it exits). Writes stay refused by the fence.
void deposed(self_ptr self, const caf::error& err) {
  auto& st = self->state;
  if (st.deposed)
    return;
  st.deposed = true;
  log("deposed: " + describe(err));
  if (st.cfg.on_deposed)
    st.cfg.on_deposed(describe(err));
}

/// Whether the store writes `partition` (under its current fence).
bool owns(const pg_store_state& st, int32_t partition) {
  return !st.fence || st.fence->epoch_of(partition) >= 0;
}

bool owns_job(const pg_store_state& st, const std::string& job_id) {
  return owns(st, partition_of_id(job_id));
}

/// What a write of a partition the store does not hold is told.
caf::error not_owned(int32_t partition) {
  return make_error(errc::not_owner,
                    "partition " + std::to_string(partition)
                        + " is not coordinated by this node (any more)");
}

/// A fresh pending batch, under the current fence.
void open_pending(pg_store_state& st) {
  st.pending = batch{};
  st.pending.generation = st.next_generation++;
  st.pending.fence = st.fence;
  st.pending.fence_seq = st.fence_seq;
}

/// Whether `err` (not_owner, from a write of `job_id` checked under
/// `written_under`) means that this node was deposed: the job's partition
/// is still ours at the epoch the write was checked with, so another
/// coordinator took it over. A partition the store has given up since
/// (partitions_atom) is no deposition.
bool deposes(const pg_store_state& st, const fence_ptr& written_under,
             const std::string& job_id) {
  if (!written_under || !st.fence)
    return true;
  auto p = partition_of_id(job_id);
  auto epoch = written_under->epoch_of(p);
  return epoch >= 0 && st.fence->epoch_of(p) == epoch;
}

/// Answers the partitions changes that nothing written under an earlier
/// fence holds back any more: no batch of it waits or is in flight (its
/// commit, its failure and an outcome check after a lost connection are
/// all part of its flight), and no direct write of it is in flight.
void settle_changes(self_ptr self) {
  auto& st = self->state;
  while (!st.changes.empty()) {
    auto seq = st.changes.front().fence_seq;
    bool earlier
        = (st.inflight && st.inflight->fence_seq < seq)
          || (!st.sealed.empty() && st.sealed.front().fence_seq < seq)
          || (!st.pending.empty() && st.pending.fence_seq < seq)
          || (!st.direct_writes.empty() && *st.direct_writes.begin() < seq);
    if (earlier)
      return;
    auto rp = std::move(st.changes.front().rp);
    st.changes.pop_front();
    rp.deliver(ok_atom::value);
  }
}

/// Keeps the cache within max_cached_jobs: once it is 10 % above, evicts
/// down to 90 % (so the scans are amortized over many commits), finished
/// jobs first, then any job without uncommitted events. An evicted job is
/// read from PostgreSQL again when it is next needed (with_loaded, get):
/// the cache is an accelerator, never the truth, so a deep queue costs
/// memory only up to the bound.
void evict_if_needed(self_ptr self) {
  auto& st = self->state;
  auto max = st.cfg.max_cached_jobs;
  if (st.cache.size() <= max + max / 10)
    return;
  auto low = max - max / 10;
  for (int pass = 0; pass < 2 && st.cache.size() > low; ++pass) {
    for (auto i = st.cache.begin();
         i != st.cache.end() && st.cache.size() > low;) {
      bool evictable = st.dirty.count(i->first) == 0
                       && st.loading.count(i->first) == 0
                       && (pass == 1 || is_terminal(i->second.status));
      if (evictable) {
        const auto& spec = i->second.spec;
        if (!spec.idempotency_key.empty())
          st.keys.erase({spec.tenant, spec.idempotency_key});
        i = st.cache.erase(i);
      } else {
        ++i;
      }
    }
  }
}

/// Forgets what the store accepted for job `id` but could not commit; the
/// job is read from PostgreSQL again when next needed.
void forget(self_ptr self, const std::string& id) {
  auto& st = self->state;
  auto i = st.cache.find(id);
  if (i != st.cache.end()) {
    const auto& spec = i->second.spec;
    if (!spec.idempotency_key.empty())
      st.keys.erase({spec.tenant, spec.idempotency_key});
    st.cache.erase(i);
  }
  st.dirty.erase(id);
}

/// Forgets everything the store accepted but could not commit.
void discard(self_ptr self, const batch& b) {
  for (const auto& id : b.submitted)
    forget(self, id);
  for (const auto& id : b.touched)
    forget(self, id);
}

/// After `b` committed: its jobs are clean unless a later batch wrote them
/// again (their dirty generation is then that batch's).
void clear_dirty(pg_store_state& st, const batch& b) {
  auto clean = [&](const std::string& id) {
    auto d = st.dirty.find(id);
    if (d != st.dirty.end() && d->second == b.generation)
      st.dirty.erase(d);
  };
  for (const auto& id : b.submitted)
    clean(id);
  for (const auto& id : b.touched)
    clean(id);
}

/// Fails the batches that wait behind a failed one (they were validated on
/// top of it) with `err`.
void fail_later(self_ptr self, const caf::error& err) {
  auto& st = self->state;
  std::deque<batch> later = std::move(st.sealed);
  st.sealed.clear();
  later.push_back(std::move(st.pending));
  open_pending(st);
  for (const auto& l : later)
    discard(self, l);
  for (auto& l : later)
    for (auto& f : l.completions)
      f(err, nullptr);
}

/// `err`: what the clients of the batch are told. `reconnect`: the
/// connection is gone (failure_class::connection).
void finish_batch(self_ptr self, std::unique_ptr<batch> b,
                  const caf::error& err, const pg::write_result* result,
                  bool reconnect = true) {
  auto& st = self->state;
  if (err) {
    // The waiting batches were validated on top of the failed one: they go
    // too. Records are reloaded from PostgreSQL on their next use.
    discard(self, *b);
    for (auto& f : b->completions)
      f(err, nullptr);
    fail_later(self, err);
    if (reconnect)
      start_reconnect(self);
    return;
  }
  clear_dirty(st, *b);
  for (auto& f : b->completions)
    f(caf::none, result);
  evict_if_needed(self);
}

/// The batch committed except for the jobs in `result.failed`: their
/// operations fail (a data error: that operation's own fault, with a
/// client error; otherwise the error that stopped the isolation), the
/// others succeed.
void finish_partial(self_ptr self, std::unique_ptr<batch> b,
                    const pg::isolated_write_result& result) {
  auto& st = self->state;
  std::unordered_map<std::string, caf::error> refused;
  bool lost = false;
  for (const auto& [job, err] : result.failed) {
    lost = lost || pg::failure_class_of(err) == pg::failure_class::connection;
    // The detail (PostgreSQL's words, the bytes) stays in the log.
    log("job " + job + " not written: " + describe(err));
    if (is(err, errc::not_owner) && !deposes(st, b->fence, job)) {
      // A partition this store has given up (partitions_atom): no news.
      refused.emplace(job, not_owned(partition_of_id(job)));
      continue;
    }
    if (is(err, errc::not_owner))
      deposed(self, err);
    refused.emplace(job, for_client(err));
  }
  log("a batch of " + std::to_string(b->completions.size()) + " operations: "
      + std::to_string(refused.size()) + " jobs refused, the rest committed ("
      + std::to_string(result.transactions) + " transactions)");
  // Batches waiting behind this one that build on a refused job were
  // validated on state that never committed: they fail whole (rare: nobody
  // knows a refused job's id but its own submitter).
  auto builds_on_refused = [&refused](const batch& l) {
    for (const auto& id : l.submitted)
      if (refused.count(id) > 0)
        return true;
    for (const auto& id : l.touched)
      if (refused.count(id) > 0)
        return true;
    return false;
  };
  bool later = builds_on_refused(st.pending);
  for (const auto& l : st.sealed)
    later = later || builds_on_refused(l);
  for (const auto& kv : refused)
    forget(self, kv.first);
  clear_dirty(st, *b);
  for (size_t i = 0; i < b->completions.size(); ++i) {
    const caf::error* err = nullptr;
    for (const auto& job : b->op_jobs[i])
      if (auto r = refused.find(job); r != refused.end()) {
        err = &r->second;
        break;
      }
    if (err != nullptr)
      b->completions[i](*err, nullptr);
    else
      b->completions[i](caf::none, &result.committed);
  }
  if (later)
    fail_later(self, unavailable("an operation it depended on was refused; "
                                 "retry"));
  if (lost)
    start_reconnect(self);
  evict_if_needed(self);
}

/// The batch failed whole with `err` (a connection- or other-class error:
/// data errors are isolated by the writer).
void fail_batch(self_ptr self, std::unique_ptr<batch> b,
                const caf::error& err) {
  log("a batch of " + std::to_string(b->completions.size())
      + " operations failed: " + describe(err));
  if (is(err, errc::not_owner)) {
    auto& st = self->state;
    auto ours
        = [&](const std::string& job) { return deposes(st, b->fence, job); };
    if (std::none_of(b->submitted.begin(), b->submitted.end(), ours)
        && std::none_of(b->touched.begin(), b->touched.end(), ours)) {
      // Only partitions this store has given up since.
      auto first = !b->submitted.empty() ? b->submitted.front()
                   : !b->touched.empty() ? *b->touched.begin()
                                         : std::string{};
      finish_batch(self, std::move(b), not_owned(partition_of_id(first)),
                   nullptr, false);
      return;
    }
    deposed(self, err);
  }
  auto lost = pg::failure_class_of(err) == pg::failure_class::connection;
  finish_batch(self, std::move(b), for_client(err), nullptr, lost);
}

/// What `b` writes: its events, and the records of its jobs as the cache
/// holds them. Exact only while `b` is the newest batch (no later batch
/// has touched the cache yet): when it leaves directly, or when sealed.
std::shared_ptr<pg::write_batch> snapshot(self_ptr self, const batch& b) {
  auto& st = self->state;
  auto wb = std::make_shared<pg::write_batch>();
  std::set<std::string> new_jobs(b.submitted.begin(), b.submitted.end());
  for (const auto& id : b.submitted)
    wb->submits.push_back(st.cache.at(id));
  for (const auto& id : b.touched)
    if (new_jobs.count(id) == 0)
      wb->updates.push_back(st.cache.at(id));
  wb->events = b.events;
  for (const auto& jobs : b.op_jobs)
    if (jobs.size() > 1)
      wb->linked.push_back(jobs);
  return wb;
}

void send_next(self_ptr self);

/// Sends the next batch if none is in flight, then answers the partitions
/// changes that no longer wait for anything.
void flush(self_ptr self) {
  send_next(self);
  settle_changes(self);
}

void send_next(self_ptr self) {
  auto& st = self->state;
  if (st.inflight)
    return;
  std::unique_ptr<batch> b;
  if (!st.sealed.empty()) {
    b = std::make_unique<batch>(std::move(st.sealed.front()));
    st.sealed.pop_front();
  } else if (!st.pending.empty()) {
    b = std::make_unique<batch>(std::move(st.pending));
    open_pending(st);
  } else {
    return;
  }
  auto shared_wb = b->frozen ? std::move(b->frozen) : snapshot(self, *b);
  auto fence = b->fence;
  st.inflight = std::move(b);
  self->request(st.writer, st.cfg.io_timeout, write_atom::value, *shared_wb,
                fence)
      .then(
          [self](pg::isolated_write_result& result) {
            auto b = std::move(self->state.inflight);
            if (result.failed.empty())
              finish_batch(self, std::move(b), caf::none, &result.committed);
            else
              finish_partial(self, std::move(b), result);
            flush(self);
          },
          [self, shared_wb](caf::error& err) {
            auto& st = self->state;
            if (describe(err).find("outcome unknown") == std::string::npos) {
              auto b = std::move(st.inflight);
              fail_batch(self, std::move(b), err);
              flush(self);
              return;
            }
            log("commit outcome unknown, asking PostgreSQL: " + describe(err));
            // The connection broke during COMMIT: ask PostgreSQL what happened.
            self->request(st.writer, st.cfg.io_timeout, committed_atom::value,
                          *shared_wb)
                .then(
                    [self](bool committed) {
                      auto b = std::move(self->state.inflight);
                      if (committed) {
                        pg::write_result none;
                        finish_batch(self, std::move(b), caf::none, &none);
                      } else {
                        finish_batch(
                            self, std::move(b),
                            unavailable("the transaction did not commit"),
                            nullptr);
                      }
                      flush(self);
                    },
                    [self](caf::error& err2) {
                      log("commit outcome still unknown: " + describe(err2));
                      auto b = std::move(self->state.inflight);
                      finish_batch(
                          self, std::move(b),
                          unavailable("commit outcome unknown; retry with "
                                      "the same idempotency key"),
                          nullptr);
                      flush(self);
                    });
          });
}

/// Adds an operation to the pending batch: `jobs` are the jobs whose
/// commit it needs (its own writes, or the job it waits for).
void enqueue_op(self_ptr self, std::vector<std::string> jobs,
                completion_fn done) {
  auto& st = self->state;
  st.pending.completions.push_back(std::move(done));
  st.pending.op_jobs.push_back(std::move(jobs));
  if (st.hold)
    return; // a batch submit in progress: it flushes when complete
  if (st.pending.completions.size() >= st.cfg.max_batch) {
    // Full: later ops open the next batch, so a transaction never holds
    // more than max_batch ops (max_batch = 1: one transaction per op).
    // Without this, a busy store folded everything that arrived during a
    // commit into the next transaction, whatever max_batch said.
    st.pending.frozen = snapshot(self, st.pending);
    st.sealed.push_back(std::move(st.pending));
    open_pending(st);
  }
  // Idle: commit at once. Busy: the op rides with a later batch, which
  // leaves as soon as the ones ahead of it have committed.
  flush(self);
}

void start_reconnect(self_ptr self) {
  auto& st = self->state;
  st.available = false;
  if (st.reconnecting)
    return;
  st.reconnecting = true;
  st.reconnect_failures = 0;
  log("PostgreSQL unreachable; writes are refused until it is back",
      log::level::error);
  self->delayed_send(self, reconnect_wait(self), reconnect_atom::value);
}

void try_reconnect(self_ptr self) {
  auto& st = self->state;
  self->request(st.writer, st.cfg.io_timeout, ping_atom::value)
      .then(
          [self](ok_atom) {
            auto& st = self->state;
            st.available = true;
            st.reconnecting = false;
            log("PostgreSQL is back; accepting writes again", log::level::info);
          },
          [self](caf::error& err) {
            // start_reconnect logged the outage at error level; each failed
            // attempt only at debug, or a long outage floods the log.
            log("reconnect attempt failed: " + describe(err),
                log::level::debug);
            self->delayed_send(self, reconnect_wait(self),
                               reconnect_atom::value);
          });
}

void send_loads(self_ptr self);

/// Reads `id` from PostgreSQL (batched with the other loads) into the
/// cache, unless the cache learned of it meanwhile, then calls `w`.
void load(self_ptr self, const std::string& id, load_waiter w) {
  auto& st = self->state;
  auto [entry, fresh] = st.loading.try_emplace(id);
  entry->second.push_back(std::move(w));
  if (fresh) {
    st.load_queue.push_back(id);
    send_loads(self);
  }
}

/// Hands each waiting load its outcome.
void loaded(self_ptr self, const std::vector<std::string>& ids,
            std::vector<job_record>* recs, const caf::error& err) {
  auto& st = self->state;
  std::unordered_map<std::string_view, const job_record*> found;
  if (recs != nullptr)
    for (const auto& rec : *recs)
      found.emplace(rec.job_id, &rec);
  for (const auto& id : ids) {
    const job_record* rec = nullptr;
    if (auto f = found.find(id); f != found.end()) {
      rec = f->second;
      // Never overwrite newer accepted state; never keep a job of a
      // partition the store does not write (its owner changes it: the
      // next read must see PostgreSQL).
      if (owns_job(st, id) && st.cache.emplace(id, *rec).second
          && !rec->spec.idempotency_key.empty())
        st.keys.emplace(
            std::make_pair(rec->spec.tenant, rec->spec.idempotency_key), id);
    }
    auto l = st.loading.find(id);
    if (l == st.loading.end())
      continue;
    auto waiters = std::move(l->second);
    st.loading.erase(l);
    for (auto& w : waiters)
      w(rec, err);
  }
}

/// A read came back: the next one, or, when none is left (no waiter
/// still needs a job loaded earlier), the cache bound.
void after_loads(self_ptr self) {
  if (self->state.load_queue.empty())
    evict_if_needed(self);
  else
    send_loads(self);
}

void send_loads(self_ptr self) {
  auto& st = self->state;
  if (st.load_inflight || st.load_queue.empty())
    return;
  std::vector<std::string> ids;
  if (st.load_queue.size() <= max_load_batch) {
    ids.swap(st.load_queue);
  } else {
    auto end = st.load_queue.begin() + max_load_batch;
    ids.assign(std::make_move_iterator(st.load_queue.begin()),
               std::make_move_iterator(end));
    st.load_queue.erase(st.load_queue.begin(), end);
  }
  st.load_inflight = true;
  auto shared = std::make_shared<std::vector<std::string>>(std::move(ids));
  self->request(st.reader, st.cfg.io_timeout, get_atom::value, *shared)
      .then(
          [self, shared](std::vector<job_record>& recs) {
            self->state.load_inflight = false;
            loaded(self, *shared, &recs, caf::error{});
            after_loads(self);
          },
          [self, shared](caf::error& err) {
            self->state.load_inflight = false;
            loaded(self, *shared, nullptr, err);
            after_loads(self);
          });
}

/// Makes sure every job in `ids` is in the cache, then runs `then`; runs
/// `fail` with the first load error instead.
void with_loaded(self_ptr self, std::vector<std::string> ids,
                 std::function<void()> then,
                 std::function<void(caf::error)> fail) {
  auto& st = self->state;
  std::vector<std::string> missing;
  for (auto& id : ids)
    if (st.cache.count(id) == 0)
      missing.push_back(id);
  if (missing.empty()) {
    then();
    return;
  }
  struct gate {
    size_t left;
    caf::error err;
    std::function<void()> then;
    std::function<void(caf::error)> fail;
  };
  auto g = std::make_shared<gate>(
      gate{missing.size(), {}, std::move(then), std::move(fail)});
  for (auto& id : missing)
    load(self, id, [g, id](const job_record* rec, const caf::error& err) {
      if (err && !g->err)
        g->err = err;
      else if (rec == nullptr && !g->err)
        g->err = make_error(errc::not_found, "no job '" + id + "'");
      if (--g->left == 0) {
        if (g->err)
          g->fail(g->err);
        else
          g->then();
      }
    });
}

/// Validates and accepts `events` (all loaded); answers via `rp` after the
/// commit.
void accept_append(self_ptr self, std::vector<job_event> events,
                   caf::typed_response_promise<ok_atom> rp) {
  auto& st = self->state;
  for (const auto& ev : events)
    if (!owns_job(st, ev.job_id)) {
      rp.deliver(not_owned(partition_of_id(ev.job_id)));
      return;
    }
  std::map<std::string, job_record> staged;
  for (auto& ev : events) {
    auto s = staged.find(ev.job_id);
    if (s == staged.end()) {
      auto c = st.cache.find(ev.job_id);
      if (c == st.cache.end()) {
        rp.deliver(make_error(errc::not_found, "no job '" + ev.job_id + "'"));
        return;
      }
      s = staged.emplace(ev.job_id, c->second).first;
    }
    if (ev.sequence == 0)
      ev.sequence = s->second.sequence + 1;
    if (auto err = apply(s->second, ev)) {
      rp.deliver(std::move(err));
      return;
    }
  }
  auto gen = st.pending.generation;
  for (auto& kv : staged) {
    st.cache[kv.first] = std::move(kv.second);
    st.dirty[kv.first] = gen;
    st.pending.touched.insert(kv.first);
  }
  std::vector<std::string> jobs;
  for (auto& kv : staged)
    jobs.push_back(kv.first);
  for (auto& ev : events)
    st.pending.events.push_back(std::move(ev));
  enqueue_op(self, std::move(jobs),
             [rp](const caf::error& err, const pg::write_result*) mutable {
               if (err)
                 rp.deliver(err);
               else
                 rp.deliver(ok_atom::value);
             });
}

/// An idempotency key was already taken: same spec -> that job, otherwise
/// a conflict.
/// Answer of one submission: the job, or why not.
using submit_done = std::function<void(caf::expected<job_record>)>;

void answer_duplicate(self_ptr self, const job_spec& spec, submit_done done) {
  auto& st = self->state;
  self->request(st.reader, st.cfg.io_timeout, key_atom::value, spec.tenant,
                spec.idempotency_key)
      .then(
          [spec, done](job_record& existing) {
            if (existing.spec == spec)
              done(std::move(existing));
            else
              done(make_error(errc::conflict,
                              "idempotency key '" + spec.idempotency_key
                                  + "' is taken by job " + existing.job_id
                                  + " with a different spec"));
          },
          [done](caf::error& err) { done(read_error_for_client(err)); });
}

/// Asks the reader and answers through the store, instead of delegating:
/// the I/O actors only ever talk to the store. A detached actor that
/// answered clients itself could be kept alive past its end by a reply
/// parked on its way to a remote client (the node's network layer holds
/// the sender), and CAF waits for every detached actor to be destroyed
/// before the actor system can go: drover-node then hung on SIGTERM.
template <class T, class... Ts>
caf::result<T> ask_reader(self_ptr self, Ts... xs) {
  auto rp = self->make_response_promise<T>();
  self->request(self->state.reader, self->state.cfg.io_timeout, xs...)
      .then([rp](T& x) mutable { rp.deliver(std::move(x)); },
            [rp](caf::error& err) mutable {
              rp.deliver(read_error_for_client(err));
            });
  return rp;
}

/// Accepts one `submitted` event into the pending batch (or answers an
/// idempotent duplicate); `done` runs once its batch committed or failed.
void submit_one(self_ptr self, job_event ev, submit_done done) {
  auto& st = self->state;
  if (!st.available)
    return done(unavailable("reconnecting to PostgreSQL"));
  if (ev.kind != event_kind::submitted)
    return done(
        make_error(errc::invalid_value, "submit needs a 'submitted' event"));
  if (!owns_job(st, ev.job_id))
    return done(not_owned(partition_of_id(ev.job_id)));
  const auto& spec = ev.spec;
  if (!spec.idempotency_key.empty()) {
    auto k = st.keys.find({spec.tenant, spec.idempotency_key});
    if (k != st.keys.end()) {
      auto existing_id = k->second;
      auto reply = [self, existing_id, spec, done]() {
        auto& st = self->state;
        auto c = st.cache.find(existing_id);
        if (c == st.cache.end()) {
          answer_duplicate(self, spec, done);
          return;
        }
        if (c->second.spec == spec)
          done(c->second);
        else
          done(make_error(errc::conflict,
                          "idempotency key '" + spec.idempotency_key
                              + "' is taken by job " + existing_id
                              + " with a different spec"));
      };
      if (st.dirty.count(existing_id) > 0) {
        // Not committed yet: answer once it is (or is not).
        enqueue_op(
            self, {existing_id},
            [reply, done](const caf::error& err, const pg::write_result*) {
              if (err)
                done(err);
              else
                reply();
            });
      } else {
        reply();
      }
      return;
    }
  }
  ev.sequence = 1;
  job_record rec;
  if (auto err = apply(rec, ev))
    return done(err);
  if (st.cache.count(ev.job_id) > 0)
    return done(
        make_error(errc::conflict, "job id '" + ev.job_id + "' exists"));
  auto id = ev.job_id;
  st.cache.emplace(id, rec);
  st.dirty[id] = st.pending.generation;
  if (!spec.idempotency_key.empty())
    st.keys.emplace(std::make_pair(spec.tenant, spec.idempotency_key), id);
  st.pending.submitted.push_back(id);
  st.pending.events.push_back(std::move(ev));
  enqueue_op(self, {id},
             [self, id, rec, done](const caf::error& err,
                                   const pg::write_result* result) {
               if (err) {
                 done(err);
                 return;
               }
               const auto& dups = result->duplicate_submits;
               if (std::find(dups.begin(), dups.end(), id) == dups.end()) {
                 done(rec);
                 return;
               }
               // Another node (or an earlier run) holds the key.
               auto& st = self->state;
               st.cache.erase(id);
               st.dirty.erase(id);
               st.keys.erase({rec.spec.tenant, rec.spec.idempotency_key});
               answer_duplicate(self, rec.spec, done);
             });
}

// -- partitions changes -------------------------------------------------------

/// Runs `write` now or, while a partitions change waits for appends
/// received before it (the gate is closed), after that change: every write
/// is accepted under the fence of the moment it was received.
void admit(self_ptr self, std::function<void()> write) {
  auto& st = self->state;
  if (st.gate_closed)
    st.held.push_back(std::move(write));
  else
    write();
}

/// An append received earlier has been accepted or refused.
void append_settled(self_ptr self) {
  auto& st = self->state;
  --st.unaccepted;
  // Reopened from the mailbox, not from inside the load that got here.
  if (st.gate_closed && st.unaccepted == 0)
    self->send(self, reopen_atom::value);
}

/// The appends the waiting change waited for are settled: applies it, then
/// what was held behind it, in order, until a held change must wait again.
void reopen(self_ptr self) {
  auto& st = self->state;
  if (!st.gate_closed || st.unaccepted > 0)
    return;
  st.gate_closed = false;
  auto change = std::move(st.waiting_change);
  st.waiting_change = nullptr;
  change();
  while (!st.gate_closed && !st.held.empty()) {
    auto next = std::move(st.held.front());
    st.held.pop_front();
    next();
  }
}

/// partitions_atom's arguments: as many epochs as partitions, partitions
/// strictly ascending within [0, max_partitions), epochs not negative.
caf::error check_partition_set(const std::vector<int32_t>& partitions,
                               const std::vector<int64_t>& epochs) {
  if (partitions.size() != epochs.size())
    return make_error(errc::invalid_request,
                      "partitions and epochs must be of the same length");
  for (size_t i = 0; i < partitions.size(); ++i) {
    if (partitions[i] < 0 || partitions[i] >= max_partitions)
      return make_error(errc::invalid_request,
                        "partition " + std::to_string(partitions[i])
                            + " is outside [0, "
                            + std::to_string(max_partitions) + ")");
    if (i > 0 && partitions[i] <= partitions[i - 1])
      return make_error(errc::invalid_request,
                        "partitions must be strictly ascending");
    if (epochs[i] < 0)
      return make_error(errc::invalid_request,
                        "epoch " + std::to_string(epochs[i]) + " of partition "
                            + std::to_string(partitions[i]) + " is negative");
  }
  return caf::none;
}

/// Drops the cached records (and idempotency keys) of jobs in partitions
/// the store no longer writes: their next reader reads PostgreSQL. Batches
/// in flight or sealed hold their own copies (frozen snapshots).
void evict_unowned(self_ptr self) {
  auto& st = self->state;
  for (auto i = st.cache.begin(); i != st.cache.end();) {
    if (owns_job(st, i->first)) {
      ++i;
      continue;
    }
    const auto& spec = i->second.spec;
    if (!spec.idempotency_key.empty())
      st.keys.erase({spec.tenant, spec.idempotency_key});
    i = st.cache.erase(i);
  }
}

/// Makes `partitions` at `epochs` the store's fence, answering `rp` once
/// every write accepted under the previous fences has committed or failed.
/// Waits first for the appends received before it (the gate).
void change_partitions(self_ptr self, std::vector<int32_t> partitions,
                       std::vector<int64_t> epochs,
                       caf::typed_response_promise<ok_atom> rp) {
  auto& st = self->state;
  if (st.unaccepted > 0) {
    st.gate_closed = true;
    st.waiting_change = [self, partitions, epochs, rp]() mutable {
      change_partitions(self, std::move(partitions), std::move(epochs), rp);
    };
    return;
  }
  // What was accepted until now leaves under the old fence, as one sealed
  // batch that goes before anything accepted from now on.
  if (!st.pending.empty()) {
    st.pending.frozen = snapshot(self, st.pending);
    st.sealed.push_back(std::move(st.pending));
  }
  auto next = std::make_shared<pg::write_fence>(*st.fence);
  next->partitions = std::move(partitions);
  next->epochs = std::move(epochs);
  st.fence = std::move(next);
  ++st.fence_seq;
  open_pending(st);
  evict_unowned(self);
  st.changes.push_back({st.fence_seq, std::move(rp)});
  log("now writing " + std::to_string(st.fence->partitions.size())
          + " partitions",
      log::level::info);
  flush(self);
}

/// A write that goes to the writer without the group-commit pipeline
/// (control log, retention): sent under the current fence, counted until
/// answered so that a partitions change waits for it.
template <class T, class Ok, class Fail, class... Ts>
void direct_write(self_ptr self, Ok ok, Fail fail, Ts&&... xs) {
  auto& st = self->state;
  auto seq = st.fence_seq;
  st.direct_writes.insert(seq);
  auto done = [self, seq] {
    auto& st = self->state;
    st.direct_writes.erase(st.direct_writes.find(seq));
    settle_changes(self);
  };
  self->request(st.writer, st.cfg.io_timeout, std::forward<Ts>(xs)...)
      .then(
          [ok, done](T& x) mutable {
            ok(x);
            done();
          },
          [fail, done](caf::error& err) mutable {
            fail(err);
            done();
          });
}

/// Accepts (or refuses) an append once its jobs are loaded.
void append(self_ptr self, std::vector<job_event> events,
            caf::typed_response_promise<ok_atom> rp) {
  auto& st = self->state;
  if (!st.available) {
    rp.deliver(unavailable("reconnecting to PostgreSQL"));
    return;
  }
  // Refused before anything is read: a job of a partition the store does
  // not write is never loaded into its cache.
  std::vector<std::string> ids;
  for (const auto& ev : events) {
    if (!owns_job(st, ev.job_id)) {
      rp.deliver(not_owned(partition_of_id(ev.job_id)));
      return;
    }
    ids.push_back(ev.job_id);
  }
  auto shared = std::make_shared<std::vector<job_event>>(std::move(events));
  ++st.unaccepted;
  with_loaded(
      self, std::move(ids),
      [self, shared, rp] {
        accept_append(self, std::move(*shared), rp);
        append_settled(self);
      },
      [self, rp](caf::error err) mutable {
        rp.deliver(read_error_for_client(err));
        append_settled(self);
      });
}

/// A batch submit: every item in the pending batch, one transaction.
void submit_many(self_ptr self, std::vector<job_event> evs,
                 caf::typed_response_promise<std::vector<job_record>> rp) {
  auto& st = self->state;
  if (!st.available) {
    rp.deliver(unavailable("reconnecting to PostgreSQL"));
    return;
  }
  if (evs.empty()) {
    rp.deliver(std::vector<job_record>{});
    return;
  }
  struct collect {
    std::vector<job_record> out;
    size_t pending = 0;
    caf::error failed;
  };
  auto c = std::make_shared<collect>();
  c->out.resize(evs.size());
  c->pending = evs.size();
  // All items join the pending batch without sealing or flushing in
  // between, so they commit in one transaction.
  st.hold = true;
  for (size_t i = 0; i < evs.size(); ++i) {
    submit_one(self, std::move(evs[i]),
               [c, i, rp](caf::expected<job_record> r) mutable {
                 if (r) {
                   c->out[i] = std::move(*r);
                 } else if (is(r.error(), errc::unavailable)) {
                   c->failed = r.error();
                 } else {
                   auto& err = r.error();
                   auto& x = c->out[i];
                   x.error.code = to_string(static_cast<errc>(err.code()));
                   x.error.message = describe(err);
                   if (err.context().match_elements<std::string>())
                     x.error.message = err.context().get_as<std::string>(0);
                 }
                 if (--c->pending == 0) {
                   if (c->failed)
                     rp.deliver(c->failed);
                   else
                     rp.deliver(std::move(c->out));
                 }
               });
  }
  st.hold = false;
  flush(self);
}

pg_store_impl_actor::behavior_type pg_store_impl(self_ptr self,
                                                 pg_store_config cfg) {
  {
    auto& st = self->state;
    st.cfg = cfg;
    st.fence = cfg.fence;
    open_pending(st);
    st.writer
        = self->system().spawn<caf::detached>(io_impl, cfg.conninfo, true);
    // Both connections migrate (idempotent, under an advisory lock), so a
    // read never races the schema's creation.
    st.reader
        = self->system().spawn<caf::detached>(io_impl, cfg.conninfo, true);
    // The I/O actors live and die with the store.
    self->link_to(st.writer);
    self->link_to(st.reader);
    self->set_default_handler(log_and_drop);
    // Every error the store expects comes as a request's answer; one sent
    // on its own is logged, and the store goes on (CAF's default would
    // kill it).
    self->set_error_handler([](caf::error& err) {
      log::warn("store", "unexpected error message",
                {{"error", describe(err)}});
    });
    if (st.cfg.retain_finished.count() > 0)
      self->delayed_send(self, st.cfg.retention_interval,
                         retention_atom::value);
    // Learn early whether PostgreSQL is there (and migrate it).
    self->request(st.writer, st.cfg.io_timeout, ping_atom::value)
        .then([](ok_atom) {},
              [self](caf::error& err) {
                log("cannot reach PostgreSQL: " + describe(err));
                start_reconnect(self);
              });
    return {
        [self](ping_atom) -> caf::result<ok_atom> {
          auto& st = self->state;
          if (!st.available)
            return unavailable("reconnecting to PostgreSQL");
          auto rp = self->make_response_promise<ok_atom>();
          self->request(st.writer, st.cfg.io_timeout, ping_atom::value)
              .then([rp](ok_atom) mutable { rp.deliver(ok_atom::value); },
                    [rp](caf::error& err) mutable {
                      log("ping failed: " + describe(err));
                      rp.deliver(for_client(err));
                    });
          return rp;
        },
        [self](submit_atom, job_event& ev) -> caf::result<job_record> {
          auto rp = self->make_response_promise<job_record>();
          admit(self, [self, ev = std::move(ev), rp]() mutable {
            submit_one(self, std::move(ev),
                       [rp](caf::expected<job_record> r) mutable {
                         if (r)
                           rp.deliver(std::move(*r));
                         else
                           rp.deliver(std::move(r.error()));
                       });
          });
          return rp;
        },
        [self](submit_atom, std::vector<job_event>& evs)
            -> caf::result<std::vector<job_record>> {
          auto rp = self->make_response_promise<std::vector<job_record>>();
          admit(self, [self, evs = std::move(evs), rp]() mutable {
            submit_many(self, std::move(evs), rp);
          });
          return rp;
        },
        [self](append_atom,
               std::vector<job_event>& events) -> caf::result<ok_atom> {
          auto rp = self->make_response_promise<ok_atom>();
          admit(self, [self, events = std::move(events), rp]() mutable {
            append(self, std::move(events), rp);
          });
          return rp;
        },
        [self](get_atom, const std::string& id) -> caf::result<job_record> {
          auto& st = self->state;
          auto c = st.cache.find(id);
          if (c != st.cache.end() && st.dirty.count(id) == 0)
            return c->second;
          auto rp = self->make_response_promise<job_record>();
          if (st.dirty.count(id) > 0 || !owns_job(st, id)) {
            // Uncommitted events: answer the committed state, uncached.
            // Another coordinator's job: it changes it, so always read it.
            self->request(st.reader, st.cfg.io_timeout, get_atom::value, id)
                .then(
                    [rp](job_record& rec) mutable {
                      rp.deliver(std::move(rec));
                    },
                    [rp](caf::error& err) mutable {
                      rp.deliver(read_error_for_client(err));
                    });
            return rp;
          }
          // Not cached: read it with the other loads and keep it (the job
          // supervisor's get is followed by appends that need it).
          load(self, id,
               [rp, id](const job_record* rec, const caf::error& err) mutable {
                 if (err)
                   rp.deliver(read_error_for_client(err));
                 else if (rec == nullptr)
                   rp.deliver(
                       make_error(errc::not_found, "no job '" + id + "'"));
                 else
                   rp.deliver(*rec);
               });
          return rp;
        },
        [self](events_atom,
               const std::string& id) -> caf::result<std::vector<job_event>> {
          return ask_reader<std::vector<job_event>>(self, events_atom::value,
                                                    id);
        },
        [self](list_atom,
               const job_query& q) -> caf::result<std::vector<job_record>> {
          if (q.limit == 0 || q.limit > 10000)
            return make_error(errc::invalid_request,
                              "limit must be within [1, 10000]");
          return ask_reader<std::vector<job_record>>(self, list_atom::value, q);
        },
        [self](recover_atom, int32_t partition, const std::string& after,
               uint32_t limit) -> caf::result<std::vector<job_record>> {
          if (auto err = check_recovery_partition(partition))
            return err;
          if (auto err = check_recovery_limit(limit))
            return err;
          return ask_reader<std::vector<job_record>>(self, recover_atom::value,
                                                     partition, after, limit);
        },
        [self](webhooks_atom, const std::string& after,
               uint32_t limit) -> caf::result<std::vector<job_record>> {
          if (limit == 0 || limit > 10000)
            return make_error(errc::invalid_request,
                              "limit must be within [1, 10000]");
          // With a fence, the webhooks of the jobs of its partitions: the
          // others' are their own coordinators' to deliver.
          if (const auto& fence = self->state.fence)
            return ask_reader<std::vector<job_record>>(
                self, webhooks_atom::value, after, limit, fence->partitions);
          return ask_reader<std::vector<job_record>>(self, webhooks_atom::value,
                                                     after, limit);
        },
        [self](partitions_atom, std::vector<int32_t>& partitions,
               std::vector<int64_t>& epochs) -> caf::result<ok_atom> {
          if (auto err = check_partition_set(partitions, epochs))
            return err;
          if (!self->state.fence)
            return make_error(errc::invalid_request,
                              "this store writes without partition leases "
                              "(no fence): it has no partitions to change");
          auto rp = self->make_response_promise<ok_atom>();
          admit(self, [self, partitions = std::move(partitions),
                       epochs = std::move(epochs), rp]() mutable {
            change_partitions(self, std::move(partitions), std::move(epochs),
                              rp);
          });
          return rp;
        },
        [self](nodes_atom) -> caf::result<std::string> {
          return ask_reader<std::string>(
              self, nodes_atom::value,
              static_cast<int64_t>(self->state.cfg.member_stale.count()));
        },
        [self](control_atom a, int64_t at_ms, std::string& kind,
               std::string& key, std::string& state,
               std::string& detail) -> caf::result<ok_atom> {
          auto rp = self->make_response_promise<ok_atom>();
          admit(self, [self, a, at_ms, kind = std::move(kind),
                       key = std::move(key), state = std::move(state),
                       detail = std::move(detail), rp]() mutable {
            direct_write<ok_atom>(
                self, [rp](ok_atom) mutable { rp.deliver(ok_atom::value); },
                [rp](caf::error& err) mutable { rp.deliver(std::move(err)); },
                a, self->state.fence, at_ms, std::move(kind), std::move(key),
                std::move(state), std::move(detail));
          });
          return rp;
        },
        [self](control_atom a,
               std::string& kind) -> caf::result<std::vector<std::string>> {
          return ask_reader<std::vector<std::string>>(self, a, std::move(kind));
        },
        [self](control_atom a, uint32_t limit) -> caf::result<std::string> {
          if (limit == 0 || limit > 1000)
            return make_error(errc::invalid_request,
                              "limit must be within [1, 1000]");
          return ask_reader<std::string>(self, a, limit);
        },
        [self](reconnect_atom) { try_reconnect(self); },
        [self](reopen_atom) { reopen(self); },
        [self](retention_atom) {
          auto& st = self->state;
          auto now = st.cfg.clock_ms ? st.cfg.clock_ms() : system_clock_ms();
          auto before = now - st.cfg.retain_finished.count();
          // Only the jobs of the partitions the store writes, fenced by
          // their leases (pg::session::purge_finished).
          direct_write<uint64_t>(
              self,
              [](uint64_t purged) {
                if (purged > 0)
                  log("retention: purged " + std::to_string(purged)
                          + " finished jobs",
                      log::level::info);
              },
              [](caf::error& err) {
                log("retention sweep failed: " + describe(err));
              },
              retention_atom::value, st.fence, before, st.cfg.retention_batch);
          self->delayed_send(self, st.cfg.retention_interval,
                             retention_atom::value);
        },
    };
  }
}

} // namespace

store_actor spawn_pg_store(caf::actor_system& sys, pg_store_config cfg) {
  // The private extension converts to its subset: no actor_cast.
  return sys.spawn(pg_store_impl, std::move(cfg));
}

} // namespace drover
