#pragma once

// A gateway node in front of coordinators that share the partitions
// (--share-partitions on a gateway node; docs/cluster.md "Gateways of
// sharing coordinators"). It joins every coordinator of its --coordinator
// list (each again after a loss, in the background) and the HTTP gateway
// talks to one router actor, which sends each request to the coordinator
// that owns the partition it is about:
//
// - a job id's partition (get, events, cancel, DLQ retry and purge of one
//   job), a keyed submit's (partition_of_key of its tenant and idempotency
//   key): its owner by the partition map;
// - progress subscriptions: the owner too, and again at each new owner
//   when the partition moves (nodes/router_subscriptions.hpp);
// - keyless submits: the coordinators that own partitions, in turn;
// - a batch: split by owner (its keyless items together), the answers put
//   back in order;
// - DLQ retry and purge of all jobs: every coordinator, the counts added;
// - a rate limit or breaker set at run time: the owner of its key's
//   partition (which writes it to the control log);
// - the queue figures, the tree and the nodes and flow views: every
//   coordinator, added up (the figures), each under one root (the tree) or
//   merged (the views, runtime/view_merge.hpp); one's error is the answer;
// - the rest (lists, which read PostgreSQL; readiness probes): the next
//   coordinator in turn.
//
// The partition map comes from the coordinators themselves: each answers
// (partitions_atom) with what its queue owns. The router asks every second
// and after a `not_owner` answer; a write refused `not_owner` (nothing was
// created) is sent again to the owner it then finds, at most three times
// in all, so a change of owner is a short delay. While a partition has no
// owner (its coordinator died and the survivors have not taken it yet)
// its writes are answered `not_owner` or `unavailable` (HTTP 503 with
// Retry-After); reads are served by any coordinator.

#include "runtime/api_protocol.hpp"
#include "runtime/config.hpp"
#include "runtime/partition_map.hpp"

#include <caf/actor.hpp>
#include <caf/atom.hpp>
#include <caf/error.hpp>
#include <caf/fwd.hpp>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string_view>
#include <thread>
#include <vector>

namespace drover::node {

/// A joiner -> the router: coordinator `index`'s API (null: lost) and the
/// node-protocol version it speaks.
using router_set_atom = caf::atom_constant<caf::atom("rtr_set")>;
/// The router's own timer: ask for the partition map.
using router_tick_atom = caf::atom_constant<caf::atom("rtr_tick")>;
/// Progress subscriptions that failed are due to be made again
/// (nodes/router_subscriptions.hpp arms it).
using router_retry_atom = caf::atom_constant<caf::atom("rtr_retry")>;

/// The node API's interface, and what the router's joiners and timer tell
/// it.
using api_router_actor = api_actor::extend<
    caf::reacts_to<router_set_atom, uint64_t, api_actor, uint32_t>,
    caf::reacts_to<router_tick_atom>, caf::reacts_to<router_retry_atom>>;

class api_router {
public:
  api_router(caf::actor_system& sys, const node_config& cfg);
  /// Stops the joiners and the router.
  ~api_router();
  api_router(const api_router&) = delete;
  api_router& operator=(const api_router&) = delete;

  api_actor handle() const {
    return router_;
  }

  /// Starts joining every coordinator (and again after each loss) and
  /// waits up to `patience` until one of them joined: errc::forbidden if a
  /// coordinator refused this node (wrong secret), errc::unavailable if
  /// none could be joined in time.
  caf::error start(std::chrono::milliseconds patience);

private:
  void join_loop(size_t index);

  caf::actor_system& sys_;
  node_config cfg_;
  api_router_actor router_;
  std::vector<std::thread> joiners_;
  /// What the joiners and start()/the destructor share (mx_): stopping,
  /// how many joins succeeded, whether one was refused for good, and each
  /// joiner's watcher (woken by a message when the node stops).
  std::mutex mx_;
  std::condition_variable cv_;
  bool stopping_ = false;
  int joined_ = 0;
  bool refused_ = false;
  std::vector<caf::actor> watchers_;
};

} // namespace drover::node
