// The node link's slots and leases (actors/node_link.cpp is the link's
// behaviour): credits offered to the queue and withdrawn, the adaptive
// buffer (prefetch) credits, and lapsed leases reclaimed. Internal; the
// contracts are in actors/detail/node_link_state.hpp.

#include "actors/detail/node_link_state.hpp"

#include "actors/queue.hpp"
#include "runtime/errors.hpp"
#include "runtime/log.hpp"
#include "runtime/type_ids.hpp"

#include <caf/send.hpp>

#include <algorithm>
#include <functional>

namespace drover::detail {

namespace {

/// True when every real slot of `cls` holds an attempt.
bool class_full(link_actor self, const std::string& cls) {
  for (auto& s : self->state.slots)
    if (!s.buffer && s.resource_class == cls && s.job_id.empty())
      return false;
  return true;
}

/// True when the class's buffer credits are open (measured short; none
/// measured yet = no).
bool short_jobs(link_actor self, const std::string& cls) {
  return self->state.short_classes.count(cls) > 0;
}

/// False for a real slot of an elastic class beyond what it offers now.
bool elastic_active(link_actor self, const slot_info& slot) {
  auto e = self->state.elastic.find(slot.resource_class);
  return slot.buffer || e == self->state.elastic.end()
         || slot.ordinal < e->second.active;
}

/// Withdraws the announced slot `index` through the queue, which may have
/// handed it a job already (then that job runs: a lease on its way is never
/// dropped). `withdrawn` runs once the queue forgot the slot while it was
/// still idle (same actor, no job).
void withdraw_slot(link_actor self, uint32_t index,
                   std::function<void()> withdrawn) {
  auto& slot = self->state.slots[index];
  slot.withdrawing = true;
  auto actor = slot.actor;
  self->request(self->state.cfg.handles->queue(), caf::infinite,
                withdraw_atom::value, actor)
      .then(
          [self, index, actor, withdrawn](bool was_idle) {
            auto& s = self->state.slots[index];
            // Cleared whoever answers: a slot whose actor was replaced
            // meanwhile must not stay withdrawing.
            s.withdrawing = false;
            if (s.actor != actor || !was_idle || !s.job_id.empty())
              return;
            s.announced = false;
            withdrawn();
          },
          [self, index](caf::error& err) {
            auto& st = self->state;
            st.slots[index].withdrawing = false;
            log::warn("node_link", "withdrawing a slot from the queue failed",
                      {{"node", st.cfg.node_id},
                       {"slot", st.slots[index].worker_id},
                       {"error", describe(err)}});
          });
}

/// Closes a class's buffer credits.
void turn_long(link_actor self, const std::string& cls) {
  if (self->state.short_classes.erase(cls) > 0)
    review_buffers(self, cls);
}

} // namespace

/// Tells the queue a slot is free (while the node takes leases).
void offer(link_actor self, uint32_t index) {
  auto& st = self->state;
  auto& slot = st.slots[index];
  if (!slot.job_id.empty() || !st.connected || st.draining || st.suspect
      || slot.announced || slot.borrowed || !elastic_active(self, slot))
    return;
  if (slot.buffer
      && (!class_full(self, slot.resource_class)
          || !short_jobs(self, slot.resource_class)))
    return;
  slot.announced = true;
  if (!slot.actor) {
    slot.actor = self->spawn(slot_impl, node_link_local{self}, index);
  }
  // Straight to the queue, naming the slot actor as the worker: one hop
  // per job less than asking the slot to announce itself.
  if (!slot.buffer && st.elastic.count(slot.resource_class) > 0) {
    // An elastic slot: the queue answers whether it handed it a job at
    // once (jobs were waiting for the class: one more slot).
    auto actor = slot.actor;
    self->request(st.cfg.handles->queue(), caf::infinite, ready_atom::value,
                  slot.resource_class, slot.worker_id, slot.actor,
                  st.cfg.registration.job_types, st.pools, true)
        .then(
            [self, index, actor](bool taken) {
              if (taken && self->state.slots[index].actor == actor)
                elastic_grow(self, index);
            },
            [self, index](caf::error& err) {
              auto& st = self->state;
              log::warn("node_link", "offering an elastic slot failed",
                        {{"node", st.cfg.node_id},
                         {"slot", st.slots[index].worker_id},
                         {"error", describe(err)}});
            });
    return;
  }
  self->send(st.cfg.handles->queue(), ready_atom::value, slot.resource_class,
             slot.worker_id, slot.actor, st.cfg.registration.job_types,
             st.pools);
}

/// Retires the actor of free slot `index` while the node takes no leases
/// (disconnected, suspect, draining) and the queue does not hold the slot
/// as idle: the queue forgets it (a job only it could run shows that no
/// worker runs it). Offered again later under a new actor.
void retire_idle(link_actor self, uint32_t index) {
  auto& st = self->state;
  auto& slot = st.slots[index];
  if ((st.connected && !st.draining && !st.suspect) || !slot.job_id.empty()
      || slot.announced || slot.withdrawing || !slot.actor)
    return;
  self->send_exit(slot.actor, caf::exit_reason::user_shutdown);
  slot.actor = nullptr;
}

/// Withdraws the free slots from the queue (disconnected, suspect or
/// draining). An announced slot through the queue, never by stopping its
/// actor first: the queue may have handed it a job whose `started` is being
/// written, and that job's supervisor would take the slot's end for an
/// orderly stop and leave the job processing with nobody running it. A
/// slot the queue handed out keeps its job (the lease goes out or lapses).
void withdraw_free_slots(link_actor self) {
  auto& slots = self->state.slots;
  for (uint32_t i = 0; i < slots.size(); ++i) {
    if (!slots[i].job_id.empty() || slots[i].withdrawing)
      continue;
    if (!slots[i].announced) {
      retire_idle(self, i);
      continue;
    }
    withdraw_slot(self, i, [self, i] {
      offer(self, i); // the node may take leases again meanwhile
      retire_idle(self, i);
    });
  }
}

void review_buffers(link_actor self, const std::string& cls) {
  auto& st = self->state;
  bool open = class_full(self, cls) && short_jobs(self, cls);
  for (uint32_t i = 0; i < st.slots.size(); ++i) {
    auto& slot = st.slots[i];
    if (!slot.buffer || slot.resource_class != cls || !slot.job_id.empty())
      continue;
    if (open) {
      offer(self, i);
    } else if (slot.announced && !slot.withdrawing && !short_jobs(self, cls)) {
      // Jobs got long: an announced buffer credit would park a job behind
      // a busy slot.
      withdraw_slot(self, i, [self, i] {
        offer(self, i); // the class may be short again
      });
    }
  }
}

/// Folds an attempt's run time (lease sent to outcome received) into its
/// class's average, opening or closing the buffer credits when it crosses
/// the threshold.
void note_run_time(link_actor self, const std::string& cls, int64_t ms) {
  auto& st = self->state;
  auto [i, fresh] = st.run_ms.emplace(cls, static_cast<double>(ms));
  if (!fresh)
    i->second = 0.8 * i->second + 0.2 * static_cast<double>(ms);
  if (i->second < prefetch_short_job_ms) {
    if (st.short_classes.insert(cls).second)
      review_buffers(self, cls);
  } else if (i->second > prefetch_long_job_ms) {
    turn_long(self, cls);
  }
}

bool slot_free_on_node(link_actor self, const std::string& cls) {
  auto& st = self->state;
  size_t slots = 0;
  for (auto& s : st.slots)
    if (!s.buffer && s.resource_class == cls)
      ++slots;
  size_t running = 0;
  for (auto& [job_id, a] : st.attempts)
    if (!a.completing && !a.expired && st.slots[a.slot].resource_class == cls)
      ++running;
  return running < slots;
}

void free_slot(link_actor self, uint32_t index) {
  auto& st = self->state;
  if (index >= st.slots.size())
    return;
  auto& slot = st.slots[index];
  slot.job_id.clear();
  offer(self, index);
  // Not offered again (an inactive elastic slot, a closed buffer credit, a
  // draining or disconnected node): the queue still learns that the slot
  // let go of its attempt, so the pool amounts it held come back.
  if (!slot.announced && slot.actor && !slot.borrowed)
    self->send(st.cfg.handles->queue(), let_go_atom::value, slot.actor);
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

/// Whether `rec` shows that `attempt` ended by its own outcome, already
/// committed: the job completed, failed or is retrying at that attempt,
/// and the attempt was not settled as lost. A report of such an attempt is
/// a repeat the worker sends because it never heard the commit (its
/// coordinator died first), not a zombie's.
bool outcome_committed(const job_record& rec, uint32_t attempt) {
  auto ended = rec.status == job_status::completed
               || rec.status == job_status::failed
               || rec.status == job_status::retrying;
  return ended && rec.attempt == attempt && rec.last_lost_attempt != attempt;
}

/// Records once, in the job's history, that a superseded attempt's report
/// was refused — unless the store shows the attempt's outcome committed
/// already (then it is only logged).
void record_rejection(link_actor self, const std::string& job_id,
                      uint32_t attempt, const std::string& what) {
  auto& st = self->state;
  ++st.rejected;
  if (st.recorded.size() > 10000)
    st.recorded.clear();
  if (!st.recorded.emplace(job_id, attempt).second)
    return;
  auto append = [self, job_id, attempt, what] {
    auto& st = self->state;
    // The store of now: the read before may have taken a while.
    auto store = st.cfg.handles->store();
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
    self->request(store, caf::infinite, append_atom::value,
                  std::vector<job_event>{std::move(ev)})
        .then([](ok_atom) {},
              [job_id](caf::error& err) {
                log::warn("node_link", log::job{job_id},
                          "could not record a refused report",
                          {{"error", describe(err)}});
              });
  };
  self->request(st.cfg.handles->store(), std::chrono::seconds{30},
                get_atom::value, job_id)
      .then(
          [self, job_id, attempt, what, append](job_record& rec) {
            if (!outcome_committed(rec, attempt))
              return append();
            log::info("node_link", log::job{job_id},
                      "a report of an attempt whose outcome is committed "
                      "came again; settled",
                      {{"node", self->state.cfg.node_id},
                       {"attempt", attempt},
                       {"what", what}});
          },
          [append](caf::error&) { append(); });
}

void supersede(link_actor self, const std::string& job_id, uint32_t attempt) {
  self->state.superseded.push_back(running_attempt{job_id, attempt, {}});
}

/// Reclaims lapsed leases.
void expire(link_actor self, const std::string& job_id, attempt_info& a) {
  a.expired = true;
  ++self->state.expired;
  if (a.js)
    caf::anon_send(a.js, expired_atom::value, job_id, a.attempt);
}

void check_leases(link_actor self) {
  auto& st = self->state;
  auto now = now_ms(self);
  if (st.connected && !st.suspect
      && now - st.last_heartbeat_ms > 2 * st.cfg.heartbeat_interval.count()) {
    st.suspect = true;
    withdraw_free_slots(self);
  }
  // A measured attempt that has run long closes its class's buffer now,
  // before its outcome would tell.
  for (auto& [job_id, a] : st.attempts)
    if (a.measured && !a.completing && !a.expired
        && now - a.leased_ms > prefetch_long_job_ms) {
      auto& cls = st.slots[a.slot].resource_class;
      if (short_jobs(self, cls)) {
        auto& avg = st.run_ms[cls];
        avg = std::max(avg, static_cast<double>(now - a.leased_ms));
        turn_long(self, cls);
      }
    }
  for (auto& [job_id, a] : st.attempts) {
    if (a.expired || a.completing || a.js_gone || a.adopting
        || a.expiry_ms > now)
      continue;
    log::warn("node_link", log::job{job_id},
              "lease expired; the job runs again",
              {{"node", st.cfg.node_id},
               {"attempt", a.attempt},
               {"connected", st.connected}});
    expire(self, job_id, a);
  }
  if (!st.connected) {
    // Gone: an expired attempt's worker can no longer let go; free it.
    for (auto& [key, slot] : st.zombies)
      free_slot(self, slot);
    st.zombies.clear();
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

void elastic_grow(link_actor self, uint32_t index) {
  auto& st = self->state;
  auto& slot = st.slots[index];
  auto e = st.elastic.find(slot.resource_class);
  if (e == st.elastic.end() || e->second.active >= e->second.max)
    return;
  auto next = e->second.active++;
  ++st.elastic_grown;
  log::info("node_link", "elastic: a slot more, jobs wait for this class",
            {{"node", st.cfg.node_id},
             {"class", slot.resource_class},
             {"slots", e->second.active}});
  for (uint32_t i = 0; i < st.slots.size(); ++i)
    if (!st.slots[i].buffer && st.slots[i].resource_class == slot.resource_class
        && st.slots[i].ordinal == next)
      offer(self, i);
}

void elastic_review(link_actor self) {
  auto& st = self->state;
  auto now = now_ms(self);
  auto idle = static_cast<int64_t>(st.cfg.registration.elastic_idle_ms);
  for (auto& [cls, e] : st.elastic) {
    // The most slots of the class busy at once in this window.
    uint32_t busy = 0;
    for (auto& slot : st.slots)
      if (!slot.buffer && slot.resource_class == cls && !slot.job_id.empty())
        ++busy;
    e.peak = std::max(e.peak, busy);
    if (now - e.window_ms < idle)
      continue;
    // A window without all of them in use: the highest offered slot goes
    // (one per window, down to the start; one already handed a job, or
    // busy, stays and the next window decides again).
    bool shrink = e.active > e.min && e.peak < e.active;
    e.window_ms = now;
    e.peak = busy;
    if (!shrink)
      continue;
    for (uint32_t i = 0; i < st.slots.size(); ++i) {
      auto& slot = st.slots[i];
      if (slot.buffer || slot.resource_class != cls
          || slot.ordinal + 1 != e.active)
        continue;
      if (!slot.job_id.empty() || slot.withdrawing)
        break;
      if (!slot.announced) { // not offered (disconnected, draining): drop it
        --e.active;
        ++st.elastic_shrunk;
        break;
      }
      withdraw_slot(self, i, [self, i, cls = cls] {
        auto& st = self->state;
        auto e = st.elastic.find(cls);
        if (e == st.elastic.end()
            || e->second.active != st.slots[i].ordinal + 1) {
          offer(self, i); // no longer the highest: still offered
          return;
        }
        --e->second.active;
        ++st.elastic_shrunk;
        log::info("node_link", "elastic: a slot less, unused",
                  {{"node", st.cfg.node_id},
                   {"class", cls},
                   {"slots", e->second.active}});
      });
      break;
    }
  }
}

} // namespace drover::detail
