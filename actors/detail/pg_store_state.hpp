#pragma once

// The PostgreSQL store's state and the functions its behaviour
// (actors/pg_store.cpp) is made of, spread over actors/pg_store_io.cpp (the
// I/O actors: one connection each, blocking libpq calls on their own
// threads), actors/pg_store_write.cpp (group commit: batches, their
// commit, failure and isolation, reconnecting), actors/pg_store_read.cpp
// (loading jobs into the cache, accepting submits and appends) and
// actors/pg_store_fence.cpp (partitions changes and the gate that orders
// them). Internal: the contract is actors/pg_store.hpp.

#include "actors/pg_store.hpp"

#include "runtime/errors.hpp"
#include "runtime/log.hpp"
#include "runtime/pg.hpp"
#include "runtime/pg_lease.hpp"

#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <caf/typed_response_promise.hpp>

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

// Local-only messages between the store and its I/O threads.
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(drover::pg::write_batch)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::shared_ptr<const drover::pg::write_fence>)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(drover::pg::write_result)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(drover::pg::isolated_write_result)

namespace drover::pg_store_detail {

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
    caf::replies_to<events_atom, std::string, uint64_t,
                    uint32_t>::with<std::vector<job_event>>,
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
    caf::replies_to<control_atom, get_atom>::with<int64_t>,
    caf::replies_to<control_atom, follow_atom,
                    int64_t>::with<std::vector<std::string>>,
    caf::replies_to<control_atom,
                    configured_atom>::with<std::vector<std::string>>,
    caf::replies_to<permit_atom, fence_ptr, std::string, std::string, uint32_t,
                    uint32_t,
                    std::vector<std::string>>::with<std::vector<std::string>>,
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
  /// Permit grants (permit_atom) have a connection of their own, opened at
  /// the first: on the writer each waited behind the group commit in
  /// flight, and the jobs granted waited with it.
  pg_io_actor permits;
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

/// Answer of one submission: the job, or why not.
using submit_done = std::function<void(caf::expected<job_record>)>;

// -- actors/pg_store_io.cpp ---------------------------------------------------

/// A detached I/O actor on `conninfo`; `migrate`: bring the schema up to
/// date on every (re)connection.
pg_io_actor spawn_pg_io(caf::actor_system& sys, std::string conninfo,
                        bool migrate);

// -- actors/pg_store_write.cpp ------------------------------------------------

caf::error unavailable(const std::string& why);
void log(const std::string& what, log::level lv = log::level::warn);
caf::error for_client(const caf::error& err);
caf::error read_error_for_client(const caf::error& err);
bool owns_job(const pg_store_state& st, const std::string& job_id);
caf::error not_owned(int32_t partition);
void open_pending(pg_store_state& st);
void settle_changes(self_ptr self);
void evict_if_needed(self_ptr self);
std::shared_ptr<pg::write_batch> snapshot(self_ptr self, const batch& b);
void flush(self_ptr self);
void enqueue_op(self_ptr self, std::vector<std::string> jobs,
                completion_fn done);
void start_reconnect(self_ptr self);
void try_reconnect(self_ptr self);

// -- actors/pg_store_read.cpp -------------------------------------------------

void load(self_ptr self, const std::string& id, load_waiter w);
void submit_one(self_ptr self, job_event ev, submit_done done);
void append(self_ptr self, std::vector<job_event> events,
            caf::typed_response_promise<ok_atom> rp);
void submit_many(self_ptr self, std::vector<job_event> evs,
                 caf::typed_response_promise<std::vector<job_record>> rp);

// -- actors/pg_store_fence.cpp ------------------------------------------------

void admit(self_ptr self, std::function<void()> write);
void append_settled(self_ptr self);
void reopen(self_ptr self);
caf::error check_partition_set(const std::vector<int32_t>& partitions,
                               const std::vector<int64_t>& epochs);
void change_partitions(self_ptr self, std::vector<int32_t> partitions,
                       std::vector<int64_t> epochs,
                       caf::typed_response_promise<ok_atom> rp);

} // namespace drover::pg_store_detail
