#pragma once

// A worker node's metrics endpoint (--metrics-port; docs/operations.md,
// "Metrics of a worker node"): GET /metrics answered from the agent's figures
// ((stats_atom) -> worker_figures, actors/worker_agent.hpp) and the
// process's, through gateway/metrics_endpoint.hpp.

#include "gateway/metrics_endpoint.hpp"
#include "nodes/node_roles.hpp"
#include "runtime/config.hpp"

#include <caf/expected.hpp>
#include <caf/fwd.hpp>

#include <memory>
#include <string>

namespace drover::node {

/// The bearer token in --metrics-token-file: a regular file of the user
/// the node runs as, neither readable nor writable by anyone else (mode
/// 0600 or 0400), holding 16 to 1024 visible ASCII characters (a trailing
/// newline is dropped). Read after the switch to --run-as. "" when no file
/// is configured; errc::bad_config naming what is wrong otherwise.
caf::expected<std::string> read_metrics_token(const node_config& cfg);

/// Listens on --metrics-host:--metrics-port. Each scrape asks the agent
/// that `shared` holds at that moment (a restarted one too), within 5 s;
/// without an answer the scrape is a 503. The endpoint must be stopped
/// (or destroyed) before `sys` is.
caf::expected<std::unique_ptr<http::metrics_endpoint>>
open_worker_metrics(caf::actor_system& sys, const node_config& cfg,
                    std::string token, std::shared_ptr<worker_shared> shared);

} // namespace drover::node
