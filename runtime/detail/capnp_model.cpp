#include "runtime/detail/capnp_model.hpp"

#include "runtime/errors.hpp"
#include "runtime/partition.hpp"

#include <capnp/schema.h>

#include <array>
#include <cmath>
#include <string>
#include <type_traits>
#include <utility>

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

// -- primitive helpers --------------------------------------------------------

capnp::Text::Reader as_text(const std::string& x) {
  // std::string keeps a NUL after its last character, as Text requires.
  return {x.data(), x.size()};
}

capnp::Data::Reader as_data(const std::string& x) {
  return {reinterpret_cast<const kj::byte*>(x.data()), x.size()};
}

std::string to_std(capnp::Text::Reader x) {
  return {x.cStr(), x.size()};
}

std::string to_std(capnp::Data::Reader x) {
  return {reinterpret_cast<const char*>(x.begin()), x.size()};
}

caf::error invalid(const char* where, const std::string& what) {
  return make_error(errc::invalid_value, std::string{where} + ": " + what);
}

/// Writes `texts` into the list `init(n)` makes (nothing when empty).
template <class Init>
void write_texts(const std::vector<std::string>& texts, Init init) {
  if (texts.empty())
    return;
  auto list = init(static_cast<unsigned>(texts.size()));
  for (unsigned i = 0; i < texts.size(); ++i)
    list.set(i, as_text(texts[i]));
}

/// Reads an enum, rejecting values the schema does not list (a newer peer
/// may know more; this node can't act on them). The model enums mirror the
/// schema enums value for value (tests/runtime/codec_test.cpp checks).
template <class Model, class Wire>
caf::error read_enum(Wire in, Model& out, const char* where) {
  static_assert(std::is_enum<Wire>::value, "Wire must be an enum");
  auto value = static_cast<uint16_t>(in);
  if (value >= capnp::Schema::from<Wire>().getEnumerants().size())
    return invalid(where, "unknown enum value " + std::to_string(value));
  out = static_cast<Model>(value);
  return {};
}

template <class Wire, class Model>
Wire to_wire(Model x) {
  return static_cast<Wire>(static_cast<uint16_t>(x));
}

caf::error check_percent(double x, const char* where) {
  if (!std::isfinite(x) || x < 0.0 || x > 100.0)
    return invalid(where, std::to_string(x) + " is not in [0, 100]");
  return {};
}

caf::error check_non_negative(int64_t x, const char* where) {
  if (x < 0)
    return invalid(where, std::to_string(x) + " is negative");
  return {};
}

caf::error check_eta(int64_t x, const char* where) {
  if (x < -1)
    return invalid(where, std::to_string(x) + " is below -1 (unknown)");
  return {};
}

/// Reads a struct list into `out`, element by element.
template <class Model, class WireList>
caf::error read_list(WireList in, std::vector<Model>& out, const char* where,
                     read_context& ctx) {
  if (auto err = ctx.charge(in.size(), where))
    return err;
  out.clear();
  out.reserve(in.size());
  for (auto item : in) {
    Model x;
    if (auto err = read(item, x, ctx))
      return err;
    out.push_back(std::move(x));
  }
  return {};
}

template <class Model, class WireListBuilder>
void write_list(WireListBuilder out, const std::vector<Model>& xs) {
  for (unsigned i = 0; i < xs.size(); ++i)
    write(out[i], xs[i]);
}

/// The raw value to write for an enum the model holds as a plain int32
/// (submit_request.priority, job_query.status): the value itself when a
/// uint16 can hold it, else 65535. No schema enum has that many enumerants,
/// so a value outside the enum is never written as one inside it; reading
/// it back fails with errc::invalid_value.
template <class Wire>
Wire int_to_wire(int32_t x) {
  static_assert(std::is_enum<Wire>::value, "Wire must be an enum");
  return static_cast<Wire>(x >= 0 && x <= 0xffff ? static_cast<uint16_t>(x)
                                                 : uint16_t{0xffff});
}

/// Reads an enum into the plain int32 the model holds it as.
template <class Model, class Wire>
caf::error read_int_enum(Wire in, int32_t& out, const char* where) {
  Model value{};
  if (auto err = read_enum(in, value, where))
    return err;
  out = static_cast<int32_t>(value);
  return {};
}

/// Reads an optional member, a group `union { unset @n :Void; value @m :T; }`
/// (schemas/job_api.capnp), into a caf::optional: unset leaves `out` empty,
/// value calls `read_value(in.getValue(), out)`. A union member this version
/// doesn't know is errc::invalid_value.
template <class Group, class Value, class ReadValue>
caf::error read_optional(Group in, caf::optional<Value>& out, const char* where,
                         ReadValue read_value) {
  out = caf::none;
  if (in.isUnset())
    return {};
  if (!in.isValue())
    return invalid(where, "unknown union member #"
                              + std::to_string(static_cast<int>(in.which())));
  Value value{};
  if (auto err = read_value(in.getValue(), value))
    return err;
  out = std::move(value);
  return {};
}

/// read_value for read_optional: a primitive taken as is.
struct plain {
  template <class In, class Out>
  caf::error operator()(In in, Out& out) const {
    out = static_cast<Out>(in);
    return {};
  }
};

} // namespace

// Shorthand for the error-propagation idiom used by every read function.
#define DROVER_TRY(expr)                                                       \
  do {                                                                         \
    if (auto drover_try_err = (expr))                                          \
      return drover_try_err;                                                   \
  } while (false)

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

// -- node_protocol.capnp ------------------------------------------------------

void write(schema::ResourceCapacity::Builder out, const resource_capacity& x) {
  if (!x.resource_class.empty())
    out.setResourceClass(as_text(x.resource_class));
  out.setSlots(x.slots);
}

caf::error read(schema::ResourceCapacity::Reader in, resource_capacity& x,
                read_context&) {
  x.resource_class = to_std(in.getResourceClass());
  x.slots = in.getSlots();
  return {};
}

void write(schema::RegisterWorker::Builder out, const register_worker& x) {
  if (!x.node_id.empty())
    out.setNodeId(as_text(x.node_id));
  if (!x.worker_id.empty())
    out.setWorkerId(as_text(x.worker_id));
  if (!x.capacity.empty())
    write_list(out.initCapacity(x.capacity.size()), x.capacity);
  if (!x.job_types.empty()) {
    auto types = out.initJobTypes(x.job_types.size());
    for (unsigned i = 0; i < x.job_types.size(); ++i)
      types.set(i, as_text(x.job_types[i]));
  }
  if (!x.role.empty())
    out.setRole(as_text(x.role));
  out.setProtocolMin(x.protocol_min);
  out.setProtocolMax(x.protocol_max);
  if (!x.proof.empty())
    out.setProof(as_data(x.proof));
  if (!x.running.empty())
    write_list(out.initRunning(x.running.size()), x.running);
  out.setDraining(x.draining);
  out.setPrefetch(x.prefetch);
  if (!x.resources.empty())
    write_list(out.initResources(x.resources.size()), x.resources);
  if (!x.elastic.empty())
    write_list(out.initElastic(x.elastic.size()), x.elastic);
  out.setElasticIdleMs(x.elastic_idle_ms);
}

caf::error read(schema::RegisterWorker::Reader in, register_worker& x,
                read_context& ctx) {
  x.node_id = to_std(in.getNodeId());
  x.worker_id = to_std(in.getWorkerId());
  DROVER_TRY(
      read_list(in.getCapacity(), x.capacity, "RegisterWorker.capacity", ctx));
  auto types = in.getJobTypes();
  DROVER_TRY(ctx.charge(types.size(), "RegisterWorker.jobTypes"));
  x.job_types.reserve(types.size());
  for (auto type : types)
    x.job_types.push_back(to_std(type));
  x.role = to_std(in.getRole());
  x.protocol_min = in.getProtocolMin();
  x.protocol_max = in.getProtocolMax();
  x.proof = to_std(in.getProof());
  x.draining = in.getDraining();
  x.prefetch = in.getPrefetch();
  DROVER_TRY(read_list(in.getResources(), x.resources,
                       "RegisterWorker.resources", ctx));
  DROVER_TRY(
      read_list(in.getElastic(), x.elastic, "RegisterWorker.elastic", ctx));
  x.elastic_idle_ms = in.getElasticIdleMs();
  return read_list(in.getRunning(), x.running, "RegisterWorker.running", ctx);
}

void write(schema::Lease::Builder out, const lease& x) {
  if (!x.job_id.empty())
    out.setJobId(as_text(x.job_id));
  out.setAttempt(x.attempt);
  write(out.initSpec(), x.spec);
  if (!x.checkpoint.empty())
    out.setCheckpoint(as_data(x.checkpoint));
  out.setLeaseExpiryMs(x.lease_expiry_ms);
  out.setPartitionEpoch(x.partition_epoch);
}

caf::error read(schema::Lease::Reader in, lease& x, read_context& ctx) {
  x.job_id = to_std(in.getJobId());
  x.attempt = in.getAttempt();
  DROVER_TRY(read(in.getSpec(), x.spec, ctx));
  x.checkpoint = to_std(in.getCheckpoint());
  x.lease_expiry_ms = in.getLeaseExpiryMs();
  x.partition_epoch = in.getPartitionEpoch();
  return {};
}

void write(schema::LeaseBatch::Builder out, const lease_batch& x) {
  if (!x.leases.empty())
    write_list(out.initLeases(x.leases.size()), x.leases);
}

caf::error read(schema::LeaseBatch::Reader in, lease_batch& x,
                read_context& ctx) {
  return read_list(in.getLeases(), x.leases, "LeaseBatch.leases", ctx);
}

void write(schema::RunningAttempt::Builder out, const running_attempt& x) {
  if (!x.job_id.empty())
    out.setJobId(as_text(x.job_id));
  out.setAttempt(x.attempt);
  if (!x.resource_class.empty())
    out.setResourceClass(as_text(x.resource_class));
}

caf::error read(schema::RunningAttempt::Reader in, running_attempt& x,
                read_context&) {
  x.job_id = to_std(in.getJobId());
  x.attempt = in.getAttempt();
  x.resource_class = to_std(in.getResourceClass());
  return {};
}

void write(schema::Heartbeat::Builder out, const heartbeat& x) {
  if (!x.node_id.empty())
    out.setNodeId(as_text(x.node_id));
  out.setAtMs(x.at_ms);
  if (!x.running.empty())
    write_list(out.initRunning(x.running.size()), x.running);
  out.setDraining(x.draining);
  if (!x.unacknowledged.empty())
    write_list(out.initUnacknowledged(x.unacknowledged.size()),
               x.unacknowledged);
  if (!x.lent.empty())
    write_list(out.initLent(x.lent.size()), x.lent);
  if (!x.offered.empty())
    write_list(out.initOffered(x.offered.size()), x.offered);
  if (!x.refused.empty())
    write_list(out.initRefused(x.refused.size()), x.refused);
}

caf::error read(schema::Heartbeat::Reader in, heartbeat& x, read_context& ctx) {
  x.node_id = to_std(in.getNodeId());
  x.at_ms = in.getAtMs();
  x.draining = in.getDraining();
  DROVER_TRY(read_list(in.getUnacknowledged(), x.unacknowledged,
                       "Heartbeat.unacknowledged", ctx));
  DROVER_TRY(read_list(in.getLent(), x.lent, "Heartbeat.lent", ctx));
  DROVER_TRY(read_list(in.getOffered(), x.offered, "Heartbeat.offered", ctx));
  DROVER_TRY(read_list(in.getRefused(), x.refused, "Heartbeat.refused", ctx));
  return read_list(in.getRunning(), x.running, "Heartbeat.running", ctx);
}

void write(schema::ProgressBatch::Builder out, const progress_batch& x) {
  if (!x.updates.empty())
    write_list(out.initUpdates(x.updates.size()), x.updates);
}

caf::error read(schema::ProgressBatch::Reader in, progress_batch& x,
                read_context& ctx) {
  return read_list(in.getUpdates(), x.updates, "ProgressBatch.updates", ctx);
}

void write(schema::Completion::Builder out, const completion& x) {
  if (!x.job_id.empty())
    out.setJobId(as_text(x.job_id));
  out.setAttempt(x.attempt);
  out.setOutcome(to_wire<schema::CompletionOutcome>(x.outcome));
  if (!x.result.empty())
    out.setResult(as_text(x.result));
  if (x.error != error_info{})
    write(out.initError(), x.error);
}

caf::error read(schema::Completion::Reader in, completion& x,
                read_context& ctx) {
  x.job_id = to_std(in.getJobId());
  x.attempt = in.getAttempt();
  DROVER_TRY(read_enum(in.getOutcome(), x.outcome, "Completion.outcome"));
  x.result = to_std(in.getResult());
  return read(in.getError(), x.error, ctx);
}

void write(schema::CompletionBatch::Builder out, const completion_batch& x) {
  if (!x.completions.empty())
    write_list(out.initCompletions(x.completions.size()), x.completions);
}

caf::error read(schema::CompletionBatch::Reader in, completion_batch& x,
                read_context& ctx) {
  return read_list(in.getCompletions(), x.completions,
                   "CompletionBatch.completions", ctx);
}

void write(schema::CoordinatorReply::Builder out, const coordinator_reply& x) {
  out.setProtocol(x.protocol);
  if (!x.challenge.empty())
    out.setChallenge(as_data(x.challenge));
  if (!x.coordinator_id.empty())
    out.setCoordinatorId(as_text(x.coordinator_id));
  out.setLeaseTtlMs(x.lease_ttl_ms);
  out.setHeartbeatIntervalMs(x.heartbeat_interval_ms);
  if (!x.superseded.empty())
    write_list(out.initSuperseded(x.superseded.size()), x.superseded);
  if (!x.settled.empty())
    write_list(out.initSettled(x.settled.size()), x.settled);
  if (!x.handed_over.empty())
    write_list(out.initHandedOver(x.handed_over.size()), x.handed_over);
  if (!x.adopted.empty())
    write_list(out.initAdopted(x.adopted.size()), x.adopted);
}

caf::error read(schema::CoordinatorReply::Reader in, coordinator_reply& x,
                read_context& ctx) {
  x.protocol = in.getProtocol();
  x.challenge = to_std(in.getChallenge());
  x.coordinator_id = to_std(in.getCoordinatorId());
  x.lease_ttl_ms = in.getLeaseTtlMs();
  x.heartbeat_interval_ms = in.getHeartbeatIntervalMs();
  DROVER_TRY(read_list(in.getSuperseded(), x.superseded,
                       "CoordinatorReply.superseded", ctx));
  DROVER_TRY(read_list(in.getHandedOver(), x.handed_over,
                       "CoordinatorReply.handedOver", ctx));
  DROVER_TRY(
      read_list(in.getAdopted(), x.adopted, "CoordinatorReply.adopted", ctx));
  return read_list(in.getSettled(), x.settled, "CoordinatorReply.settled", ctx);
}

// -- admin.capnp --------------------------------------------------------------

void write(schema::TreeNode::Builder out, const tree_node& x) {
  if (!x.name.empty())
    out.setName(as_text(x.name));
  out.setKind(to_wire<schema::ChildKind>(x.kind));
  out.setState(to_wire<schema::ChildState>(x.state));
  out.setRestart(to_wire<schema::RestartType>(x.restart));
  out.setStrategy(to_wire<schema::Strategy>(x.strat));
  out.setRestarts(x.restarts);
  out.setUptimeMs(x.uptime_ms);
  if (!x.last_exit.empty())
    out.setLastExit(as_text(x.last_exit));
  if (!x.children.empty())
    write_list(out.initChildren(x.children.size()), x.children);
}

// Recursion depth is bounded by the reader's nesting limit (bytes) or the
// JSON depth limit (JSON).
caf::error read(schema::TreeNode::Reader in, tree_node& x, read_context& ctx) {
  x.name = to_std(in.getName());
  DROVER_TRY(read_enum(in.getKind(), x.kind, "TreeNode.kind"));
  DROVER_TRY(read_enum(in.getState(), x.state, "TreeNode.state"));
  DROVER_TRY(read_enum(in.getRestart(), x.restart, "TreeNode.restart"));
  DROVER_TRY(read_enum(in.getStrategy(), x.strat, "TreeNode.strategy"));
  x.restarts = in.getRestarts();
  x.uptime_ms = in.getUptimeMs();
  x.last_exit = to_std(in.getLastExit());
  return read_list(in.getChildren(), x.children, "TreeNode.children", ctx);
}

void write(schema::TreeSnapshot::Builder out, const tree_snapshot& x) {
  if (!x.node_id.empty())
    out.setNodeId(as_text(x.node_id));
  out.setTakenAtMs(x.taken_at_ms);
  write(out.initRoot(), x.root);
}

caf::error read(schema::TreeSnapshot::Reader in, tree_snapshot& x,
                read_context& ctx) {
  x.node_id = to_std(in.getNodeId());
  x.taken_at_ms = in.getTakenAtMs();
  return read(in.getRoot(), x.root, ctx);
}

// -- job_api.capnp ------------------------------------------------------------

void write(schema::SubmitRequest::Builder out, const submit_request& x) {
  if (!x.type.empty())
    out.setType(as_text(x.type));
  if (!x.input.empty())
    out.setInput(as_text(x.input));
  // Unset optional members stay as a zeroed message has them: `unset`.
  if (x.priority)
    out.getPriority().setValue(int_to_wire<schema::Priority>(*x.priority));
  if (x.run_at)
    out.getRunAt().setValue(as_text(*x.run_at));
  if (x.delay_ms)
    out.getDelayMs().setValue(*x.delay_ms);
  if (x.max_attempts)
    out.getMaxAttempts().setValue(*x.max_attempts);
  if (x.timeout_ms)
    out.getTimeoutMs().setValue(*x.timeout_ms);
  if (!x.idempotency_key.empty())
    out.setIdempotencyKey(as_text(x.idempotency_key));
  if (!x.tenant.empty())
    out.setTenant(as_text(x.tenant));
  if (!x.callback_url.empty())
    out.setCallbackUrl(as_text(x.callback_url));
  if (!x.resources.empty())
    write_list(out.initResources(x.resources.size()), x.resources);
  if (x.backoff)
    write(out.getBackoff().initValue(), *x.backoff);
  if (!x.rate_limit_key.empty())
    out.setRateLimitKey(as_text(x.rate_limit_key));
  if (!x.breaker_key.empty())
    out.setBreakerKey(as_text(x.breaker_key));
  if (!x.concurrency_key.empty())
    out.setConcurrencyKey(as_text(x.concurrency_key));
  if (x.concurrency_limit)
    out.getConcurrencyLimit().setValue(*x.concurrency_limit);
  write_texts(x.rate_limit_keys,
              [&](unsigned n) { return out.initRateLimitKeys(n); });
}

// Types and enum values only: ranges and consistency (max_attempts >= 1,
// run_at xor delay, key lengths) are prepare_spec's (runtime/submit.hpp),
// which answers the client with a specific error.
caf::error read(schema::SubmitRequest::Reader in, submit_request& x,
                read_context& ctx) {
  x.type = to_std(in.getType());
  x.input = to_std(in.getInput());
  DROVER_TRY(read_optional(
      in.getPriority(), x.priority, "SubmitRequest.priority",
      [](schema::Priority value, int32_t& out) {
        return read_int_enum<priority>(value, out, "SubmitRequest.priority");
      }));
  DROVER_TRY(read_optional(in.getRunAt(), x.run_at, "SubmitRequest.runAt",
                           [](capnp::Text::Reader value, std::string& out) {
                             out = to_std(value);
                             return caf::error{};
                           }));
  DROVER_TRY(read_optional(in.getDelayMs(), x.delay_ms, "SubmitRequest.delayMs",
                           plain{}));
  DROVER_TRY(read_optional(in.getMaxAttempts(), x.max_attempts,
                           "SubmitRequest.maxAttempts", plain{}));
  DROVER_TRY(read_optional(in.getTimeoutMs(), x.timeout_ms,
                           "SubmitRequest.timeoutMs", plain{}));
  x.idempotency_key = to_std(in.getIdempotencyKey());
  x.tenant = to_std(in.getTenant());
  x.callback_url = to_std(in.getCallbackUrl());
  DROVER_TRY(read_list(in.getResources(), x.resources,
                       "SubmitRequest.resources", ctx));
  DROVER_TRY(read_optional(
      in.getBackoff(), x.backoff, "SubmitRequest.backoff",
      [&ctx](schema::BackoffPolicy::Reader value, backoff_policy& out) {
        return read(value, out, ctx);
      }));
  x.rate_limit_key = to_std(in.getRateLimitKey());
  x.breaker_key = to_std(in.getBreakerKey());
  x.concurrency_key = to_std(in.getConcurrencyKey());
  DROVER_TRY(read_optional(in.getConcurrencyLimit(), x.concurrency_limit,
                           "SubmitRequest.concurrencyLimit", plain{}));
  // Counted here, checked (at most four) by prepare_spec.
  auto keys = in.getRateLimitKeys();
  DROVER_TRY(ctx.charge(keys.size(), "SubmitRequest.rateLimitKeys"));
  for (auto k : keys)
    x.rate_limit_keys.push_back(to_std(k));
  return {};
}

void write(schema::JobQuery::Builder out, const job_query& x) {
  // -1 = any status = unset; anything else is written as a value.
  if (x.status != -1)
    out.getStatus().setValue(int_to_wire<schema::JobStatus>(x.status));
  out.setDeadLettered(x.dead_lettered);
  if (!x.tenant.empty())
    out.setTenant(as_text(x.tenant));
  if (!x.type.empty())
    out.setType(as_text(x.type));
  if (!x.after.empty())
    out.setAfter(as_text(x.after));
  out.setLimit(x.limit);
}

// The page size is the store's to check (it answers with a specific error).
caf::error read(schema::JobQuery::Reader in, job_query& x, read_context&) {
  caf::optional<int32_t> status;
  DROVER_TRY(read_optional(in.getStatus(), status, "JobQuery.status",
                           [](schema::JobStatus value, int32_t& out) {
                             return read_int_enum<job_status>(
                                 value, out, "JobQuery.status");
                           }));
  x.status = status ? *status : -1;
  x.dead_lettered = in.getDeadLettered();
  x.tenant = to_std(in.getTenant());
  x.type = to_std(in.getType());
  x.after = to_std(in.getAfter());
  x.limit = in.getLimit();
  return {};
}

namespace {

// Per-priority arrays (index = Priority ordinal: high, normal, low).

template <class Builder, class T>
void write_per_priority(Builder out, const std::array<T, 3>& x) {
  out.setHigh(x[0]);
  out.setNormal(x[1]);
  out.setLow(x[2]);
}

template <class Reader, class T>
void read_per_priority(Reader in, std::array<T, 3>& x) {
  x = {in.getHigh(), in.getNormal(), in.getLow()};
}

} // namespace

void write(schema::QueueStats::Builder out, const queue_stats& x) {
  // All-zero arrays stay absent, which reads as all zeros.
  if (x.depth != std::array<uint64_t, 3>{})
    write_per_priority(out.initDepth(), x.depth);
  if (x.oldest_age_ms != std::array<int64_t, 3>{})
    write_per_priority(out.initOldestAgeMs(), x.oldest_age_ms);
  if (x.dispatched != std::array<uint64_t, 3>{})
    write_per_priority(out.initDispatched(), x.dispatched);
  out.setDelayed(x.delayed);
  out.setRunning(x.running);
  out.setIdleWorkers(x.idle_workers);
  out.setCompleted(x.completed);
  out.setFailed(x.failed);
  out.setCancelled(x.cancelled);
  out.setRetried(x.retried);
  out.setSinceMs(x.since_ms);
  out.setAdmissionInFlight(x.admission_in_flight);
  out.setAdmissionMemoryBytes(x.admission_memory_bytes);
  out.setAdmissionMemoryLimitBytes(x.admission_memory_limit_bytes);
  out.setAdmissionRefused(x.admission_refused);
  auto histogram = [](auto h, const latency_histogram& v) {
    auto counts = h.initCounts(static_cast<unsigned>(v.counts.size()));
    for (size_t i = 0; i < v.counts.size(); ++i)
      counts.set(static_cast<unsigned>(i), v.counts[i]);
    h.setSumMs(v.sum_ms);
  };
  if (!x.start_latency.counts.empty())
    histogram(out.initStartLatency(), x.start_latency);
  if (!x.run_time.counts.empty())
    histogram(out.initRunTime(), x.run_time);
  if (!x.by_type.empty()) {
    auto list = out.initByType(static_cast<unsigned>(x.by_type.size()));
    for (size_t i = 0; i < x.by_type.size(); ++i) {
      const auto& t = x.by_type[i];
      auto o = list[static_cast<unsigned>(i)];
      o.setResourceClass(as_text(t.resource_class));
      o.setJobType(as_text(t.job_type));
      o.setReady(t.ready);
      o.setDelayed(t.delayed);
      o.setRunning(t.running);
      o.setOldestAgeMs(t.oldest_age_ms);
      o.setDispatched(t.dispatched);
      o.setCompleted(t.completed);
      o.setArrivalsPerSecond(t.arrivals_per_second);
      o.setCompletionsPerSecond(t.completions_per_second);
      o.setMeanRunMs(t.mean_run_ms);
      o.setRecommendedSlots(t.recommended_slots);
    }
  }
  if (!x.by_partition.empty()) {
    auto list
        = out.initByPartition(static_cast<unsigned>(x.by_partition.size()));
    for (size_t i = 0; i < x.by_partition.size(); ++i) {
      auto o = list[static_cast<unsigned>(i)];
      o.setPartition(x.by_partition[i].partition);
      o.setWaiting(x.by_partition[i].waiting);
      o.setRunning(x.by_partition[i].running);
    }
  }
}

caf::error read(schema::QueueStats::Reader in, queue_stats& x,
                read_context& ctx) {
  read_per_priority(in.getDepth(), x.depth);
  read_per_priority(in.getOldestAgeMs(), x.oldest_age_ms);
  for (auto age : x.oldest_age_ms)
    DROVER_TRY(check_non_negative(age, "QueueStats.oldestAgeMs"));
  read_per_priority(in.getDispatched(), x.dispatched);
  x.delayed = in.getDelayed();
  x.running = in.getRunning();
  x.idle_workers = in.getIdleWorkers();
  x.completed = in.getCompleted();
  x.failed = in.getFailed();
  x.cancelled = in.getCancelled();
  x.retried = in.getRetried();
  x.since_ms = in.getSinceMs();
  DROVER_TRY(check_non_negative(x.since_ms, "QueueStats.sinceMs"));
  x.admission_in_flight = in.getAdmissionInFlight();
  x.admission_memory_bytes = in.getAdmissionMemoryBytes();
  x.admission_memory_limit_bytes = in.getAdmissionMemoryLimitBytes();
  x.admission_refused = in.getAdmissionRefused();
  auto histogram
      = [](auto h, latency_histogram& v, const char* what) -> caf::error {
    auto counts = h.getCounts();
    if (counts.size() != 0 && counts.size() != latency_bounds_ms.size() + 1)
      return invalid(what, "expected "
                               + std::to_string(latency_bounds_ms.size() + 1)
                               + " bucket counts");
    v.counts.clear();
    for (auto c : counts)
      v.counts.push_back(c);
    v.sum_ms = h.getSumMs();
    return {};
  };
  DROVER_TRY(histogram(in.getStartLatency(), x.start_latency,
                       "QueueStats.startLatency"));
  DROVER_TRY(histogram(in.getRunTime(), x.run_time, "QueueStats.runTime"));
  auto types = in.getByType();
  if (types.size() > 10000)
    return invalid("QueueStats.byType", "more than 10,000 entries");
  DROVER_TRY(ctx.charge(types.size(), "QueueStats.byType"));
  x.by_type.clear();
  x.by_type.reserve(types.size());
  for (auto t : types) {
    type_figures f;
    f.resource_class = to_std(t.getResourceClass());
    f.job_type = to_std(t.getJobType());
    f.ready = t.getReady();
    f.delayed = t.getDelayed();
    f.running = t.getRunning();
    f.oldest_age_ms = t.getOldestAgeMs();
    DROVER_TRY(check_non_negative(f.oldest_age_ms, "TypeFigures.oldestAgeMs"));
    f.dispatched = t.getDispatched();
    f.completed = t.getCompleted();
    f.arrivals_per_second = t.getArrivalsPerSecond();
    f.completions_per_second = t.getCompletionsPerSecond();
    f.mean_run_ms = t.getMeanRunMs();
    for (auto [v, what] :
         {std::pair{f.arrivals_per_second, "TypeFigures.arrivalsPerSecond"},
          {f.completions_per_second, "TypeFigures.completionsPerSecond"},
          {f.mean_run_ms, "TypeFigures.meanRunMs"}})
      if (!std::isfinite(v) || v < 0)
        return invalid(what, "must be a finite number >= 0");
    if (f.mean_run_ms > 1e12 || f.arrivals_per_second > 1e9
        || f.completions_per_second > 1e9)
      return invalid("TypeFigures", "a rate or run time out of range");
    f.recommended_slots = t.getRecommendedSlots();
    if (f.recommended_slots > 1'000'000)
      return invalid("TypeFigures.recommendedSlots", "more than 1,000,000");
    x.by_type.push_back(std::move(f));
  }
  auto parts = in.getByPartition();
  if (parts.size() > static_cast<unsigned>(max_partitions))
    return invalid("QueueStats.byPartition", "more entries than partitions");
  DROVER_TRY(ctx.charge(parts.size(), "QueueStats.byPartition"));
  x.by_partition.clear();
  x.by_partition.reserve(parts.size());
  for (auto p : parts) {
    if (p.getPartition() < 0 || p.getPartition() >= max_partitions)
      return invalid("PartitionFigures.partition", "out of range");
    x.by_partition.push_back(
        {p.getPartition(), p.getWaiting(), p.getRunning()});
  }
  return {};
}

#undef DROVER_TRY

} // namespace drover::detail
