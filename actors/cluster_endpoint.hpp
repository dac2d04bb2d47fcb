#pragma once

// The coordinator's cluster port (docs/cluster.md): worker and gateway
// nodes join here. Published with CAF's middleman on --cluster-port.
//
// Joining is a two-step handshake (runtime/cluster_protocol.hpp): a hello
// whose protocol range must meet this build's (else refused, on both
// sides, naming both ranges), answered with a one-time challenge; then a
// join carrying HMAC(join secret, role, node id, challenge)
// (runtime/join_proof.hpp). A wrong, replayed or missing proof is refused
// and logged. Without a join secret (development mode, loopback only) any
// node may join and the coordinator says so at start.
//
// A worker's join creates (or, when the node comes back, reuses) its node
// link (actors/node_link.hpp); a gateway's join returns the node API actor.
// The endpoint also answers the admin views: the worker nodes' subtrees and
// the node list.

#include "actors/job_system.hpp"
#include "runtime/api_protocol.hpp"
#include "runtime/cluster_protocol.hpp"
#include "runtime/partition_epochs.hpp"
#include "runtime/tree.hpp"

#include <caf/actor.hpp>
#include <caf/fwd.hpp>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>

namespace drover {

using cluster_endpoint_local = cluster_endpoint_actor::extend<
    caf::replies_to<describe_atom>::with<tree_node>,
    caf::replies_to<nodes_atom>::with<std::string>>;

struct cluster_endpoint_config {
  std::string coordinator_id;
  /// What worker nodes prove; empty (and no gateway secret) = any node
  /// may join (development mode; loopback only).
  std::string join_secret;
  /// What gateway nodes prove; empty with a join_secret = no gateway may
  /// join.
  std::string gateway_join_secret;
  std::shared_ptr<job_system_handles> handles;
  /// The partition epochs leases are stamped with; null = none.
  std::shared_ptr<const partition_epochs> epochs;
  /// What a gateway's join returns (set before the port opens).
  std::shared_ptr<const api_actor> api;
  std::chrono::milliseconds lease_ttl{2000};
  std::map<std::string, std::chrono::milliseconds> lease_ttl_by_type;
  std::chrono::milliseconds heartbeat_interval{500};
  /// How long the queue may keep an adoption waiting for its partition
  /// (queue_options::adopt_wait): a link asks for adoptions at least that
  /// long (node_link_config::adoption_wait).
  std::chrono::milliseconds adopt_wait{0};
  std::function<int64_t()> clock_ms;
};

cluster_endpoint_local spawn_cluster_endpoint(caf::actor_system& sys,
                                              cluster_endpoint_config cfg);

} // namespace drover
