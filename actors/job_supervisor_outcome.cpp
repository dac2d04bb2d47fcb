// What follows a job's attempt (actors/job_supervisor.hpp): the outcome
// decided (completed, a retry after backoff, failed into the dead-letter
// queue, cancelled), recorded in the store (again while it is
// unavailable), published, and told to the queue. See
// actors/detail/job_supervisor_state.hpp.

#include "actors/detail/job_supervisor_state.hpp"

#include "runtime/codec.hpp"
#include "runtime/errors.hpp"
#include "runtime/retry.hpp"
#include "runtime/submit.hpp"

namespace drover::js_detail {

void finish(self_ptr self, job_status status) {
  auto& st = self->state;
  // The attempt's error code, for circuit breakers ("" = none).
  std::string code;
  if (status == job_status::cancelled)
    code = "cancelled";
  else if (status != job_status::completed)
    for (const auto& ev : st.outcome)
      if (!ev.error.code.empty())
        code = ev.error.code;
  self->send(st.cfg.queue, finished_atom::value, st.cfg.job_id, status,
             std::move(code));
  // CAF 0.17 keeps a dead monitor's entry in the monitored actor: remove
  // them. The worker's matters most: a remote node's slot actor outlives
  // thousands of attempts, and each entry kept this supervisor's memory
  // (about 2.4 KB a job, until the node disconnected: found by
  // drover_bench_workers).
  self->demonitor(st.cfg.store.address());
  if (st.cfg.worker)
    self->demonitor(st.cfg.worker.address());
  self->quit();
}

namespace {

/// True for failures after which writing the same events again may work.
bool worth_retrying(const caf::error& err) {
  return is(err, errc::unavailable)
         || (err.category() == caf::atom("system")
             && err.code() == static_cast<uint8_t>(caf::sec::request_timeout));
}

} // namespace

void write_outcome(self_ptr self) {
  auto& st = self->state;
  self->request(st.cfg.store, store_timeout, append_atom::value, st.outcome)
      .then(
          [self](ok_atom) {
            auto& st = self->state;
            auto status = st.outcome_status;
            if (status == job_status::retrying) {
              self->send(st.cfg.publisher, changed_atom::value, st.cfg.job_id);
              auto rec = st.rec;
              rec.status = job_status::retrying;
              self->send(st.cfg.queue, retry_atom::value, std::move(rec));
              finish(self, status);
              return;
            }
            // Terminal: publish the record as the store now has it.
            self->request(st.cfg.store, store_timeout, get_atom::value,
                          st.cfg.job_id)
                .then(
                    [self, status](job_record& rec) {
                      self->send(self->state.cfg.publisher, final_atom::value,
                                 std::move(rec));
                      finish(self, status);
                    },
                    [self, status](caf::error& err) {
                      log_failure(self, "reading the final record", err);
                      finish(self, status);
                    });
          },
          [self](caf::error& err) {
            auto& st = self->state;
            if (worth_retrying(err)) {
              // The attempt's outcome is real (its side effects happened):
              // record it once the store is back rather than drop it, which
              // left the job `processing` with nobody to move it on.
              if (st.outcome_retry.failures() == 0)
                log_failure(self, "writing the attempt's outcome (will retry)",
                            err, log::level::warn);
              std::uniform_real_distribution<double> u{0.0, 1.0};
              self->delayed_send(self, st.outcome_retry.next(u(st.rng)),
                                 outcome_atom::value);
              return;
            }
            // Refused for good (e.g. the outcome's commit was in doubt, did
            // happen, and the job moved on): the store's record decides. The
            // queue re-reads a job finished as `processing` and settles it if
            // it still is.
            log_failure(self, "writing the attempt's outcome", err);
            finish(self, job_status::processing);
          });
}

void conclude(self_ptr self, std::vector<job_event> events, job_status status) {
  auto& st = self->state;
  st.current = phase::finishing;
  st.outcome = std::move(events);
  st.outcome_status = status;
  write_outcome(self);
}

job_event cancel_event(self_ptr self, event_kind kind, const char* what) {
  auto ev = make_event(self, kind);
  const auto& why = self->state.cancel_reason;
  ev.reason = what;
  if (!why.empty())
    ev.reason = ev.reason.empty() ? why : ev.reason + ": " + why;
  return ev;
}

void fail_attempt(self_ptr self, error_info error,
                  std::vector<job_event> events, bool lost) {
  auto& st = self->state;
  if (st.cancel_requested) {
    auto ev
        = cancel_event(self, event_kind::cancelled, "cancelled while running");
    events.push_back(std::move(ev));
    conclude(self, std::move(events), job_status::cancelled);
    return;
  }
  static const std::vector<std::string> no_codes;
  const auto& non_retryable = st.handler != nullptr
                                  ? st.handler->options.retry.non_retryable
                                  : no_codes;
  std::uniform_real_distribution<double> dist{0.0, 1.0};
  auto decision = decide_retry(st.rec, error, non_retryable, now_ms(self),
                               dist(st.rng), lost);
  if (decision.retry) {
    auto ev = make_event(self, event_kind::retry_scheduled);
    ev.error = error;
    ev.next_attempt_at_ms = decision.next_attempt_at_ms;
    st.rec.retry_at_ms = decision.next_attempt_at_ms;
    events.push_back(std::move(ev));
    conclude(self, std::move(events), job_status::retrying);
    return;
  }
  error.message += " (" + decision.reason + ")";
  auto failed = make_event(self, event_kind::failed);
  failed.error = error;
  events.push_back(std::move(failed));
  auto dlq = make_event(self, event_kind::dead_lettered);
  dlq.error = error;
  events.push_back(std::move(dlq));
  conclude(self, std::move(events), job_status::failed);
}

void on_done(self_ptr self, completion& c) {
  auto& st = self->state;
  if (st.current == phase::loading && st.cfg.adopt_attempt != 0
      && c.attempt == st.cfg.adopt_attempt) {
    st.early_outcome = std::move(c);
    return;
  }
  if (c.attempt != st.attempt
      || (st.current != phase::running && st.current != phase::stopping))
    return; // fenced: a superseded attempt or already concluded
  std::vector<job_event> events;
  if (st.has_pending_progress) {
    // Keep the last reported progress in the history before the outcome.
    auto ev = make_event(self, event_kind::progressed);
    ev.progress = std::move(st.pending_progress);
    ev.progress.checkpoint.clear();
    st.has_pending_progress = false;
    events.push_back(std::move(ev));
  }
  switch (c.outcome) {
    case completion_outcome::succeeded: {
      // Work that finished wins over a late cancel: its effects happened.
      if (!c.result.empty()) {
        if (auto err = validate_json(c.result)) {
          fail_attempt(self,
                       {"invalid_result",
                        "the handler returned a result that is not JSON: "
                            + describe(err),
                        false},
                       std::move(events));
          return;
        }
      }
      auto ev = make_event(self, event_kind::completed);
      ev.result = c.result.empty() ? "null" : std::move(c.result);
      events.push_back(std::move(ev));
      conclude(self, std::move(events), job_status::completed);
      return;
    }
    case completion_outcome::cancelled:
      if (!st.cancel_requested && !st.timed_out) {
        fail_attempt(self,
                     {"cancelled_by_handler",
                      "the handler reported cancelled, but nobody asked",
                      false},
                     std::move(events));
        return;
      }
      break;
    case completion_outcome::failed_permanent:
      c.error.retryable = false;
      if (!st.cancel_requested) {
        fail_attempt(self, std::move(c.error), std::move(events));
        return;
      }
      break;
    case completion_outcome::failed_retryable:
    case completion_outcome::timed_out:
      if (!st.timed_out) {
        c.error.retryable = true;
        fail_attempt(self, std::move(c.error), std::move(events));
        return;
      }
      break;
  }
  // Ended because we asked it to stop.
  if (st.timed_out && !st.cancel_requested) {
    fail_attempt(self,
                 {"timeout",
                  "the attempt exceeded its timeout of "
                      + std::to_string(st.rec.spec.timeout_ms) + " ms",
                  true},
                 std::move(events));
    return;
  }
  fail_attempt(self, {"cancelled", "cancelled", false}, std::move(events));
}

} // namespace drover::js_detail
