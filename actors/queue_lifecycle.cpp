// The queue's timers and recovery: scheduled jobs and retries, attempts
// settled or reconciled, recovery from the store, adoption after a
// restart. See actors/detail/queue_state.hpp.

#include "actors/detail/queue_state.hpp"

namespace drover::queue_detail {

void arm_timer(self_ptr self) {
  auto& st = self->state;
  if (st.delayed.empty()) {
    st.armed_due_ms = 0;
    return;
  }
  auto due = st.delayed.begin()->due_ms;
  if (st.armed_due_ms != 0 && st.armed_due_ms <= due)
    return; // an earlier (or the same) wake-up is already armed
  st.armed_due_ms = due;
  auto delay = std::max<int64_t>(0, due - now_ms(self));
  self->delayed_send(self, std::chrono::milliseconds{delay}, due_atom::value,
                     ++st.timer_generation);
}

void push_delayed(self_ptr self, delayed_entry entry) {
  auto& st = self->state;
  if (!owns(st, entry.job_id))
    return; // handed over meanwhile: its new owner recovers it
  if (st.cancelling.count(entry.job_id) > 0)
    return; // its cancel's write decides (a failed one reconciles it)
  note_entry(st, entry.job_id);
  auto tenant = entry.tenant;
  auto partition = partition_of_id(entry.job_id);
  auto extra = extra_bytes(entry.own);
  std::pair<std::string, std::string> type_key{entry.resource_class,
                                               entry.type};
  // The same job at the same time twice (recovery raced its submit) is
  // one entry, counted once.
  if (st.delayed.insert(std::move(entry)).second) {
    st.admission.entered(tenant, partition, extra);
    ++st.delayed_by_type[type_key];
  }
  arm_timer(self);
}

/// Takes `i` out of the timer's set, and out of its type's count.
void erase_delayed(queue_state& st, std::set<delayed_entry>::iterator i) {
  auto k = st.delayed_by_type.find({i->resource_class, i->type});
  if (k != st.delayed_by_type.end() && --k->second == 0)
    st.delayed_by_type.erase(k);
  st.delayed.erase(i);
}

void reconcile_later(self_ptr self, const std::string& job_id,
                     uint32_t failures, error_info why);

/// Moves every due job to the ready queues (after the store recorded it).
void on_due(self_ptr self) {
  auto& st = self->state;
  st.armed_due_ms = 0;
  auto now = now_ms(self);
  while (!st.delayed.empty() && st.delayed.begin()->due_ms <= now) {
    auto entry = *st.delayed.begin();
    erase_delayed(st, st.delayed.begin());
    left_queue(st, entry.tenant, entry.job_id, entry.own);
    job_event ev;
    ev.job_id = entry.job_id;
    ev.kind = event_kind::queued;
    ev.at_ms = now;
    self->request(st.deps.store, store_timeout, append_atom::value,
                  std::vector<job_event>{std::move(ev)})
        .then(
            [self, entry](ok_atom) {
              push_ready(self, entry.job_id, entry.prio, entry.resource_class,
                         entry.type, entry.tenant, entry.flow, entry.shape,
                         entry.own);
            },
            [self, entry](caf::error& err) {
              // Cancelled while it waited, or the store is unavailable: the
              // store has the truth, and the job must not be forgotten.
              log_failure("the job could not become ready", err, entry.job_id,
                          log::level::warn);
              reconcile_later(self, entry.job_id, 0,
                              {"attempt_lost",
                               "the job's timer fired while the "
                               "store was unavailable",
                               true});
            });
  }
  arm_timer(self);
}

/// The timer's entry of `rec`, due at `due_ms`.
delayed_entry delayed_of(self_ptr self, const job_record& rec, int64_t due_ms) {
  auto& st = self->state;
  return {due_ms,
          rec.job_id,
          resource_class_of(rec.spec),
          rec.spec.prio,
          rec.spec.type,
          st.admission.tenant(rec.spec.tenant),
          flow_of(st, rec.spec),
          shape_of(st, rec.spec),
          own_key_for(rec.spec)};
}

/// Puts a job the store just accepted where its status says.
void enqueue(self_ptr self, const job_record& rec) {
  switch (rec.status) {
    case job_status::queued:
      push_ready(self, rec);
      break;
    case job_status::scheduled:
      push_delayed(self, delayed_of(self, rec, rec.spec.run_at_ms));
      break;
    case job_status::retrying:
      push_delayed(self, delayed_of(self, rec, rec.retry_at_ms));
      break;
    default:
      break;
  }
}

/// A ready entry (of `type`) was taken out of its lane without running:
/// the admission counts, its woken gate and the slots it held let go.
void forget_ready(self_ptr self, const std::string& type, ready_entry& e) {
  auto& st = self->state;
  left_queue(st, e.tenant, e.job_id, e.own);
  if (e.woken_gate != 0) { // the gate may let another through
    left_gate(self, e);
    rearm_flow(self);
  }
  // Woken, never ran: the next jobs of its keys get its slots.
  release_slots(self, slot_keys_of(st, type, e), e.holds);
}

/// Removes a waiting job from the queue structures; false if not there.
bool remove_waiting(self_ptr self, const std::string& job_id) {
  auto& st = self->state;
  for (auto& kv : st.classes)
    for (auto& tq : kv.second.by_type)
      for (auto& dq : tq.second) {
        ready_entry e;
        if (dq.erase(job_id, e)) {
          auto type = type_of_lane(tq.first);
          auto cls = kv.first;
          bool shaped = tq.second.shape != nullptr;
          if (shaped && tq.second[0].empty() && tq.second[1].empty()
              && tq.second[2].empty())
            kv.second.by_type.erase(tq.first);
          forget_ready(self, type, e);
          if (shaped) // it may have reserved what another job needs
            dispatch(self, cls);
          return true;
        }
      }
  // Held back by a concurrency key (holding the slots of the keys before
  // it) or by a rate limit or breaker (holding no slot and no token).
  auto unpark = [&](auto& by_key) {
    for (auto p = by_key.begin(); p != by_key.end(); ++p) {
      auto& dq = p->second;
      auto i = std::find_if(dq.begin(), dq.end(), [&](const parked_entry& e) {
        return e.entry.job_id == job_id;
      });
      if (i != dq.end()) {
        left_queue(st, i->entry.tenant, job_id, i->entry.own);
        auto keys = slot_keys_of(st, i->type, i->entry);
        auto held = i->entry.holds;
        dq.erase(i);
        if (dq.empty())
          by_key.erase(p);
        release_slots(self, keys, held);
        return true;
      }
    }
    return false;
  };
  if (unpark(st.parked) || unpark(st.flow_parked))
    return true;
  for (auto i = st.delayed.begin(); i != st.delayed.end(); ++i)
    if (i->job_id == job_id) {
      left_queue(st, i->tenant, i->job_id, i->own);
      erase_delayed(st, i);
      arm_timer(self);
      return true;
    }
  return false;
}

/// A cancel, redrive or purge that the job's state refuses: the store's
/// state machine answers invalid_value with its internal view, which is not
/// for clients. Such a refusal becomes errc::conflict (HTTP 409): "job <id>
/// is <status>: <needs>"; any other error is passed on unchanged. Costs a
/// read only on this failure path.
void explain_refusal(self_ptr self, const std::string& job_id,
                     std::string needs, caf::error err,
                     std::function<void(caf::error)> done) {
  if (!is(err, errc::invalid_value))
    return done(std::move(err));
  self->request(self->state.deps.store, store_timeout, get_atom::value, job_id)
      .then(
          [done, needs](job_record& rec) {
            std::string state = to_string(rec.status);
            if (rec.status == job_status::failed && !rec.dead_lettered)
              state += " and no longer in the dead-letter queue";
            done(make_error(errc::conflict, "job " + rec.job_id + " is " + state
                                                + ": " + needs));
          },
          [done, needs](caf::error& read_err) {
            if (is(read_err, errc::not_found))
              return done(std::move(read_err));
            done(make_error(errc::conflict, needs));
          });
}

/// Reads `job_id`, whose outcome was just recorded, and hands the record
/// to the publisher as final (if `terminal_only`, only a terminal one). A
/// failed read is logged: the outcome stands, and its watchers miss the
/// final record until they read the job again.
void publish_final(self_ptr self, const std::string& job_id,
                   bool terminal_only) {
  self->request(self->state.deps.store, store_timeout, get_atom::value, job_id)
      .then(
          [self, terminal_only](job_record& rec) {
            if (!terminal_only || is_terminal(rec.status))
              self->send(self->state.deps.publisher, final_atom::value,
                         std::move(rec));
          },
          [job_id](caf::error& err) {
            log_failure("reading a job to publish its outcome", err, job_id,
                        log::level::warn);
          });
}

/// Settles an attempt that was running when its owner vanished (its job
/// supervisor died, or the node restarted): the retry policy decides
/// between a retry (resuming from the last committed checkpoint) and the
/// dead-letter queue.
void settle_interrupted(self_ptr self, const job_record& rec, error_info err,
                        uint32_t failures) {
  auto& st = self->state;
  const auto* h = st.deps.handlers->find(rec.spec.type);
  std::vector<std::string> none;
  std::uniform_real_distribution<double> u{0.0, 1.0};
  auto decision
      = decide_retry(rec, err, h ? h->options.retry.non_retryable : none,
                     now_ms(self), u(st.rng), true);
  std::vector<job_event> events;
  job_event ev;
  ev.job_id = rec.job_id;
  ev.attempt = rec.attempt;
  ev.at_ms = now_ms(self);
  ev.kind = event_kind::worker_lost;
  ev.worker_id = rec.worker_id;
  events.push_back(ev);
  ev.worker_id.clear();
  ev.error = err;
  // Its cancel was requested (and acknowledged) before the attempt was
  // lost: the job ends cancelled, it does not run again. The record may
  // predate a request made here (read by recovery before it was written).
  bool cancelled
      = rec.cancel_requested || st.cancels_requested.count(rec.job_id) > 0;
  if (cancelled) {
    ev.kind = event_kind::cancelled;
    ev.error = {};
    ev.reason = "cancelled: its attempt was lost (" + err.message
                + ") while the cancel was pending";
    events.push_back(ev);
  } else if (decision.retry) {
    ev.kind = event_kind::retry_scheduled;
    ev.next_attempt_at_ms = decision.next_attempt_at_ms;
    events.push_back(ev);
  } else {
    ev.error.message += " (" + decision.reason + ")";
    ev.kind = event_kind::failed;
    events.push_back(ev);
    ev.kind = event_kind::dead_lettered;
    events.push_back(ev);
  }
  auto retry_at = decision.next_attempt_at_ms;
  auto why = err;
  self->request(st.deps.store, store_timeout, append_atom::value,
                std::move(events))
      .then(
          [self, rec, retry_at, retry = decision.retry && !cancelled,
           cancelled](ok_atom) {
            self->state.cancels_requested.erase(rec.job_id);
            if (retry) {
              ++self->state.stats.retried;
              push_delayed(self, delayed_of(self, rec, retry_at));
              return;
            }
            ++(cancelled ? self->state.stats.cancelled
                         : self->state.stats.failed);
            publish_final(self, rec.job_id, false);
          },
          [self, rec, why, failures](caf::error& err) {
            // Left as it is, the attempt would stay `processing` forever.
            log_failure("settling an interrupted attempt", err, rec.job_id,
                        log::level::warn);
            reconcile_later(self, rec.job_id, failures, why);
          });
}

/// Whether recovery has yet to read `job_id` (its partition is still to be
/// read, or is being read and its pages have not reached the job).
bool still_to_recover(const queue_state& st, const std::string& job_id) {
  auto p = partition_of_id(job_id);
  for (size_t i = 0; i < st.to_recover.size(); ++i)
    if (st.to_recover[i] == p)
      return i > 0 || st.recovered_up_to.empty() || job_id > st.recovered_up_to;
  return false;
}

/// The queue lost track of a job: a store call about it failed (PostgreSQL
/// down, a timeout, an outcome the store refused), so the store may hold it
/// as queued, scheduled, retrying or processing with nobody to move it on.
/// Nothing may stay that way (RELIABILITY.md, invariant 10). Re-reads the
/// job and puts it where its stored status says: a ready queue, the timer,
/// or — for an attempt nobody runs — the retry policy, blaming `why`.
/// Retries with backoff while the store can't answer. A job a supervisor
/// runs is left to it.
void reconcile(self_ptr self, const std::string& job_id, uint32_t failures,
               error_info why) {
  auto& st = self->state;
  if (!owns(st, job_id))
    return; // handed over: its new owner's recovery has it
  self->request(st.deps.store, store_timeout, get_atom::value, job_id)
      .then(
          [self, failures, why](job_record& rec) {
            auto& st = self->state;
            if (!owns(st, rec.job_id) || st.running.count(rec.job_id) > 0)
              return; // handed over meanwhile, or run by a supervisor
            remove_waiting(self, rec.job_id); // placed once, below
            switch (rec.status) {
              case job_status::queued:
                push_ready(self, rec);
                break;
              case job_status::scheduled:
              case job_status::retrying:
                enqueue(self, rec);
                break;
              case job_status::processing:
                // An attempt with a grace (a worker node may still run it,
                // or a handed-over local slot may still stop it) is settled
                // by its grace, and one of a partition still being
                // recovered by its recovery: settling it here would run
                // the job again while the old attempt may still run
                // (found by share_fault_test: a reconcile that fired after
                // the partition came back).
                if (st.awaiting_adoption.count(rec.job_id) > 0
                    || still_to_recover(st, rec.job_id))
                  break;
                settle_interrupted(self, rec, why, failures + 1);
                break;
              default:
                break; // terminal: nothing left to do
            }
          },
          [self, job_id, failures, why](caf::error& err) {
            // A job the store does not know (purged since, or its submit
            // never committed) has nothing left to settle.
            if (is(err, errc::not_found))
              return;
            // Once per job, not at every retry of a long outage.
            if (failures == 0)
              log_failure("re-reading a job to reconcile it (will retry)", err,
                          job_id, log::level::warn);
            reconcile_later(self, job_id, failures + 1, why);
          });
}

/// reconcile() after the backoff for `failures` failures so far.
void reconcile_later(self_ptr self, const std::string& job_id,
                     uint32_t failures, error_info why) {
  self->delayed_send(self, reconcile_backoff.delay(failures, draw(self)),
                     reconcile_atom::value, job_id,
                     static_cast<int64_t>(failures), why.code, why.message);
}

/// A job supervisor died without concluding its job: settle the attempt.
void resolve_orphan(self_ptr self, const std::string& job_id,
                    running_entry entry, const caf::error& reason) {
  auto& st = self->state;
  self->request(st.deps.store, store_timeout, get_atom::value, job_id)
      .then(
          [self, entry, reason](job_record& rec) {
            auto& st = self->state;
            if (rec.status == job_status::queued) {
              // It never started: the job waits again, the worker is free.
              let_go_pools(self, entry.worker.address());
              st.classes[entry.resource_class].idle_workers.push_back(
                  entry.worker);
              push_ready(self, rec);
              return;
            }
            if (rec.status != job_status::processing)
              return;
            self->send(entry.worker, abandon_atom::value, rec.job_id,
                       rec.attempt);
            settle_interrupted(
                self, rec,
                {"supervisor_lost",
                 "the job's supervisor died: " + self->system().render(reason),
                 true});
          },
          [self, job_id, reason](caf::error& err) {
            log_failure("reading an orphaned job", err, job_id,
                        log::level::warn);
            reconcile_later(
                self, job_id, 0,
                {"supervisor_lost",
                 "the job's supervisor died: " + self->system().render(reason),
                 true});
          });
}

/// Queues one recovered job where its status says.
void recover_job(self_ptr self, job_record& rec) {
  auto& st = self->state;
  // A cancel requested while recovery had yet to read it was kept for an
  // attempt that may run; read as not running, no attempt needs it (the
  // write's own answer, if still to come, sees to a waiting job).
  if (rec.status != job_status::processing)
    st.cancels_requested.erase(rec.job_id);
  switch (rec.status) {
    case job_status::queued:
      push_ready(self, rec, std::max(rec.created_at_ms, rec.spec.run_at_ms));
      break;
    case job_status::scheduled:
    case job_status::retrying:
      enqueue(self, rec);
      break;
    case job_status::processing: {
      ++st.recovered_interrupted;
      bool remote = rec.worker_id.find('/') != std::string::npos;
      if ((remote && st.opts.adopt_grace.count() > 0)
          || (!remote && st.opts.handover_grace.count() > 0)) {
        // Ran on a worker node, which may still run it: it gets one grace
        // period to come back and report it. Or ran on the local slot of
        // a coordinator that handed its partition over and may still be
        // stopping it: nobody adopts it, and it is settled once that
        // coordinator had time to stop it (no two runs at once).
        st.awaiting_adoption.emplace(rec.job_id, rec);
        // Set when recovery ends: 0 = the adoption grace, < 0 = this.
        st.adopt_due[rec.job_id] = remote ? 0 : -st.opts.handover_grace.count();
        // It may still run: it holds its slots and what it draws from its
        // node's pools until adopted or given up.
        auto keys = slot_keys_of(st, rec.spec);
        for (size_t k = 0; k < keys.size; ++k)
          st.concurrency.force(keys.key[k]);
        st.resources.acquire(node_of(rec.worker_id), shape_of(st, rec.spec));
        break;
      }
      settle_interrupted(self, rec,
                         {"node_restarted",
                          "the node stopped while attempt "
                              + std::to_string(rec.attempt) + " was running",
                          true});
      break;
    }
    default:
      return;
  }
  ++st.recovered_jobs;
}

/// Recovery is complete: what waited for it runs.
void end_recovery(self_ptr self) {
  auto& st = self->state;
  st.recovered = true;
  st.entered_early.clear();
  // The grace of the attempts just recovered counts from now (monotonic).
  auto now = flow_now(self);
  int64_t first = 0;
  for (auto& [job_id, when] : st.adopt_due)
    if (when <= 0) {
      when = now + (when == 0 ? st.opts.adopt_grace.count() : -when);
      first = first == 0 ? when : std::min(first, when);
    }
  if (first != 0)
    arm_adopt_timer(self, first);
  for (auto& f : st.after_recovery)
    f();
  st.after_recovery.clear();
  // Every attempt that may still run is counted now (forced): the jobs of
  // limited types held back during recovery get the free slots.
  std::vector<std::string> keys;
  for (const auto& kv : st.parked)
    keys.push_back(kv.first);
  for (const auto& key : keys)
    wake_parked(self, key);
  if (st.recovered_jobs > 0)
    log::info("queue", "recovered unfinished jobs",
              {{"jobs", st.recovered_jobs},
               {"interrupted_attempts", st.recovered_interrupted}});
}

/// Rebuilds the queue from the store's non-terminal jobs of the partitions
/// in `to_recover` (ready queues, timers, the attempts that were running
/// when their coordinator went down), one partition after another, each a
/// page after another in job-id order from where the last page ended: a
/// failed read is retried from there, never from the start. A partition
/// given up meanwhile (partitions_atom) is left where it was.
void recover(self_ptr self) {
  auto& st = self->state;
  if (st.recover_in_flight || !st.flow_loaded)
    return;
  if (st.to_recover.empty()) {
    if (!st.recovered)
      end_recovery(self);
    return;
  }
  auto partition = st.to_recover.front();
  auto generation = st.recover_generation;
  st.recover_in_flight = true;
  self->request(st.deps.store, store_timeout, recover_atom::value, partition,
                st.recovered_up_to, st.opts.recovery_page)
      .then(
          [self, generation](std::vector<job_record>& jobs) {
            auto& st = self->state;
            st.recover_in_flight = false;
            if (generation != st.recover_generation) {
              recover(self); // the partitions changed while it was read
              return;
            }
            st.queuing_page = true;
            for (auto& rec : jobs)
              if (st.entered_early.count(rec.job_id) == 0)
                recover_job(self, rec);
            st.queuing_page = false;
            if (jobs.size() < st.opts.recovery_page) {
              st.to_recover.pop_front();
              st.recovered_up_to.clear();
            } else {
              st.recovered_up_to = jobs.back().job_id;
            }
            recover(self);
          },
          [self](caf::error& err) {
            // Without recovery, acknowledged jobs would sit in the store
            // unseen: keep trying (the store may still be connecting).
            auto& st = self->state;
            st.recover_in_flight = false;
            log_failure("recovering unfinished jobs (will retry)", err, {},
                        log::level::warn);
            self->delayed_send(self, st.recover_backoff.next(draw(self)),
                               recover_atom::value);
          });
}

} // namespace drover::queue_detail
