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

#include <caf/sec.hpp>
#include <caf/send.hpp>

#include <algorithm>
#include <chrono>
#include <set>
#include <string>

namespace drover::detail {

uint32_t agreed_protocol(const link_state& st) {
  return std::min(st.cfg.registration.protocol_max, cluster_protocol_max);
}

coordinator_reply base_reply(link_actor self) {
  coordinator_reply r;
  r.coordinator_id = self->state.cfg.coordinator_id;
  // The version agreed at the hello (the node's highest this build
  // speaks), not this build's own highest.
  r.protocol = agreed_protocol(self->state);
  r.lease_ttl_ms = self->state.cfg.lease_ttl.count();
  r.heartbeat_interval_ms = self->state.cfg.heartbeat_interval.count();
  return r;
}

/// Settled completions and superseded attempts go out with every reply.
coordinator_reply take_reply(link_actor self) {
  auto r = base_reply(self);
  r.settled.swap(self->state.settled);
  r.superseded.swap(self->state.superseded);
  r.handed_over.swap(self->state.handed_over);
  r.owned_elsewhere.swap(self->state.owned_elsewhere);
  r.adopted.swap(self->state.adopted);
  return r;
}

namespace {

/// A free slot of `cls` (not a borrowed one), or -1.
int free_slot_of(link_actor self, const std::string& cls) {
  auto& slots = self->state.slots;
  for (size_t i = 0; i < slots.size(); ++i)
    if (slots[i].job_id.empty() && slots[i].resource_class == cls
        && !slots[i].borrowed)
      return static_cast<int>(i);
  return -1;
}

/// A borrowed slot for an attempt of `cls` that runs on the node for
/// another coordinator's share (a free one again, or a new one).
uint32_t borrowed_slot(link_actor self, const std::string& cls) {
  auto& st = self->state;
  for (uint32_t i = 0; i < st.slots.size(); ++i)
    if (st.slots[i].borrowed && st.slots[i].job_id.empty()) {
      st.slots[i].resource_class = cls;
      return i;
    }
  slot_info s;
  s.resource_class = cls;
  s.ordinal = static_cast<uint32_t>(st.slots.size());
  s.worker_id = st.cfg.node_id + "/borrowed-" + std::to_string(st.slots.size());
  s.buffer = true;
  s.borrowed = true;
  st.slots.push_back(std::move(s));
  return static_cast<uint32_t>(st.slots.size() - 1);
}

/// The node keeps running attempt `i` for another coordinator: its slot
/// stays taken while the node lists it (`lent`), and the reply list `said`
/// tells the node.
void lend_out(link_actor self, decltype(link_state::attempts)::iterator i,
              std::vector<running_attempt>& said, const char* what) {
  auto& st = self->state;
  auto job_id = i->first;
  auto attempt = i->second.attempt;
  st.lent.emplace(std::make_pair(job_id, attempt), i->second.slot);
  st.attempts.erase(i);
  said.push_back(running_attempt{job_id, attempt, {}});
  log::info("node_link", log::job{job_id}, what,
            {{"node", st.cfg.node_id}, {"attempt", attempt}});
}

/// Attempt `attempt` of `job_id`, re-reported here, is another
/// coordinator's (the queue waited for its partition in vain): its slot
/// stays taken while the node runs it (`lent`), and the node offers it to
/// its other coordinators (CoordinatorReply.ownedElsewhere). An outcome
/// held here goes with it: the node still has it (until it is settled)
/// and posts it; the slot is free once the node lists the attempt no more.
void pass_on(link_actor self, const std::string& job_id, uint32_t attempt) {
  auto& st = self->state;
  st.lent_elsewhere.insert({job_id, attempt});
  lend_out(self, st.attempts.find(job_id), st.owned_elsewhere,
           "a running attempt reported here is another coordinator's: the "
           "node offers it there");
}

/// Asks the queue to give attempt `attempt` of `job_id` (in its slot, in
/// `attempts`, marked adopting) a job supervisor. An offered attempt (handed
/// over by another coordinator) is refused at once unless this coordinator
/// owns its partition, and a refusal only forgets it here.
void request_adoption(link_actor self, const std::string& job_id,
                      uint32_t attempt) {
  auto& st = self->state;
  auto& slot = st.slots[st.attempts[job_id].slot];
  // The queue answers within the deadline or refuses: past it, this link
  // has given up and stopped the attempt (a late adoption would leave the
  // job processing with nobody to end it).
  // On the process's monotonic clock, which the queue's flow_now reads
  // too: a step of the wall clock moves neither side's idea of it.
  auto wait = st.cfg.adoption_wait;
  auto deadline = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::steady_clock::now().time_since_epoch() + wait
                      - std::chrono::seconds{1})
                      .count();
  bool offered = st.attempts[job_id].offered;
  auto queue = st.cfg.handles->queue();
  auto asked = queue.address();
  st.attempts[job_id].asked = asked;
  // The reply of the queue asked last counts: one of a queue that died
  // meanwhile (and was asked again: follow_queue) is stale.
  auto current = [self, job_id, attempt, asked] {
    auto& st = self->state;
    auto i = st.attempts.find(job_id);
    return i != st.attempts.end() && i->second.attempt == attempt
                   && i->second.asked == asked
               ? i
               : st.attempts.end();
  };
  self->request(queue, wait, adopt_atom::value, job_id, attempt, slot.worker_id,
                slot.actor, deadline, !offered)
      .then(
          [self, job_id, attempt, current](job_supervisor_actor& js) {
            auto& st = self->state;
            auto i = current();
            if (i == st.attempts.end())
              return;
            auto& a = i->second;
            a.queue = a.asked;
            a.asked = {};
            a.js = js;
            a.adopting = false;
            self->monitor(js);
            if (a.offered) {
              log::info("node_link", log::job{job_id},
                        "took over an attempt another coordinator handed "
                        "over; it runs on",
                        {{"node", st.cfg.node_id}, {"attempt", attempt}});
              st.adopted.push_back(running_attempt{job_id, attempt, {}});
            }
            if (a.held) {
              // It finished while the adoption was pending.
              a.completing = true;
              caf::anon_send(a.js, done_atom::value, std::move(*a.held));
              a.held.reset();
              free_slot(self, a.slot);
            }
          },
          [self, job_id, attempt, current](caf::error& err) {
            auto& st = self->state;
            auto i = current();
            if (i == st.attempts.end())
              return;
            if (err && err.category() == caf::atom("system")
                && err.code()
                       == static_cast<uint8_t>(
                           caf::sec::request_receiver_down)) {
              // The queue died with the request (the job system restarts):
              // asked again once the new queue is up (follow_queue).
              log::info("node_link", log::job{job_id},
                        "the queue asked to adopt a running attempt stopped: "
                        "the next one is asked",
                        {{"attempt", attempt}});
              return;
            }
            i->second.asked = {};
            if (i->second.offered) {
              // Not this coordinator's partition (or not yet recovered):
              // the node offers it again, here and elsewhere.
              log::debug("node_link", log::job{job_id},
                         "an attempt offered by the node is not adopted here",
                         {{"attempt", attempt}, {"reason", describe(err)}});
              if (!st.slots[i->second.slot].borrowed && !i->second.held) {
                // Offered back on its own slot (adopt_back): it still runs
                // there, for another coordinator.
                st.lent.emplace(std::make_pair(job_id, attempt),
                                i->second.slot);
                st.attempts.erase(i);
                return;
              }
              drop_attempt(self, job_id);
              return;
            }
            i->second.adopting = false;
            if (is(err, errc::not_owner)
                && agreed_protocol(st) >= lending_protocol) {
              // Reported here after its coordinator died, and another
              // coordinator took its partition (waiting for it to be
              // re-reported): the node offers it there, as after a
              // hand-off, instead of stopping it (before, the job ran again
              // from the start). An older node would ignore the word and
              // run it on unowned: superseded, as before.
              pass_on(self, job_id, attempt);
              return;
            }
            log::info("node_link", log::job{job_id},
                      "a running attempt could not be adopted; superseded",
                      {{"attempt", attempt}, {"reason", describe(err)}});
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

bool adopt_again(link_actor self, const std::string& job_id) {
  auto& st = self->state;
  auto i = st.attempts.find(job_id);
  if (i == st.attempts.end())
    return false;
  auto& a = i->second;
  if (!a.js_gone || a.abandoned || a.adopting || a.expired || a.completing)
    return false;
  a.js_gone = false;
  a.adopting = true;
  request_adoption(self, job_id, a.attempt);
  return true;
}

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
    if (!adopt_again(self, job_id) && a.adopting && a.asked
        && a.asked != st.watched_queue) {
      // Its adoption was asked of the queue that stopped (parked there
      // waiting for its partition or the recovery, it never gets an
      // answer): asked of this one, which recovered it as waiting.
      request_adoption(self, job_id, a.attempt);
    }
  for (uint32_t i = 0; i < st.slots.size(); ++i)
    offer(self, i);
}

namespace {

/// The node lists `ra` as running, but this link does not know it (this
/// coordinator restarted): ask the queue to adopt it into a slot.
/// Whether another borrowed slot may be taken: a node runs at most its own
/// slots, whatever it lists, so borrowed slots in use are bounded (a node
/// listing made-up attempts gets no more).
bool may_borrow(link_actor self) {
  size_t borrowed = 0;
  size_t own = 0;
  for (const auto& s : self->state.slots) {
    borrowed += s.borrowed && !s.job_id.empty() ? 1 : 0;
    own += s.borrowed ? 0 : 1;
  }
  return borrowed < std::max<size_t>(64, 8 * own);
}

/// Puts `ra` on slot `index` (its slot actor made if it has none: a slot
/// never offered) as waiting for the queue to adopt it, and asks.
void adopt_on(link_actor self, const running_attempt& ra, uint32_t index,
              bool offered) {
  auto& st = self->state;
  auto& slot = st.slots[index];
  slot.job_id = ra.job_id;
  if (!slot.actor)
    slot.actor = self->spawn(slot_impl, node_link_local{self}, index);
  attempt_info a;
  a.attempt = ra.attempt;
  a.slot = index;
  a.ttl_ms = st.cfg.lease_ttl.count(); // its type is not known here
  a.expiry_ms = now_ms(self) + a.ttl_ms;
  a.leased_ms = now_ms(self); // not measured: it started before
  a.adopting = true;          // no supervisor yet
  a.offered = offered;
  st.attempts[ra.job_id] = a;
  request_adoption(self, ra.job_id, ra.attempt);
}

/// False if no slot was left for it (a listed one is superseded, an
/// offered one waits).
bool adopt(link_actor self, const running_attempt& ra, bool offered = false) {
  auto& st = self->state;
  // An offered attempt runs on a slot of another coordinator's share; one
  // listed in a join beyond this share's slots ran on such a slot too (it
  // was handed over and adopted here before this coordinator restarted).
  int index = offered ? -1 : free_slot_of(self, ra.resource_class);
  if (index < 0) {
    if (!may_borrow(self)) {
      log::warn("node_link",
                "the node lists more attempts than it can run: not adopted",
                {{"node", st.cfg.node_id}, {"job", ra.job_id}});
      if (!offered)
        supersede(self, ra.job_id, ra.attempt);
      return false;
    }
    index = static_cast<int>(borrowed_slot(self, ra.resource_class));
  }
  adopt_on(self, ra, static_cast<uint32_t>(index), offered);
  return true;
}

/// An attempt this coordinator handed over (in `lent`, on slot `index`)
/// offered back by the node: asked to be adopted on that slot. A refusal
/// (the partition is another's) puts it back in `lent` (request_adoption).
void adopt_back(link_actor self, const running_attempt& ra, uint32_t index) {
  self->state.lent.erase({ra.job_id, ra.attempt});
  self->state.lent_elsewhere.erase({ra.job_id, ra.attempt});
  adopt_on(self, ra, index, true);
}

/// Attempts this coordinator handed over that the node still runs on its
/// share's workers, listed in a join (RegisterWorker.lent): unknown here
/// when this coordinator restarted since (or its link was made again).
/// Each takes a free real slot of its class, never offered, which stays
/// taken until the node no longer lists it (on_handover_lists). Before, the
/// restarted coordinator offered that slot, and the jobs it booked onto it
/// waited in the node's buffer behind the handed-over attempt, however
/// long it ran, while other nodes idled. Listing more attempts than there
/// are free slots only idles the node's own slots.
void keep_lent_slots(link_actor self,
                     const std::vector<running_attempt>& lent) {
  auto& st = self->state;
  size_t ignored = 0;
  for (const auto& ra : lent) {
    auto key = std::make_pair(ra.job_id, ra.attempt);
    auto known = st.attempts.find(ra.job_id);
    if (ra.job_id.empty() || st.lent.count(key) > 0
        || (known != st.attempts.end() && known->second.attempt == ra.attempt))
      continue; // handed over through this link, or running here
    auto free = std::find_if(st.slots.begin(), st.slots.end(), [&](auto& s) {
      return s.job_id.empty() && s.resource_class == ra.resource_class
             && !s.buffer && !s.borrowed && !s.announced && !s.withdrawing;
    });
    if (free == st.slots.end()) {
      ++ignored;
      continue;
    }
    free->job_id = ra.job_id;
    st.lent.emplace(key, static_cast<uint32_t>(free - st.slots.begin()));
    log::info("node_link", log::job{ra.job_id},
              "the node still runs an attempt handed over from here: its "
              "slot stays taken until it ends",
              {{"node", st.cfg.node_id},
               {"attempt", ra.attempt},
               {"slot", free->worker_id}});
  }
  if (ignored > 0)
    log::warn("node_link",
              "the node lists attempts handed over from here on slots this "
              "coordinator does not have free: ignored",
              {{"node", st.cfg.node_id}, {"attempts", ignored}});
}

} // namespace

void hand_over(link_actor self, uint32_t index, const std::string& job_id,
               uint32_t attempt) {
  auto& st = self->state;
  auto i = st.attempts.find(job_id);
  if (i == st.attempts.end() || i->second.attempt != attempt
      || i->second.slot != index || i->second.completing || i->second.expired
      || i->second.held || agreed_protocol(st) < lending_protocol) {
    // Nothing left to hand over (finished, lapsed or being written), or a
    // node that would not hear it (cluster_protocol.hpp, lending_protocol):
    // as an abandoned attempt, which the new owner settles or adopts by
    // itself.
    if (i != st.attempts.end() && i->second.attempt == attempt
        && !i->second.completing) {
      i->second.js_gone = true;
      i->second.abandoned = true;
    }
    if (st.connected)
      self->send(st.cfg.agent, abandon_atom::value, job_id, attempt);
    return;
  }
  if (i->second.js)
    self->demonitor(i->second.js.address());
  lend_out(self, i, st.handed_over,
           "partition handed over: the node keeps running the attempt for "
           "its new coordinator");
}

void say_lent_again(link_actor self, const std::string& job_id,
                    uint32_t attempt) {
  auto& st = self->state;
  auto& list = st.lent_elsewhere.count({job_id, attempt}) > 0
                   ? st.owned_elsewhere
                   : st.handed_over;
  list.push_back(running_attempt{job_id, attempt, {}});
}

void on_handover_lists(link_actor self, const heartbeat& hb,
                       const std::set<std::pair<std::string, uint32_t>>& held) {
  auto& st = self->state;
  // An outcome the node still sends here of an attempt handed over: the
  // node has not heard (it finished before the word came); said again, and
  // the node hands the outcome to the new owner.
  for (const auto& u : hb.unacknowledged)
    if (st.lent.count({u.job_id, u.attempt}) > 0)
      say_lent_again(self, u.job_id, u.attempt);
  for (auto l = st.lent.begin(); l != st.lent.end();) {
    if (held.count(l->first) > 0) {
      ++l;
      continue;
    }
    auto slot = l->second;
    st.lent_elsewhere.erase(l->first);
    l = st.lent.erase(l);
    free_slot(self, slot);
  }
  // A node runs at most its own slots, whatever it offers: borrowed slots
  // in use are bounded (a node listing made-up attempts gets no more).
  for (const auto& ra : hb.offered) {
    auto lent = st.lent.find({ra.job_id, ra.attempt});
    if (lent != st.lent.end()) {
      // Handed over from here, and handed on by the coordinator that took
      // it: back home if its partition is ours again, on the slot it never
      // left (the node's agent for this coordinator is its lender).
      if (st.attempts.count(ra.job_id) == 0)
        adopt_back(self, ra, lent->second);
      continue;
    }
    auto i = st.attempts.find(ra.job_id);
    if (i == st.attempts.end()) {
      if (!ra.resource_class.empty() && !adopt(self, ra, true))
        break; // the rest wait
      continue;
    }
    auto& a = i->second;
    if (a.attempt != ra.attempt || !a.offered || a.adopting || a.expired)
      continue;
    // Adopted here already, and the node has not heard (a reply lost with
    // its connection): say it again; meanwhile its lease holds.
    a.expiry_ms = now_ms(self) + std::max(a.ttl_ms, int64_t{1});
    st.adopted.push_back(running_attempt{ra.job_id, ra.attempt, {}});
  }
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
  if (reg.capacity != st.cfg.registration.capacity
      || reg.prefetch != st.cfg.registration.prefetch
      || reg.resources != st.cfg.registration.resources
      || reg.elastic != st.cfg.registration.elastic
      || reg.elastic_idle_ms != st.cfg.registration.elastic_idle_ms)
    return make_error(errc::conflict, "the node's slots or resources changed");
  if (st.cfg.agent && st.cfg.agent != agent)
    self->demonitor(st.cfg.agent.address());
  // A node restarted on another build under the same id (a rolling
  // upgrade) while its link lived on: its replies name the version agreed
  // now.
  st.cfg.registration.protocol_min = reg.protocol_min;
  st.cfg.registration.protocol_max = reg.protocol_max;
  st.cfg.agent = std::move(agent);
  self->monitor(st.cfg.agent);
  st.connected = true;
  if (reg.draining && !st.draining)
    st.drain_started_ms = now_ms(self);
  st.draining = reg.draining;
  st.joined_ms = now_ms(self);
  st.last_heartbeat_ms = st.joined_ms;
  // First: each of these runs on one of this share's workers.
  keep_lent_slots(self, reg.lent);
  std::set<std::string> listed;
  for (auto& ra : reg.running) {
    listed.insert(ra.job_id);
    if (st.lent.count({ra.job_id, ra.attempt}) > 0) {
      // Handed over from here; the node has not heard yet: said again.
      say_lent_again(self, ra.job_id, ra.attempt);
      continue;
    }
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
