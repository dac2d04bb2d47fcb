#pragma once

// Supervision trees for CAF 0.17, which has none built in.
//
// A supervisor is an actor that starts its children from `child_spec`s,
// monitors them (CAF monitors, not links, so a child's death never kills the
// supervisor by accident), and restarts them as Erlang/OTP's supervisor does:
//
//   - restart types: permanent children always restart, transient ones only
//     after an abnormal exit (anything but `normal` or `user_shutdown`),
//     temporary ones never (they are forgotten once they exit);
//   - strategies: one_for_one restarts the child that died; one_for_all
//     stops the surviving siblings (in reverse start order) and restarts all
//     of them in start order;
//   - restart intensity: more than `intensity` restarts within `period` and
//     the supervisor gives up: it stops its remaining children and exits
//     with `errc::escalated`, which its own supervisor sees as an abnormal
//     exit of a child — escalation up the tree;
//   - restart backoff: each restart waits `backoff_delay(...)`, which grows
//     exponentially with consecutive failures and carries random jitter so a
//     herd of crashing children does not restart in lock step;
//   - orderly shutdown: on an exit message (e.g. `send_exit(sup,
//     exit_reason::user_shutdown)`) the supervisor stops its children one at
//     a time in reverse start order, waits up to each child's
//     `shutdown_timeout` for it to exit, kills it if it does not, then exits
//     with the reason it was given.
//
// Every supervisor answers `describe_atom` with a `tree_node` describing
// itself and, recursively, its children (supervisor children are asked in
// turn), so an admin can draw the whole tree from the supervisors' own view.
//
// All time comes from the actor clock, so the whole library runs under CAF's
// deterministic test coordinator.

#include "runtime/atoms.hpp"
#include "runtime/tree.hpp"

#include <caf/actor.hpp>
#include <caf/actor_cast.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace caf {
class actor_system;
} // namespace caf

namespace drover {

/// Protocol of every supervisor:
///   describe_atom -> tree_node   its own view of itself and its subtree.
/// Stop it with `send_exit(handle, caf::exit_reason::user_shutdown)`; watch
/// it with a monitor: its exit reason is `errc::escalated` when it gave up.
using supervisor_actor
    = caf::typed_actor<caf::replies_to<describe_atom>::with<tree_node>>;

/// Starts one incarnation of a child. Called on the supervisor's thread;
/// must not block. `supervisor` is the calling supervisor's address (weak:
/// a child that keeps it must not keep its parent alive). Returning an
/// invalid handle or throwing counts as a failed start (and as a restart
/// against the intensity budget).
using child_factory = std::function<caf::actor(
    caf::actor_system& sys, const caf::actor_addr& supervisor)>;

/// A typed actor as a child_factory returns it. The one bridge from typed
/// handles to caf::actor in a supervision tree: a supervisor holds children
/// of every kind and only monitors, stops and describes them (describe_atom
/// to those marked describable), so it needs no interface of theirs.
/// Widening only: nothing the compiler checked for the typed handle's
/// holders is lost, as they keep the typed handle.
template <class... Sigs>
caf::actor child_handle(const caf::typed_actor<Sigs...>& child) {
  return caf::actor_cast<caf::actor>(child);
}

struct child_spec {
  /// Unique among its siblings; shown in the tree.
  std::string name;
  child_factory start;
  restart_type restart = restart_type::permanent;
  /// Supervisor children are asked to describe their own subtree.
  child_kind kind = child_kind::worker;
  /// A worker that answers `describe_atom` with a tree_node of its own
  /// (e.g. the queue listing its running jobs) is asked too.
  bool describable = false;
  /// How long an orderly stop waits for the child before killing it.
  std::chrono::milliseconds shutdown_timeout{5000};
};

/// Delay before restart number n (0-based count of consecutive failures),
/// by the project's one backoff formula (runtime/backoff.hpp, no floor):
/// base = min(max, initial * multiplier^n); the delay is drawn uniformly
/// from [base * (1 - jitter), base]. So every delay is <= max and
/// >= initial * (1 - jitter).
struct restart_backoff {
  std::chrono::milliseconds initial{10};
  std::chrono::milliseconds max{5000};
  double multiplier = 2.0;
  /// Fraction of the base delay that is randomised, in [0, 1].
  double jitter = 0.2;
};

/// `uniform01` must be in [0, 1); the supervisor draws it from its RNG.
std::chrono::milliseconds backoff_delay(const restart_backoff& policy,
                                        uint32_t consecutive_failures,
                                        double uniform01);

struct supervisor_flags {
  strategy strat = strategy::one_for_one;
  /// More than `intensity` restarts within `period` escalates.
  uint32_t intensity = 3;
  std::chrono::milliseconds period{5000};
  restart_backoff backoff;
  /// How long `describe` waits for a child supervisor's answer.
  std::chrono::milliseconds describe_timeout{2000};
  /// Seed of the jitter RNG; 0 picks a random seed.
  uint64_t seed = 0;
};

struct supervisor_spec {
  std::string name;
  supervisor_flags flags;
  /// Started in this order, stopped in reverse.
  std::vector<child_spec> children;
};

/// Rejects specs that cannot work: empty or duplicate names, a child without
/// a factory, jitter outside [0, 1], a multiplier below 1, initial > max,
/// a zero period. Returns the first problem as `errc::bad_config`.
caf::error validate(const supervisor_spec& spec);

/// Spawns a supervisor, which starts its children at once. A spec that
/// fails `validate` yields the error and spawns nothing.
caf::expected<supervisor_actor> spawn_supervisor(caf::actor_system& sys,
                                                 supervisor_spec spec);

/// A child spec that runs a nested supervisor. Supervisors get a generous
/// default shutdown timeout because they stop their own children first.
child_spec supervisor_child(supervisor_spec spec,
                            restart_type restart = restart_type::permanent,
                            std::chrono::milliseconds shutdown_timeout
                            = std::chrono::milliseconds{60000});

} // namespace drover
