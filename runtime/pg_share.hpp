#pragma once

// Several active coordinators on one database (issue 13, docs/cluster.md
// "Several active coordinators"): each owns a share of the partitions
// through the lease rows of runtime/pg_lease.hpp, and the shares follow the
// coordinators that run.
//
// A coordinator started with --share-partitions announces itself in
// drover.coordinators as sharing (shares = true) and runs a share_keeper:
// two threads, each with a connection of its own.
//
// The renewer, every renewal interval, does nothing but renew: it renews
// the leases held (one statement) and, when all of them were renewed,
// marks them fresh (freshness(), what the queue consults before it
// dispatches). A lease it finds taken over (this process was paused or cut
// off past its TTL) is handed to the keeper to drop. Nothing the keeper
// does (the node's hooks, several statements on a busy PostgreSQL) can
// keep a renewal back.
//
// The keeper, every renewal interval (or at once when the renewer found a
// lease taken over):
//   1. drops the leases taken over like a hand-off, without releasing the
//      rows (only if that fails does it end the process, `deposed`);
//   2. announces itself (its heartbeat), reads the sharing coordinators
//      heard from within one lease TTL and computes every one's share
//      (rendezvous_shares, runtime/partition.hpp) — all of them compute
//      the same;
//   3. hands over what it holds beyond its share: the node first drops the
//      partitions (`releasing`: the queue lets go of their jobs, the store
//      writes nothing more for them), then the rows are released (owner
//      NULL, expired now), so their new owner takes them at its next round
//      — a hand-off, no TTL to wait;
//   4. takes what its share holds that nobody holds unexpired (epoch + 1;
//      a dead coordinator's rows once they expire) and gives them to the
//      node (`acquired`: the store's fence first, then the queue, which
//      recovers them); the renewer renews them from its next round on.
// Partitions whose rendezvous owner is another live member are never
// taken; ones whose owner died are taken once the owner drops out of the
// members (its heartbeat older than a TTL) and its rows expire: one TTL
// and at most a renewal interval after it stopped.
//
// Members are node ids (share_keys): a coordinator restarted under its node
// id while its dead predecessor's heartbeat is still fresh is the same
// member, so nobody else's share changes; it takes its predecessor's rows
// as they expire. An instance that sees a newer one of its node id (it was
// paused and replaced meanwhile, or a second process runs under its node
// id) hands over everything it holds and stops taking (`replaced`).
//
// Blocking: the renewer's and the keeper's threads only; the hooks run on
// the keeper's.

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
#include <utility>
#include <vector>

namespace drover::pg {

/// The number of partitions of this database (drover.partitioning).
caf::expected<int32_t> partition_count(session& db);

/// A sharing coordinator heard from within the stale window.
struct sharing_member {
  std::string instance;
  std::string node_id;
  /// It announced its node id as its share key (schema version 10 and
  /// later binaries); false: an older binary, which computes the shares
  /// over instance ids.
  bool keyed = false;
  /// When its row was first announced (server clock, microseconds).
  int64_t started_us = 0;
  /// What it shares by (share_key): its node id; empty if not keyed.
  std::string key;
};

/// Another process that runs as a sharing coordinator under `me`'s node id,
/// if any: an instance of it heard from within its own lease TTL (`ttl` if
/// it announced none) whose heartbeat moves on within `patience`, or half
/// its own lease TTL if that is longer (it renews more often than that). A
/// row not heard from for that long (a crash, or a pause: a paused one that
/// wakes finds this one newer and stands down) does not count, nor one
/// whose pid is gone in this process's space (same boot id and pid
/// namespace: lease_owner::process_space). Blocks up to the longest of
/// those patiences.
caf::expected<std::optional<sharing_member>>
live_twin(session& db, const lease_owner& me, std::chrono::milliseconds ttl,
          std::chrono::milliseconds patience);

/// The sharing coordinators heard from within their own lease TTL (as
/// announced, held to --lease-ttl-ms's range [500 ms, 600 s]; `stale` for a
/// row without one: an older binary's), by the server's clock.
caf::expected<std::vector<sharing_member>>
sharing_members(session& db, std::chrono::milliseconds stale);

/// The sharing coordinators heard from (within their own lease TTL) whose
/// announced lease TTL is not `ttl`, as "node-id=ms, ..." (empty if none):
/// what a coordinator starting with `ttl` warns of (docs/operations.md:
/// the same --lease-ttl-ms on all of them).
caf::expected<std::string> other_lease_ttls(session& db, const lease_owner& me,
                                            std::chrono::milliseconds ttl);

/// What `me` computes its share over, from `members` (sharing_members).
struct share_view {
  /// The keys the shares are computed over (rendezvous_shares), ascending,
  /// each once: the members' node ids, so that a coordinator restarted
  /// under its node id takes its predecessor's place (the others' shares do
  /// not change while the dead instance's heartbeat is still fresh); the
  /// instance ids instead while an older binary (not keyed) is a member, so
  /// that every member computes the same.
  std::vector<std::string> keys;
  /// Where `me`'s key is in `keys`; none while its own announcement is not
  /// among the members (not visible yet).
  std::optional<size_t> mine;
  /// A member started after `me` under the same node id (ties broken by the
  /// instance id): `me` was replaced and must hand over what it holds.
  std::optional<sharing_member> newer_twin;
};

share_view share_keys(const std::vector<sharing_member>& members,
                      const lease_owner& me);

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
    /// (hooks::releasing failed): called once, on the keeper's thread;
    /// both threads stop. (One it could drop is dropped, and they go on.)
    std::function<void(const std::string&)> deposed;
    /// A newer coordinator started under the same node id (a restart while
    /// this process was paused or cut off, or a second process given the
    /// same --node-id): everything held was handed over; called once, on
    /// the keeper's thread, and the keeper takes nothing more.
    std::function<void(const std::string&)> replaced;
    /// One line per change of health (each thread its own), hand-off or
    /// take; called from both threads.
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
  /// Stops both threads without releasing (the leases expire one TTL
  /// later).
  ~share_keeper();
  share_keeper(const share_keeper&) = delete;
  share_keeper& operator=(const share_keeper&) = delete;

  /// Starts the keeper's rounds (the first at once) and the renewals (the
  /// first one interval later: nothing is held before the first round).
  void start(hooks h);

  /// The lease TTL it takes and renews with.
  std::chrono::milliseconds ttl() const {
    return cfg_.ttl;
  }

  /// Stops both threads, releases every lease held and leaves
  /// drover.coordinators. Call once nothing writes under them any more.
  caf::error stop_and_release();

  /// As lease_keeper::freshness: whether every lease held now was renewed
  /// (or taken) less than TTL - margin ago by this process's monotonic
  /// clock. Never true for a lease found taken over and not dropped yet.
  std::function<bool()> freshness(std::chrono::milliseconds margin) const;

  /// Renews now (a write found a lease taken over: the renewal finds which
  /// and the keeper drops it at once, without waiting for the interval).
  void poke();

  /// What is held now (a copy).
  lease_grant held() const;

private:
  using stamp_ns = int64_t;

  void run();
  void round(std::unique_ptr<session>& db, bool& healthy);
  bool drop_lost();
  void step_down(session& db, const sharing_member& twin);
  /// Drops `which` (of `held`): the node first (hooks::releasing), then the
  /// rows are released so their next owner takes them without a TTL's
  /// wait. False (nothing changed, in_sync_ cleared) if the node could not
  /// drop them. `say_done`: log the hand-off.
  bool hand_over(session& db, const lease_grant& held,
                 const std::vector<int32_t>& which, bool say_done);
  void renew_loop();
  void renew_once(std::unique_ptr<session>& db, bool& healthy);
  void add_held(lease_grant g, stamp_ns take_sent);
  void set_held(lease_grant g);
  void stamp_locked(stamp_ns sent);
  void stop();

  config cfg_;
  hooks hooks_;
  int32_t count_ = 0;
  renewal_clock clock_;
  mutable std::mutex mx_;
  /// The keeper waits on cv_, the renewer on renew_cv_.
  std::condition_variable cv_;
  std::condition_variable renew_cv_;
  bool stopping_ = false;
  bool deposed_ = false;
  /// A newer instance of this node id was seen (keeper thread only).
  bool replaced_ = false;
  /// This instance's started_at (announce_row; keeper thread only).
  int64_t started_us_ = 0;
  bool poked_ = false;
  bool renew_now_ = false;
  /// Whether the node's store and queue took the last change in full
  /// (keeper thread only).
  bool in_sync_ = true;
  /// Changed by the keeper's thread only (under mx_); read by both.
  lease_grant held_;
  /// Leases (partition, epoch) the renewer found taken over while still
  /// held: the keeper's next round drops them.
  std::vector<std::pair<int32_t, int64_t>> lost_;
  /// What clock_ was last given (under mx_).
  stamp_ns stamped_ = 0;
  /// The earliest send time of a take added to held_ since the renewer
  /// took its snapshot (under mx_; INT64_MAX: none).
  stamp_ns taken_since_snapshot_ = 0;
  std::thread thread_;
  std::thread renewer_;
};

} // namespace drover::pg
