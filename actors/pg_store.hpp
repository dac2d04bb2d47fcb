#pragma once

// The PostgreSQL store: the store protocol (actors/store.hpp) with
// durability. A submit or an append is answered only after the transaction
// holding its events has committed (synchronous_commit on).
//
// Group commit: writes from all actors accumulate while one transaction is
// in flight and go out together in the next one (at most `max_batch`
// operations per transaction), so durability costs one fsync per batch,
// not per job. libpq runs on two dedicated threads (detached actors, one
// connection each: writer and reader), never on CAF's scheduler threads.
//
// The store keeps the current record of the jobs it writes in memory to
// validate new events with the state machine before they are written (a
// cache, rebuilt from PostgreSQL on a miss). Reads answer with committed
// state only.
//
// When PostgreSQL is unreachable, writes fail at once with
// `errc::unavailable` (never acknowledged without a commit) while the store
// reconnects with backoff; a write whose commit outcome is unknown is
// re-read, not guessed.
//
// A transaction PostgreSQL refuses for its data (SQLSTATE 22xxx, 23xxx,
// 54xxx, text with NUL: pg::failure_class::data) is not a lost connection:
// the batch is written again in halves (pg::session::write_isolated) until
// the offending operations are alone. They fail with errc::invalid_value
// (or errc::conflict when the stored job changed under them); everything
// else in the batch commits, and the store stays available. Only
// connection-class failures make it reconnect. Client-facing errors never
// carry PostgreSQL's text, an SQLSTATE or another request's bytes; the
// detail goes to the node's log.
//
// Fencing: with `fence` set, every write transaction first checks the
// leases of the partitions it writes (runtime/pg_lease.hpp). A write that
// finds one taken over commits nothing of that partition, fails with
// errc::unavailable and calls `on_deposed` once; one that finds them
// expired (not yet renewed) fails with errc::unavailable and changes
// nothing else. The partitions written change at run time with
// partitions_atom (actors/store.hpp): the fence follows, in the order of
// the store's mailbox (each batch carries the fence it was accepted
// under, the writer checks that one), and a write of a partition given up
// is refused with errc::not_owner without `on_deposed`.

#include "actors/store.hpp"

#include <caf/fwd.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace drover::pg {
struct write_fence;
} // namespace drover::pg

namespace drover {

struct pg_store_config {
  /// libpq connection string (e.g. "postgresql:///drover?host=/run/pg").
  std::string conninfo;
  /// Upper bound of operations (submits + appends) per transaction.
  size_t max_batch = 2000;
  /// Records cached for validation and reads. Above it (plus 10 %), jobs
  /// without uncommitted events are evicted down to 90 % of it, finished
  /// ones first, and read from PostgreSQL again when next needed.
  size_t max_cached_jobs = 200000;
  /// Reconnect backoff bounds.
  std::chrono::milliseconds reconnect_min{100};
  std::chrono::milliseconds reconnect_max{5000};
  /// Give up on one database call after this long.
  std::chrono::milliseconds io_timeout{60000};
  /// Retention: finished jobs (completed, cancelled, failed outside the
  /// DLQ) older than this are purged with their events; 0 keeps them
  /// forever. Live jobs and the DLQ are never touched. With a fence, only
  /// jobs of its partitions, fenced by their leases.
  std::chrono::milliseconds retain_finished{0};
  /// How often the retention sweep runs, and how many jobs one sweep
  /// deletes at most (one transaction).
  std::chrono::milliseconds retention_interval{600000};
  int32_t retention_batch = 10000;
  /// Unix ms now; tests may substitute their own clock.
  std::function<int64_t()> clock_ms;
  /// The partition leases every write transaction checks (until a
  /// partitions_atom replaces its partitions and epochs); null = none
  /// (tests and tools on a database no coordinator uses: every partition,
  /// and partitions_atom is refused).
  std::shared_ptr<const pg::write_fence> fence;
  /// A coordinator not heard from for this long shows as "gone" in the
  /// coordinators view (nodes_atom); the node sets two lease TTLs.
  std::chrono::milliseconds member_stale{10000};
  /// Called once, on the store's thread, with a one-line reason when a
  /// write finds the lease of a partition the store still writes taken
  /// over; must not block.
  std::function<void(const std::string&)> on_deposed;
};

store_actor spawn_pg_store(caf::actor_system& sys, pg_store_config cfg);

} // namespace drover
