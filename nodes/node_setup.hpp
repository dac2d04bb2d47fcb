#pragma once

// What a node's configuration means for its parts, as drover-node sets
// them up: roles, the gateway's settings, exec's policy, and the port check
// that runs before a coordinator touches its database.

#include "actors/job_system.hpp"
#include "gateway/gateway.hpp"
#include "runtime/config.hpp"
#include "runtime/exec_policy.hpp"
#include "runtime/partition_epochs.hpp"
#include "runtime/pg_lease.hpp"
#include "runtime/pg_share.hpp"

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include <atomic>
#include <csignal>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <variant>

namespace drover::node {

/// Whether the node plays `role` ("coordinator", "worker" or "gateway").
bool has_role(const node_config& cfg, const std::string& role);

/// How long a sharing coordinator keeps a worker node's report of an
/// attempt in a partition it does not own (yet) waiting before it refuses
/// it (queue_options::adopt_wait): a dead coordinator's partitions are
/// taken about a lease TTL after its death, and a renewal interval or two.
/// Zero without --share-partitions (nothing waits).
std::chrono::milliseconds adopt_wait_of(const node_config& cfg);

/// The gateway's settings from the node config; bad API keys are
/// errc::bad_config.
caf::expected<http::gateway_config> gateway_config_of(const node_config& cfg);

/// Development mode for exec: no API keys and every listener on loopback.
bool exec_development_mode(const node_config& cfg);

/// What exec jobs may run on this node (runtime/exec_policy.hpp); a bad
/// --exec-allow entry is errc::bad_config.
caf::expected<exec_policy> exec_policy_of(const node_config& cfg);

/// Binds host:port and lets it go again, so that a port another process
/// holds is found before the node migrates or takes its leases: a node that
/// cannot start changes nothing in the database. Port 0 always passes.
caf::error check_port(const std::string& host, uint16_t port,
                      const char* option);

/// Takes the coordinator's partition leases (pg::claim_coordinator); with
/// --standby, waits while their holder renews them and while PostgreSQL is
/// unreachable, until one of `signals` arrives. Logs what happened. The
/// grant, or the code the node exits with: 0 (stopped while standing by),
/// 1 (PostgreSQL unreachable, or the leases could not be taken), 2 (another
/// coordinator holds them).
std::variant<pg::lease_grant, int> claim_leases(const node_config& cfg,
                                                const sigset_t& signals);

/// The coordinator's hold on its database (store postgres): the partition
/// leases, renewed by `keeper` from start-up until the tree has stopped.
/// Released on every way out of run() (orderly or not); a write or a
/// renewal that finds them taken over ends the process (exit 3).
struct coordinator_claim {
  std::unique_ptr<pg::lease_keeper> keeper;
  /// --share-partitions: the share keeper instead (started once the tree
  /// runs, node_share.hpp), and the database's partition count.
  std::unique_ptr<pg::share_keeper> share;
  int32_t partition_count = 0;
  /// --keep-share-on-stop: release(true) (an orderly stop) stops the
  /// share keeper without releasing its rows or leaving the members.
  bool keep_share = false;
  std::shared_ptr<const pg::write_fence> fence;
  /// The epochs of the partitions held (and held before): what leases to
  /// worker nodes are stamped with (runtime/partition_epochs.hpp).
  std::shared_ptr<partition_epochs> epochs
      = std::make_shared<partition_epochs>();
  /// Set while releasing: the store's last writes, refused by the fence
  /// then, are no takeover.
  std::shared_ptr<std::atomic<bool>> leaving
      = std::make_shared<std::atomic<bool>>(false);

  /// Stops renewing and releases the leases (a share kept on an orderly
  /// stop: only stops; any other exit releases it, so a node failing at
  /// start or crashing out of its tree holds nothing nobody serves); logs
  /// a failure.
  void release(bool orderly = false);
  ~coordinator_claim() {
    release();
  }
};

/// Ends the process when another coordinator has taken the leases: this
/// one must neither write nor dispatch any more (exit 3, at once).
std::function<void(const std::string&)>
deposed_exit(std::shared_ptr<std::atomic<bool>> leaving);

/// Takes the leases (claim_leases) and starts renewing them into `claim`;
/// the code to exit with if the node must not go on.
std::optional<int> hold_leases(const node_config& cfg, const sigset_t& signals,
                               coordinator_claim& claim);

/// A coordinator on PostgreSQL: the store's settings and the queue's
/// partitions and self-fencing from the claim (all partitions held by
/// `claim.keeper`, or a share that comes and goes with `claim.share`).
void use_postgres(const node_config& cfg, const coordinator_claim& claim,
                  job_system_config& jobs);

} // namespace drover::node
