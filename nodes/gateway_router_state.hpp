#pragma once

// A gateway node's router (nodes/gateway_router.hpp): the router actor's
// state and its partition map — which coordinator owns which partition and
// where a request goes — shared by nodes/gateway_router.cpp (routing each
// request) and nodes/gateway_router_map.cpp (keeping the map). Internal to
// those.

#include "nodes/events_after.hpp"
#include "nodes/gateway_router.hpp"

#include "nodes/router_subscriptions.hpp"

#include <caf/fwd.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace drover::node::router_detail {

constexpr auto request_timeout = std::chrono::seconds{60};
constexpr auto map_timeout = std::chrono::seconds{5};
constexpr auto map_interval = std::chrono::seconds{1};
/// Sends of a write refused `not_owner`, in all.
constexpr int max_sends = 3;

struct router_state {
  /// By coordinator (the --coordinator list's order); null while not
  /// joined.
  std::vector<api_actor> apis;
  /// By coordinator: the node-protocol version it speaks (what its API
  /// serves: nodes/events_after.hpp).
  std::vector<uint32_t> protocols;
  /// Whole-log reads in flight towards the older ones.
  std::shared_ptr<whole_log_reads> whole_logs
      = std::make_shared<whole_log_reads>();
  /// How many partitions each owns (its last answer).
  std::vector<size_t> owned;
  /// By partition: its owner's index, -1 = not known.
  std::vector<int> owner;
  int32_t count = 0;
  size_t turn = 0;
  bool refreshing = false;
  std::vector<std::function<void()>> after_refresh;
  bool warned_bad_map = false;
  /// By coordinator: what each request in flight there does if the
  /// coordinator is lost before it answers (a lost remote actor fails no
  /// pending request by itself).
  std::vector<std::map<uint64_t, std::function<void()>>> inflight;
  uint64_t next_request = 0;
  /// Progress subscriptions, each kept at its partition's owner.
  router_subscriptions subs;
  /// By coordinator: the address it is joined at (--coordinator).
  std::vector<std::string> addresses;

  router_view view() const {
    return {apis, owner};
  }
};

using state_ptr = std::shared_ptr<router_state>;
using self_ptr = api_router_actor::pointer;

/// Coordinator `i` is gone: nothing more goes there, and what is in flight
/// there is answered.
void lose(router_state& st, size_t i);

/// Asks every joined coordinator for its partitions; `then` runs once all
/// answered (or failed).
void refresh(self_ptr self, const state_ptr& st, std::function<void()> then);

/// Where a request about partition `p` goes (-1: anywhere): its owner if
/// known, else the coordinators that own partitions, in turn (any joined
/// one if none is known to own any).
int pick(router_state& st, int32_t p);

} // namespace drover::node::router_detail
