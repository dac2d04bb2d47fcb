#include "actors/node_link.hpp"

#include "actors/queue.hpp"
#include "runtime/errors.hpp"
#include "runtime/json_text.hpp"
#include "runtime/log.hpp"
#include "runtime/submit.hpp"
#include "runtime/type_ids.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/send.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <map>
#include <set>

namespace drover {

namespace {

using link_timers::flush_atom;
using link_timers::tick_atom;
using free_atom = caf::atom_constant<caf::atom("nl_free")>;

// -- slot actors --------------------------------------------------------------

/// One slot of a worker node as the queue sees it: announces itself when
/// told it is free and hands what the queue's job supervisors send to its
/// link, tagged with its index. Dies with its link.
caf::behavior slot_impl(caf::event_based_actor* self, node_link_local link,
                        uint32_t index, std::string cls, std::string worker_id,
                        std::vector<std::string> types,
                        std::shared_ptr<job_system_handles> handles) {
  self->monitor(link);
  self->set_down_handler(
      [self](caf::down_msg& dm) { self->quit(std::move(dm.reason)); });
  return {
      [=](free_atom) {
        self->send(handles->queue(), ready_atom::value, cls, worker_id,
                   caf::actor{self}, types);
      },
      [=](run_atom, lease& l, caf::actor& js) {
        self->send(link, run_atom::value, index, std::move(l), std::move(js));
      },
      [=](cancel_atom, std::string& job_id, uint32_t attempt) {
        self->send(link, cancel_atom::value, index, std::move(job_id), attempt);
      },
      [=](abandon_atom, std::string& job_id, uint32_t attempt) {
        self->send(link, abandon_atom::value, index, std::move(job_id),
                   attempt);
      },
  };
}

// -- the link -----------------------------------------------------------------

struct slot_info {
  std::string resource_class;
  std::string worker_id;
  caf::actor actor;
  /// Job of the attempt that occupies it; empty = free.
  std::string job_id;
  /// Offered to the queue and not yet taken: never offered twice.
  bool announced = false;
  /// A prefetch credit (a lease the node buffers), offered only while
  /// every real slot of its class is taken, so that jobs spread over idle
  /// nodes before any waits in a buffer.
  bool buffer = false;
};

struct attempt_info {
  uint32_t attempt = 0;
  uint32_t slot = 0;
  caf::actor js;
  int64_t expiry_ms = 0;
  /// When its lease went to the node.
  int64_t leased_ms = 0;
  /// Its lease's TTL (per job type).
  int64_t ttl_ms = 0;
  /// The outcome went to the job supervisor; settled once it finishes.
  bool completing = false;
  /// The lease lapsed: superseded, waiting for the worker to let go.
  bool expired = false;
  /// The job supervisor finished without the worker's outcome.
  bool js_gone = false;
};

struct link_state {
  node_link_config cfg;
  node_link_local::pointer self_ptr = nullptr;
  std::vector<slot_info> slots;
  /// By job id: one attempt of a job at a time.
  std::map<std::string, attempt_info> attempts;
  std::vector<lease> pending;
  bool flush_armed = false;
  bool connected = true;
  bool draining = false;
  int64_t joined_ms = 0;
  int64_t last_heartbeat_ms = 0;
  int64_t disconnected_ms = 0;
  std::vector<running_attempt> settled;
  std::vector<running_attempt> superseded;
  /// (job, attempt) whose rejection is recorded already.
  std::set<std::pair<std::string, uint32_t>> recorded;
  uint64_t leases_sent = 0;
  uint64_t batches_sent = 0;
  uint64_t rejected = 0;
  uint64_t reports = 0;
  uint64_t heartbeats = 0;
  uint64_t expired = 0;

  static inline const char* name = "drover.node_link";
};

using link_actor = node_link_local::stateful_pointer<link_state>;

int64_t now_ms(link_actor self) {
  return self->state.cfg.clock_ms();
}

/// Local-only messages (slots, endpoint, timers, admin) are refused from
/// other nodes: the worker node holds this link's handle.
bool from_here(link_actor self) {
  auto& sender = self->current_sender();
  return sender != nullptr && sender->node() == self->node();
}

/// Heartbeats and reports count only from the node's current agent.
bool from_agent(link_actor self) {
  auto& sender = self->current_sender();
  return sender != nullptr && self->state.cfg.agent
         && sender->address() == self->state.cfg.agent.address();
}

/// True when every real slot of `cls` holds an attempt.
bool class_full(link_actor self, const std::string& cls) {
  for (auto& s : self->state.slots)
    if (!s.buffer && s.resource_class == cls && s.job_id.empty())
      return false;
  return true;
}

/// Tells the queue a slot is free (while the node takes leases).
void offer(link_actor self, uint32_t index) {
  auto& st = self->state;
  auto& slot = st.slots[index];
  if (!slot.job_id.empty() || !st.connected || st.draining || slot.announced)
    return;
  if (slot.buffer && !class_full(self, slot.resource_class))
    return;
  slot.announced = true;
  if (!slot.actor) {
    slot.actor = self->spawn(slot_impl, node_link_local{self}, index,
                             slot.resource_class, slot.worker_id,
                             st.cfg.registration.job_types, st.cfg.handles);
  }
  caf::anon_send(slot.actor, free_atom::value);
}

/// Withdraws the free slots from the queue (disconnected or draining): an
/// idle slot actor quits, and the queue forgets it.
void withdraw_free_slots(link_actor self) {
  for (auto& slot : self->state.slots)
    if (slot.job_id.empty() && slot.actor) {
      self->send_exit(slot.actor, caf::exit_reason::user_shutdown);
      slot.actor = nullptr;
      slot.announced = false;
    }
}

void free_slot(link_actor self, uint32_t index) {
  auto& st = self->state;
  if (index >= st.slots.size())
    return;
  st.slots[index].job_id.clear();
  offer(self, index);
}

/// Forgets an attempt, freeing its slot.
void drop_attempt(link_actor self, const std::string& job_id) {
  auto& st = self->state;
  auto i = st.attempts.find(job_id);
  if (i == st.attempts.end())
    return;
  auto slot = i->second.slot;
  if (i->second.js)
    self->demonitor(i->second.js.address());
  st.attempts.erase(i);
  free_slot(self, slot);
}

/// Records once, in the job's history, that a superseded attempt's report
/// was refused.
void record_rejection(link_actor self, const std::string& job_id,
                      uint32_t attempt, const std::string& what) {
  auto& st = self->state;
  ++st.rejected;
  if (st.recorded.size() > 10000)
    st.recorded.clear();
  if (!st.recorded.emplace(job_id, attempt).second)
    return;
  log::warn("node_link", log::job{job_id},
            "refused a report from a superseded attempt",
            {{"node", st.cfg.node_id}, {"attempt", attempt}, {"what", what}});
  job_event ev;
  ev.job_id = job_id;
  ev.kind = event_kind::report_rejected;
  ev.attempt = attempt;
  ev.at_ms = now_ms(self);
  ev.reason = what + " from superseded attempt " + std::to_string(attempt)
              + " on node " + st.cfg.node_id + " refused";
  auto store = st.cfg.handles->store();
  self->request(store, caf::infinite, append_atom::value,
                std::vector<job_event>{std::move(ev)})
      .then([](ok_atom) {},
            [job_id](caf::error& err) {
              log::warn("node_link", log::job{job_id},
                        "could not record a refused report",
                        {{"error", describe(err)}});
            });
}

/// The attempt the worker reports about, if it is the current one.
attempt_info* current(link_actor self, const std::string& job_id,
                      uint32_t attempt) {
  auto& st = self->state;
  auto i = st.attempts.find(job_id);
  if (i == st.attempts.end() || i->second.attempt != attempt
      || i->second.expired)
    return nullptr;
  return &i->second;
}

void supersede(link_actor self, const std::string& job_id, uint32_t attempt) {
  self->state.superseded.push_back(running_attempt{job_id, attempt, {}});
}

/// Reclaims lapsed leases.
void check_leases(link_actor self) {
  auto& st = self->state;
  auto now = now_ms(self);
  for (auto& [job_id, a] : st.attempts) {
    if (a.expired || a.completing || a.js_gone || a.expiry_ms > now)
      continue;
    a.expired = true;
    ++st.expired;
    log::warn("node_link", log::job{job_id},
              "lease expired; the job runs again",
              {{"node", st.cfg.node_id},
               {"attempt", a.attempt},
               {"connected", st.connected}});
    caf::anon_send(a.js, expired_atom::value, job_id, a.attempt);
  }
  if (!st.connected) {
    // Gone: an expired attempt's worker can no longer let go; free it.
    std::vector<std::string> gone;
    for (auto& [job_id, a] : st.attempts)
      if (a.expired || a.js_gone)
        gone.push_back(job_id);
    for (auto& job_id : gone)
      drop_attempt(self, job_id);
    auto ttl = st.cfg.lease_ttl.count();
    if (st.attempts.empty() && now - st.disconnected_ms >= ttl) {
      log::info("node_link", "worker node gone", {{"node", st.cfg.node_id}});
      self->quit();
    }
  }
}

/// How long a lease may wait for others to share its batch. Job
/// supervisors start attempts one by one as their `started` commits come
/// back (a group commit answers many at once, but each reply is its own
/// message), so a batch gathers over a short window, not one mailbox pass.
constexpr auto lease_batch_window = std::chrono::milliseconds{1};

void arm_flush(link_actor self) {
  auto& st = self->state;
  if (st.flush_armed)
    return;
  st.flush_armed = true;
  self->delayed_send(self, lease_batch_window, flush_atom::value);
}

coordinator_reply base_reply(link_actor self) {
  coordinator_reply r;
  r.coordinator_id = self->state.cfg.coordinator_id;
  r.protocol = cluster_protocol_max;
  r.lease_ttl_ms = self->state.cfg.lease_ttl.count();
  r.heartbeat_interval_ms = self->state.cfg.heartbeat_interval.count();
  return r;
}

/// Settled completions and superseded attempts go out with every reply.
coordinator_reply take_reply(link_actor self) {
  auto r = base_reply(self);
  r.settled.swap(self->state.settled);
  r.superseded.swap(self->state.superseded);
  return r;
}

/// A free slot of `cls`, or -1.
int free_slot_of(link_actor self, const std::string& cls) {
  auto& slots = self->state.slots;
  for (size_t i = 0; i < slots.size(); ++i)
    if (slots[i].job_id.empty() && slots[i].resource_class == cls)
      return static_cast<int>(i);
  return -1;
}

/// The node lists `ra` as running, but this link does not know it (this
/// coordinator restarted): ask the queue to adopt it into a slot.
void adopt(link_actor self, const running_attempt& ra) {
  auto& st = self->state;
  int index = free_slot_of(self, ra.resource_class);
  if (index < 0) {
    supersede(self, ra.job_id, ra.attempt);
    return;
  }
  auto& slot = st.slots[index];
  slot.job_id = ra.job_id;
  if (!slot.actor)
    slot.actor = self->spawn(slot_impl, node_link_local{self},
                             static_cast<uint32_t>(index), slot.resource_class,
                             slot.worker_id, st.cfg.registration.job_types,
                             st.cfg.handles);
  attempt_info a;
  a.attempt = ra.attempt;
  a.slot = static_cast<uint32_t>(index);
  a.ttl_ms = st.cfg.lease_ttl.count(); // its type is not known here
  a.expiry_ms = now_ms(self) + a.ttl_ms;
  a.js_gone = true; // no supervisor yet
  st.attempts[ra.job_id] = a;
  auto job_id = ra.job_id;
  auto attempt = ra.attempt;
  self->request(st.cfg.handles->queue(), std::chrono::seconds{30},
                adopt_atom::value, job_id, attempt, slot.worker_id, slot.actor)
      .then(
          [self, job_id, attempt](caf::actor& js) {
            auto* a = current(self, job_id, attempt);
            if (a == nullptr)
              return;
            a->js = js;
            a->js_gone = false;
            self->monitor(js);
          },
          [self, job_id, attempt](caf::error& err) {
            log::info("node_link", log::job{job_id},
                      "a running attempt could not be adopted; superseded",
                      {{"attempt", attempt}, {"reason", describe(err)}});
            supersede(self, job_id, attempt);
            auto i = self->state.attempts.find(job_id);
            if (i != self->state.attempts.end() && i->second.attempt == attempt)
              i->second.expired = true;
          });
}

caf::result<coordinator_reply> on_join(link_actor self, register_worker& reg,
                                       worker_agent_actor& agent) {
  auto& st = self->state;
  if (st.connected && st.cfg.agent && st.cfg.agent != agent
      && now_ms(self) - st.last_heartbeat_ms
             < 2 * st.cfg.heartbeat_interval.count()) {
    // Its node is alive and heartbeating: a second process with its id.
    return make_error(errc::forbidden,
                      "node id " + st.cfg.node_id
                          + " is already connected and heartbeating");
  }
  if (st.cfg.agent && st.cfg.agent != agent)
    self->demonitor(st.cfg.agent.address());
  st.cfg.agent = std::move(agent);
  self->monitor(st.cfg.agent);
  st.connected = true;
  st.draining = reg.draining;
  st.joined_ms = now_ms(self);
  st.last_heartbeat_ms = st.joined_ms;
  std::set<std::string> listed;
  for (auto& ra : reg.running) {
    listed.insert(ra.job_id);
    auto i = st.attempts.find(ra.job_id);
    if (i != st.attempts.end() && i->second.attempt == ra.attempt) {
      if (!i->second.expired)
        // Kept: reconnected in time.
        i->second.expiry_ms = st.joined_ms + i->second.ttl_ms;
      else
        supersede(self, ra.job_id, ra.attempt);
      continue;
    }
    if (i != st.attempts.end()) {
      supersede(self, ra.job_id, ra.attempt);
      continue;
    }
    adopt(self, ra);
  }
  log::info("node_link", "worker node joined",
            {{"node", st.cfg.node_id},
             {"running", reg.running.size()},
             {"draining", st.draining}});
  if (st.draining)
    withdraw_free_slots(self);
  else
    for (uint32_t i = 0; i < st.slots.size(); ++i)
      offer(self, i);
  return take_reply(self);
}

coordinator_reply on_heartbeat(link_actor self, heartbeat& hb) {
  auto& st = self->state;
  auto now = now_ms(self);
  st.last_heartbeat_ms = now;
  ++st.heartbeats;
  std::set<std::string> listed;
  for (auto& ra : hb.running) {
    listed.insert(ra.job_id);
    auto i = st.attempts.find(ra.job_id);
    if (i == st.attempts.end() || i->second.attempt != ra.attempt
        || i->second.expired) {
      // A superseded attempt still running (e.g. its node was stopped
      // past the lease): refused, recorded, and the node stops it.
      record_rejection(self, ra.job_id, ra.attempt, "a heartbeat");
      supersede(self, ra.job_id, ra.attempt);
      continue;
    }
    i->second.expiry_ms = now + std::max(i->second.ttl_ms, int64_t{1});
  }
  // Superseded attempts the worker has let go of free their slots.
  std::vector<std::string> gone;
  std::set<std::string> unacked;
  for (auto& u : hb.unacknowledged)
    unacked.insert(u.job_id);
  for (auto& [job_id, a] : st.attempts)
    if ((a.expired || a.js_gone) && listed.count(job_id) == 0
        && unacked.count(job_id) == 0)
      gone.push_back(job_id); // abandoned or superseded, and let go of
  for (auto& job_id : gone)
    drop_attempt(self, job_id);
  if (hb.draining) {
    // A draining node that no longer lists an attempt handed it back (its
    // drain deadline passed): reclaim the lease now rather than after the
    // TTL. Leases sent within the last heartbeat interval may still be on
    // their way to it and are left to the TTL.
    auto settled_before = now - st.cfg.heartbeat_interval.count();
    for (auto& [job_id, a] : st.attempts) {
      if (listed.count(job_id) > 0 || unacked.count(job_id) > 0 || a.expired
          || a.completing || a.js_gone || a.leased_ms > settled_before)
        continue;
      a.expired = true;
      ++st.expired;
      log::info("node_link", log::job{job_id},
                "a draining node handed the attempt back; it runs again",
                {{"node", st.cfg.node_id}, {"attempt", a.attempt}});
      caf::anon_send(a.js, expired_atom::value, job_id, a.attempt);
    }
  }
  if (hb.draining && !st.draining) {
    st.draining = true;
    log::info("node_link", "worker node drains: no new leases",
              {{"node", st.cfg.node_id}});
    withdraw_free_slots(self);
  }
  return take_reply(self);
}

coordinator_reply on_report(link_actor self, progress_batch& progress,
                            completion_batch& completions) {
  auto& st = self->state;
  ++st.reports;
  for (auto& u : progress.updates) {
    auto* a = current(self, u.job_id, u.attempt);
    if (a == nullptr || a->js_gone) {
      if (a == nullptr)
        record_rejection(self, u.job_id, u.attempt,
                         u.checkpoint.empty() ? "progress" : "a checkpoint");
      continue;
    }
    if (!u.checkpoint.empty()) {
      caf::anon_send(a->js, checkpoint_atom::value, u.job_id, u.attempt,
                     std::move(u.checkpoint));
      continue;
    }
    caf::anon_send(a->js, progress_atom::value, std::move(u));
  }
  for (auto& c : completions.completions) {
    running_attempt key{c.job_id, c.attempt, {}};
    auto i = st.attempts.find(c.job_id);
    if (i == st.attempts.end() || i->second.attempt != c.attempt) {
      // Unknown: superseded long ago (or settled and acknowledged late).
      record_rejection(self, c.job_id, c.attempt, "an outcome");
      st.settled.push_back(std::move(key));
      continue;
    }
    auto& a = i->second;
    if (a.expired) {
      record_rejection(self, c.job_id, c.attempt, "an outcome");
      st.settled.push_back(std::move(key));
      drop_attempt(self, c.job_id);
      continue;
    }
    if (a.completing)
      continue; // sent again before it settled
    if (a.js_gone) {
      st.settled.push_back(std::move(key));
      drop_attempt(self, c.job_id);
      continue;
    }
    a.completing = true;
    caf::anon_send(a.js, done_atom::value, std::move(c));
    // The worker's slot is free again: credit back.
    auto slot = a.slot;
    st.slots[slot].job_id.clear();
    offer(self, slot);
  }
  return take_reply(self);
}

void on_run(link_actor self, uint32_t index, lease& l, caf::actor& js) {
  auto& st = self->state;
  if (index >= st.slots.size())
    return;
  auto& slot = st.slots[index];
  slot.job_id = l.job_id;
  slot.announced = false;
  attempt_info a;
  a.attempt = l.attempt;
  a.slot = index;
  a.js = js;
  auto t = st.cfg.lease_ttl_by_type.find(l.spec.type);
  a.ttl_ms
      = (t != st.cfg.lease_ttl_by_type.end() ? t->second : st.cfg.lease_ttl)
            .count();
  a.expiry_ms = now_ms(self) + a.ttl_ms;
  a.leased_ms = now_ms(self);
  self->monitor(js);
  st.attempts[l.job_id] = a;
  l.lease_expiry_ms = a.expiry_ms;
  st.pending.push_back(std::move(l));
  arm_flush(self);
  // The class's real slots are all taken: its buffer credits open.
  if (!slot.buffer && class_full(self, slot.resource_class))
    for (uint32_t i = 0; i < st.slots.size(); ++i)
      if (st.slots[i].buffer
          && st.slots[i].resource_class == st.slots[index].resource_class)
        offer(self, i);
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
  out += "},\"job_types\":[";
  for (size_t i = 0; i < reg.job_types.size(); ++i)
    out += (i ? "," : "") + json_quote(reg.job_types[i]);
  auto flag = [](bool b) { return b ? std::string{"true"} : "false"; };
  out += "],\"connected\":" + flag(st.connected) + ",\"draining\":"
         + flag(st.draining) + ",\"running\":" + std::to_string(running)
         + ",\"leases_in_flight\":" + std::to_string(st.attempts.size())
         + ",\"last_heartbeat_ms_ago\":"
         + std::to_string(now - st.last_heartbeat_ms)
         + ",\"joined_ms_ago\":" + std::to_string(now - st.joined_ms)
         + ",\"counters\":{\"leases\":" + std::to_string(st.leases_sent)
         + ",\"lease_batches\":" + std::to_string(st.batches_sent)
         + ",\"reports\":" + std::to_string(st.reports)
         + ",\"heartbeats\":" + std::to_string(st.heartbeats)
         + ",\"leases_expired\":" + std::to_string(st.expired)
         + ",\"reports_rejected\":" + std::to_string(st.rejected) + "}}";
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
      s.children.push_back(std::move(job));
    }
    n.children.push_back(std::move(s));
  }
  return n;
}

node_link_local::behavior_type link_impl(link_actor self,
                                         node_link_config cfg) {
  auto& st = self->state;
  st.cfg = std::move(cfg);
  st.joined_ms = now_ms(self);
  // One credit per slot, plus the leases the node buffers (prefetch).
  for (auto& cap : st.cfg.registration.capacity)
    for (uint32_t i = 0; i < cap.slots + st.cfg.registration.prefetch; ++i) {
      slot_info s;
      s.resource_class = cap.resource_class;
      s.worker_id
          = st.cfg.node_id + "/" + cap.resource_class + "-" + std::to_string(i);
      s.buffer = i >= cap.slots;
      st.slots.push_back(std::move(s));
    }
  self->set_down_handler([self](caf::down_msg& dm) {
    auto& st = self->state;
    if (dm.source == st.cfg.agent.address()) {
      st.connected = false;
      st.disconnected_ms = now_ms(self);
      withdraw_free_slots(self);
      log::warn("node_link",
                "lost the connection to a worker node; its leases lapse "
                "unless it comes back in time",
                {{"node", st.cfg.node_id},
                 {"leases", st.attempts.size()},
                 {"reason", self->system().render(dm.reason)}});
      return;
    }
    for (auto& [job_id, a] : st.attempts) {
      if (a.js.address() != dm.source)
        continue;
      a.js = nullptr;
      if (a.completing) {
        st.settled.push_back(running_attempt{job_id, a.attempt, {}});
        auto id = job_id;
        st.attempts.erase(id);
        return;
      }
      a.js_gone = true;
      return;
    }
  });
  auto tick = std::max<int64_t>(20, st.cfg.lease_ttl.count() / 8);
  self->delayed_send(self, std::chrono::milliseconds{tick}, tick_atom::value);
  return {
      [self](heartbeat_atom, heartbeat& hb) -> caf::result<coordinator_reply> {
        if (!from_agent(self))
          return make_error(errc::forbidden, "not this node's agent");
        return on_heartbeat(self, hb);
      },
      [self](report_atom, progress_batch& p,
             completion_batch& c) -> caf::result<coordinator_reply> {
        if (!from_agent(self))
          return make_error(errc::forbidden, "not this node's agent");
        return on_report(self, p, c);
      },
      [self](run_atom, uint32_t index, lease& l, caf::actor& js) {
        if (!from_here(self))
          return;
        on_run(self, index, l, js);
      },
      [self](cancel_atom, uint32_t, std::string& job_id, uint32_t attempt) {
        if (!from_here(self))
          return;
        auto& st = self->state;
        if (st.connected)
          self->send(st.cfg.agent, cancel_atom::value, std::move(job_id),
                     attempt);
      },
      [self](abandon_atom, uint32_t, std::string& job_id, uint32_t attempt) {
        if (!from_here(self))
          return;
        auto& st = self->state;
        auto i = st.attempts.find(job_id);
        if (i != st.attempts.end() && i->second.attempt == attempt
            && !i->second.completing)
          i->second.js_gone = true; // its supervisor stopped waiting
        if (st.connected)
          self->send(st.cfg.agent, abandon_atom::value, std::move(job_id),
                     attempt);
      },
      [self](join_atom, register_worker& reg,
             worker_agent_actor& agent) -> caf::result<coordinator_reply> {
        if (!from_here(self))
          return make_error(errc::forbidden, "local message");
        return on_join(self, reg, agent);
      },
      [self](describe_atom) -> caf::result<tree_node> {
        if (!from_here(self))
          return make_error(errc::forbidden, "local message");
        return describe_node(self);
      },
      [self](nodes_atom) -> caf::result<std::string> {
        if (!from_here(self))
          return make_error(errc::forbidden, "local message");
        return node_json(self);
      },
      [self](flush_atom) {
        if (!from_here(self))
          return;
        auto& st = self->state;
        st.flush_armed = false;
        if (st.pending.empty() || !st.connected)
          return;
        lease_batch batch;
        batch.leases.swap(st.pending);
        st.leases_sent += batch.leases.size();
        ++st.batches_sent;
        self->send(st.cfg.agent, lease_atom::value, std::move(batch));
      },
      [self](tick_atom) {
        if (!from_here(self))
          return;
        check_leases(self);
        auto tick
            = std::max<int64_t>(20, self->state.cfg.lease_ttl.count() / 8);
        self->delayed_send(self, std::chrono::milliseconds{tick},
                           tick_atom::value);
      },
  };
}

} // namespace

node_link_local spawn_node_link(caf::actor_system& sys, node_link_config cfg) {
  return sys.spawn(link_impl, std::move(cfg));
}

} // namespace drover
