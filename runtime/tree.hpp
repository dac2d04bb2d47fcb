#pragma once

// A snapshot of one supervision (sub)tree, as a supervisor describes itself
// and its children. Plain data: the supervision library builds it, the admin
// actor forwards it, and runtime/codec turns it into Cap'n Proto bytes
// (schemas/admin.capnp) or JSON for other nodes and the HTTP API.

#include <cstdint>
#include <string>
#include <vector>

namespace drover {

/// What a child is. Supervisors are asked to describe their own children.
enum class child_kind : uint8_t { worker = 0, supervisor = 1 };

/// Life-cycle state of a child as its supervisor sees it.
enum class child_state : uint8_t {
  starting = 0,   ///< spawned, not yet confirmed (reserved for async starts)
  running = 1,    ///< alive and monitored
  restarting = 2, ///< down, waiting out its restart backoff
  stopping = 3,   ///< asked to exit, waiting for its down message
  stopped = 4,    ///< exited and will not be restarted (temporary/transient)
  failed = 5,     ///< supervisor gave up on it (intensity exceeded)
};

/// Restart type, as in Erlang/OTP: permanent children always restart,
/// transient ones only after an abnormal exit, temporary ones never.
enum class restart_type : uint8_t {
  permanent = 0,
  transient = 1,
  temporary = 2
};

/// Supervision strategy: restart only the failed child, or all children.
enum class strategy : uint8_t { one_for_one = 0, one_for_all = 1 };

/// One node of the tree. `children` is empty for workers.
struct tree_node {
  std::string name;
  child_kind kind = child_kind::worker;
  child_state state = child_state::running;
  restart_type restart = restart_type::permanent;
  /// Only meaningful for supervisors.
  strategy strat = strategy::one_for_one;
  /// Restarts since the supervisor started (not only within the window).
  uint32_t restarts = 0;
  /// Milliseconds since the current incarnation started; 0 when not running.
  int64_t uptime_ms = 0;
  /// Last abnormal exit reason, rendered; empty if none.
  std::string last_exit;
  std::vector<tree_node> children;
};

bool operator==(const tree_node& x, const tree_node& y);
inline bool operator!=(const tree_node& x, const tree_node& y) {
  return !(x == y);
}

/// The root of several coordinators' trees shown as one (a sharing
/// gateway's GET /api/admin/tree, droverctl tree --nodes).
tree_node coordinators_root();

/// Adds coordinator `address`'s tree under `root` (coordinators_root),
/// named "<address> <its root>", the children kept in name order.
void add_coordinator_tree(tree_node& root, const std::string& address,
                          tree_node tree);

const char* to_string(child_kind x);
const char* to_string(child_state x);
const char* to_string(restart_type x);
const char* to_string(strategy x);

} // namespace drover
