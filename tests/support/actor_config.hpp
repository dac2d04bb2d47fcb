#pragma once

// The actor system configuration of tests: real actors on CAF's real
// scheduler (real_config), or on its deterministic test coordinator
// (testing_config), and how the latter's tests stop their actors.

#include "runtime/type_ids.hpp"

#include <caf/actor.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/atom.hpp>
#include <caf/exit_reason.hpp>
#include <caf/scheduler/test_coordinator.hpp>
#include <caf/scoped_actor.hpp>

#include <cstddef>
#include <vector>

namespace drover::testing {

/// Drover's message types and 2 scheduler threads, as a node runs; returns
/// `cfg` so a fixture can construct its actor system in its initializer.
inline caf::actor_system_config& real_config(caf::actor_system_config& cfg) {
  register_types(cfg);
  cfg.set("scheduler.max-threads", size_t{2});
  return cfg;
}

/// Drover's message types on CAF's deterministic test coordinator: no
/// threads; messages and time move when the test says.
inline caf::actor_system_config& testing_config(caf::actor_system_config& cfg) {
  cfg.set("scheduler.policy", caf::atom("testing"));
  register_types(cfg);
  return cfg;
}

/// Kills `actors` and runs the coordinator until they are gone, so that the
/// actor system's destructor does not wait for them.
inline void stop_actors(caf::scoped_actor& self,
                        caf::scheduler::test_coordinator& sched,
                        const std::vector<caf::actor>& actors) {
  for (const auto& a : actors)
    self->send_exit(a, caf::exit_reason::kill);
  sched.run();
}

} // namespace drover::testing
