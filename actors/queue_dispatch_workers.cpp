// The queue's workers: idle workers and worker nodes' slots offering
// themselves, the pools the nodes declare, and whether a connected worker
// could ever run a job. See actors/detail/queue_state.hpp.

#include "actors/detail/queue_state.hpp"

namespace drover::queue_detail {

/// Why no connected worker could ever run a job of class `cls`, type
/// `type` drawing `shape` from pools ("" = one could).
std::string unserved_reason(const queue_state& st, const std::string& cls,
                            const std::string& type, const shape_ref& shape) {
  std::map<std::string, std::string> short_nodes;
  for (const auto& [addr, w] : st.workers)
    if (w.runs(cls, type)) {
      auto why = st.resources.never_reason(w.node, shape);
      if (why.empty())
        return {};
      short_nodes.emplace(w.node.empty() ? "this node" : "node " + w.node, why);
    }
  std::string out = "no connected worker runs resource class '" + cls
                    + "' with job type '" + type + "'";
  if (short_nodes.empty())
    return out;
  out += " and has " + shape->key + " (";
  size_t n = 0;
  for (const auto& [node, why] : short_nodes) {
    if (n == 3) {
      out += ", ...";
      break;
    }
    out += (n++ ? ", " : "") + node + " lacks " + why;
  }
  return out + ")";
}

bool served(const queue_state& st, const std::string& cls,
            const std::string& type, const shape_ref& shape) {
  return unserved_reason(st, cls, type, shape).empty();
}

/// A worker node's pools as it declares them with each offer ("" for the
/// coordinator's own workers, declared at start): re-read when they change.
void declare_pools(self_ptr self, const std::string& node,
                   const std::string& text) {
  auto& st = self->state;
  auto known = st.declared_pools.find(node);
  if (known != st.declared_pools.end() && known->second == text)
    return;
  auto pools = parse_amounts(text, "resources", errc::invalid_request);
  if (!pools) {
    log::warn("queue", "a worker node declared malformed resources",
              {{"node", node}, {"error", describe(pools.error())}});
    return;
  }
  st.declared_pools[node] = text;
  st.resources.declare(node, std::move(*pools));
}

/// A worker (local, or a remote node's slot) is idle; `types` sorted, empty
/// = it runs every type.
void worker_ready(self_ptr self, const std::string& cls,
                  const std::string& worker_id, worker_actor worker,
                  std::vector<std::string> types) {
  auto& st = self->state;
  // A worker that offers itself holds nothing of its node's pools any more.
  let_go_pools(self, worker.address());
  auto w = st.workers.find(worker.address());
  if (w == st.workers.end()) {
    if (cls.empty())
      return; // a stranger without a class: nothing to do with it
    self->monitor(worker);
    w = st.workers
            .emplace(worker.address(),
                     queue_state::worker_info{cls, worker_id, std::move(types),
                                              node_of(worker_id)})
            .first;
  }
  auto cls_name = w->second.resource_class;
  auto& idle = st.classes[cls_name].idle_workers;
  for (const auto& x : idle)
    if (x == worker)
      return; // announced twice: one slot is one credit
  idle.push_back(std::move(worker));
  dispatch(self, cls_name);
  if (!st.flow_parked.empty())
    rearm_flow(self); // jobs at a gate may have a worker now
}

/// A worker node's slot is idle (actors/node_link_slots.cpp): its types
/// (any order), its node's pools. True if it was handed a job at once.
bool remote_slot_ready(self_ptr self, const std::string& cls,
                       const std::string& worker_id, const worker_actor& worker,
                       std::vector<std::string> types,
                       const std::string& pools) {
  std::sort(types.begin(), types.end());
  declare_pools(self, node_of(worker_id), pools);
  worker_ready(self, cls, worker_id, worker, std::move(types));
  auto& st = self->state;
  auto w = st.workers.find(worker.address());
  if (w == st.workers.end())
    return false;
  const auto& idle = st.classes[w->second.resource_class].idle_workers;
  return std::find(idle.begin(), idle.end(), worker) == idle.end();
}

} // namespace drover::queue_detail
