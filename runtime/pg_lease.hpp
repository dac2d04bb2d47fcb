#pragma once

// Partition leases: which process coordinates the jobs of a database
// (migration 4, docs/storage.md, decision 0006).
//
// The job space has P partitions (fixed when the database is created,
// drover.partitioning); partition p is owned through its row in
// drover.partition_leases: (owner instance, epoch, expires_at by
// PostgreSQL's clock). Until the cluster exists (issue 13) one coordinator
// takes all P rows, all or nothing, before it recovers or dispatches
// anything, and renews them; its store checks them in every write
// transaction (pg::write_fence). A takeover sets epoch = epoch + 1.
//
// An owner is one process, not one node id: `this_process` adds host, pid
// and random bits, so a second `drover-node` with the same --node-id on the
// same machine is a different owner and is refused like any other.
//
// Everything here blocks on the network: call it from a thread of its own
// (the node's main thread before the actor system runs, the keeper's
// thread), never from a CAF scheduler thread.

#include "runtime/pg.hpp"

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace drover::pg {

/// Who holds, or wants, leases.
struct lease_owner {
  /// Unique per process: "<node id>@<host>:<pid>:<16 hex random>".
  std::string instance;
  std::string node_id;
  std::string host;
  int64_t pid = 0;
  /// What drover.coordinators shows of it (its --cluster-host:port); may
  /// be empty.
  std::string cluster_address;
  /// Where its pid means something (boot id and pid namespace; empty if
  /// unknown): another process of the same space can tell whether it is
  /// gone (pg::live_twin).
  std::string process_space;
};

/// This process as a lease owner under `node_id`.
lease_owner this_process(const std::string& node_id);

/// Leases one instance holds: partition i at epochs[i].
struct lease_grant {
  lease_owner owner;
  std::vector<int32_t> partitions;
  std::vector<int64_t> epochs;

  /// What the store's write transactions check; `idle_limit` becomes the
  /// fence's idle_limit_ms (the lease TTL for a coordinator).
  std::shared_ptr<const write_fence> fence(std::chrono::milliseconds idle_limit
                                           = {}) const;
};

/// A lease that stood in the way: held by another instance, unexpired.
struct lease_holder {
  lease_owner owner;
  int32_t partition = 0;
  int64_t epoch = 0;
  /// Expiry by the server's clock: RFC 3339 UTC text, and how far away it
  /// was when read.
  std::string expires_at;
  int64_t expires_in_ms = 0;
};

/// "node 'n1' (host h, pid 42, instance ...) holds the partition leases of
/// this database until <time> (in 4.2 s)".
std::string describe(const lease_holder& h);

/// One attempt, one transaction: takes every partition's lease for `owner`
/// for `ttl` (epoch + 1 each) if none is held unexpired by another
/// instance; otherwise changes nothing and names the first such holder.
/// A transaction that holds lease rows locked past `lock_wait` (a writer
/// of a paused coordinator, until PostgreSQL ends it: write_fence::
/// idle_limit_ms) makes the attempt `busy` instead of waiting for it.
struct acquire_attempt {
  std::optional<lease_grant> grant;
  std::optional<lease_holder> held_by;
  bool busy = false;
};
caf::expected<acquire_attempt> try_acquire_all(
    session& db, const lease_owner& owner, std::chrono::milliseconds ttl,
    std::chrono::milliseconds lock_wait = std::chrono::milliseconds{1000});

/// Takes every lease, waiting for a holder's lease to expire if that
/// holder may be dead: the leases are read every `poll` until either they
/// expire unrenewed (taken with epoch + 1: a restart after kill -9 waits at
/// most one TTL) or the same holder renews them (alive: errc::conflict,
/// context = describe(holder)). Gives up with that conflict after `patience`
/// without either (a holder with a longer TTL than that). Rows locked by
/// another transaction are waited for `poll` at a time, within `patience`,
/// asking `keep_waiting` (if given) after each wait: false ends it with
/// errc::conflict.
caf::expected<lease_grant>
acquire_all(session& db, const lease_owner& owner,
            std::chrono::milliseconds ttl, std::chrono::milliseconds poll,
            std::chrono::milliseconds patience,
            const std::function<bool()>& keep_waiting = {});

// -- membership (drover.coordinators) ----------------------------------------

/// A drover.coordinators row's lease TTL as SQL (ms): `column`, or
/// `fallback` for a row that announced none (a binary before schema 10),
/// held to --lease-ttl-ms's range [500 ms, 600 s] (runtime/config_validate
/// .cpp), so a row written with any value cannot overflow a reader's
/// interval. The one home of that rule for every query that judges a row
/// by its own TTL.
std::string announced_ttl_sql(const std::string& column,
                              const std::string& fallback);

/// Announces `owner` in drover.coordinators (its row, heard from now) and
/// prunes the rows of others not heard from for an hour. Whether it is
/// active follows from the leases it holds (members_json); `shares`: it
/// shares the partitions with the others (runtime/pg_share.hpp).
caf::error announce(session& db, const lease_owner& owner, bool shares = false);

/// As announce, and returns the row's started_at (server clock,
/// microseconds). A sharing coordinator's row (`shares`) is keyed by its
/// node id (share_key, runtime/pg_share.hpp share_keys). `started_us` (if
/// not 0: what an earlier call returned) is its started_at should the row
/// have to be inserted again (pruned after an hour unheard: it stays the
/// older of two instances of its node id).
/// `ttl` (if not 0: a sharing coordinator's lease TTL) is how long it
/// counts as a member after each heartbeat, whatever the reader's own TTL.
caf::expected<int64_t> announce_row(session& db, const lease_owner& owner,
                                    bool shares, int64_t started_us,
                                    std::chrono::milliseconds ttl = {});

/// Removes `owner`'s row: an orderly stop.
caf::error leave(session& db, const lease_owner& owner);

/// The coordinators of this database as a JSON array, those holding the
/// most partitions first: node id, host, pid, cluster address, state
/// ("active" while it holds unexpired leases, else "standby"; "gone" when
/// not heard from for `stale`, or for twice its own lease TTL if it
/// announced one: a sharing coordinator), the partitions whose unexpired
/// leases it
/// holds, when it started and how long ago it was last heard from (server
/// clock, ms).
caf::expected<std::string> members_json(session& db,
                                        std::chrono::milliseconds stale);

/// What a coordinator does at start-up, before it recovers or dispatches
/// anything: connects, migrates, and takes every lease for `owner`
/// (this_process(), acquire_all, reading every 200 ms, patient for two TTLs and
/// a minute: a dead holder with a longer TTL is waited for). Errors:
/// errc::conflict (another live coordinator; context names it), or the
/// connection's or the migration's error.
///
/// `standby` (a coordinator started with --standby): instead of giving up
/// with the conflict, it is called with the holder's description each time
/// the holder is seen alive (about once per renewal of the holder; each
/// time it also announces itself, announce) and the
/// wait goes on while it returns true; false ends it with the conflict
/// (and removes its drover.coordinators row).
/// A standby that has reached the database once also waits out PostgreSQL
/// being unreachable (errc::unavailable, at any step; before, the error
/// ends the start like a bad configuration): `on_outage` hears each failure,
/// `standby` is then called with an empty holder (false ends the wait with that
/// error), and it reconnects every 500 ms.
caf::expected<lease_grant>
claim_coordinator(const std::string& conninfo, const lease_owner& owner,
                  std::chrono::milliseconds ttl,
                  std::function<bool(const std::string&)> standby = {},
                  std::function<void(const caf::error&)> on_outage = {});

/// Extends every lease of `grant` to now() + ttl (server clock), also after
/// it expired, as long as nobody took it over; if it renewed any, a second
/// statement, best effort (its failure is ignored), marks the owner's
/// drover.coordinators row heard from now and prunes rows not heard from
/// for an hour. errc::not_owner when a
/// lease has another owner or epoch: the grant is superseded for good.
caf::error renew(session& db, const lease_grant& grant,
                 std::chrono::milliseconds ttl);

/// The statement renew() runs: extends the leases of `grant` that are still
/// ours (owner and epoch) to now() + ttl; the partitions renewed, ascending
/// (the others were taken over).
caf::expected<std::vector<int32_t>> renew_each(session& db,
                                               const lease_grant& grant,
                                               std::chrono::milliseconds ttl);

/// Gives the leases of `grant` up (owner NULL, expired now; epochs kept) so
/// the next coordinator need not wait a TTL, and removes the owner's
/// drover.coordinators row. Leases no longer ours are left alone.
caf::error release(session& db, const lease_grant& grant);

/// release() without leaving drover.coordinators: a hand-over of some
/// partitions by a coordinator that goes on (runtime/pg_share.hpp).
caf::error release_rows(session& db, const lease_grant& grant);

/// When a keeper last renewed its leases, by this process's monotonic
/// clock (when the renewal was sent), shared with whoever checks it.
class renewal_clock {
public:
  /// Starts as renewed now.
  renewal_clock();
  static int64_t now_ns();
  void renewed(int64_t sent_ns);
  /// Self-fencing: a test, callable from any thread and after the keeper
  /// is gone, of whether the leases were renewed (or taken) less than
  /// `ttl` minus `margin` ago. While it fails the coordinator must not
  /// hand out work: PostgreSQL may already have let another one take over
  /// (its clock decides expiry; the margin covers the difference).
  std::function<bool()> freshness(std::chrono::milliseconds ttl,
                                  std::chrono::milliseconds margin) const;

private:
  std::shared_ptr<std::atomic<int64_t>> ns_;
};

/// Renews a grant every `interval` on its own thread and connection until
/// stopped. Renewal failures that are not a takeover (PostgreSQL
/// unreachable) are retried at the next interval; meanwhile the leases may
/// expire, and the store's fence then refuses writes until a renewal
/// succeeds. When a renewal finds the leases taken over, `deposed` runs
/// once on the keeper's thread with a one-line reason, and renewals stop.
/// `log` receives one line per change of renewal health.
class lease_keeper {
public:
  struct config {
    std::string conninfo;
    lease_grant grant;
    std::chrono::milliseconds ttl{5000};
    std::chrono::milliseconds interval{1000};
    std::function<void(const std::string&)> deposed;
    std::function<void(const std::string&)> log;
  };

  /// Starts renewing (the first renewal one interval from now).
  explicit lease_keeper(config cfg);
  /// Stops renewing without releasing (the leases expire one TTL later).
  ~lease_keeper();
  lease_keeper(const lease_keeper&) = delete;
  lease_keeper& operator=(const lease_keeper&) = delete;

  /// Stops renewing and releases the leases. Call once nothing writes
  /// under them any more.
  caf::error stop_and_release();

  /// renewal_clock::freshness for this keeper's TTL.
  std::function<bool()> freshness(std::chrono::milliseconds margin) const;

private:
  void run();
  void stop();

  config cfg_;
  renewal_clock clock_;
  std::mutex mx_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::thread thread_;
};

} // namespace drover::pg
