#pragma once

// Several active coordinators on one database (issue 13, docs/cluster.md
// "Several active coordinators"): each owns a share of the partitions
// through the lease rows of runtime/pg_lease.hpp, and the shares follow the
// coordinators that run.
//
// A coordinator started with --share-partitions announces itself in
// drover.coordinators as sharing (shares = true) and runs a share_keeper:
// every renewal interval, on a thread and connection of its own, it
//   1. announces itself (its heartbeat) and renews the leases it holds;
//      a lease found taken over (this process was paused or cut off past
//      its TTL) is dropped like a hand-off, without releasing the row
//      (only if that fails does it end the process, `deposed`);
//   2. reads the sharing coordinators heard from within one lease TTL and
//      computes every one's share (rendezvous_shares, runtime/partition.hpp)
//      — all of them compute the same;
//   3. hands over what it holds beyond its share: the node first drops the
//      partitions (`releasing`: the queue lets go of their jobs, the store
//      writes nothing more for them), then the rows are released (owner
//      NULL, expired now), so their new owner takes them at its next round
//      — a hand-off, no TTL to wait;
//   4. takes what its share holds that nobody holds unexpired (epoch + 1;
//      a dead coordinator's rows once they expire) and gives them to the
//      node (`acquired`: the store's fence first, then the queue, which
//      recovers them).
// Partitions whose rendezvous owner is another live member are never
// taken; ones whose owner died are taken once the owner drops out of the
// members (its heartbeat older than a TTL) and its rows expire: one TTL
// and at most a renewal interval after it stopped.
//
// Blocking: the keeper's thread only.

#include "runtime/pg_lease.hpp"

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

/// The number of partitions of this database (drover.partitioning).
caf::expected<int32_t> partition_count(session& db);

/// The instance ids of the sharing coordinators heard from within `stale`
/// (server clock), ascending.
caf::expected<std::vector<std::string>>
sharing_members(session& db, std::chrono::milliseconds stale);

/// An unexpired lease held by a coordinator that does not share the
/// partitions (started without --share-partitions: it takes all of them
/// and hands none over), if any: a sharing coordinator must not start next
/// to it — it would wait for its share for ever.
caf::expected<std::optional<lease_holder>> exclusive_holder(session& db);

/// Takes those of `wanted` that nobody holds unexpired, for `ttl`, each
/// with epoch + 1 (one statement); the grant of what was taken (possibly
/// nothing). Rows locked by another transaction are skipped (taken at a
/// later round).
caf::expected<lease_grant> take_free(session& db, const lease_owner& owner,
                                     const std::vector<int32_t>& wanted,
                                     std::chrono::milliseconds ttl);

/// `grant` restricted to (`keep` true) or without (`keep` false) the
/// partitions in `which` (ascending).
lease_grant subset(const lease_grant& grant, const std::vector<int32_t>& which,
                   bool keep);

class share_keeper {
public:
  struct config {
    std::string conninfo;
    lease_owner owner;
    std::chrono::milliseconds ttl{5000};
    std::chrono::milliseconds interval{1000};
    /// A held lease was taken over and the node could not drop it
    /// (hooks::releasing failed): called once, the rounds stop. (One it
    /// could drop is dropped, and the rounds go on.)
    std::function<void(const std::string&)> deposed;
    /// One line per change of health, hand-off or take.
    std::function<void(const std::string&)> log;
  };

  /// What the node does when its share changes (on the keeper's thread).
  struct hooks {
    /// The node took `added` (`held`: everything it holds now, with
    /// epochs): returns true once the store and the queue know; false if
    /// they could not be told (the leases taken are released again).
    std::function<bool(const lease_grant& held,
                       const std::vector<int32_t>& added)>
        acquired;
    /// The node must drop `gone` (`held`: what stays): returns true once
    /// nothing more is written for them; false if that could not be made
    /// sure (they are kept, and tried again the next round).
    std::function<bool(const lease_grant& held,
                       const std::vector<int32_t>& gone)>
        releasing;
  };

  explicit share_keeper(config cfg);
  /// Stops without releasing (the leases expire one TTL later).
  ~share_keeper();
  share_keeper(const share_keeper&) = delete;
  share_keeper& operator=(const share_keeper&) = delete;

  /// Starts the rounds (the first at once).
  void start(hooks h);

  /// Stops the rounds, releases every lease held and leaves
  /// drover.coordinators. Call once nothing writes under them any more.
  caf::error stop_and_release();

  /// As lease_keeper::freshness: whether the leases held were renewed (or
  /// taken) less than TTL - margin ago by this process's monotonic clock.
  std::function<bool()> freshness(std::chrono::milliseconds margin) const;

  /// Runs the next round now (a write found a lease taken over: the round
  /// drops it without waiting for the interval).
  void poke();

  /// What is held now (a copy).
  lease_grant held() const;

private:
  void run();
  void round(std::unique_ptr<session>& db, bool& healthy);
  bool renew_held(session& db, caf::error& err);
  void set_held(lease_grant g);
  void stop();

  config cfg_;
  hooks hooks_;
  int32_t count_ = 0;
  renewal_clock clock_;
  mutable std::mutex mx_;
  std::condition_variable cv_;
  bool stopping_ = false;
  bool deposed_ = false;
  bool poked_ = false;
  /// Whether the node's store and queue took the last change in full
  /// (keeper thread only).
  bool in_sync_ = true;
  lease_grant held_;
  std::thread thread_;
};

} // namespace drover::pg
