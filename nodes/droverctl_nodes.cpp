#include "nodes/droverctl_nodes.hpp"

#include "runtime/view_merge.hpp"

#include <caf/actor_system.hpp>

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
  auto all
      = ask_each<std::string>(sys, set, api_key, timeout, nodes_atom::value);
  if (!all)
    return std::move(all.error());
  std::vector<view_part> parts;
  for (auto& [name, json] : all->got)
    parts.push_back(view_part{name, std::move(json)});
  auto whole = merge_nodes_views(parts);
  if (!whole)
    return make_error(errc::unavailable,
                      "the nodes' views could not be merged (a node of "
                      "another version?)");
  return with_unreached(std::move(*whole), all->unreached);
}

caf::expected<std::pair<queue_stats, std::vector<std::string>>>
merged_queues(caf::actor_system& sys, const door_set& set,
              const std::string& api_key, std::chrono::milliseconds timeout) {
  auto all
      = ask_each<queue_stats>(sys, set, api_key, timeout, stats_atom::value);
  if (!all)
    return std::move(all.error());
  queue_stats sum;
  for (const auto& [name, figures] : all->got)
    add_figures(sum, figures);
  return std::make_pair(std::move(sum), std::move(all->unreached));
}

caf::expected<std::pair<tree_node, std::vector<std::string>>>
merged_tree(caf::actor_system& sys, const door_set& set,
            const std::string& api_key, std::chrono::milliseconds timeout) {
  auto all
      = ask_each<tree_node>(sys, set, api_key, timeout, describe_atom::value);
  if (!all)
    return std::move(all.error());
  auto root = coordinators_root();
  for (auto& [name, tree] : all->got)
    add_coordinator_tree(root, name, std::move(tree));
  return std::make_pair(std::move(root), std::move(all->unreached));
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
