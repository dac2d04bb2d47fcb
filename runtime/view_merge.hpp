#pragma once

// One admin view from the coordinators that share the partitions: a sharing
// gateway node (nodes/gateway_router.hpp) asks every coordinator it joined
// for its nodes view (GET /api/admin/nodes) or flow view (GET
// /api/admin/flow, and the flow figures of the gateway node's /metrics) and
// answers with these merges, instead of one coordinator's view in turn
// (which made consecutive reads, and Prometheus counters, jump between
// coordinators). The parts come from other nodes: one that is not the JSON
// object its view is makes the merge fail (nullopt), it is never guessed.

#include <optional>
#include <string>
#include <vector>

namespace drover {

/// One coordinator's answer to a view, with the address the gateway
/// joined it at.
struct view_part {
  std::string coordinator;
  std::string json;
};

/// The nodes view of all `parts` ({"nodes", "coordinators",
/// "waiting_without_worker"}, actors/api.cpp): every part's nodes, each
/// with a "coordinator" member naming the part's (a worker node shows once
/// per coordinator it joined: one agent each); the coordinators of the
/// database from the first part that has them (the same table for all);
/// the jobs waiting without a worker added up per resource class, job type
/// and resources (each coordinator counts its own partitions').
std::optional<std::string>
merge_nodes_views(const std::vector<view_part>& parts);

/// The flow view of all `parts` ({"rate_limits", "breakers"[,
/// "control_log"][, "resource_pools"]}, flow_control::to_json): per rate
/// limit key, the declared rate and burst, and the shares, tokens, grants
/// and waiting jobs added up (each coordinator keeps its share of the
/// rate); per breaker key, the worst state (open, then half-open), each
/// coordinator's in "states", the most failures in a row, and window
/// figures, probes running, times opened and waiting jobs added up; the
/// control log from the first part that has one (one log for all); per
/// worker node's pool, its total and what every coordinator's attempts hold
/// of it added up.
std::optional<std::string>
merge_flow_views(const std::vector<view_part>& parts);

/// `merged` (a merged view's JSON object) with an "unreached_coordinators"
/// member: the addresses of the gateway's coordinators that are in none of
/// its parts (not joined at the moment), so that a view missing some is
/// never taken for the whole (empty when none is missing).
std::string with_unreached(std::string merged,
                           const std::vector<std::string>& unreached);

} // namespace drover
