// Partitions coming and going on a coordinator that shares a database with
// others (issue 13, docs/cluster.md "Several active coordinators"): the
// queue holds the jobs of the partitions it owns and no others. A partition
// that arrives is recovered from the store; one that leaves (handed to
// another coordinator) takes its waiting jobs, its timers and its running
// attempts with it — the store has them, and the new owner recovers them
// (and adopts those a worker node still runs: adopt). See
// actors/detail/queue_state.hpp.

#include "actors/detail/queue_state.hpp"

namespace drover::queue_detail {

bool owns(const queue_state& st, const std::string& job_id) {
  return st.partitions.owns(partition_of_id(job_id));
}

caf::error check_owned(const queue_state& st, int32_t partition) {
  if (partition < 0)
    return make_error(errc::unavailable,
                      "this coordinator owns no partition at the moment (it "
                      "shares the database with other coordinators and is "
                      "taking or handing over its share); try again");
  if (!st.partitions.owns(partition))
    return make_error(errc::not_owner,
                      "partition " + std::to_string(partition)
                          + " (the partition of this job's concurrency key, "
                            "or else of its idempotency key) is owned by "
                            "another coordinator; submit through that one");
  return caf::none;
}

void share_rate_limits(self_ptr self) {
  auto& st = self->state;
  auto count = st.partitions.count();
  st.flow.set_share(
      count > 0 ? static_cast<double>(st.partitions.owned().size()) / count
                : 1.0,
      flow_now(self));
}

bool wait_for_partition(self_ptr self, const std::string& job_id,
                        std::function<void()> run,
                        std::function<void()> refuse) {
  auto& st = self->state;
  if (st.opts.adopt_wait.count() <= 0 || owns(st, job_id))
    return false;
  auto due = flow_now(self) + st.opts.adopt_wait.count();
  st.adopt_waiting[partition_of_id(job_id)].push_back(
      {due, std::move(run), std::move(refuse)});
  arm_adopt_timer(self, due);
  return true;
}

void arm_adopt_timer(self_ptr self, int64_t due) {
  auto& st = self->state;
  if (st.adopt_timer_at != 0 && st.adopt_timer_at <= due)
    return;
  st.adopt_timer_at = due;
  self->delayed_send(
      self,
      std::chrono::milliseconds{std::max<int64_t>(1, due - flow_now(self))},
      adopt_atom::value, ++st.adopt_timer_generation);
}

int64_t expire_waiting_adoptions(self_ptr self, int64_t now) {
  auto& st = self->state;
  int64_t next = 0;
  std::vector<std::function<void()>> refused;
  for (auto p = st.adopt_waiting.begin(); p != st.adopt_waiting.end();) {
    auto& list = p->second;
    for (auto w = list.begin(); w != list.end();) {
      if (w->due <= now) {
        refused.push_back(std::move(w->refuse));
        w = list.erase(w);
      } else {
        next = next == 0 ? w->due : std::min(next, w->due);
        ++w;
      }
    }
    p = list.empty() ? st.adopt_waiting.erase(p) : std::next(p);
  }
  for (auto& f : refused)
    f();
  return next;
}

namespace {

bool among(const std::vector<int32_t>& sorted, int32_t p) {
  return std::binary_search(sorted.begin(), sorted.end(), p);
}

/// Takes every waiting job of `gone` out of the queue: ready lanes, the
/// lines behind concurrency keys and flow gates, the timer. Entries are
/// collected first and let go after, since letting go of a slot wakes the
/// next parked job (which may be of another partition).
size_t forget_waiting(self_ptr self, const std::vector<int32_t>& gone) {
  auto& st = self->state;
  auto leaving = [&gone](const std::string& job_id) {
    return among(gone, partition_of_id(job_id));
  };
  std::vector<std::pair<std::string, ready_entry>> ready;
  std::set<std::string> shaped_classes;
  for (auto& [cls, cq] : st.classes)
    for (auto t = cq.by_type.begin(); t != cq.by_type.end();) {
      std::vector<ready_entry> out;
      for (auto& dq : t->second)
        dq.extract_if([&](const ready_entry& e) { return leaving(e.job_id); },
                      out);
      auto type = type_of_lane(t->first);
      for (auto& e : out)
        ready.emplace_back(type, std::move(e));
      bool shaped = t->second.shape != nullptr;
      if (shaped && !out.empty())
        shaped_classes.insert(cls);
      if (shaped && t->second[0].empty() && t->second[1].empty()
          && t->second[2].empty())
        t = cq.by_type.erase(t);
      else
        ++t;
    }
  std::vector<parked_entry> parked;
  auto unpark = [&](auto& by_key) {
    for (auto p = by_key.begin(); p != by_key.end();) {
      auto& dq = p->second;
      auto keep
          = std::stable_partition(dq.begin(), dq.end(), [&](const auto& pe) {
              return !leaving(pe.entry.job_id);
            });
      for (auto i = keep; i != dq.end(); ++i)
        parked.push_back(std::move(*i));
      dq.erase(keep, dq.end());
      p = dq.empty() ? by_key.erase(p) : std::next(p);
    }
  };
  unpark(st.parked);
  unpark(st.flow_parked);
  size_t n = ready.size() + parked.size();
  for (auto i = st.delayed.begin(); i != st.delayed.end();) {
    if (!leaving(i->job_id)) {
      ++i;
      continue;
    }
    left_queue(st, i->tenant, i->job_id, i->own);
    auto next = std::next(i);
    erase_delayed(st, i);
    i = next;
    ++n;
  }
  arm_timer(self);
  // Now let go: slots, gates and admission counts.
  for (auto& [type, e] : ready)
    forget_ready(self, type, e);
  for (auto& pe : parked) {
    left_queue(st, pe.entry.tenant, pe.entry.job_id, pe.entry.own);
    release_slots(self, slot_keys_of(st, pe.type, pe.entry), pe.entry.holds);
  }
  for (const auto& cls : shaped_classes)
    dispatch(self, cls); // they may have reserved what another job needs
  return n;
}

/// The running attempts of `gone` stop here: each job supervisor abandons
/// its attempt (the worker stops it) and ends without a write; the new
/// owner's recovery settles the attempt (a retry, not counted) or adopts
/// it. Attempts recovered for adoption are given up the same way.
size_t forget_running(self_ptr self, const std::vector<int32_t>& gone) {
  auto& st = self->state;
  size_t n = 0;
  for (auto r = st.running.begin(); r != st.running.end();) {
    if (!among(gone, partition_of_id(r->first))) {
      ++r;
      continue;
    }
    auto entry = std::move(r->second);
    st.supervisor_jobs.erase(entry.job_supervisor.address());
    r = st.running.erase(r);
    self->send(entry.job_supervisor, partitions_atom::value);
    release_slots(self, entry.slots);
    flow_outcome(self, entry, false, "handed_over");
    ++n;
  }
  for (auto a = st.awaiting_adoption.begin();
       a != st.awaiting_adoption.end();) {
    if (!among(gone, partition_of_id(a->first))) {
      ++a;
      continue;
    }
    release_slots(self, slot_keys_of(st, a->second.spec));
    release_pools(self, node_of(a->second.worker_id),
                  shape_of(st, a->second.spec));
    st.adopt_due.erase(a->first);
    a = st.awaiting_adoption.erase(a);
    ++n;
  }
  // Cancels requested of its attempts, adopted or not, and of its jobs
  // still to be recovered: its new owner reads them from the log. (Kept,
  // an entry outlived the partition and, were it to come back, could end
  // a later attempt of the job, redriven meanwhile, `cancelled`.)
  for (auto c = st.cancels_requested.begin(); c != st.cancels_requested.end();)
    c = among(gone, partition_of_id(c->first)) ? st.cancels_requested.erase(c)
                                               : std::next(c);
  return n;
}

} // namespace

void own_partitions(self_ptr self, std::vector<int32_t> owned) {
  auto& st = self->state;
  std::sort(owned.begin(), owned.end());
  owned.erase(std::unique(owned.begin(), owned.end()), owned.end());
  const auto& before = st.partitions.owned();
  std::vector<int32_t> gone;
  std::vector<int32_t> added;
  std::set_difference(before.begin(), before.end(), owned.begin(), owned.end(),
                      std::back_inserter(gone));
  std::set_difference(owned.begin(), owned.end(), before.begin(), before.end(),
                      std::back_inserter(added));
  st.partitions.set_owned(owned);
  share_rate_limits(self);
  if (!gone.empty() || !added.empty())
    forget_grants(self);
  if (!gone.empty()) {
    // A partition being recovered stops being read (a page on its way is
    // not continued); one that comes back later is read from its start.
    if (!st.to_recover.empty() && among(gone, st.to_recover.front())) {
      st.recovered_up_to.clear();
      ++st.recover_generation;
    }
    st.to_recover.erase(
        std::remove_if(st.to_recover.begin(), st.to_recover.end(),
                       [&](int32_t p) { return among(gone, p); }),
        st.to_recover.end());
    auto waiting = forget_waiting(self, gone);
    auto running = forget_running(self, gone);
    log::info("queue", "partitions handed over",
              {{"partitions", static_cast<int64_t>(gone.size())},
               {"waiting_jobs", static_cast<int64_t>(waiting)},
               {"running_attempts", static_cast<int64_t>(running)}});
  }
  if (!added.empty()) {
    // Their attempts may still run uncounted until their recovery ends:
    // concurrency keys hold their jobs back meanwhile (take_slots).
    st.recovered = false;
    for (auto p : added) {
      st.to_recover.push_back(p);
      // Worker nodes that reported attempts of it before it was ours: they
      // are adopted once it is recovered (or settled, if nobody ran them).
      auto w = st.adopt_waiting.find(p);
      if (w == st.adopt_waiting.end())
        continue;
      for (auto& entry : w->second)
        st.after_recovery.push_back(std::move(entry.run));
      st.adopt_waiting.erase(w);
    }
    log::info("queue", "partitions taken",
              {{"partitions", static_cast<int64_t>(added.size())}});
    recover(self);
  }
}

namespace {

/// Attempt `attempt` of `job_id` runs here and another agent of the machine
/// it runs on offers it (its own agent, failed over to this coordinator,
/// goes home: actors/worker_agent.hpp, "Going home"): its supervisor takes
/// its reports through `slot` from now on, and the caller learns which. The
/// job goes on as it was — same supervisor, permits, rate and breaker
/// state — and only the slot it answers to changes.
void move_running(self_ptr self,
                  caf::typed_response_promise<job_supervisor_actor> rp,
                  const std::string& job_id, uint32_t attempt,
                  const std::string& worker_id, const worker_actor& slot) {
  auto& st = self->state;
  auto refuse = [rp, job_id, attempt]() mutable {
    rp.deliver(make_error(errc::stale_attempt,
                          "attempt " + std::to_string(attempt) + " of job "
                              + job_id + " does not run here on that machine"));
  };
  const auto& r = st.running.at(job_id);
  // Only when the node running it let it go (the agent going home listed
  // it as lent where it runs): another agent's word alone — a node that
  // names itself after another machine's agent — moves nothing.
  if (r.movable != attempt || machine_of(worker_id).empty()
      || machine_of(worker_id) != machine_of(r.worker_id) || r.worker == slot)
    return refuse();
  auto js = r.job_supervisor;
  self->request(js, std::chrono::seconds{5}, adopt_atom::value, attempt,
                worker_id, slot)
      .then(
          [self, rp, job_id, worker_id, slot, js, refuse](bool moved) mutable {
            auto& st = self->state;
            auto i = st.running.find(job_id);
            if (!moved || i == st.running.end()
                || i->second.job_supervisor != js)
              return refuse();
            // What the old slot held of the node's pools goes with it.
            auto h = st.pool_holds.find(i->second.worker.address());
            if (h != st.pool_holds.end()) {
              auto hold = std::move(h->second);
              st.pool_holds.erase(h);
              let_go_pools(self, slot.address()); // never two holds of one

              if (st.workers.count(slot.address()) == 0)
                self->monitor(slot); // its death lets go
              st.pool_holds[slot.address()] = std::move(hold);
            }
            i->second.worker = slot;
            i->second.worker_id = worker_id;
            i->second.movable = 0; // moved once; the new slot's node decides
            rp.deliver(job_supervisor_actor{js});
          },
          [refuse](caf::error&) mutable { refuse(); });
}

} // namespace

/// A worker node that came back after this coordinator restarted still
/// runs `attempt` of `job_id`: a job supervisor takes it over (same
/// attempt, no new `started`), and the caller learns which. Offered by
/// another agent of its machine while it runs here: move_running.
void adopt(self_ptr self, caf::typed_response_promise<job_supervisor_actor> rp,
           const std::string& job_id, uint32_t attempt,
           const std::string& worker_id, worker_actor slot, int64_t deadline_ms,
           bool wait_for_owner) {
  auto& st = self->state;
  if (!slot) {
    // Never from a link (each adopts onto a slot actor): a job supervisor
    // on no worker would crash at its first send.
    rp.deliver(make_error(errc::invalid_request,
                          "attempt " + std::to_string(attempt) + " of job "
                              + job_id + ": no slot to adopt it onto"));
    return;
  }
  if (deadline_ms > 0 && flow_now(self) > deadline_ms) {
    // The link stopped waiting (it stops the attempt on the node): the
    // attempt stays waiting for adoption, or is settled lost after its
    // grace, as if nobody had asked.
    rp.deliver(make_error(errc::unavailable,
                          "attempt " + std::to_string(attempt) + " of job "
                              + job_id
                              + ": the adoption request came past its "
                                "deadline"));
    return;
  }
  if (!wait_for_owner && st.running.count(job_id) > 0)
    return move_running(self, rp, job_id, attempt, worker_id, slot);
  auto i = st.awaiting_adoption.find(job_id);
  if (i == st.awaiting_adoption.end() || i->second.attempt != attempt
      || st.running.count(job_id) > 0) {
    auto refuse = [rp, job_id, attempt]() mutable {
      rp.deliver(make_error(errc::stale_attempt,
                            "attempt " + std::to_string(attempt) + " of job "
                                + job_id + " is not waiting to be adopted"));
    };
    // Its partition is another coordinator's (or nobody's yet): it may
    // become ours, with this attempt waiting to be adopted.
    auto again = [self, rp, job_id, attempt, worker_id, slot,
                  deadline_ms]() mutable {
      adopt(self, rp, job_id, attempt, worker_id, slot, deadline_ms, true);
    };
    // The wait ended and the partition did not become ours: another
    // coordinator took it (or nobody has yet). Not a superseded attempt:
    // the link hands it to the node's other coordinators
    // (CoordinatorReply.ownedElsewhere) instead of stopping it.
    auto elsewhere = [rp, job_id, attempt]() mutable {
      rp.deliver(make_error(errc::not_owner,
                            "attempt " + std::to_string(attempt) + " of job "
                                + job_id + ": partition "
                                + std::to_string(partition_of_id(job_id))
                                + " is not owned here"));
    };
    if (!wait_for_owner
        || !wait_for_partition(self, job_id, std::move(again),
                               std::move(elsewhere)))
      refuse();
    return;
  }
  if (machine_of(worker_id) != machine_of(i->second.worker_id)
      || machine_of(worker_id).empty()) {
    // Another machine than the one it ran on (a node listing attempts it
    // does not run): not adopted; the real one may still report it.
    log::warn("queue", log::job{job_id},
              "refused to adopt an attempt for another machine than the one "
              "it runs on",
              {{"attempt", attempt},
               {"asked_by", worker_id},
               {"ran_on", i->second.worker_id}});
    rp.deliver(make_error(errc::stale_attempt,
                          "attempt " + std::to_string(attempt) + " of job "
                              + job_id + " does not run on "
                              + machine_of(worker_id)));
    return;
  }
  auto rec = std::move(i->second);
  st.awaiting_adoption.erase(i);
  st.adopt_due.erase(job_id);
  auto js = start_supervisor(self, job_id, slot, worker_id, attempt);
  self->monitor(js);
  st.supervisor_jobs.emplace(js.address(), job_id);
  st.running.emplace(
      job_id, running_entry{js, slot, resource_class_of(rec.spec), now_ms(self),
                            slot_keys_of(st, rec.spec), flow_of(st, rec.spec),
                            0, rec.spec.type, false, worker_id});
  // Its amounts, counted since recovery, are the slot's until it lets go.
  hold_pools(self, slot, node_of(rec.worker_id), shape_of(st, rec.spec), true);
  auto c = st.cancels_requested.find(job_id);
  if (c != st.cancels_requested.end()) {
    // Recorded, or being written: if that write fails, the supervisor is
    // told again, not recorded (request_cancel).
    self->send(js, cancel_atom::value, c->second, true);
    st.cancels_requested.erase(c);
  }
  rp.deliver(job_supervisor_actor{js});
}

} // namespace drover::queue_detail
