#include "runtime/job_state.hpp"

#include "runtime/errors.hpp"

namespace drover {

namespace {

caf::error illegal(const job_record& rec, const job_event& ev,
                   const std::string& why) {
  return make_error(errc::invalid_value,
                    "job " + rec.job_id + ": event '" + to_string(ev.kind)
                        + "' (seq " + std::to_string(ev.sequence) + ", attempt "
                        + std::to_string(ev.attempt) + ") " + why + " [status "
                        + to_string(rec.status) + ", attempt "
                        + std::to_string(rec.attempt) + "]");
}

} // namespace

caf::error apply(job_record& rec, const job_event& ev) {
  if (ev.sequence != rec.sequence + 1)
    return illegal(rec, ev,
                   "breaks the sequence (expected "
                       + std::to_string(rec.sequence + 1) + ")");
  if (ev.kind == event_kind::submitted) {
    if (rec.sequence != 0)
      return illegal(rec, ev, "for a job that exists");
    if (ev.job_id.empty())
      return illegal(rec, ev, "without a job id");
    job_record fresh;
    fresh.job_id = ev.job_id;
    fresh.spec = ev.spec;
    fresh.created_at_ms = ev.at_ms;
    fresh.status = ev.spec.run_at_ms > ev.at_ms ? job_status::scheduled
                                                : job_status::queued;
    fresh.sequence = ev.sequence;
    rec = std::move(fresh);
    return caf::none;
  }
  if (rec.sequence == 0)
    return illegal(rec, ev, "before 'submitted'");
  if (ev.job_id != rec.job_id)
    return illegal(rec, ev, "names another job (" + ev.job_id + ")");
  auto terminal = is_terminal(rec.status);
  auto same_attempt = [&] { return ev.attempt == rec.attempt; };
  // A terminal event owes a webhook when the job has a callback URL.
  auto owed_webhook = [&] {
    return rec.spec.callback_url.empty() ? uint64_t{0} : ev.sequence;
  };
  // Work on a copy: a rejected event leaves the record untouched.
  job_record next = rec;
  switch (ev.kind) {
    case event_kind::submitted:
      break; // handled above
    case event_kind::scheduled:
      if (rec.status != job_status::queued
          && rec.status != job_status::scheduled)
        return illegal(rec, ev, "needs a queued or scheduled job");
      next.status = job_status::scheduled;
      next.spec.run_at_ms = ev.run_at_ms;
      break;
    case event_kind::queued:
      if (rec.status != job_status::scheduled
          && rec.status != job_status::retrying)
        return illegal(rec, ev, "needs a scheduled or retrying job");
      next.status = job_status::queued;
      next.retry_at_ms = 0;
      break;
    case event_kind::started:
      if (rec.status != job_status::queued)
        return illegal(rec, ev, "needs a queued job");
      if (ev.attempt != rec.attempt + 1)
        return illegal(rec, ev,
                       "must start attempt " + std::to_string(rec.attempt + 1));
      next.status = job_status::processing;
      next.attempt = ev.attempt;
      next.worker_id = ev.worker_id;
      next.lease_expiry_ms = ev.lease_expiry_ms;
      next.started_at_ms = ev.at_ms;
      next.progress = 0;
      next.eta_ms = -1;
      next.stages.clear();
      break;
    case event_kind::progressed:
    case event_kind::checkpointed:
    case event_kind::lease_expired:
    case event_kind::worker_lost:
      if (rec.status != job_status::processing)
        return illegal(rec, ev, "needs a processing job");
      if (!same_attempt())
        return illegal(rec, ev, "comes from a superseded attempt");
      if (ev.kind == event_kind::progressed) {
        if (ev.progress.percent < rec.progress)
          return illegal(rec, ev, "moves progress backwards");
        next.progress = ev.progress.percent;
        next.eta_ms = ev.progress.eta_ms;
        if (!ev.progress.stages.empty())
          next.stages = ev.progress.stages;
      } else if (ev.kind == event_kind::checkpointed) {
        next.checkpoint = ev.checkpoint;
        next.checkpoint_attempt = ev.attempt;
      } else {
        next.worker_id = ev.worker_id;
        if (rec.last_lost_attempt != ev.attempt) {
          next.lost_count = rec.lost_count + 1;
          next.last_lost_attempt = ev.attempt;
        }
      }
      break;
    case event_kind::retry_scheduled:
      if (rec.status != job_status::processing || !same_attempt())
        return illegal(rec, ev, "needs the processing attempt");
      next.status = job_status::retrying;
      next.error = ev.error;
      next.retry_at_ms = ev.next_attempt_at_ms;
      // A lost attempt (worker died, lease lapsed) is not the handler's
      // failure: it does not count against max_attempts.
      if (rec.last_lost_attempt != ev.attempt)
        next.retry_count = rec.retry_count + 1;
      next.lease_expiry_ms = 0;
      break;
    case event_kind::completed:
      if (rec.status != job_status::processing || !same_attempt())
        return illegal(rec, ev, "needs the processing attempt");
      next.status = job_status::completed;
      next.result = ev.result;
      next.progress = 100;
      next.eta_ms = 0;
      next.completed_at_ms = ev.at_ms;
      next.lease_expiry_ms = 0;
      next.webhook_pending_sequence = owed_webhook();
      for (auto& s : next.stages)
        if (s.state == stage_state::pending
            || s.state == stage_state::running) {
          s.state = stage_state::done;
          s.percent = 100;
        }
      break;
    case event_kind::failed:
      if (rec.status != job_status::processing || !same_attempt())
        return illegal(rec, ev, "needs the processing attempt");
      next.status = job_status::failed;
      next.error = ev.error;
      next.completed_at_ms = ev.at_ms;
      next.lease_expiry_ms = 0;
      next.eta_ms = -1;
      next.webhook_pending_sequence = owed_webhook();
      for (auto& s : next.stages)
        if (s.state == stage_state::running)
          s.state = stage_state::failed;
      break;
    case event_kind::dead_lettered:
      if (rec.status != job_status::failed || rec.dead_lettered)
        return illegal(rec, ev, "needs a failed job outside the DLQ");
      next.dead_lettered = true;
      break;
    case event_kind::purged:
      if (rec.status != job_status::failed || !rec.dead_lettered)
        return illegal(rec, ev, "needs a job in the DLQ");
      next.dead_lettered = false;
      break;
    case event_kind::redriven:
      if (rec.status != job_status::failed || !rec.dead_lettered)
        return illegal(rec, ev, "needs a job in the DLQ");
      next.status = job_status::queued;
      next.dead_lettered = false;
      next.retry_count = 0;
      next.lost_count = 0;
      next.error = {};
      next.completed_at_ms = 0;
      next.progress = 0;
      next.cancel_requested = false;
      next.webhook_pending_sequence = 0; // the next terminal event owes one
      break;
    case event_kind::cancel_requested:
      if (terminal)
        return illegal(rec, ev, "for a finished job");
      next.cancel_requested = true;
      break;
    case event_kind::cancelled:
      if (terminal)
        return illegal(rec, ev, "for a finished job");
      next.status = job_status::cancelled;
      next.completed_at_ms = ev.at_ms;
      next.lease_expiry_ms = 0;
      next.retry_at_ms = 0;
      next.eta_ms = -1;
      next.webhook_pending_sequence = owed_webhook();
      if (!ev.reason.empty())
        next.error = error_info{"cancelled", ev.reason, false};
      for (auto& s : next.stages)
        if (s.state == stage_state::running || s.state == stage_state::pending)
          s.state = stage_state::skipped;
      break;
    case event_kind::report_rejected:
      // A superseded attempt's late report, refused: recorded, changes
      // nothing, legal in every status. It must name an earlier attempt.
      if (ev.attempt == 0 || ev.attempt > rec.attempt)
        return illegal(rec, ev, "names an attempt that never started");
      break;
    case event_kind::webhook_attempted:
      // Bookkeeping of a notification, not a transition: legal in every
      // status (a failed job may be redriven while its webhook is still
      // being delivered), fenced by nothing but the terminal event it
      // reports, which must exist.
      if (ev.webhook.terminal_sequence == 0
          || ev.webhook.terminal_sequence >= ev.sequence)
        return illegal(rec, ev,
                       "reports terminal event "
                           + std::to_string(ev.webhook.terminal_sequence)
                           + ", which is not an earlier event");
      if (is_final(ev.webhook.outcome)
          && ev.webhook.terminal_sequence == rec.webhook_pending_sequence)
        next.webhook_pending_sequence = 0;
      break;
  }
  next.sequence = ev.sequence;
  rec = std::move(next);
  return caf::none;
}

caf::expected<job_record> replay(const std::vector<job_event>& events) {
  job_record rec;
  for (const auto& ev : events)
    if (auto err = apply(rec, ev))
      return err;
  if (rec.sequence == 0)
    return make_error(errc::not_found, "no events to replay");
  return rec;
}

} // namespace drover
