#include "actors/job_supervisor.hpp"

#include "actors/detail/job_supervisor_state.hpp"
#include "runtime/errors.hpp"
#include "runtime/log.hpp"
#include "runtime/log_caf.hpp"
#include "runtime/submit.hpp"

#include <caf/actor_system.hpp>

namespace drover {

namespace js_detail {

job_event make_event(self_ptr self, event_kind kind) {
  job_event ev;
  ev.job_id = self->state.cfg.job_id;
  ev.kind = kind;
  ev.attempt = self->state.attempt;
  ev.at_ms = now_ms(self);
  return ev;
}

void log_failure(self_ptr self, const std::string& what, const caf::error& err,
                 log::level lv) {
  log::write(lv, "job_supervisor", self->state.cfg.job_id, what,
             {{"error", describe(err)}});
}

namespace {

/// Appends one event whose outcome only matters if it fails. Always a
/// request: a plain send would get the store's reply as an unexpected
/// message (and an error reply would kill us).
void append_quietly(self_ptr self, job_event ev, const char* what) {
  self->request(self->state.cfg.store, store_timeout, append_atom::value,
                std::vector<job_event>{std::move(ev)})
      .then([](ok_atom) {},
            [self, what](caf::error& err) { log_failure(self, what, err); });
}

/// Writes the `cancel_requested` event unless it is written already (by
/// the queue, before it asked, or found in the record).
void record_cancel(self_ptr self) {
  auto& st = self->state;
  if (st.cancel_recorded)
    return;
  st.cancel_recorded = true;
  append_quietly(self, cancel_event(self, event_kind::cancel_requested, ""),
                 "recording the cancel request");
}

/// The worker never got the attempt: hand it back to the queue.
void release_worker(self_ptr self) {
  auto& st = self->state;
  self->send(st.cfg.queue, ready_atom::value, resource_class_of(st.rec.spec),
             st.cfg.worker_id, st.cfg.worker);
}

void persist_progress(self_ptr self) {
  auto& st = self->state;
  if (!st.has_pending_progress || st.current == phase::finishing)
    return;
  auto ev = make_event(self, event_kind::progressed);
  ev.progress = std::move(st.pending_progress);
  ev.progress.checkpoint.clear();
  st.has_pending_progress = false;
  st.last_persist_ms = now_ms(self);
  append_quietly(self, std::move(ev), "persisting progress");
}

/// Starts the cooperative stop of the running attempt (cancel or timeout);
/// the grace timer forces it.
void begin_stop(self_ptr self) {
  auto& st = self->state;
  st.current = phase::stopping;
  self->send(st.cfg.worker, cancel_atom::value, st.cfg.job_id, st.attempt);
  auto grace = st.handler != nullptr ? st.handler->options.cancel_grace
                                     : std::chrono::milliseconds{5000};
  self->delayed_send(self, grace, grace_atom::value, st.attempt);
}

void start_attempt(self_ptr self) {
  auto& st = self->state;
  st.handler = st.cfg.handlers->find(st.rec.spec.type);
  st.attempt = st.rec.attempt + 1;
  auto started = make_event(self, event_kind::started);
  started.worker_id = st.cfg.worker_id;
  st.current = phase::starting;
  self->request(st.cfg.store, store_timeout, append_atom::value,
                std::vector<job_event>{std::move(started)})
      .then(
          [self](ok_atom) {
            auto& st = self->state;
            st.current = phase::running;
            st.rec.status = job_status::processing;
            st.rec.attempt = st.attempt;
            self->send(st.cfg.publisher, changed_atom::value, st.cfg.job_id);
            self->monitor(st.cfg.worker);
            lease l;
            l.job_id = st.cfg.job_id;
            l.spec = st.rec.spec;
            l.checkpoint = st.rec.checkpoint;
            l.attempt = st.attempt;
            self->send(st.cfg.worker, run_atom::value, std::move(l),
                       job_supervisor_actor{self});
            if (st.rec.spec.timeout_ms > 0)
              self->delayed_send(
                  self, std::chrono::milliseconds{st.rec.spec.timeout_ms},
                  timeout_atom::value, st.attempt);
            if (st.cancel_requested) {
              // A cancel arrived while `started` was being written.
              record_cancel(self);
              begin_stop(self);
            }
          },
          [self](caf::error& err) {
            log_failure(self, "starting the attempt", err);
            release_worker(self);
            finish(self, self->state.rec.status);
          });
}

/// Takes over an attempt a remote worker still runs after this coordinator
/// restarted: no new attempt, no `started`; it keeps its number.
void adopt_attempt(self_ptr self) {
  auto& st = self->state;
  if (st.rec.status != job_status::processing
      || st.rec.attempt != st.cfg.adopt_attempt) {
    // Moved on meanwhile: the worker's attempt is superseded.
    self->send(st.cfg.worker, abandon_atom::value, st.cfg.job_id,
               st.cfg.adopt_attempt);
    finish(self, st.rec.status);
    return;
  }
  st.handler = st.cfg.handlers->find(st.rec.spec.type);
  st.current = phase::running;
  self->monitor(st.cfg.worker);
  if (st.rec.spec.timeout_ms > 0) {
    auto left = st.rec.started_at_ms + st.rec.spec.timeout_ms - now_ms(self);
    self->delayed_send(self,
                       std::chrono::milliseconds{std::max<int64_t>(0, left)},
                       timeout_atom::value, st.attempt);
  }
  log::info("job_supervisor", log::job{st.cfg.job_id},
            "adopted a running attempt after a restart",
            {{"attempt", st.attempt}, {"worker", st.cfg.worker_id}});
  // A cancel requested of the coordinator it ran under (recorded) is this
  // one's too: the handler's `cancelled` was asked for, and one still
  // running is stopped.
  st.cancel_requested = st.cancel_requested || st.rec.cancel_requested;
  if (st.rec.cancel_requested) {
    st.cancel_recorded = true;
    st.cancel_recorded_by_queue = false; // read back: written for sure
  }
  if (st.early_outcome) {
    auto c = std::move(*st.early_outcome);
    st.early_outcome.reset();
    on_done(self, c);
    return;
  }
  if (st.cancel_requested) {
    record_cancel(self);
    begin_stop(self);
  }
}

void on_record(self_ptr self, job_record& rec) {
  auto& st = self->state;
  st.rec = std::move(rec);
  st.attempt = st.rec.attempt;
  if (st.cfg.adopt_attempt != 0) {
    adopt_attempt(self);
    return;
  }
  if (st.rec.status != job_status::queued) {
    // Cancelled (or otherwise moved on) while it waited: nothing to run.
    release_worker(self);
    finish(self, st.rec.status);
    return;
  }
  // A cancel requested while an earlier attempt ran unsupervised (recorded,
  // the attempt lost before it was stopped) holds for every later one.
  if (st.cancel_requested || st.rec.cancel_requested) {
    release_worker(self);
    auto ev = cancel_event(self, event_kind::cancelled,
                           "cancelled before it started");
    conclude(self, {std::move(ev)}, job_status::cancelled);
    return;
  }
  start_attempt(self);
}

js_impl_actor::behavior_type job_supervisor_impl(self_ptr self,
                                                 job_supervisor_config cfg) {
  auto& st = self->state;
  st.cfg = std::move(cfg);
  st.rng.seed(static_cast<std::minstd_rand::result_type>(st.cfg.seed));
  // A stray message must not end the job's supervision (CAF's default for
  // typed actors quits).
  self->set_default_handler(log_and_drop);
  self->set_error_handler([self](caf::error& err) {
    log_failure(self, "unexpected error message", err);
  });
  self->set_down_handler([self](caf::down_msg& dm) {
    auto& st = self->state;
    if (dm.source == st.cfg.store.address()) {
      // Replies to our requests may never come. The store's supervisor
      // restarts it together with the queue and the local workers
      // (one_for_all: their attempts end with them), and the new queue
      // recovers this job from what the store committed. The attempt is
      // not abandoned: on a worker node it keeps running, and the new
      // queue -- or, after an orderly stop of this coordinator, its
      // successor -- adopts it when the node lists it (before, an abandon
      // sent here cancelled it on the node, and a SIGTERM hand-over ran
      // every such job again).
      log_failure(
          self, "the store stopped",
          make_error(errc::unavailable, self->system().render(dm.reason)));
      self->quit(dm.reason);
      return;
    }
    if (dm.source != st.cfg.worker.address())
      return;
    if (st.current != phase::running && st.current != phase::stopping)
      return;
    if (dm.reason == caf::exit_reason::user_shutdown) {
      // The node is stopping in order (a coordinator lets its worker nodes'
      // links go first): the attempt is not lost. On a worker node it
      // keeps running and the next coordinator adopts it; a local one is
      // settled by the recovery of the node's next start.
      log::info("job_supervisor", log::job{st.cfg.job_id},
                "stopping with the node; the attempt is left to the next "
                "coordinator",
                {{"attempt", st.attempt}});
      self->quit(dm.reason);
      return;
    }
    auto lost = make_event(self, event_kind::worker_lost);
    lost.worker_id = st.cfg.worker_id;
    fail_attempt(self,
                 {"worker_lost",
                  "worker " + st.cfg.worker_id + " died during the attempt: "
                      + self->system().render(dm.reason),
                  true},
                 {std::move(lost)}, true);
  });
  self->monitor(st.cfg.store);
  self->request(st.cfg.store, store_timeout, get_atom::value, st.cfg.job_id)
      .then([self](job_record& rec) { on_record(self, rec); },
            [self](caf::error& err) {
              log_failure(self, "reading the job", err);
              // Without the record we cannot know the resource class; the
              // worker was reserved for this job, so give it back as is.
              auto& st = self->state;
              self->send(st.cfg.queue, ready_atom::value, std::string{},
                         st.cfg.worker_id, st.cfg.worker);
              finish(self, job_status::queued);
            });
  return {
      [self](partitions_atom) {
        // The job's partition went to another coordinator
        // (actors/queue_partitions.cpp): stop without a write. A started
        // attempt is handed over (a worker node keeps running it and
        // offers it to the new owner, which adopts it; a local worker
        // stops it and the new owner's recovery settles it); a worker not
        // leased yet is given back. An outcome being written commits before the
        // hand-over or is refused by the store's fence.
        auto& st = self->state;
        if (st.current == phase::loading && st.cfg.adopt_attempt != 0)
          // An attempt a worker node still runs, being adopted: it goes on
          // there for the new owner (the slot is busy with it, not free).
          self->send(st.cfg.worker, handover_atom::value, st.cfg.job_id,
                     st.cfg.adopt_attempt);
        else if (st.current == phase::loading || st.current == phase::starting)
          release_worker(self);
        else if (st.current == phase::running || st.current == phase::stopping)
          // A worker node's slot keeps it running for the partition's new
          // owner to adopt; a local worker stops it.
          self->send(st.cfg.worker, handover_atom::value, st.cfg.job_id,
                     st.attempt);
        log::info("job_supervisor", log::job{st.cfg.job_id},
                  "partition handed over; the attempt is left to its new "
                  "coordinator",
                  {{"attempt", st.attempt}});
        self->demonitor(st.cfg.store.address());
        if (st.cfg.worker)
          self->demonitor(st.cfg.worker.address());
        self->quit(caf::exit_reason::user_shutdown);
      },
      [self](adopt_atom, uint32_t attempt, std::string& worker_id,
             worker_actor& slot) -> bool {
        // From the queue: another slot of the machine the attempt runs on
        // takes its reports (a worker node's agent going home passed it to
        // the node's agent joined here, actors/queue_partitions.cpp). The
        // old slot is told it was handed over: its link keeps the worker's
        // place taken while the node runs the attempt, and expects nothing
        // more of it.
        auto& st = self->state;
        if (attempt != st.attempt || !slot || slot == st.cfg.worker
            || (st.current != phase::running && st.current != phase::stopping))
          return false;
        self->send(st.cfg.worker, handover_atom::value, st.cfg.job_id,
                   st.attempt);
        self->demonitor(st.cfg.worker.address());
        log::info("job_supervisor", log::job{st.cfg.job_id},
                  "the attempt's reports come through another slot of its "
                  "machine now",
                  {{"attempt", st.attempt},
                   {"from", st.cfg.worker_id},
                   {"to", worker_id}});
        st.cfg.worker = std::move(slot);
        st.cfg.worker_id = std::move(worker_id);
        self->monitor(st.cfg.worker);
        return true;
      },
      [self](cancel_atom, std::string& reason, bool recorded) {
        auto& st = self->state;
        if (st.cancel_requested) {
          // Told again, not recorded: the queue's write of the request
          // failed after it handed the cancel over (an adoption).
          if (!recorded && st.cancel_recorded_by_queue) {
            st.cancel_recorded_by_queue = false;
            st.cancel_recorded = false;
            if (st.current == phase::running || st.current == phase::stopping)
              record_cancel(self);
          }
          return;
        }
        st.cancel_reason = std::move(reason);
        st.cancel_requested = true;
        st.cancel_recorded = recorded;
        st.cancel_recorded_by_queue = recorded;
        if (st.current == phase::running) {
          record_cancel(self);
          begin_stop(self);
        }
        // loading/starting: handled once the record / start is in;
        // stopping (timeout): the outcome becomes cancelled.
      },
      [self](progress_atom, progress_update& update) {
        auto& st = self->state;
        if (update.attempt != st.attempt
            || (st.current != phase::running && st.current != phase::stopping))
          return;
        self->send(st.cfg.publisher, publish_atom::value, update);
        st.pending_progress = std::move(update);
        st.has_pending_progress = true;
        if (st.persist_armed)
          return;
        auto since = now_ms(self) - st.last_persist_ms;
        auto interval = st.cfg.progress_persist_interval.count();
        if (since >= interval) {
          persist_progress(self);
          return;
        }
        st.persist_armed = true;
        self->delayed_send(self, std::chrono::milliseconds{interval - since},
                           persist_atom::value);
      },
      [self](persist_atom) {
        self->state.persist_armed = false;
        persist_progress(self);
      },
      [self](checkpoint_atom, const std::string& job_id, uint32_t attempt,
             std::string& bytes) {
        auto& st = self->state;
        if (job_id != st.cfg.job_id || attempt != st.attempt
            || (st.current != phase::running && st.current != phase::stopping))
          return;
        auto ev = make_event(self, event_kind::checkpointed);
        ev.checkpoint = std::move(bytes);
        append_quietly(self, std::move(ev), "persisting a checkpoint");
      },
      [self](done_atom, completion& c) { on_done(self, c); },
      [self](expired_atom, const std::string& job_id, uint32_t attempt) {
        // The remote worker's lease lapsed (no heartbeat within its TTL):
        // the attempt is lost, not failed; it runs again elsewhere.
        auto& st = self->state;
        if (job_id != st.cfg.job_id || attempt != st.attempt
            || (st.current != phase::running && st.current != phase::stopping))
          return;
        auto ev = make_event(self, event_kind::lease_expired);
        ev.worker_id = st.cfg.worker_id;
        fail_attempt(self,
                     {"lease_expired",
                      "the lease of attempt " + std::to_string(attempt) + " on "
                          + st.cfg.worker_id
                          + " lapsed: no heartbeat within its TTL",
                      true},
                     {std::move(ev)}, true);
      },
      [self](outcome_atom) { write_outcome(self); },
      [self](timeout_atom, uint32_t attempt) {
        auto& st = self->state;
        if (attempt != st.attempt || st.current != phase::running)
          return;
        st.timed_out = true;
        begin_stop(self);
      },
      [self](grace_atom, uint32_t attempt) {
        auto& st = self->state;
        if (attempt != st.attempt || st.current != phase::stopping)
          return;
        // The attempt ignored the cooperative stop: force it. The worker
        // fences its late reports and frees itself when the thread ends.
        self->send(st.cfg.worker, abandon_atom::value, st.cfg.job_id,
                   st.attempt);
        completion forced;
        forced.job_id = st.cfg.job_id;
        forced.attempt = st.attempt;
        forced.outcome = completion_outcome::cancelled;
        on_done(self, forced);
      },
  };
}

} // namespace

} // namespace js_detail

queued_job_actor spawn_job_supervisor(caf::actor_system& sys,
                                      job_supervisor_config config) {
  // The private extension converts to its public subset: no actor_cast.
  return sys.spawn(js_detail::job_supervisor_impl, std::move(config));
}

} // namespace drover
