// The job resources of the HTTP API (gateway/http_api.hpp): a job, the
// answer to a submission, audit-log events, live progress and pages of
// jobs, with the time and name formats they use; and the SSE event names
// of a job's stream. See gateway/detail/http_api_writer.hpp.

#include "gateway/detail/http_api_writer.hpp"

#include <cstdio>
#include <ctime>

namespace drover::http {

using api_detail::running_stage;
using api_detail::write_eta;
using api_detail::writer;

namespace {

void write_error(writer& w, const error_info& e) {
  if (e.code.empty() && e.message.empty()) {
    w.null();
    return;
  }
  w.open_object()
      .key("code")
      .str(e.code)
      .key("message")
      .str(e.message)
      .key("retryable")
      .boolean(e.retryable)
      .close_object();
}

void write_stages(writer& w, const std::vector<stage>& stages) {
  w.open_array();
  for (auto& s : stages)
    w.open_object()
        .key("name")
        .str(s.name)
        .key("percent")
        .num(s.percent)
        .key("state")
        .str(to_string(s.state))
        .close_object();
  w.close_array();
}

/// The submission-shaped part of a spec (what the client asked for, with
/// the type's defaults filled in).
void write_spec_fields(writer& w, const job_spec& spec) {
  w.key("type")
      .str(spec.type)
      .key("priority")
      .str(to_string(spec.prio))
      .key("max_attempts")
      .num(static_cast<int64_t>(spec.max_attempts));
  w.key("timeout_seconds");
  if (spec.timeout_ms > 0)
    w.num(static_cast<double>(spec.timeout_ms) / 1000.0);
  else
    w.null();
  w.key("run_at").time(spec.run_at_ms);
  w.key("idempotency_key");
  spec.idempotency_key.empty() ? w.null() : w.str(spec.idempotency_key);
  w.key("callback_url");
  spec.callback_url.empty() ? w.null() : w.str(spec.callback_url);
  w.key("rate_limit_key");
  spec.rate_limit_key.empty() ? w.null() : w.str(spec.rate_limit_key);
  w.key("rate_limit_keys").open_array();
  for (const auto& k : rate_limit_keys_of(spec))
    w.str(k);
  w.close_array();
  w.key("breaker_key");
  spec.breaker_key.empty() ? w.null() : w.str(spec.breaker_key);
  w.key("concurrency_key");
  spec.concurrency_key.empty() ? w.null() : w.str(spec.concurrency_key);
  w.key("concurrency_limit");
  spec.concurrency_key.empty()
      ? w.null()
      : w.num(static_cast<int64_t>(spec.concurrency_limit));
  w.key("resources").open_object();
  for (auto& r : spec.resources)
    w.key(r.name).num(static_cast<int64_t>(r.amount));
  w.close_object();
  w.key("backoff")
      .open_object()
      .key("initial_seconds")
      .num(spec.backoff.initial_delay_ms / 1000.0)
      .key("max_seconds")
      .num(spec.backoff.max_delay_ms / 1000.0)
      .key("multiplier")
      .num(spec.backoff.multiplier)
      .key("jitter")
      .num(spec.backoff.jitter)
      .close_object();
}

std::string job_url(const std::string& id) {
  return "/api/jobs/" + id;
}

void write_job(writer& w, const job_record& job) {
  w.open_object()
      .key("job_id")
      .str(job.job_id)
      .key("tenant")
      .str(job.spec.tenant)
      .key("status")
      .str(to_string(job.status));
  write_spec_fields(w, job.spec);
  w.key("attempt")
      .num(static_cast<int64_t>(job.attempt))
      .key("retry_count")
      .num(static_cast<int64_t>(job.retry_count))
      .key("lost_count")
      .num(static_cast<int64_t>(job.lost_count))
      .key("progress")
      .num(job.progress);
  auto st = running_stage(job.stages);
  w.key("stage");
  st.empty() ? w.null() : w.str(st);
  w.key("stages");
  write_stages(w, job.stages);
  w.key("eta_seconds");
  write_eta(w, is_terminal(job.status) ? -1 : job.eta_ms);
  w.key("error");
  write_error(w, job.error);
  w.key("dead_lettered")
      .boolean(job.dead_lettered)
      .key("cancel_requested")
      .boolean(job.cancel_requested)
      .key("worker_id");
  job.worker_id.empty() ? w.null() : w.str(job.worker_id);
  w.key("waiting_for");
  job.waiting_for.empty() ? w.null() : w.str(job.waiting_for);
  w.key("created_at")
      .time(job.created_at_ms)
      .key("started_at")
      .time(job.started_at_ms)
      .key("finished_at")
      .time(job.completed_at_ms)
      .key("retry_at")
      .time(job.retry_at_ms)
      .key("check_status_url")
      .str(job_url(job.job_id))
      .key("result_url");
  if (job.status == job_status::completed)
    w.str(job_url(job.job_id) + "/result");
  else
    w.null();
  w.close_object();
}

/// A progress report's fields, the same in an audit-log event's details and
/// a live update: percent, stage, message, stages, eta_seconds.
void write_progress_fields(writer& w, const progress_update& p) {
  w.key("percent").num(p.percent).key("stage");
  auto st = p.stage.empty() ? running_stage(p.stages) : p.stage;
  st.empty() ? w.null() : w.str(st);
  w.key("message");
  p.message.empty() ? w.null() : w.str(p.message);
  w.key("stages");
  write_stages(w, p.stages);
  w.key("eta_seconds");
  write_eta(w, p.eta_ms);
}

void write_event_details(writer& w, const job_event& e) {
  w.open_object();
  switch (e.kind) {
    case event_kind::submitted:
      w.key("spec").open_object();
      write_spec_fields(w, e.spec);
      w.key("tenant").str(e.spec.tenant).close_object();
      break;
    case event_kind::scheduled:
      w.key("run_at").time(e.run_at_ms);
      break;
    case event_kind::queued:
      break;
    case event_kind::started:
    case event_kind::lease_expired:
    case event_kind::worker_lost:
      w.key("worker_id")
          .str(e.worker_id)
          .key("lease_expires_at")
          .time(e.lease_expiry_ms);
      break;
    case event_kind::progressed:
      write_progress_fields(w, e.progress);
      break;
    case event_kind::checkpointed:
      w.key("checkpoint_bytes").num(static_cast<int64_t>(e.checkpoint.size()));
      break;
    case event_kind::retry_scheduled:
      w.key("error");
      write_error(w, e.error);
      w.key("next_attempt_at").time(e.next_attempt_at_ms);
      break;
    case event_kind::completed:
      w.key("result").raw(e.result);
      break;
    case event_kind::failed:
    case event_kind::dead_lettered:
      w.key("error");
      write_error(w, e.error);
      break;
    case event_kind::cancel_requested:
    case event_kind::cancelled:
    case event_kind::redriven:
    case event_kind::purged:
      w.key("reason").str(e.reason);
      break;
    case event_kind::webhook_attempted: {
      auto& h = e.webhook;
      w.key("url")
          .str(h.url)
          .key("webhook_id")
          .str(h.webhook_id)
          .key("attempt_number")
          .num(static_cast<int64_t>(h.attempt_number))
          .key("status_code");
      h.status_code == 0 ? w.null()
                         : w.num(static_cast<int64_t>(h.status_code));
      w.key("outcome").str(snake_case(to_string(h.outcome))).key("error");
      h.error.empty() ? w.null() : w.str(h.error);
      w.key("attempted_at")
          .time(h.at_ms)
          .key("next_attempt_at")
          .time(h.next_attempt_at_ms)
          .key("terminal_sequence")
          .num(static_cast<int64_t>(h.terminal_sequence));
      break;
    }
    default:
      // Kinds added after this writer: the codec's JSON of the whole event.
      w.key("event").raw(to_json(e));
      break;
  }
  w.close_object();
}

void write_event(writer& w, const job_event& e) {
  w.open_object()
      .key("job_id")
      .str(e.job_id)
      .key("sequence")
      .num(static_cast<int64_t>(e.sequence))
      .key("attempt")
      .num(static_cast<int64_t>(e.attempt))
      .key("kind")
      .str(snake_case(to_string(e.kind)))
      .key("at")
      .time(e.at_ms)
      .key("details");
  write_event_details(w, e);
  w.close_object();
}

} // namespace

std::string rfc3339(int64_t unix_ms) {
  auto secs = static_cast<time_t>(unix_ms >= 0 ? unix_ms / 1000
                                               : (unix_ms - 999) / 1000);
  auto millis = static_cast<int>(unix_ms - int64_t{secs} * 1000);
  struct tm tm;
  gmtime_r(&secs, &tm);
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
                tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                tm.tm_min, tm.tm_sec, millis);
  return buf;
}

std::string snake_case(std::string_view camel) {
  std::string out;
  out.reserve(camel.size() + 4);
  for (char c : camel) {
    if (c >= 'A' && c <= 'Z') {
      out += '_';
      out += static_cast<char>(c - 'A' + 'a');
    } else {
      out += c;
    }
  }
  return out;
}

std::string job_json(const job_record& job) {
  writer w;
  write_job(w, job);
  return w.take();
}

std::string submitted_json(const job_record& job) {
  writer w;
  w.open_object()
      .key("job_id")
      .str(job.job_id)
      .key("status")
      .str(to_string(job.status))
      .key("check_status_url")
      .str(job_url(job.job_id))
      .close_object();
  return w.take();
}

std::string event_json(const job_event& event) {
  writer w;
  write_event(w, event);
  return w.take();
}

std::string events_json(const std::string& job_id,
                        const std::vector<job_event>& events) {
  writer w;
  w.open_object().key("job_id").str(job_id).key("events").open_array();
  for (auto& e : events)
    write_event(w, e);
  w.close_array().close_object();
  return w.take();
}

std::string events_page_json(const std::string& job_id,
                             const std::vector<job_event>& events,
                             bool has_more) {
  writer w;
  w.open_object().key("job_id").str(job_id).key("events").open_array();
  for (auto& e : events)
    write_event(w, e);
  w.close_array().key("has_more").boolean(has_more).key("next_after");
  if (has_more && !events.empty())
    w.num(static_cast<int64_t>(events.back().sequence));
  else
    w.null();
  w.close_object();
  return w.take();
}

std::string progress_json(const progress_update& p) {
  writer w;
  w.open_object().key("job_id").str(p.job_id).key("attempt").num(
      static_cast<int64_t>(p.attempt));
  write_progress_fields(w, p);
  w.key("at").time(p.at_ms).close_object();
  return w.take();
}

std::string job_page_json(const std::vector<job_record>& jobs, bool has_more) {
  writer w;
  w.open_object().key("data").open_array();
  for (auto& j : jobs)
    write_job(w, j);
  w.close_array().key("has_more").boolean(has_more).key("next_cursor");
  if (has_more && !jobs.empty())
    w.str(jobs.back().job_id);
  else
    w.null();
  w.close_object();
  return w.take();
}

std::string current_stage(const progress_update& update) {
  return update.stage.empty() ? running_stage(update.stages) : update.stage;
}

std::string current_stage(const job_event& event) {
  if (event.kind != event_kind::progressed)
    return {};
  return current_stage(event.progress);
}

std::string sse_event_name(const job_event& event,
                           const std::string& previous_stage) {
  switch (event.kind) {
    case event_kind::progressed:
      return current_stage(event) != previous_stage ? "stage" : "progress";
    case event_kind::completed:
      return "completed";
    case event_kind::failed:
      return "failed";
    case event_kind::cancelled:
      return "cancelled";
    case event_kind::webhook_attempted:
      return "webhook"; // after the terminal event: not a status change
    default:
      return "status";
  }
}

} // namespace drover::http
