#pragma once

// The node API: one stable actor per coordinator that its HTTP gateway and
// client door, and gateway nodes over CAF's network layer, talk to.
// It outlives restarts of the job system and forwards each request to the
// part that currently serves it, so a client's handle never goes stale.
//
// Protocol: runtime/api_protocol.hpp (api_actor). Each request is checked
// here (ids, reasons, queries; submissions by the queue) and forwarded with
// `delegate` to the part that serves it (the answer comes from the part):
// submissions, cancels, the DLQ, stats, partitions and flow control to the
// queue; ping, events and lists to the store; get to the store, with the
// publisher's live progress or the queue's reason for waiting; progress
// subscriptions to the publisher; describe to the supervision tree's root
// (+ the worker nodes, as child "cluster"); nodes to the cluster endpoint,
// the store's coordinators view and the queue.
// While a part is restarting, requests fail with `errc::unavailable`.

#include "actors/cluster_endpoint.hpp"
#include "actors/job_system.hpp"
#include "runtime/api_protocol.hpp"
#include "runtime/supervisor.hpp"

#include <caf/actor.hpp>
#include <caf/fwd.hpp>

#include <memory>

namespace drover {

/// `cluster`: the coordinator's cluster endpoint (actors/cluster_endpoint.hpp)
/// when worker nodes may join; the tree then includes every worker node and
/// (nodes_atom) lists them. Null on an all-in-one node.
api_actor spawn_api(caf::actor_system& sys,
                    std::shared_ptr<const job_system_handles> handles,
                    supervisor_actor root, cluster_endpoint_local cluster = {});

} // namespace drover
