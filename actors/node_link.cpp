#include "actors/node_link.hpp"

#include "actors/detail/node_link_state.hpp"

#include "actors/queue.hpp"
#include "runtime/errors.hpp"
#include "runtime/json_text.hpp"
#include "runtime/log.hpp"
#include "runtime/partition.hpp"
#include "runtime/resources.hpp"
#include "runtime/submit.hpp"
#include "runtime/type_ids.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/send.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <map>
#include <optional>
#include <set>

namespace drover {

namespace {

using link_timers::flush_atom;
using link_timers::tick_atom;

// -- the link -----------------------------------------------------------------

using namespace detail;

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

/// How long a lease may wait for others to share its batch. Job
/// supervisors start attempts one by one as their `started` commits come
/// back (a group commit answers many at once, but each reply is its own
/// message), so a batch gathers over a short window, not one mailbox pass.
constexpr auto lease_batch_window = std::chrono::milliseconds{1};

/// Lease checks run every eighth of the shortest lease TTL.
int64_t tick_ms(link_actor self) {
  auto ttl = self->state.cfg.lease_ttl;
  for (auto& [type, t] : self->state.cfg.lease_ttl_by_type)
    ttl = std::min(ttl, t);
  return std::max<int64_t>(20, ttl.count() / 8);
}

void arm_flush(link_actor self) {
  auto& st = self->state;
  if (st.flush_armed)
    return;
  st.flush_armed = true;
  self->delayed_send(self, lease_batch_window, flush_atom::value);
}

/// Tells the queue whether the node lets attempt `attempt` (0 = none) of
/// `job_id`, on slot `index`, go to another of its agents.
void tell_let_go(link_actor self, const std::string& job_id, uint32_t attempt,
                 uint32_t index) {
  auto& st = self->state;
  self->send(st.cfg.handles->queue(), let_go_atom::value, job_id, attempt,
             st.slots[index].actor);
}

coordinator_reply on_heartbeat(link_actor self, heartbeat& hb) {
  auto& st = self->state;
  auto now = now_ms(self);
  st.last_heartbeat_ms = now;
  ++st.heartbeats;
  if (st.suspect) {
    st.suspect = false;
    for (uint32_t i = 0; i < st.slots.size(); ++i)
      offer(self, i);
  }
  std::set<std::string> listed;
  for (auto& ra : hb.running) {
    listed.insert(ra.job_id);
    if (st.lent.count({ra.job_id, ra.attempt}) > 0) {
      // Handed over from here and the node has not heard (the reply that
      // said so was lost, or crossed the lease): said again.
      say_lent_again(self, ra.job_id, ra.attempt);
      continue;
    }
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
    if (i->second.let_go) {
      // Taken back (nobody took it over): it moves no more.
      i->second.let_go = false;
      tell_let_go(self, ra.job_id, 0, i->second.slot);
    }
    if (!i->second.adopting) {
      // Adopted from an offer and claimed by the node (it runs here now):
      // from here on like any attempt of this link, so a refused
      // re-adoption (the queue restarted) supersedes it rather than
      // forgetting it while it runs, or lending it again.
      i->second.offered = false;
    }
  }
  // Listed as lent while it still reports here: the node lets its reports
  // go to another of its agents (an agent going home; moving_protocol). Its
  // lease holds meanwhile, and the queue may move it to the slot an offer
  // of it comes through (actors/queue_partitions.cpp, move_running).
  if (agreed_protocol(st) >= moving_protocol)
    for (auto& l : hb.lent) {
      auto i = st.attempts.find(l.job_id);
      if (i == st.attempts.end() || i->second.attempt != l.attempt
          || i->second.expired || i->second.completing || i->second.adopting
          || !i->second.js)
        continue;
      listed.insert(l.job_id);
      i->second.expiry_ms = now + std::max(i->second.ttl_ms, int64_t{1});
      if (!i->second.let_go) {
        i->second.let_go = true;
        tell_let_go(self, l.job_id, l.attempt, i->second.slot);
      }
    }
  // Leases the node refused for their stale partition epoch (this
  // coordinator was deposed and has not noticed yet): not run there, so
  // their slots are free now rather than after the TTL.
  for (auto& r : hb.refused) {
    auto* a = current(self, r.job_id, r.attempt);
    if (a == nullptr || a->expired || a->completing || a->adopting)
      continue;
    log::warn("node_link", log::job{r.job_id},
              "the node refused the lease: its partition was leased there at "
              "a newer epoch (this coordinator has been deposed)",
              {{"node", st.cfg.node_id}, {"attempt", r.attempt}});
    expire(self, r.job_id, *a);
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
  // Displaced superseded attempts the node has let go of free their slots.
  std::set<std::pair<std::string, uint32_t>> held_by_node;
  for (auto& ra : hb.running)
    held_by_node.emplace(ra.job_id, ra.attempt);
  for (auto& u : hb.unacknowledged)
    held_by_node.emplace(u.job_id, u.attempt);
  for (auto& l : hb.lent)
    held_by_node.emplace(l.job_id, l.attempt);
  on_handover_lists(self, hb, held_by_node);
  for (auto z = st.zombies.begin(); z != st.zombies.end();) {
    if (held_by_node.count(z->first) > 0) {
      ++z;
      continue;
    }
    auto slot = z->second;
    z = st.zombies.erase(z);
    free_slot(self, slot);
  }
  if (hb.draining) {
    // A draining node that no longer lists an attempt handed it back (its
    // drain deadline passed): reclaim the lease now rather than after the
    // TTL. Only leases sent before the node said it drains: it had them
    // before any later heartbeat (one connection, in order), while a lease
    // sent at the same moment may still be on its way and is left to the
    // TTL. An attempt adopted from an offer and not claimed yet is listed
    // as offered or lent, not as running: not handed back.
    for (auto& [job_id, a] : st.attempts) {
      if (listed.count(job_id) > 0 || unacked.count(job_id) > 0 || a.expired
          || a.completing || a.js_gone || a.adopting || a.offered
          || st.drain_started_ms == 0 || a.leased_ms >= st.drain_started_ms)
        continue;
      log::info("node_link", log::job{job_id},
                "a draining node handed the attempt back; it runs again",
                {{"node", st.cfg.node_id}, {"attempt", a.attempt}});
      expire(self, job_id, a);
    }
  }
  if (hb.draining && !st.draining) {
    st.draining = true;
    st.drain_started_ms = now;
    log::info("node_link", "worker node drains: no new leases",
              {{"node", st.cfg.node_id}});
    withdraw_free_slots(self);
  } else if (!hb.draining && st.draining) {
    // It takes leases again: a worker agent that meant to go back to its
    // own coordinator found it gone again (a SIGTERM drain never ends so).
    st.draining = false;
    st.drain_started_ms = 0;
    log::info("node_link", "worker node takes leases again",
              {{"node", st.cfg.node_id}});
    for (uint32_t i = 0; i < st.slots.size(); ++i)
      offer(self, i);
  }
  return take_reply(self);
}

coordinator_reply on_report(link_actor self, progress_batch& progress,
                            completion_batch& completions) {
  auto& st = self->state;
  ++st.reports;
  for (auto& u : progress.updates) {
    if (st.lent.count({u.job_id, u.attempt}) > 0)
      continue; // handed over: its new owner takes it
    auto* a = current(self, u.job_id, u.attempt);
    if (a == nullptr || a->js_gone || a->adopting) {
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
    if (st.lent.count({c.job_id, c.attempt}) > 0)
      continue; // handed over: the node hands the outcome to the new owner
    auto i = st.attempts.find(c.job_id);
    if (i == st.attempts.end() || i->second.attempt != c.attempt) {
      // Unknown: superseded long ago (or settled and acknowledged late).
      record_rejection(self, c.job_id, c.attempt, "an outcome");
      st.settled.push_back(std::move(key));
      auto z = st.zombies.find({c.job_id, c.attempt});
      if (z != st.zombies.end()) {
        auto slot = z->second;
        st.zombies.erase(z);
        free_slot(self, slot);
      }
      continue;
    }
    auto& a = i->second;
    if (a.adopting) {
      a.held = std::move(c); // forwarded once its supervisor exists
      continue;
    }
    if (a.expired) {
      record_rejection(self, c.job_id, c.attempt, "an outcome");
      st.settled.push_back(std::move(key));
      drop_attempt(self, c.job_id);
      continue;
    }
    if (a.completing)
      continue; // sent again before it settled
    if (a.js_gone && !a.abandoned) {
      // Its supervisor died with the store: the queue that recovers the
      // job adopts the attempt (follow_queue) and gets the outcome then.
      // Not settled: the node keeps it until a commit is certain.
      a.held = std::move(c);
      continue;
    }
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
    if (a.measured)
      note_run_time(self, st.slots[slot].resource_class,
                    now_ms(self) - a.leased_ms);
    free_slot(self, slot);
  }
  return take_reply(self);
}

/// Tokens for an attempt running on this node, from the queue's limiter,
/// asked for in the name of the attempt's slot (the queue checks that the
/// job runs there).
caf::result<uint32_t, int64_t> take_tokens(link_actor self,
                                           const std::string& job_id,
                                           uint32_t attempt, uint32_t wanted) {
  auto& st = self->state;
  auto i = st.attempts.find(job_id);
  if (i != st.attempts.end() && i->second.attempt == attempt
      && (i->second.adopting || (i->second.js_gone && !i->second.abandoned)))
    // Its supervisor is on its way (this coordinator restarted): ask again.
    return make_error(errc::unavailable, "attempt " + std::to_string(attempt)
                                             + " of job " + job_id
                                             + " is being adopted; ask again");
  if (i == st.attempts.end() || i->second.attempt != attempt
      || i->second.expired || i->second.completing || i->second.js_gone
      || i->second.adopting)
    return make_error(errc::stale_attempt,
                      "attempt " + std::to_string(attempt) + " of job " + job_id
                          + " does not run on node " + st.cfg.node_id);
  auto rp = self->make_response_promise<uint32_t, int64_t>();
  self->request(st.cfg.handles->queue(), std::chrono::seconds{10},
                take_atom::value, job_id, st.slots[i->second.slot].actor,
                wanted)
      .then([rp](uint32_t granted,
                 int64_t retry_ms) mutable { rp.deliver(granted, retry_ms); },
            [rp](caf::error& err) mutable { rp.deliver(std::move(err)); });
  return rp;
}

void on_run(link_actor self, uint32_t index, lease& l,
            job_supervisor_actor& js) {
  auto& st = self->state;
  if (index >= st.slots.size())
    return;
  auto& slot = st.slots[index];
  if (auto old = st.attempts.find(l.job_id); old != st.attempts.end()) {
    // The job comes back to this node while its earlier attempt here is
    // superseded but not yet let go of: that slot stays taken.
    if (old->second.js)
      self->demonitor(old->second.js.address());
    st.zombies.emplace(std::make_pair(l.job_id, old->second.attempt),
                       old->second.slot);
    st.attempts.erase(old);
  }
  slot.job_id = l.job_id;
  slot.announced = false;
  attempt_info a;
  a.attempt = l.attempt;
  a.slot = index;
  a.js = js;
  a.queue = st.watched_queue;
  auto t = st.cfg.lease_ttl_by_type.find(l.spec.type);
  a.ttl_ms
      = (t != st.cfg.lease_ttl_by_type.end() ? t->second : st.cfg.lease_ttl)
            .count();
  a.expiry_ms = now_ms(self) + a.ttl_ms;
  a.leased_ms = now_ms(self);
  a.measured = slot_free_on_node(self, slot.resource_class);
  self->monitor(js);
  st.attempts[l.job_id] = a;
  l.lease_expiry_ms = a.expiry_ms;
  if (st.cfg.epochs)
    l.partition_epoch = st.cfg.epochs->of(partition_of_id(l.job_id));
  st.pending.push_back(std::move(l));
  arm_flush(self);
  // The class's real slots are all taken: its buffer credits open (for
  // short jobs).
  if (!slot.buffer)
    review_buffers(self, slot.resource_class);
}

node_link_local::behavior_type link_impl(link_actor self,
                                         node_link_config cfg) {
  auto& st = self->state;
  st.cfg = std::move(cfg);
  st.joined_ms = now_ms(self);
  // Checked at the join (cluster_endpoint.cpp).
  if (auto pools = amounts_of(st.cfg.registration.resources, "resources"))
    st.pools = to_text(*pools);
  // One credit per slot, plus the leases the node buffers (prefetch).
  for (auto& cap : st.cfg.registration.capacity)
    for (uint32_t i = 0; i < cap.slots + st.cfg.registration.prefetch; ++i) {
      slot_info s;
      s.resource_class = cap.resource_class;
      s.worker_id
          = st.cfg.node_id + "/" + cap.resource_class + "-" + std::to_string(i);
      s.buffer = i >= cap.slots;
      s.ordinal = i;
      st.slots.push_back(std::move(s));
    }
  for (auto& e : st.cfg.registration.elastic)
    for (auto& cap : st.cfg.registration.capacity)
      if (cap.resource_class == e.resource_class)
        st.elastic[e.resource_class]
            = {e.slots, e.slots, cap.slots, st.joined_ms, 0};
  self->set_down_handler([self](caf::down_msg& dm) {
    auto& st = self->state;
    if (dm.source == st.cfg.agent.address()) {
      st.connected = false;
      st.disconnected_ms = now_ms(self);
      // Leases not yet sent lapse with the others.
      st.pending.clear();
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
      if (a.queue && a.queue != st.watched_queue) {
        // Its queue restarted and this link already follows the new one
        // (follow_queue asked it for the attempts gone before): ask now.
        adopt_again(self, job_id);
      }
      return;
    }
  });
  follow_queue(self);
  self->delayed_send(self, std::chrono::milliseconds{tick_ms(self)},
                     tick_atom::value);
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
      [self](take_atom, std::string& job_id, uint32_t attempt,
             uint32_t wanted) -> caf::result<uint32_t, int64_t> {
        if (!from_agent(self))
          return make_error(errc::forbidden, "not this node's agent");
        return take_tokens(self, job_id, attempt, wanted);
      },
      [self](run_atom, uint32_t index, lease& l, job_supervisor_actor& js) {
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
            && !i->second.completing) {
          i->second.js_gone = true; // its supervisor stopped waiting
          i->second.abandoned = true;
        }
        if (st.connected)
          self->send(st.cfg.agent, abandon_atom::value, std::move(job_id),
                     attempt);
      },
      [self](handover_atom, uint32_t index, std::string& job_id,
             uint32_t attempt) {
        if (from_here(self))
          hand_over(self, index, job_id, attempt);
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
        follow_queue(self);
        check_leases(self);
        elastic_review(self);
        self->delayed_send(self, std::chrono::milliseconds{tick_ms(self)},
                           tick_atom::value);
      },
  };
}

} // namespace

node_link_local spawn_node_link(caf::actor_system& sys, node_link_config cfg) {
  return sys.spawn(link_impl, std::move(cfg));
}

} // namespace drover
