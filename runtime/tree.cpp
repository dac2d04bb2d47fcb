#include "runtime/tree.hpp"

#include <algorithm>
#include <tuple>

namespace drover {

bool operator==(const tree_node& x, const tree_node& y) {
  return std::tie(x.name, x.kind, x.state, x.restart, x.strat, x.restarts,
                  x.uptime_ms, x.last_exit, x.children)
         == std::tie(y.name, y.kind, y.state, y.restart, y.strat, y.restarts,
                     y.uptime_ms, y.last_exit, y.children);
}

const char* to_string(child_kind x) {
  return x == child_kind::supervisor ? "supervisor" : "worker";
}

const char* to_string(child_state x) {
  switch (x) {
    case child_state::starting:
      return "starting";
    case child_state::running:
      return "running";
    case child_state::restarting:
      return "restarting";
    case child_state::stopping:
      return "stopping";
    case child_state::stopped:
      return "stopped";
    case child_state::failed:
      return "failed";
  }
  return "unknown";
}

const char* to_string(restart_type x) {
  switch (x) {
    case restart_type::permanent:
      return "permanent";
    case restart_type::transient:
      return "transient";
    case restart_type::temporary:
      return "temporary";
  }
  return "unknown";
}

const char* to_string(strategy x) {
  return x == strategy::one_for_all ? "one_for_all" : "one_for_one";
}

tree_node coordinators_root() {
  tree_node root;
  root.name = "coordinators";
  root.kind = child_kind::supervisor;
  return root;
}

void add_coordinator_tree(tree_node& root, const std::string& address,
                          tree_node tree) {
  tree.name = address + " " + tree.name;
  auto at
      = std::upper_bound(root.children.begin(), root.children.end(), tree.name,
                         [](const std::string& name, const tree_node& x) {
                           return name < x.name;
                         });
  root.children.insert(at, std::move(tree));
}

} // namespace drover
