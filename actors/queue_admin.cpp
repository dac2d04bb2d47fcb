// The queue's operator requests: cancel, the dead-letter queue, figures
// per type. See actors/detail/queue_state.hpp.

#include "actors/detail/queue_state.hpp"

namespace drover::queue_detail {

namespace {

using ok_promise = caf::typed_response_promise<ok_atom>;

/// Answers the cancels that waited for `job_id`'s `cancel_requested` write
/// (queue_state::cancel_writes) with `err` (none: ok).
void answer_cancels(self_ptr self, const std::string& job_id,
                    const caf::error& err) {
  auto& st = self->state;
  auto w = st.cancel_writes.find(job_id);
  if (w == st.cancel_writes.end())
    return;
  auto waiting = std::move(w->second);
  st.cancel_writes.erase(w);
  for (auto& rp : waiting)
    if (err)
      rp.deliver(err);
    else
      rp.deliver(ok_atom::value);
}

/// Writes `job_id`'s `cancel_requested` for the cancels in
/// queue_state::cancel_writes and answers them once it is recorded (see
/// request_cancel). `again`: the first write failed after the attempt was
/// adopted here.
void write_cancel_request(self_ptr self, const std::string& job_id,
                          std::string reason, bool again) {
  auto& st = self->state;
  job_event ev;
  ev.job_id = job_id;
  ev.kind = event_kind::cancel_requested;
  ev.at_ms = now_ms(self);
  ev.reason = reason;
  bool supervised = st.running.count(job_id) > 0;
  if (!supervised)
    st.cancels_requested[job_id] = reason;
  self->request(st.deps.store, store_timeout, append_atom::value,
                std::vector<job_event>{std::move(ev)})
      .then(
          [self, job_id, reason](ok_atom) mutable {
            auto& st = self->state;
            auto r = st.running.find(job_id);
            if (r != st.running.end()) {
              // Running here now (an adoption during the write told it
              // already: a repeat it ignores). If its attempt ends in a
              // retry, the retry is cancelled (retry_atom).
              self->send(r->second.job_supervisor, cancel_atom::value,
                         std::move(reason), true);
              r->second.cancel_recorded = true;
            }
            if (r != st.running.end()
                || (st.awaiting_adoption.count(job_id) == 0
                    && !still_to_recover(st, job_id))) {
              // No adoption or settle to come. If its attempt ended in a
              // retry meanwhile (told here, as retry_atom, before or
              // after its supervisor's finished_atom), the request stands
              // for every later attempt, and the retry waiting here ends
              // now, not at its backoff.
              st.cancels_requested.erase(job_id);
              cancel_retry(self, job_id);
            }
            self->send(st.deps.publisher, changed_atom::value, job_id);
            answer_cancels(self, job_id, {});
          },
          [self, job_id, reason, supervised, again](caf::error& err) mutable {
            auto& st = self->state;
            st.cancels_requested.erase(job_id);
            auto r = st.running.find(job_id);
            if (!again && !supervised && r != st.running.end()
                && !is(err, errc::invalid_value)) {
              // Adopted while the write was in flight: the adoption handed
              // the cancel to its supervisor, which stops the attempt (or,
              // a request dropped with a partition that came back, it
              // will be told once the request is recorded). Written again
              // now that it runs here: acknowledged only once recorded.
              write_cancel_request(self, job_id, std::move(reason), true);
              return;
            }
            if (again && r != st.running.end()) {
              // Its supervisor may be stopping the attempt on the handed
              // request: told that it is not recorded, it records it
              // itself (a cancel that may still take effect: the error
              // says it is not recorded, and a retried cancel writes it).
              self->send(r->second.job_supervisor, cancel_atom::value,
                         std::move(reason), false);
            }
            explain_refusal(self, job_id,
                            "only a job that has not finished can be cancelled",
                            std::move(err), [self, job_id](caf::error e) {
                              answer_cancels(self, job_id, e);
                            });
          });
}

/// Records the cancel of an attempt that runs, under a job supervisor here
/// or on a worker node without one (waiting to be adopted after a failover
/// or a restart, or in a partition still being recovered):
/// `cancel_requested`, not `cancelled` — the job stays `processing` (its
/// concurrency permit keeps counting) until the attempt stops, is adopted
/// and stopped, or its grace ends and it is settled `cancelled`
/// (settle_interrupted). The request is acknowledged once it is recorded
/// (a coordinator killed after the answer cannot lose it), and only then
/// is a supervisor here told to stop the attempt. Kept in
/// queue_state::cancels_requested while the attempt has no supervisor here.
/// A cancel asked while the write is in flight waits for it.
void request_cancel(self_ptr self, const std::string& job_id,
                    std::string reason, ok_promise rp) {
  auto& waiting = self->state.cancel_writes[job_id];
  waiting.push_back(rp);
  if (waiting.size() == 1) // else it joins the write in flight
    write_cancel_request(self, job_id, std::move(reason), false);
}

/// Cancels `job_id` into `rp`; `read`: its record, read because its
/// partition is still being recovered (null: not read).
void cancel_into(self_ptr self, const std::string& job_id, std::string reason,
                 ok_promise rp, const job_record* read) {
  auto& st = self->state;
  auto r = st.running.find(job_id);
  if ((r != st.running.end() && r->second.cancel_recorded)
      || (r == st.running.end() && st.cancels_requested.count(job_id) > 0
          && st.cancel_writes.count(job_id) == 0)) {
    // Asked again (a client retrying): recorded once, its supervisor told
    // (or, unsupervised, kept for its adoption or settle; a write that
    // failed again must not drop it).
    rp.deliver(ok_atom::value);
    return;
  }
  if (r != st.running.end() || st.awaiting_adoption.count(job_id) > 0
      || st.cancel_writes.count(job_id) > 0
      || (read != nullptr && read->status == job_status::processing)) {
    request_cancel(self, job_id, std::move(reason), rp);
    return;
  }
  if (read == nullptr && still_to_recover(st, job_id)) {
    // Recovery has yet to read it: an attempt of it may run on a worker
    // node that will ask for its adoption. Read first.
    self->request(st.deps.store, store_timeout, get_atom::value, job_id)
        .then(
            [self, rp, job_id, reason](job_record& rec) mutable {
              cancel_into(self, job_id, std::move(reason), rp, &rec);
            },
            [rp](caf::error& err) mutable { rp.deliver(std::move(err)); });
    return;
  }
  auto why = std::string{"cancelled before it ran"};
  if (!reason.empty())
    why += ": " + reason;
  cancel_waiting(self, job_id, std::move(why), [rp](caf::error err) mutable {
    if (err)
      rp.deliver(std::move(err));
    else
      rp.deliver(ok_atom::value);
  });
}

} // namespace

/// Cancels a job: a running one through its job supervisor (cooperative,
/// then forced), one whose attempt may run unsupervised by its request
/// (request_cancel), a waiting one at once. `reason` (who asked and why)
/// goes into the audit log's event.
caf::result<ok_atom> cancel_job(self_ptr self, const std::string& job_id,
                                std::string reason) {
  auto rp = self->make_response_promise<ok_atom>();
  cancel_into(self, job_id, std::move(reason), rp, nullptr);
  return rp;
}

namespace {

/// Ends `job_id` `cancelled`, taken out of the queue's waiting places
/// first, so no dispatch races the write (an attempt started meanwhile
/// would run on for a cancelled job; recovery and reconcile do not queue
/// it either while the write is in flight: queue_state::cancelling). The
/// store decides: a finished job refuses `cancelled` (conflict). If the
/// write fails otherwise (the store unavailable, a timeout), the job goes
/// back where the store says (reconcile): a cancel that failed loses
/// nothing.
void write_cancelled(self_ptr self, const std::string& job_id,
                     std::string reason, std::function<void(caf::error)> done) {
  ++self->state.cancelling[job_id];
  auto written = [self, job_id] {
    auto& cancelling = self->state.cancelling;
    auto i = cancelling.find(job_id);
    if (i != cancelling.end() && --i->second == 0)
      cancelling.erase(i);
  };
  job_event ev;
  ev.job_id = job_id;
  ev.kind = event_kind::cancelled;
  ev.at_ms = now_ms(self);
  ev.reason = std::move(reason);
  self->request(self->state.deps.store, store_timeout, append_atom::value,
                std::vector<job_event>{std::move(ev)})
      .then(
          [self, job_id, done, written](ok_atom) {
            written();
            ++self->state.stats.cancelled;
            publish_final(self, job_id, true);
            done({});
          },
          [self, job_id, done, written](caf::error& err) {
            written();
            if (!is(err, errc::invalid_value))
              reconcile_later(
                  self, job_id, 0,
                  {"cancel_failed", "its cancel could not be recorded", true});
            explain_refusal(self, job_id,
                            "only a job that has not finished can be cancelled",
                            std::move(err), done);
          });
}

} // namespace

void cancel_waiting(self_ptr self, const std::string& job_id,
                    std::string reason, std::function<void(caf::error)> done) {
  // Waiting or not (e.g. between the timer and the ready queue), the
  // store decides.
  remove_waiting(self, job_id);
  write_cancelled(self, job_id, std::move(reason), std::move(done));
}

void cancel_retry(self_ptr self, const std::string& job_id) {
  if (!remove_waiting(self, job_id))
    return; // not waiting here: ended, or an attempt of it runs again
  write_cancelled(self, job_id,
                  "cancelled before its retry: its cancel was requested while "
                  "the attempt ended",
                  [self, job_id](const caf::error& err) {
                    // A failed write leaves the request: the retry's
                    // attempt reads it and ends the job before it starts.
                    if (err && !is(err, errc::conflict))
                      log_failure("cancelling a retry", err, job_id,
                                  log::level::warn);
                  });
}

/// Redrives one DLQ job: `redriven`, then back into the ready queue.
void redrive_one(self_ptr self, const std::string& job_id,
                 std::function<void(caf::error)> done) {
  auto& st = self->state;
  self->request(st.deps.store, store_timeout, get_atom::value, job_id)
      .then(
          [self, done](job_record& rec) {
            job_event ev;
            ev.job_id = rec.job_id;
            ev.kind = event_kind::redriven;
            ev.attempt = rec.attempt;
            ev.at_ms = now_ms(self);
            ev.reason = "redriven from the dead-letter queue";
            self->request(self->state.deps.store, store_timeout,
                          append_atom::value, std::vector<job_event>{ev})
                .then(
                    [self, done, rec](ok_atom) {
                      // The publisher forgets the failed run's final record and
                      // streams read the `redriven` event.
                      self->send(self->state.deps.publisher,
                                 changed_atom::value, rec.job_id);
                      push_ready(self, rec);
                      done(caf::none);
                    },
                    [self, done, job_id = rec.job_id](caf::error& err) {
                      explain_refusal(
                          self, job_id,
                          "only a job in the dead-letter queue can be "
                          "retried",
                          std::move(err), done);
                    });
          },
          [done](caf::error& err) { done(std::move(err)); });
}

/// Applies `one` to every DLQ job (one page of up to 10,000), counting
/// successes.
void for_all_dead_letters(
    self_ptr self, caf::typed_response_promise<uint32_t> rp,
    std::function<void(const std::string&, std::function<void(caf::error)>)>
        one) {
  job_query q;
  q.dead_lettered = true;
  q.limit = 10000;
  self->request(self->state.deps.store, store_timeout, list_atom::value, q)
      .then(
          [rp, one](std::vector<job_record>& jobs) mutable {
            if (jobs.empty()) {
              rp.deliver(uint32_t{0});
              return;
            }
            struct tally {
              size_t pending;
              uint32_t ok = 0;
              caf::typed_response_promise<uint32_t> rp;
            };
            auto t = std::make_shared<tally>(tally{jobs.size(), 0, rp});
            for (const auto& rec : jobs)
              one(rec.job_id, [t](caf::error err) {
                if (!err)
                  ++t->ok;
                if (--t->pending == 0)
                  t->rp.deliver(t->ok);
              });
          },
          [rp](caf::error& err) mutable { rp.deliver(std::move(err)); });
}

void purge_one(self_ptr self, const std::string& job_id,
               std::function<void(caf::error)> done) {
  job_event ev;
  ev.job_id = job_id;
  ev.kind = event_kind::purged;
  ev.at_ms = now_ms(self);
  ev.reason = "purged from the dead-letter queue";
  self->request(self->state.deps.store, store_timeout, append_atom::value,
                std::vector<job_event>{std::move(ev)})
      .then([done](ok_atom) { done(caf::none); },
            [self, done, job_id](caf::error& err) {
              explain_refusal(self, job_id,
                              "only a job in the dead-letter queue can be "
                              "purged",
                              std::move(err), done);
            });
}

/// Runs a dead-letter-queue operation on one job; ok or its error.
caf::typed_response_promise<ok_atom>
dlq_one(self_ptr self, const std::string& job_id, dlq_op op) {
  auto rp = self->make_response_promise<ok_atom>();
  op(self, job_id, [rp](caf::error err) mutable {
    if (err)
      rp.deliver(std::move(err));
    else
      rp.deliver(ok_atom::value);
  });
  return rp;
}

/// Runs a dead-letter-queue operation on every job in it; how many worked.
caf::typed_response_promise<uint32_t> dlq_all(self_ptr self, dlq_op op) {
  auto rp = self->make_response_promise<uint32_t>();
  for_all_dead_letters(
      self, rp,
      [self, op](const std::string& id, std::function<void(caf::error)> done) {
        op(self, id, std::move(done));
      });
  return rp;
}

/// Per partition with a job waiting or running, by partition: waiting
/// from admission control's counts, running from the attempts.
std::vector<partition_figures> figures_by_partition(const queue_state& st) {
  std::map<int32_t, partition_figures> by;
  for (const auto& [partition, n] : st.admission.partitions())
    if (n > 0)
      by[partition].waiting = n;
  for (const auto& kv : st.running)
    ++by[partition_of_id(kv.first)].running;
  std::vector<partition_figures> out;
  out.reserve(by.size());
  for (auto& [partition, f] : by) {
    f.partition = partition;
    out.push_back(f);
  }
  return out;
}

/// The queue's figures per resource class and job type (queue_stats::
/// by_type): what waits, runs and ran. Walks the jobs held back by a limit
/// and the running attempts (the ready queues and the timer keep counts):
/// for an admin view or a scrape, not for each job.
std::vector<type_figures> figures_by_type(self_ptr self) {
  auto& st = self->state;
  auto now = now_ms(self);
  auto flow_clock = flow_now(self);
  // Per (class, type): its figures, the ready jobs held back by a
  // concurrency key, a rate limit or a breaker (they count as ready, but
  // not towards the slots to recommend: more workers would not run them
  // sooner), and whether an attempt's run time was measured.
  struct work {
    type_figures f;
    uint64_t held = 0;
    bool measured = false;
  };
  std::map<std::pair<std::string, std::string>, work> figs;
  auto fig = [&](const std::string& cls, const std::string& type) -> work& {
    auto& w = figs[{cls, type}];
    w.f.resource_class = cls;
    w.f.job_type = type;
    return w;
  };
  auto aged = [&](type_figures& f, int64_t key, size_t prio) {
    f.oldest_age_ms
        = std::max(f.oldest_age_ms,
                   now - (key - static_cast<int64_t>(prio) * aging_ms(self)));
  };
  for (const auto& [cls, q] : st.classes)
    for (const auto& [lane_name, pq] : q.by_type)
      for (size_t i = 0; i < 3; ++i)
        if (!pq[i].empty()) {
          auto& f = fig(cls, type_of_lane(lane_name)).f;
          f.ready += pq[i].size();
          aged(f, pq[i].oldest_key(), i);
        }
  auto count_parked = [&](const auto& by_key) {
    for (const auto& kv : by_key)
      for (const auto& pe : kv.second) {
        auto& w = fig(pe.resource_class, pe.type);
        ++w.f.ready;
        ++w.held;
        aged(w.f, pe.entry.key, pe.prio);
      }
  };
  count_parked(st.parked);
  count_parked(st.flow_parked);
  for (const auto& [k, n] : st.delayed_by_type)
    fig(k.first, k.second).f.delayed = n;
  for (const auto& kv : st.running)
    ++fig(kv.second.resource_class, kv.second.type).f.running;
  for (const auto& [k, n] : st.type_counts) {
    auto& w = fig(k.first, k.second);
    w.f.dispatched = n.dispatched;
    w.f.completed = n.completed;
    w.f.arrivals_per_second = n.arrivals.per_second(flow_clock);
    w.f.completions_per_second = n.completions.per_second(flow_clock);
    w.f.mean_run_ms = n.run_time.ms();
    w.measured = n.run_time.measured();
  }
  std::vector<type_figures> out;
  for (auto& [k, w] : figs) {
    if (out.size() == 10000)
      break; // the wire's bound
    w.f.recommended_slots = recommended_slots(w.f.arrivals_per_second,
                                              w.measured ? w.f.mean_run_ms : -1,
                                              w.f.ready - w.held, w.f.running);
    out.push_back(std::move(w.f));
  }
  return out;
}

} // namespace drover::queue_detail
