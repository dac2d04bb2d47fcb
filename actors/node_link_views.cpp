#include "actors/detail/node_link_state.hpp"

#include "runtime/errors.hpp"
#include "runtime/json_text.hpp"
#include "runtime/log.hpp"
#include "runtime/log_caf.hpp"
#include "runtime/type_ids.hpp"

#include <caf/send.hpp>

#include <map>

namespace drover::detail {

/// One slot of a worker node (see actors/detail/node_link_state.hpp).
worker_actor::behavior_type slot_impl(worker_actor::pointer self,
                                      node_link_local link, uint32_t index) {
  self->monitor(link);
  self->set_down_handler(
      [self](caf::down_msg& dm) { self->quit(std::move(dm.reason)); });
  // A stray message must not end the slot (CAF's default for typed actors
  // quits): the queue would see a worker die.
  self->set_default_handler(log_and_drop);
  self->set_error_handler([index](caf::error& err) {
    log::warn("node_link", "a slot got an unexpected error message",
              {{"slot", index}, {"error", describe(err)}});
  });
  return {
      [=](run_atom, lease& l, job_supervisor_actor& js) {
        self->send(link, run_atom::value, index, std::move(l), std::move(js));
      },
      [=](cancel_atom, std::string& job_id, uint32_t attempt) {
        self->send(link, cancel_atom::value, index, std::move(job_id), attempt);
      },
      [=](abandon_atom, std::string& job_id, uint32_t attempt) {
        self->send(link, abandon_atom::value, index, std::move(job_id),
                   attempt);
      },
      [=](handover_atom, std::string& job_id, uint32_t attempt) {
        self->send(link, handover_atom::value, index, std::move(job_id),
                   attempt);
      },
  };
}

/// The node as the node list shows it (JSON object).
std::string node_json(link_actor self) {
  auto& st = self->state;
  auto now = now_ms(self);
  auto& reg = st.cfg.registration;
  size_t running = 0;
  for (auto& slot : st.slots)
    running += slot.job_id.empty() ? 0 : 1;
  std::string out = "{\"node\":" + json_quote(st.cfg.node_id)
                    + ",\"role\":\"worker\",\"slots\":{";
  for (size_t i = 0; i < reg.capacity.size(); ++i)
    out += (i ? "," : "") + json_quote(reg.capacity[i].resource_class) + ":"
           + std::to_string(reg.capacity[i].slots);
  out += "},\"resources\":{";
  for (size_t i = 0; i < reg.resources.size(); ++i)
    out += (i ? "," : "") + json_quote(reg.resources[i].name) + ":"
           + std::to_string(reg.resources[i].amount);
  out += "},\"elastic\":{";
  bool first = true;
  for (const auto& [cls, e] : st.elastic) {
    out += (first ? "" : ",") + json_quote(cls) + ":{\"slots\":"
           + std::to_string(e.active) + ",\"min\":" + std::to_string(e.min)
           + ",\"max\":" + std::to_string(e.max) + "}";
    first = false;
  }
  out += "},\"job_types\":[";
  for (size_t i = 0; i < reg.job_types.size(); ++i)
    out += (i ? "," : "") + json_quote(reg.job_types[i]);
  auto flag = [](bool b) { return b ? std::string{"true"} : "false"; };
  out += "],\"connected\":" + flag(st.connected) + ",\"draining\":"
         + flag(st.draining) + ",\"running\":" + std::to_string(running)
         + ",\"leases_in_flight\":" + std::to_string(st.attempts.size())
         + ",\"lent\":" + std::to_string(st.lent.size())
         + ",\"last_heartbeat_ms_ago\":"
         + std::to_string(now - st.last_heartbeat_ms)
         + ",\"joined_ms_ago\":" + std::to_string(now - st.joined_ms)
         + ",\"counters\":{\"leases\":" + std::to_string(st.leases_sent)
         + ",\"lease_batches\":" + std::to_string(st.batches_sent)
         + ",\"reports\":" + std::to_string(st.reports)
         + ",\"heartbeats\":" + std::to_string(st.heartbeats)
         + ",\"leases_expired\":" + std::to_string(st.expired)
         + ",\"reports_rejected\":" + std::to_string(st.rejected)
         + ",\"elastic_grown\":" + std::to_string(st.elastic_grown)
         + ",\"elastic_shrunk\":" + std::to_string(st.elastic_shrunk) + "}}";
  return out;
}

tree_node describe_node(link_actor self) {
  auto& st = self->state;
  auto now = now_ms(self);
  tree_node n;
  n.name = "node " + st.cfg.node_id;
  n.kind = child_kind::supervisor;
  n.state = st.connected
                ? (st.draining ? child_state::stopping : child_state::running)
                : child_state::restarting;
  n.uptime_ms = now - st.joined_ms;
  n.last_exit = "last heartbeat " + std::to_string(now - st.last_heartbeat_ms)
                + " ms ago, " + std::to_string(st.attempts.size())
                + " leases in flight" + (st.connected ? "" : ", disconnected");
  std::map<uint32_t, uint32_t> lent_on; // slot -> attempt handed over
  for (const auto& [key, index] : st.lent)
    lent_on.emplace(index, key.second);
  for (auto& slot : st.slots) {
    tree_node s;
    s.name = slot.worker_id;
    s.kind = child_kind::worker;
    s.state = child_state::running;
    if (!slot.job_id.empty()) {
      tree_node job;
      job.name = "job " + slot.job_id;
      job.kind = child_kind::worker;
      job.restart = restart_type::temporary;
      auto i = st.attempts.find(slot.job_id);
      if (i != st.attempts.end())
        job.last_exit = "attempt " + std::to_string(i->second.attempt)
                        + (i->second.expired ? " (lease lapsed)" : "");
      auto l = lent_on.find(static_cast<uint32_t>(&slot - st.slots.data()));
      if (l != lent_on.end())
        job.last_exit = "attempt " + std::to_string(l->second)
                        + " (handed over: runs for another coordinator)";
      s.children.push_back(std::move(job));
    }
    n.children.push_back(std::move(s));
  }
  return n;
}

} // namespace drover::detail
