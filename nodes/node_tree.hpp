#pragma once

// The supervision tree a drover-node starts (nodes/node_main.cpp), built from
// its config and roles: the job types it runs (built-in, its program's own,
// and those it accepts for worker nodes), checked against the config, and
// the children under its root supervisor.

#include "actors/job_system.hpp"
#include "drover/worker.hpp"
#include "gateway/webhook_dispatcher.hpp"
#include "nodes/node_roles.hpp"
#include "nodes/node_setup.hpp"
#include "runtime/config.hpp"
#include "runtime/supervisor.hpp"

#include <caf/expected.hpp>

#include <memory>

namespace drover::node {

/// The node's supervision tree, by role: a coordinator's job system (with
/// its own workers when it has the worker role) and webhook dispatcher, or
/// a worker node's agent and workers; a gateway-only node has none.
caf::expected<drover::supervisor_spec>
node_tree(const drover::node_config& cfg, const drover::node_program& program,
          std::shared_ptr<drover::job_system_handles> handles,
          const coordinator_claim& claim,
          std::shared_ptr<drover::node::worker_shared> worker,
          std::shared_ptr<drover::webhook_dispatcher_slot> webhooks_running);

} // namespace drover::node
