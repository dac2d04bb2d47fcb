#pragma once

// The actor system configuration of tests that run real actors on CAF's
// real scheduler (not the deterministic test coordinator).

#include "runtime/type_ids.hpp"

#include <caf/actor_system_config.hpp>

#include <cstddef>

namespace drover::testing {

/// Drover's message types and 2 scheduler threads, as a node runs; returns
/// `cfg` so a fixture can construct its actor system in its initializer.
inline caf::actor_system_config& real_config(caf::actor_system_config& cfg) {
  register_types(cfg);
  cfg.set("scheduler.max-threads", size_t{2});
  return cfg;
}

} // namespace drover::testing
