#include "nodes/droverctl_nodes.hpp"

#include "runtime/errors.hpp"
#include "runtime/type_ids.hpp"
#include "runtime/view_merge.hpp"

#include <caf/actor_system.hpp>
#include <caf/scoped_actor.hpp>

#include <iostream>
#include <optional>

namespace drover::ctl {

door_set connect_all(caf::actor_system& sys,
                     const std::vector<coordinator_address>& addresses,
                     std::chrono::milliseconds timeout, bool tls) {
  door_set out;
  for (const auto& a : addresses) {
    auto d = connect_client_door(sys, a.host, a.port, timeout, tls);
    if (d) {
      out.doors.push_back(*d);
      out.names.push_back(a.text());
    } else {
      out.missing.push_back(a.text());
      out.failures += (out.failures.empty() ? "" : "; ") + a.text() + ": "
                      + describe(d.error());
    }
  }
  return out;
}

client_detail::routes read_routes(caf::actor_system& sys, const door_set& set,
                                  const std::string& api_key,
                                  std::chrono::milliseconds timeout) {
  std::vector<std::optional<client_detail::routes::answer>> answers(
      set.doors.size());
  for (size_t i = 0; i < set.doors.size(); ++i) {
    auto a = client_detail::ask_map(sys, set.doors[i], api_key, timeout);
    if (a)
      answers[i] = std::move(*a);
    else
      std::cerr << "droverctl: no partition map from node " << i + 1 << ": "
                << describe(a.error()) << '\n';
  }
  client_detail::routes map;
  map.load(answers);
  return map;
}

caf::expected<std::string> merged_nodes(caf::actor_system& sys,
                                        const door_set& set,
                                        const std::string& api_key,
                                        std::chrono::milliseconds timeout) {
  std::vector<view_part> parts;
  auto unreached = set.missing;
  std::string failures = set.failures;
  caf::scoped_actor self{sys};
  for (size_t i = 0; i < set.doors.size(); ++i)
    self->request(set.doors[i], timeout, client_atom::value, api_key,
                  nodes_atom::value)
        .receive(
            [&](std::string& json) {
              parts.push_back(view_part{set.names[i], std::move(json)});
            },
            [&](caf::error& err) {
              unreached.push_back(set.names[i]);
              failures += (failures.empty() ? "" : "; ") + set.names[i] + ": "
                          + describe(err);
            });
  if (parts.empty())
    return make_error(errc::unavailable, "no node answered (" + failures + ")");
  auto whole = merge_nodes_views(parts);
  if (!whole)
    return make_error(errc::unavailable,
                      "the nodes' views could not be merged (a node of "
                      "another version?)");
  return with_unreached(std::move(*whole), unreached);
}

client_door_actor pick_door(caf::actor_system& sys, const door_set& set,
                            const client_detail::route_target& t,
                            const std::string& api_key,
                            std::chrono::milliseconds timeout) {
  if (set.doors.size() < 2 || t.about_anything())
    return set.doors.front();
  auto owner = read_routes(sys, set, api_key, timeout).owner_of(t);
  return owner ? set.doors[*owner] : set.doors.front();
}

} // namespace drover::ctl
