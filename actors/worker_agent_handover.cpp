// The worker agent's side of a partition hand-over (actors/worker_agent.hpp,
// "Hand-over"; actors/handover_board.hpp): lending the attempts its
// coordinator handed over, claiming those another agent lent and its own
// coordinator adopted, and passing reports on between the two. See
// actors/detail/agent_state.hpp.

#include "actors/detail/agent_state.hpp"

#include "runtime/errors.hpp"
#include "runtime/log.hpp"
#include "runtime/submit.hpp"
#include "runtime/type_ids.hpp"

#include <caf/actor_system.hpp>
#include <caf/send.hpp>

namespace drover::agent_detail {

namespace {

/// How long a lent attempt waits to be claimed: the partition's new owner
/// takes it at its next round, recovers it and adopts what the node offers
/// within about a heartbeat, and gives the attempt an adoption grace of at
/// least twice the lease TTL plus five heartbeats and two seconds before it
/// runs the job again — it is stopped a heartbeat and a second before that.
/// (Twice the lease TTL alone was too short for an agent that failed over
/// and goes home to offer it there: nodes/node_setup.cpp.)
std::chrono::milliseconds lend_deadline(const agent_state& st) {
  return 2 * st.lease_ttl + 4 * st.heartbeat_interval + std::chrono::seconds{1};
}

/// How long an attempt re-reported after a failover and refused there
/// (CoordinatorReply.ownedElsewhere) waits to be claimed: its partition's
/// new owner has been waiting for it since it took the partition, and
/// adopts it from another agent's next heartbeat (said in the reply to the
/// one after); past its adoption grace it runs the job again, so the
/// attempt must be stopped well before — the refusal came an adoption wait
/// after the report (and reaches the node with its next reply), the grace
/// ends an adoption wait, five heartbeats and two seconds after the take
/// (nodes/node_setup.cpp), which is about a lease TTL after the death.
std::chrono::milliseconds elsewhere_deadline(const agent_state& st) {
  return 3 * st.heartbeat_interval + std::chrono::seconds{1};
}

handover_board::entry entry_of(agent_actor self, const std::string& job_id,
                               uint32_t attempt, const std::string& cls) {
  handover_board::entry e;
  e.job_id = job_id;
  e.attempt = attempt;
  e.resource_class = cls;
  e.lender = lender_actor{self};
  e.link = self->state.link.address();
  return e;
}

/// Puts `e` on the board, unclaimed until `deadline` from now.
void post(agent_actor self, handover_board::entry e,
          std::chrono::milliseconds deadline) {
  auto& st = self->state;
  self->delayed_send(self, deadline, lent_atom::value, e.job_id, e.attempt);
  st.cfg.handovers->post(std::move(e));
}

/// Offers running attempt `r` of `job_id` on the board (`move`: see
/// handover_board::entry).
void post_running(agent_actor self, const std::string& job_id, run_info& r,
                  std::chrono::milliseconds deadline, bool move = false) {
  auto e = entry_of(self, job_id, r.attempt, r.resource_class);
  e.worker = r.worker;
  e.rate_key = r.rate_key;
  e.move = move;
  r.lend_until = std::chrono::steady_clock::now() + deadline;
  post(self, std::move(e), deadline);
}

/// The lent attempt `job_id`/`attempt` here, or null.
run_info* lent_run(agent_actor self, const std::string& job_id,
                   uint32_t attempt) {
  auto i = self->state.running.find(job_id);
  if (i == self->state.running.end() || i->second.attempt != attempt
      || !i->second.lent)
    return nullptr;
  return &i->second;
}

/// Hands what `r` held (checkpoint, progress, outcome) to `owner`; true
/// if that included the outcome.
bool hand_held(run_info& r, const std::string& job_id, uint32_t attempt,
               const attempt_owner_actor& owner) {
  if (r.held_checkpoint)
    caf::anon_send(owner, checkpoint_atom::value, job_id, attempt,
                   std::move(r.held_checkpoint->checkpoint));
  if (r.held_progress)
    caf::anon_send(owner, progress_atom::value, std::move(*r.held_progress));
  r.held_checkpoint.reset();
  r.held_progress.reset();
  if (!r.held_done)
    return false;
  caf::anon_send(owner, done_atom::value, std::move(*r.held_done));
  r.held_done.reset();
  return true;
}

} // namespace

void hold_reports(agent_actor self, const std::string& job_id, run_info& r) {
  auto& st = self->state;
  r.lent = true;
  auto p = st.progress.find(job_id);
  if (p != st.progress.end() && p->second.attempt == r.attempt) {
    r.held_progress = std::move(p->second);
    st.progress.erase(p);
  }
  auto k = st.checkpoints.find(job_id);
  if (k != st.checkpoints.end() && k->second.attempt == r.attempt) {
    r.held_checkpoint = std::move(k->second);
    st.checkpoints.erase(k);
  }
}

void lend(agent_actor self, const std::vector<running_attempt>& attempts,
          bool owned_elsewhere) {
  auto& st = self->state;
  auto deadline = owned_elsewhere ? elsewhere_deadline(st) : lend_deadline(st);
  if (!owned_elsewhere && !attempts.empty())
    // Handed over by the coordinator it failed over to: most likely to its
    // first one, back again (it takes its share back); the agent offers
    // them from there once home.
    look_home_now(self);
  for (const auto& ra : attempts) {
    attempt_key key{ra.job_id, ra.attempt};
    if (take_waiting(self, ra.job_id, ra.attempt)) {
      // Buffered, not started: nothing runs to hand over. Not listed any
      // more, it is settled by the new owner (lost, not failed).
      log::info("worker_agent", log::job{ra.job_id},
                "a buffered lease's partition was handed over: dropped",
                {{"attempt", ra.attempt}});
      continue;
    }
    auto c = st.completions.find(key);
    if (c != st.completions.end()) {
      // It ended and its outcome was not settled: the outcome goes to the
      // new owner with the entry.
      auto e = entry_of(self, ra.job_id, ra.attempt, st.completion_class[key]);
      e.done = std::move(c->second);
      st.completions.erase(c);
      st.completion_class.erase(key);
      st.sent.erase(key);
      post(self, std::move(e), deadline);
    } else {
      auto i = st.running.find(ra.job_id);
      if (i == st.running.end() || i->second.attempt != ra.attempt
          || i->second.superseded)
        continue;
      if (i->second.moving) {
        // Offered on the way home and moved (the old slot was told it was
        // handed over, and its link says so), or its coordinator handed
        // the partition on meanwhile: unclaimed, it is a hand-over like
        // any other from now on (stopped at the deadline if nobody takes
        // it); claimed, the claimant's word is on its way.
        i->second.moving = false;
        st.cfg.handovers->as_hand_over(ra.job_id, ra.attempt, self->address());
        continue;
      }
      if (i->second.lent)
        continue;
      hold_reports(self, ra.job_id, i->second);
      post_running(self, ra.job_id, i->second, deadline);
    }
    if (owned_elsewhere)
      log::info("worker_agent", log::job{ra.job_id},
                "another coordinator took the partition of an attempt this "
                "one could not adopt: the attempt runs on, offered to the "
                "node's other coordinators",
                {{"attempt", ra.attempt}});
    else
      log::info("worker_agent", log::job{ra.job_id},
                "its coordinator handed the partition over: the attempt runs "
                "on, offered to the node's other coordinators",
                {{"attempt", ra.attempt}});
  }
}

void claim(agent_actor self, const std::vector<running_attempt>& attempts) {
  auto& st = self->state;
  for (const auto& ra : attempts) {
    auto mine = st.running.find(ra.job_id);
    // Lent from here and handed on by the agent that took it: back home.
    bool home = mine != st.running.end() && mine->second.attempt == ra.attempt
                && mine->second.lent;
    if (st.completions.count({ra.job_id, ra.attempt}) > 0)
      continue; // claimed already with its outcome (said twice)
    if (mine != st.running.end() && !home) {
      // Claimed already (the coordinator said it again), or another
      // attempt of the job runs here: nothing to take.
      if (mine->second.attempt != ra.attempt)
        log::warn("worker_agent", log::job{ra.job_id},
                  "the coordinator adopted an attempt of a job another "
                  "attempt of which runs here: not taken",
                  {{"attempt", ra.attempt}, {"here", mine->second.attempt}});
      continue;
    }
    auto e = st.cfg.handovers->claim(ra.job_id, ra.attempt, self->address(),
                                     st.link.address());
    if (!e) {
      // Stopped by its lender meanwhile (its deadline passed), or another
      // agent's coordinator took it: not listed here, its lease lapses.
      log::warn("worker_agent", log::job{ra.job_id},
                "the coordinator adopted an attempt that is no longer "
                "offered here; its lease lapses",
                {{"attempt", ra.attempt}});
      continue;
    }
    bool own = e->lender.address() == self->address();
    log::info("worker_agent", log::job{ra.job_id},
              own       ? "took back an attempt it had lent: its coordinator "
                          "now adopted it"
              : e->move ? "took over the reports of an attempt the node's "
                          "agent going home ran for this coordinator"
                        : "took over an attempt another coordinator handed "
                          "over",
              {{"attempt", ra.attempt}, {"class", e->resource_class}});
    if (own && !home && !e->done) {
      // Its worker let go of it meanwhile (abandoned): nothing runs.
      continue;
    }
    if (home && own) {
      // Lent from another coordinator before it went home, and adopted
      // here: it reports here again.
      auto& r = mine->second;
      r.lent = false;
      r.moving = false;
      hand_held(r, ra.job_id, ra.attempt, attempt_owner_actor{self});
      continue;
    }
    if (home) {
      // Lent by this agent, handed on by the one that took it, and back:
      // its worker reports here again; the other agent lets go of it.
      auto& r = mine->second;
      r.lent = false;
      r.lent_to = nullptr;
      r.lent_home = nullptr;
      hand_held(r, ra.job_id, ra.attempt, attempt_owner_actor{self});
      caf::anon_send(e->lender, lent_atom::value, ra.job_id, ra.attempt,
                     attempt_owner_actor{self}, worker_home_actor{self});
      continue;
    }
    if (e->done) {
      st.completion_class[{ra.job_id, ra.attempt}] = e->resource_class;
      st.completions[{ra.job_id, ra.attempt}] = std::move(*e->done);
      maybe_report(self);
      continue;
    }
    run_info r;
    r.attempt = ra.attempt;
    r.resource_class = e->resource_class;
    r.worker = e->worker;
    r.rate_key = e->rate_key;
    r.borrowed = true;
    r.borrowed_from = e->lender.address();
    // Its worker is another agent's: if it dies (with that agent, say) the
    // attempt ended here too.
    self->monitor(r.worker);
    st.running[ra.job_id] = std::move(r);
    caf::anon_send(e->lender, lent_atom::value, ra.job_id, ra.attempt,
                   attempt_owner_actor{self}, worker_home_actor{self});
  }
}

void on_lent(agent_actor self, const std::string& job_id, uint32_t attempt,
             attempt_owner_actor owner, worker_home_actor home) {
  auto i = self->state.running.find(job_id);
  if (i != self->state.running.end() && i->second.attempt == attempt
      && !i->second.lent && !i->second.superseded && !i->second.borrowed)
    // A move it took back, claimed after all (its coordinator moved it
    // late): its reports go to the claimant from now on.
    hold_reports(self, job_id, i->second);
  auto* r = lent_run(self, job_id, attempt);
  if (r == nullptr)
    return;
  r->moving = false; // moved: listed as lent from now on
  // Back with the agent whose worker runs it (its reports no longer pass
  // through here), or ended before the claimant's word came: what was held
  // goes there, and nothing of it stays here.
  bool home_again = r->borrowed && owner.address() == r->borrowed_from;
  if (!home_again) {
    r->lent_to = owner;
    r->lent_home = home;
    // If the claimant goes (its agent restarts), it is offered again.
    self->monitor(owner);
  }
  if (hand_held(*r, job_id, attempt, owner) || home_again)
    self->state.running.erase(job_id);
  // Claimed: it no longer keeps a failed-over agent from going home.
  check_drained(self);
}

void lent_deadline(agent_actor self, const std::string& job_id,
                   uint32_t attempt) {
  auto& st = self->state;
  auto now = std::chrono::steady_clock::now();
  auto* r = lent_run(self, job_id, attempt);
  if (r != nullptr && now < r->lend_until) {
    // Posted again since this timer was armed: its own timer is later.
    self->delayed_send(self,
                       std::chrono::duration_cast<std::chrono::milliseconds>(
                           r->lend_until - now),
                       lent_atom::value, job_id, attempt);
    return;
  }
  if (r != nullptr && r->moving) {
    // Nobody took its reports over: it goes on reporting here, and the
    // agent goes home once it ends (or at its next try). The entry stays
    // claimable, unoffered: the coordinator may be moving it just now
    // (its queue was recovering, say), and then the claimant's word comes.
    if (!st.cfg.handovers->stop_offering(job_id, attempt, self->address()))
      return; // claimed
    log::info("worker_agent", log::job{job_id},
              "no agent of the node took over an attempt it offered on its "
              "way home: it reports here still",
              {{"attempt", attempt}});
    r->lent = false;
    r->moving = false;
    hand_held(*r, job_id, attempt, attempt_owner_actor{self});
    return;
  }
  auto e = st.cfg.handovers->withdraw(job_id, attempt, self->address());
  if (!e)
    return; // claimed
  log::warn("worker_agent", log::job{job_id},
            "nobody took over a handed-over attempt in time: stopping it "
            "(its partition's new owner runs the job again)",
            {{"attempt", attempt}});
  if (r == nullptr)
    return; // it had ended: its outcome is dropped with the entry
  // Stopped as a superseded attempt: cancel, then abandoned after the grace.
  r->lent = false;
  r->superseded = true;
  caf::anon_send(r->worker, cancel_atom::value, job_id, attempt);
  self->delayed_send(self, st.cfg.supersede_grace, force_atom::value, job_id,
                     attempt);
}

bool pass_on_progress(agent_actor self, progress_update& u, bool checkpoint) {
  auto* found = lent_run(self, u.job_id, u.attempt);
  if (found == nullptr)
    return false;
  auto& r = *found;
  if (!r.lent_to)
    (checkpoint ? r.held_checkpoint : r.held_progress) = std::move(u);
  else if (checkpoint)
    caf::anon_send(r.lent_to, checkpoint_atom::value, u.job_id, u.attempt,
                   std::move(u.checkpoint));
  else
    caf::anon_send(r.lent_to, progress_atom::value, std::move(u));
  return true;
}

bool pass_on_done(agent_actor self, completion& c) {
  auto& st = self->state;
  auto* found = lent_run(self, c.job_id, c.attempt);
  if (found == nullptr)
    return false;
  auto& r = *found;
  if (r.moving && !r.lent_to) {
    // Ended while offered on the way home: unclaimed, it reports here as
    // before (the coordinator it reports to still lists it running here;
    // end_attempt counts it); claimed, the outcome waits for the
    // claimant's word.
    if (st.cfg.handovers->withdraw(c.job_id, c.attempt, self->address())) {
      r.lent = false;
      r.moving = false;
      hand_held(r, c.job_id, c.attempt, attempt_owner_actor{self});
      return false;
    }
    st.counters->attempts_finished.fetch_add(1, std::memory_order_relaxed);
    r.held_done = std::move(c);
    r.held_progress.reset();
    return true;
  }
  auto job_id = c.job_id;
  st.counters->attempts_finished.fetch_add(1, std::memory_order_relaxed);
  if (r.lent_to) {
    caf::anon_send(r.lent_to, done_atom::value, std::move(c));
  } else if (!st.cfg.handovers->finish(c.job_id, c.attempt, self->address(),
                                       c)) {
    // Claimed, and the claimant's word is on its way: held until then.
    r.held_done = std::move(c);
    r.held_progress.reset();
    return true;
  }
  st.running.erase(job_id);
  check_drained(self);
  return true;
}

bool handover_down(agent_actor self, const caf::actor_addr& who) {
  auto& st = self->state;
  bool seen = false;
  for (auto i = st.running.begin(); i != st.running.end();) {
    auto& r = i->second;
    if (r.lent && r.lent_to && r.lent_to.address() == who) {
      // The agent that took it is gone: offered again (its coordinator
      // says it adopted it once more, and the new agent takes it).
      seen = true;
      r.lent_to = nullptr;
      r.lent_home = nullptr;
      post_running(self, i->first, r, lend_deadline(st));
      log::warn("worker_agent", log::job{i->first},
                "the agent that took over a lent attempt is gone: offered "
                "again",
                {{"attempt", r.attempt}});
      ++i;
      continue;
    }
    if (r.borrowed && r.worker && r.worker.address() == who) {
      // The worker (another agent's) died: the attempt ended with it.
      seen = true;
      auto ended = i++;
      end_attempt(self, ended,
                  worker_lost(ended->first, ended->second.attempt));
      continue;
    }
    ++i;
  }
  return seen;
}

void lent_worker_free(agent_actor self, const caf::actor_addr& worker) {
  auto& st = self->state;
  for (auto i = st.running.begin(); i != st.running.end(); ++i)
    if (i->second.lent && !i->second.held_done
        && i->second.worker.address() == worker) {
      // Abandoned where it was claimed (its outcome never comes): over.
      st.running.erase(i);
      check_drained(self);
      return;
    }
}

void move_held(agent_actor self) {
  auto& st = self->state;
  if (st.protocol < moving_protocol)
    return; // an older coordinator would let the lease lapse: it ends here
  for (auto& [job_id, r] : st.running) {
    // A borrowed one runs on another agent's worker, which it would have
    // to lend on: it ends here.
    if (r.lent || r.superseded || r.borrowed || !r.worker)
      continue;
    hold_reports(self, job_id, r);
    r.moving = true;
    post_running(self, job_id, r, lend_deadline(st), true);
    log::info("worker_agent", log::job{job_id},
              "going home: a running attempt is offered to the node's agent "
              "joined to the coordinator it reports to",
              {{"attempt", r.attempt}});
  }
}

} // namespace drover::agent_detail
