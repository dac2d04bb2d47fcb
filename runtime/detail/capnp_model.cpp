// The Cap'n Proto codec of the job model (runtime/detail/capnp_model.hpp):
// job specs, progress, job records and job events, and the read context's
// element budget. The node protocol's messages are in
// capnp_node_protocol.cpp; tree snapshots and the job API's in capnp_api.cpp.

#include "runtime/detail/capnp_model.hpp"

#include "runtime/detail/capnp_common.hpp"
#include "runtime/errors.hpp"

#include <cmath>
#include <string>

namespace drover::detail {

caf::error read_context::charge(uint64_t n, const char* where) {
  if (n > element_budget)
    return make_error(errc::too_large,
                      std::string{where} + ": " + std::to_string(n)
                          + " list elements cannot fit in the input");
  element_budget -= n;
  return {};
}

namespace {

caf::error check_percent(double x, const char* where) {
  if (!std::isfinite(x) || x < 0.0 || x > 100.0)
    return invalid(where, std::to_string(x) + " is not in [0, 100]");
  return {};
}

caf::error check_eta(int64_t x, const char* where) {
  if (x < -1)
    return invalid(where, std::to_string(x) + " is below -1 (unknown)");
  return {};
}

} // namespace

// -- job_spec.capnp -----------------------------------------------------------

void write(schema::BackoffPolicy::Builder out, const backoff_policy& x) {
  out.setInitialDelayMs(x.initial_delay_ms);
  out.setMaxDelayMs(x.max_delay_ms);
  out.setMultiplier(x.multiplier);
  out.setJitter(x.jitter);
}

caf::error read(schema::BackoffPolicy::Reader in, backoff_policy& x,
                read_context&) {
  x.initial_delay_ms = in.getInitialDelayMs();
  x.max_delay_ms = in.getMaxDelayMs();
  x.multiplier = in.getMultiplier();
  x.jitter = in.getJitter();
  DROVER_TRY(
      check_non_negative(x.initial_delay_ms, "BackoffPolicy.initialDelayMs"));
  DROVER_TRY(check_non_negative(x.max_delay_ms, "BackoffPolicy.maxDelayMs"));
  if (!std::isfinite(x.multiplier) || x.multiplier < 1.0)
    return invalid("BackoffPolicy.multiplier",
                   std::to_string(x.multiplier) + " is not a finite >= 1");
  if (!std::isfinite(x.jitter) || x.jitter < 0.0 || x.jitter > 1.0)
    return invalid("BackoffPolicy.jitter",
                   std::to_string(x.jitter) + " is not in [0, 1]");
  return {};
}

void write(schema::ResourceRequest::Builder out, const resource_request& x) {
  if (!x.name.empty())
    out.setName(as_text(x.name));
  out.setAmount(x.amount);
}

caf::error read(schema::ResourceRequest::Reader in, resource_request& x,
                read_context&) {
  x.name = to_std(in.getName());
  x.amount = in.getAmount();
  if (x.amount == 0)
    return invalid("ResourceRequest.amount", "0 is not >= 1");
  return {};
}

void write(schema::JobSpec::Builder out, const job_spec& x) {
  if (!x.type.empty())
    out.setType(as_text(x.type));
  if (!x.input.empty())
    out.setInput(as_text(x.input));
  out.setPriority(to_wire<schema::Priority>(x.prio));
  out.setRunAtMs(x.run_at_ms);
  out.setMaxAttempts(x.max_attempts);
  if (x.backoff != backoff_policy{})
    write(out.initBackoff(), x.backoff);
  out.setTimeoutMs(x.timeout_ms);
  if (!x.idempotency_key.empty())
    out.setIdempotencyKey(as_text(x.idempotency_key));
  if (!x.tenant.empty())
    out.setTenant(as_text(x.tenant));
  if (!x.resources.empty())
    write_list(out.initResources(x.resources.size()), x.resources);
  if (!x.callback_url.empty())
    out.setCallbackUrl(as_text(x.callback_url));
  if (!x.rate_limit_key.empty())
    out.setRateLimitKey(as_text(x.rate_limit_key));
  if (!x.breaker_key.empty())
    out.setBreakerKey(as_text(x.breaker_key));
  if (!x.concurrency_key.empty()) {
    out.setConcurrencyKey(as_text(x.concurrency_key));
    out.setConcurrencyLimit(x.concurrency_limit);
  }
  write_texts(x.extra_rate_limit_keys,
              [&](unsigned n) { return out.initExtraRateLimitKeys(n); });
}

caf::error read(schema::JobSpec::Reader in, job_spec& x, read_context& ctx) {
  x.type = to_std(in.getType());
  x.input = to_std(in.getInput());
  DROVER_TRY(read_enum(in.getPriority(), x.prio, "JobSpec.priority"));
  x.run_at_ms = in.getRunAtMs();
  DROVER_TRY(check_non_negative(x.run_at_ms, "JobSpec.runAtMs"));
  x.max_attempts = in.getMaxAttempts();
  if (x.max_attempts == 0)
    return invalid("JobSpec.maxAttempts", "0 is not >= 1");
  // An absent backoff reads as the schema defaults, equal to ours.
  DROVER_TRY(read(in.getBackoff(), x.backoff, ctx));
  x.timeout_ms = in.getTimeoutMs();
  DROVER_TRY(check_non_negative(x.timeout_ms, "JobSpec.timeoutMs"));
  x.idempotency_key = to_std(in.getIdempotencyKey());
  x.tenant = to_std(in.getTenant());
  DROVER_TRY(
      read_list(in.getResources(), x.resources, "JobSpec.resources", ctx));
  x.callback_url = to_std(in.getCallbackUrl());
  x.rate_limit_key = to_std(in.getRateLimitKey());
  x.breaker_key = to_std(in.getBreakerKey());
  x.concurrency_key = to_std(in.getConcurrencyKey());
  x.concurrency_limit = in.getConcurrencyLimit();
  if (x.concurrency_key.empty() != (x.concurrency_limit == 0))
    return invalid("JobSpec.concurrencyLimit",
                   "must be set (1 to 1000000) exactly when concurrencyKey is");
  if (x.concurrency_limit > 1'000'000)
    return invalid("JobSpec.concurrencyLimit", "is above 1000000");
  auto extra = in.getExtraRateLimitKeys();
  if (extra.size() > 0 && x.rate_limit_key.empty())
    return invalid("JobSpec.extraRateLimitKeys", "without rateLimitKey");
  if (extra.size() > 3)
    return invalid("JobSpec.extraRateLimitKeys", "more than 3");
  for (auto k : extra)
    x.extra_rate_limit_keys.push_back(to_std(k));
  return {};
}

// -- progress.capnp -----------------------------------------------------------

void write(schema::Stage::Builder out, const stage& x) {
  if (!x.name.empty())
    out.setName(as_text(x.name));
  out.setState(to_wire<schema::StageState>(x.state));
  out.setPercent(x.percent);
}

caf::error read(schema::Stage::Reader in, stage& x, read_context&) {
  x.name = to_std(in.getName());
  DROVER_TRY(read_enum(in.getState(), x.state, "Stage.state"));
  x.percent = in.getPercent();
  return check_percent(x.percent, "Stage.percent");
}

void write(schema::ProgressUpdate::Builder out, const progress_update& x) {
  if (!x.job_id.empty())
    out.setJobId(as_text(x.job_id));
  out.setAttempt(x.attempt);
  out.setPercent(x.percent);
  if (!x.stage.empty())
    out.setStage(as_text(x.stage));
  if (!x.message.empty())
    out.setMessage(as_text(x.message));
  out.setAtMs(x.at_ms);
  out.setEtaMs(x.eta_ms);
  if (!x.stages.empty())
    write_list(out.initStages(x.stages.size()), x.stages);
  if (!x.checkpoint.empty())
    out.setCheckpoint(as_data(x.checkpoint));
}

caf::error read(schema::ProgressUpdate::Reader in, progress_update& x,
                read_context& ctx) {
  x.job_id = to_std(in.getJobId());
  x.attempt = in.getAttempt();
  x.percent = in.getPercent();
  DROVER_TRY(check_percent(x.percent, "ProgressUpdate.percent"));
  x.stage = to_std(in.getStage());
  x.message = to_std(in.getMessage());
  x.at_ms = in.getAtMs();
  x.eta_ms = in.getEtaMs();
  DROVER_TRY(check_eta(x.eta_ms, "ProgressUpdate.etaMs"));
  DROVER_TRY(read_list(in.getStages(), x.stages, "ProgressUpdate.stages", ctx));
  x.checkpoint = to_std(in.getCheckpoint());
  return {};
}

// -- job_record.capnp ---------------------------------------------------------

void write(schema::ErrorInfo::Builder out, const error_info& x) {
  if (!x.code.empty())
    out.setCode(as_text(x.code));
  if (!x.message.empty())
    out.setMessage(as_text(x.message));
  out.setRetryable(x.retryable);
}

caf::error read(schema::ErrorInfo::Reader in, error_info& x, read_context&) {
  x.code = to_std(in.getCode());
  x.message = to_std(in.getMessage());
  x.retryable = in.getRetryable();
  return {};
}

void write(schema::JobRecord::Builder out, const job_record& x) {
  if (!x.job_id.empty())
    out.setJobId(as_text(x.job_id));
  out.setStatus(to_wire<schema::JobStatus>(x.status));
  write(out.initSpec(), x.spec);
  out.setAttempt(x.attempt);
  out.setRetryCount(x.retry_count);
  out.setProgress(x.progress);
  out.setCreatedAtMs(x.created_at_ms);
  out.setStartedAtMs(x.started_at_ms);
  out.setCompletedAtMs(x.completed_at_ms);
  out.setRetryAtMs(x.retry_at_ms);
  if (!x.worker_id.empty())
    out.setWorkerId(as_text(x.worker_id));
  out.setLeaseExpiryMs(x.lease_expiry_ms);
  if (!x.result.empty())
    out.setResult(as_text(x.result));
  if (x.error != error_info{})
    write(out.initError(), x.error);
  if (!x.stages.empty())
    write_list(out.initStages(x.stages.size()), x.stages);
  out.setEtaMs(x.eta_ms);
  if (!x.checkpoint.empty())
    out.setCheckpoint(as_data(x.checkpoint));
  out.setCheckpointAttempt(x.checkpoint_attempt);
  out.setCancelRequested(x.cancel_requested);
  out.setSequence(x.sequence);
  out.setDeadLettered(x.dead_lettered);
  out.setWebhookPendingSequence(x.webhook_pending_sequence);
  out.setLostCount(x.lost_count);
  out.setLastLostAttempt(x.last_lost_attempt);
  if (!x.waiting_for.empty())
    out.setWaitingFor(as_text(x.waiting_for));
}

caf::error read(schema::JobRecord::Reader in, job_record& x,
                read_context& ctx) {
  x.job_id = to_std(in.getJobId());
  DROVER_TRY(read_enum(in.getStatus(), x.status, "JobRecord.status"));
  DROVER_TRY(read(in.getSpec(), x.spec, ctx));
  x.attempt = in.getAttempt();
  x.retry_count = in.getRetryCount();
  x.progress = in.getProgress();
  DROVER_TRY(check_percent(x.progress, "JobRecord.progress"));
  x.created_at_ms = in.getCreatedAtMs();
  x.started_at_ms = in.getStartedAtMs();
  x.completed_at_ms = in.getCompletedAtMs();
  x.retry_at_ms = in.getRetryAtMs();
  x.worker_id = to_std(in.getWorkerId());
  x.lease_expiry_ms = in.getLeaseExpiryMs();
  x.result = to_std(in.getResult());
  DROVER_TRY(read(in.getError(), x.error, ctx));
  DROVER_TRY(read_list(in.getStages(), x.stages, "JobRecord.stages", ctx));
  x.eta_ms = in.getEtaMs();
  DROVER_TRY(check_eta(x.eta_ms, "JobRecord.etaMs"));
  x.checkpoint = to_std(in.getCheckpoint());
  x.checkpoint_attempt = in.getCheckpointAttempt();
  x.cancel_requested = in.getCancelRequested();
  x.sequence = in.getSequence();
  x.dead_lettered = in.getDeadLettered();
  x.webhook_pending_sequence = in.getWebhookPendingSequence();
  x.lost_count = in.getLostCount();
  x.last_lost_attempt = in.getLastLostAttempt();
  x.waiting_for = to_std(in.getWaitingFor());
  if (x.webhook_pending_sequence > x.sequence)
    return invalid("JobRecord.webhookPendingSequence",
                   std::to_string(x.webhook_pending_sequence)
                       + " is past the record's sequence "
                       + std::to_string(x.sequence));
  return {};
}

// -- job_event.capnp ----------------------------------------------------------

void write(schema::WebhookAttempt::Builder out, const webhook_attempt& x) {
  if (!x.url.empty())
    out.setUrl(as_text(x.url));
  if (!x.webhook_id.empty())
    out.setWebhookId(as_text(x.webhook_id));
  out.setAttemptNumber(x.attempt_number);
  out.setStatusCode(x.status_code);
  if (!x.error.empty())
    out.setError(as_text(x.error));
  out.setOutcome(to_wire<schema::WebhookOutcome>(x.outcome));
  out.setAtMs(x.at_ms);
  out.setNextAttemptAtMs(x.next_attempt_at_ms);
  out.setTerminalSequence(x.terminal_sequence);
}

caf::error read(schema::WebhookAttempt::Reader in, webhook_attempt& x,
                read_context&) {
  x.url = to_std(in.getUrl());
  x.webhook_id = to_std(in.getWebhookId());
  x.attempt_number = in.getAttemptNumber();
  x.status_code = in.getStatusCode();
  if (x.status_code != 0 && (x.status_code < 100 || x.status_code > 599))
    return invalid("WebhookAttempt.statusCode",
                   std::to_string(x.status_code)
                       + " is neither 0 nor an HTTP status (100-599)");
  x.error = to_std(in.getError());
  DROVER_TRY(read_enum(in.getOutcome(), x.outcome, "WebhookAttempt.outcome"));
  x.at_ms = in.getAtMs();
  DROVER_TRY(check_non_negative(x.at_ms, "WebhookAttempt.atMs"));
  x.next_attempt_at_ms = in.getNextAttemptAtMs();
  DROVER_TRY(check_non_negative(x.next_attempt_at_ms,
                                "WebhookAttempt.nextAttemptAtMs"));
  if ((x.outcome == webhook_outcome::retrying) != (x.next_attempt_at_ms != 0))
    return invalid("WebhookAttempt.nextAttemptAtMs",
                   "must be set exactly when the outcome is retrying");
  x.terminal_sequence = in.getTerminalSequence();
  return {};
}

using details_which = schema::JobEvent::Details::Which;

details_which details_of(event_kind x) {
  switch (x) {
    case event_kind::submitted:
      return details_which::SPEC;
    case event_kind::scheduled:
      return details_which::RUN_AT_MS;
    case event_kind::queued:
      return details_which::NONE;
    case event_kind::started:
    case event_kind::lease_expired:
    case event_kind::worker_lost:
      return details_which::LEASE;
    case event_kind::progressed:
      return details_which::PROGRESS;
    case event_kind::checkpointed:
      return details_which::CHECKPOINT;
    case event_kind::retry_scheduled:
      return details_which::RETRY;
    case event_kind::completed:
      return details_which::RESULT;
    case event_kind::failed:
    case event_kind::dead_lettered:
      return details_which::ERROR;
    case event_kind::cancel_requested:
    case event_kind::cancelled:
    case event_kind::redriven:
    case event_kind::purged:
      return details_which::REASON;
    case event_kind::report_rejected:
      return details_which::REASON;
    case event_kind::webhook_attempted:
      return details_which::WEBHOOK;
  }
  return details_which::NONE;
}

void write(schema::JobEvent::Builder out, const job_event& x) {
  if (!x.job_id.empty())
    out.setJobId(as_text(x.job_id));
  out.setSequence(x.sequence);
  out.setAttempt(x.attempt);
  out.setAtMs(x.at_ms);
  out.setKind(to_wire<schema::EventKind>(x.kind));
  auto details = out.initDetails();
  switch (details_of(x.kind)) {
    case details_which::NONE:
      details.setNone();
      break;
    case details_which::SPEC:
      write(details.initSpec(), x.spec);
      break;
    case details_which::RUN_AT_MS:
      details.setRunAtMs(x.run_at_ms);
      break;
    case details_which::LEASE: {
      auto lease_info = details.initLease();
      if (!x.worker_id.empty())
        lease_info.setWorkerId(as_text(x.worker_id));
      lease_info.setLeaseExpiryMs(x.lease_expiry_ms);
      break;
    }
    case details_which::PROGRESS:
      write(details.initProgress(), x.progress);
      break;
    case details_which::CHECKPOINT:
      details.setCheckpoint(as_data(x.checkpoint));
      break;
    case details_which::RETRY: {
      auto retry = details.initRetry();
      if (x.error != error_info{})
        write(retry.initError(), x.error);
      retry.setNextAttemptAtMs(x.next_attempt_at_ms);
      break;
    }
    case details_which::RESULT:
      details.setResult(as_text(x.result));
      break;
    case details_which::ERROR:
      write(details.initError(), x.error);
      break;
    case details_which::REASON:
      details.setReason(as_text(x.reason));
      break;
    case details_which::WEBHOOK:
      write(details.initWebhook(), x.webhook);
      break;
  }
}

caf::error read(schema::JobEvent::Reader in, job_event& x, read_context& ctx) {
  x.job_id = to_std(in.getJobId());
  x.sequence = in.getSequence();
  x.attempt = in.getAttempt();
  x.at_ms = in.getAtMs();
  DROVER_TRY(read_enum(in.getKind(), x.kind, "JobEvent.kind"));
  auto details = in.getDetails();
  auto expected = details_of(x.kind);
  if (details.which() != expected)
    return invalid("JobEvent.details",
                   "member #" + std::to_string(details.which())
                       + " does not match kind " + to_string(x.kind)
                       + " (expects member #" + std::to_string(expected) + ")");
  switch (expected) {
    case details_which::NONE:
      break;
    case details_which::SPEC:
      DROVER_TRY(read(details.getSpec(), x.spec, ctx));
      break;
    case details_which::RUN_AT_MS:
      x.run_at_ms = details.getRunAtMs();
      break;
    case details_which::LEASE: {
      auto lease_info = details.getLease();
      x.worker_id = to_std(lease_info.getWorkerId());
      x.lease_expiry_ms = lease_info.getLeaseExpiryMs();
      break;
    }
    case details_which::PROGRESS:
      DROVER_TRY(read(details.getProgress(), x.progress, ctx));
      break;
    case details_which::CHECKPOINT:
      x.checkpoint = to_std(details.getCheckpoint());
      break;
    case details_which::RETRY: {
      auto retry = details.getRetry();
      DROVER_TRY(read(retry.getError(), x.error, ctx));
      x.next_attempt_at_ms = retry.getNextAttemptAtMs();
      break;
    }
    case details_which::RESULT:
      x.result = to_std(details.getResult());
      break;
    case details_which::ERROR:
      DROVER_TRY(read(details.getError(), x.error, ctx));
      break;
    case details_which::REASON:
      x.reason = to_std(details.getReason());
      break;
    case details_which::WEBHOOK:
      DROVER_TRY(read(details.getWebhook(), x.webhook, ctx));
      break;
  }
  return {};
}

} // namespace drover::detail
