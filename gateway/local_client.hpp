#pragma once

// The client API (include/drover/client.hpp) for a program that embeds a
// node's job system (examples, tests, tools): the same class, the same
// calls and answers as over the network, and the same key checks: its
// requests go through a client door and a node API of their own, spawned
// in the embedding program's actor system (never published), with no
// network in between.
//
//   auto c = drover::local_client(sys, handles, root);
//   auto sub = (*c)->submit(req);
//   auto done = (*c)->wait(sub->job.job_id, 60s, on_progress);
//
// The door and its API stop when the client is destroyed; the job system
// is the caller's.

#include "actors/job_system.hpp"
#include "drover/client.hpp"
#include "gateway/client_door.hpp"
#include "runtime/supervisor.hpp"

#include <caf/expected.hpp>
#include <caf/fwd.hpp>

#include <memory>

namespace drover {

/// `root`: the supervision tree's root, for describe (null: the tree is
/// unavailable). `door`: its keys (none: development mode, any tenant),
/// rates and limits; `in_process` is set here. `opts.nodes` must be empty.
caf::expected<std::unique_ptr<client>>
local_client(caf::actor_system& sys,
             std::shared_ptr<const job_system_handles> handles,
             supervisor_actor root = {}, client_options opts = {},
             client_door_config door = {});

} // namespace drover
