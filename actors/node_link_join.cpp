// The node link's joining side (actors/node_link.cpp is the link's
// behaviour): a worker node's join checked against its registration, its
// running attempts kept, adopted (this coordinator restarted, or took
// their partitions) or superseded, and the adoptions the queue is asked
// for, also after the queue restarted. Internal; the contracts are in
// actors/detail/node_link_state.hpp.

#include "actors/detail/node_link_state.hpp"

#include "actors/queue.hpp"
#include "runtime/errors.hpp"
#include "runtime/log.hpp"
#include "runtime/type_ids.hpp"

#include <caf/send.hpp>

#include <chrono>
#include <set>
#include <string>

namespace drover::detail {

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

namespace {

/// A free slot of `cls`, or -1.
int free_slot_of(link_actor self, const std::string& cls) {
  auto& slots = self->state.slots;
  for (size_t i = 0; i < slots.size(); ++i)
    if (slots[i].job_id.empty() && slots[i].resource_class == cls)
      return static_cast<int>(i);
  return -1;
}

/// Asks the queue to give attempt `attempt` of `job_id` (in its slot, in
/// `attempts`, marked adopting) a job supervisor.
void request_adoption(link_actor self, const std::string& job_id,
                      uint32_t attempt) {
  auto& st = self->state;
  auto& slot = st.slots[st.attempts[job_id].slot];
  // The queue answers within the deadline or refuses: past it, this link
  // has given up and stopped the attempt (a late adoption would leave the
  // job processing with nobody to end it).
  constexpr auto wait = std::chrono::seconds{30};
  auto deadline
      = now_ms(self) + (wait - std::chrono::seconds{1}).count() * 1000;
  self->request(st.cfg.handles->queue(), wait, adopt_atom::value, job_id,
                attempt, slot.worker_id, slot.actor, deadline)
      .then(
          [self, job_id, attempt](job_supervisor_actor& js) {
            auto& st = self->state;
            auto i = st.attempts.find(job_id);
            if (i == st.attempts.end() || i->second.attempt != attempt)
              return;
            auto& a = i->second;
            a.js = js;
            a.adopting = false;
            self->monitor(js);
            if (a.held) {
              // It finished while the adoption was pending.
              a.completing = true;
              caf::anon_send(a.js, done_atom::value, std::move(*a.held));
              a.held.reset();
              free_slot(self, a.slot);
            }
          },
          [self, job_id, attempt](caf::error& err) {
            log::info("node_link", log::job{job_id},
                      "a running attempt could not be adopted; superseded",
                      {{"attempt", attempt}, {"reason", describe(err)}});
            auto& st = self->state;
            auto i = st.attempts.find(job_id);
            if (i == st.attempts.end() || i->second.attempt != attempt)
              return;
            i->second.adopting = false;
            if (i->second.held) {
              // Its outcome came but nobody owns the attempt any more.
              record_rejection(self, job_id, attempt, "an outcome");
              st.settled.push_back(running_attempt{job_id, attempt, {}});
              drop_attempt(self, job_id);
              return;
            }
            // A superseded attempt still running on the node: refused,
            // recorded (unless its outcome is committed: a repeat), stopped.
            record_rejection(self, job_id, attempt, "a running attempt");
            i->second.expired = true;
            supersede(self, job_id, attempt);
          });
}

} // namespace

/// The queue restarts with the job system (one_for_all): its idle lists
/// and the job supervisors die with it, and the new queue recovers this
/// node's running attempts as waiting for adoption. Offer the free slots to
/// the new queue and have it adopt the attempts whose supervisors died.
void follow_queue(link_actor self) {
  auto& st = self->state;
  auto q = st.cfg.handles->queue();
  if (!q || q.address() == st.watched_queue)
    return;
  bool first = !st.watched_queue;
  st.watched_queue = q.address();
  if (first)
    return;
  log::warn("node_link", "the queue restarted: offering this node again",
            {{"node", st.cfg.node_id}});
  for (auto& slot : st.slots)
    slot.announced = false;
  for (auto& [job_id, a] : st.attempts)
    if (a.js_gone && !a.abandoned && !a.adopting && !a.expired
        && !a.completing) {
      a.js_gone = false;
      a.adopting = true;
      request_adoption(self, job_id, a.attempt);
    }
  for (uint32_t i = 0; i < st.slots.size(); ++i)
    offer(self, i);
}

namespace {

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
                             static_cast<uint32_t>(index));
  attempt_info a;
  a.attempt = ra.attempt;
  a.slot = static_cast<uint32_t>(index);
  a.ttl_ms = st.cfg.lease_ttl.count(); // its type is not known here
  a.expiry_ms = now_ms(self) + a.ttl_ms;
  a.leased_ms = now_ms(self); // not measured: it started before
  a.adopting = true;          // no supervisor yet
  st.attempts[ra.job_id] = a;
  request_adoption(self, ra.job_id, ra.attempt);
}

} // namespace

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
  if (reg.capacity != st.cfg.registration.capacity
      || reg.prefetch != st.cfg.registration.prefetch
      || reg.resources != st.cfg.registration.resources
      || reg.elastic != st.cfg.registration.elastic
      || reg.elastic_idle_ms != st.cfg.registration.elastic_idle_ms)
    return make_error(errc::conflict, "the node's slots or resources changed");
  if (st.cfg.agent && st.cfg.agent != agent)
    self->demonitor(st.cfg.agent.address());
  st.cfg.agent = std::move(agent);
  self->monitor(st.cfg.agent);
  st.connected = true;
  if (reg.draining && !st.draining)
    st.drain_started_ms = now_ms(self);
  st.draining = reg.draining;
  st.joined_ms = now_ms(self);
  st.last_heartbeat_ms = st.joined_ms;
  std::set<std::string> listed;
  for (auto& ra : reg.running) {
    listed.insert(ra.job_id);
    auto i = st.attempts.find(ra.job_id);
    if (i != st.attempts.end() && i->second.attempt == ra.attempt) {
      if (!i->second.expired && !(i->second.js_gone && !i->second.adopting)) {
        // Kept: reconnected in time.
        i->second.expiry_ms = st.joined_ms + i->second.ttl_ms;
      } else {
        record_rejection(self, ra.job_id, ra.attempt, "a running attempt");
        supersede(self, ra.job_id, ra.attempt);
      }
      continue;
    }
    if (i != st.attempts.end()) {
      record_rejection(self, ra.job_id, ra.attempt, "a running attempt");
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

} // namespace drover::detail
