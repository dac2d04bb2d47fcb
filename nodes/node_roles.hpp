#pragma once

// The parts of drover-node that depend on its roles (docs/cluster.md):
// the worker node's subtree (its agent and local workers), a gateway
// node's join, and the coordinator's cluster port.

#include "actors/cluster_endpoint.hpp"
#include "actors/job_system.hpp"
#include "actors/worker_agent.hpp"
#include "nodes/gateway_router.hpp"
#include "runtime/api_protocol.hpp"
#include "runtime/config.hpp"
#include "runtime/partition_epochs.hpp"
#include "runtime/supervisor.hpp"
#include "runtime/task.hpp"

#include <caf/actor.hpp>
#include <caf/expected.hpp>
#include <caf/fwd.hpp>

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

namespace drover::node {

/// What the signal thread and the agents share on a worker node: one agent
/// per coordinator it joins (one, unless --share-partitions), each with its
/// own share of the slots (slot_shares, runtime/partition.hpp).
struct worker_shared {
  std::mutex mx;
  std::condition_variable cv;
  /// By share; null where the share has no slots or its agent is not
  /// (yet) running.
  std::vector<worker_agent_local> agents;
  /// Which shares' agents finished their drain (as `agents`).
  std::vector<bool> drained_shares;
  /// Every agent finished its drain.
  bool drained = false;
  /// A coordinator refused this node for good: exit 2.
  bool fatal = false;
  /// Each agent's counters, kept across its restarts (set with the
  /// agents' specs, before they start).
  std::vector<std::shared_ptr<worker_counters>> counters;
  /// The newest partition epoch leases came with, over all agents: a
  /// lease from a deposed coordinator is refused whichever agent gets it.
  std::shared_ptr<partition_epochs> epochs
      = std::make_shared<partition_epochs>();
  /// Attempts one agent's coordinator handed over, offered by the others
  /// (actors/handover_board.hpp).
  std::shared_ptr<handover_board> handovers
      = std::make_shared<handover_board>();

  std::vector<worker_agent_local> current_agents() {
    std::lock_guard<std::mutex> guard{mx};
    std::vector<worker_agent_local> out;
    for (const auto& a : agents)
      if (a)
        out.push_back(a);
    return out;
  }

  worker_agent_local agent_of(size_t share) {
    std::lock_guard<std::mutex> guard{mx};
    return share < agents.size() ? agents[share] : worker_agent_local{};
  }
};

/// Loads --tls-certificate, --tls-key and --tls-ca once at start (CAF's
/// OpenSSL module would only fail later, on a connection): errc::bad_config
/// naming the file.
caf::error check_tls(const node_config& cfg);

/// The worker node's subtree: "worker" (one_for_all) with the agent, then
/// the local workers (one per slot) that run what it is leased. With
/// --share-partitions, "worker" (one_for_one) holds one such subtree per
/// coordinator ("share-1", ...), each an agent that joins its coordinator
/// first (the others after a failure: it re-reports its running attempts
/// to a survivor, which adopts those of the partitions it takes over) as
/// node "<node-id>.c<n>" with its share of the slots.
child_spec worker_node_child(const node_config& cfg,
                             std::shared_ptr<const handler_registry> handlers,
                             std::shared_ptr<worker_shared> shared);

/// A coordinator a gateway node joined: its node API, and the node-protocol
/// version the hello settled on (runtime/cluster_protocol.hpp), which says
/// what that API serves (nodes/events_after.hpp). Default: none.
struct joined_coordinator {
  api_actor api;
  uint32_t protocol = 0;
};

/// One attempt to join `target` as a gateway: its node API and version;
/// errc::forbidden if it refused this node, errc::unavailable (or CAF's
/// error) if it could not be reached or did not answer within `timeout`
/// (each of its two requests).
caf::expected<joined_coordinator>
join_gateway_at(caf::actor_system& sys, const node_config& cfg,
                const coordinator_address& target,
                std::chrono::milliseconds timeout = std::chrono::seconds{10});

/// Joins a coordinator of cfg.coordinators (in turn) as a gateway and
/// returns its node API actor and version. Retries an unreachable
/// coordinator for up to `patience`; a refusal is errc::forbidden.
caf::expected<joined_coordinator>
join_as_gateway(caf::actor_system& sys, const node_config& cfg,
                std::chrono::milliseconds patience);

/// A gateway node's stand-in for its coordinator's node API: the HTTP
/// gateway holds the relay, and the relay forwards each request to the API
/// it was last given (the response goes straight back to the requester).
/// After a failover the node joins the next coordinator and sets its API
/// here, so the gateway keeps serving; while there is none, requests fail
/// with errc::unavailable. It is a router with one coordinator (the same
/// interface: set() is its router_set_atom).
class api_relay {
public:
  explicit api_relay(caf::actor_system& sys);
  /// Stops the relay actor (its once-a-second tick would keep it alive).
  ~api_relay();
  api_relay(const api_relay&) = delete;
  api_relay& operator=(const api_relay&) = delete;

  api_actor handle() const {
    return relay_;
  }

  /// The API requests go to from now on, and the node-protocol version
  /// it speaks; a null API = none. Progress subscriptions made through the
  /// relay are made again there (and their subscribers told to read the
  /// log: router_subscriptions).
  void set(joined_coordinator coordinator);

private:
  api_router_actor relay_;
};

/// Spawns the cluster endpoint, lets `make_api` spawn the node API with it
/// (gateways that join get that API), then opens the cluster port. Leases
/// to worker nodes carry the partition epochs from `epochs`.
struct cluster_port {
  caf::actor endpoint;
  api_actor api;
  uint16_t port = 0;
};
caf::expected<cluster_port> open_cluster_port(
    caf::actor_system& sys, const node_config& cfg,
    std::shared_ptr<job_system_handles> handles,
    std::shared_ptr<const partition_epochs> epochs,
    const std::function<api_actor(cluster_endpoint_local)>& make_api);

} // namespace drover::node
