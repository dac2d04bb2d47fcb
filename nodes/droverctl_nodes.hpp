#pragma once

// droverctl in front of coordinators that share a database (`--nodes`,
// docs/client.md): it connects to each, reads which partitions each owns
// (the client door's partitions request, client/routes.hpp) and sends a
// request about a job — or a keyed submission — to its partition's owner.
// A one-shot command reads the map once: a partition that changes owner in
// between is answered `not_owner`, and running the command again follows.

#include "client/routes.hpp"
#include "runtime/client_protocol.hpp"
#include "runtime/config.hpp"

#include "runtime/errors.hpp"
#include "runtime/job_api.hpp"
#include "runtime/tree.hpp"
#include "runtime/type_ids.hpp"

#include <caf/scoped_actor.hpp>

#include <chrono>
#include <string>
#include <utility>
#include <vector>

namespace drover::ctl {

struct door_set {
  /// The doors that answered, in the order of their addresses.
  std::vector<client_door_actor> doors;
  /// Their addresses ("host:port"), one per door.
  std::vector<std::string> names;
  /// The addresses that did not answer.
  std::vector<std::string> missing;
  /// Why they did not (for the error when none did).
  std::string failures;
};

/// Connects to every address, each within `timeout` (`tls`: through CAF's
/// OpenSSL module).
door_set connect_all(caf::actor_system& sys,
                     const std::vector<coordinator_address>& addresses,
                     std::chrono::milliseconds timeout, bool tls);

/// The map the doors answer (their owned partitions); not loaded when none
/// answered.
client_detail::routes read_routes(caf::actor_system& sys, const door_set& set,
                                  const std::string& api_key,
                                  std::chrono::milliseconds timeout);

/// What every door of a set answered to one request, and which did not.
template <class T>
struct answers {
  /// (address, answer) of each door that answered, in order.
  std::vector<std::pair<std::string, T>> got;
  /// The addresses that did not connect or answer.
  std::vector<std::string> unreached;
  /// Why not.
  std::string failures;
};

/// Asks every door of `set` `(client_atom, api_key, xs...)`, each within
/// `timeout`; unavailable, naming each failure, when none answered.
template <class T, class... Ts>
caf::expected<answers<T>> ask_each(caf::actor_system& sys, const door_set& set,
                                   const std::string& api_key,
                                   std::chrono::milliseconds timeout,
                                   const Ts&... xs) {
  answers<T> out;
  out.unreached = set.missing;
  out.failures = set.failures;
  caf::scoped_actor self{sys};
  for (size_t i = 0; i < set.doors.size(); ++i)
    self->request(set.doors[i], timeout, client_atom::value, api_key, xs...)
        .receive(
            [&](T& x) { out.got.emplace_back(set.names[i], std::move(x)); },
            [&](caf::error& err) {
              out.unreached.push_back(set.names[i]);
              out.failures += (out.failures.empty() ? "" : "; ") + set.names[i]
                              + ": " + describe(err);
            });
  if (out.got.empty())
    return make_error(errc::unavailable,
                      "no node answered (" + out.failures + ")");
  return out;
}

/// The nodes view (GET /api/admin/nodes) of every door merged, as a
/// sharing gateway merges it (runtime/view_merge.hpp): each coordinator
/// lists only the worker and gateway nodes joined to it. The addresses of
/// `set` that did not connect or answer are its "unreached_coordinators";
/// unavailable when none answered.
caf::expected<std::string> merged_nodes(caf::actor_system& sys,
                                        const door_set& set,
                                        const std::string& api_key,
                                        std::chrono::milliseconds timeout);

/// The queue figures of every door added up as a sharing gateway adds them
/// (add_figures), with the addresses that did not connect or answer;
/// unavailable when none answered.
caf::expected<std::pair<queue_stats, std::vector<std::string>>>
merged_queues(caf::actor_system& sys, const door_set& set,
              const std::string& api_key, std::chrono::milliseconds timeout);

/// Every door's supervision tree under one root, as a sharing gateway
/// shows it (add_coordinator_tree), with the addresses that did not
/// connect or answer; unavailable when none answered.
caf::expected<std::pair<tree_node, std::vector<std::string>>>
merged_tree(caf::actor_system& sys, const door_set& set,
            const std::string& api_key, std::chrono::milliseconds timeout);

/// The door of the owner of `t`'s partition; the first door when `t` is
/// about no partition, there is one door, or no door owns it.
client_door_actor pick_door(caf::actor_system& sys, const door_set& set,
                            const client_detail::route_target& t,
                            const std::string& api_key,
                            std::chrono::milliseconds timeout);

} // namespace drover::ctl
