#include "runtime/model.hpp"

#include <tuple>

namespace drover {

namespace {

/// Name table entry: the schema's enumerant name and its snake_case form.
template <class Enum>
struct enum_name {
  Enum value;
  const char* camel;
  const char* snake;
};

template <class Enum, size_t N>
const char* lookup(const enum_name<Enum> (&table)[N], Enum x) {
  for (const auto& entry : table)
    if (entry.value == x)
      return entry.camel;
  return "unknown";
}

template <class Enum, size_t N>
bool parse(const enum_name<Enum> (&table)[N], std::string_view str, Enum& x) {
  for (const auto& entry : table)
    if (str == entry.camel || str == entry.snake) {
      x = entry.value;
      return true;
    }
  return false;
}

constexpr enum_name<priority> priority_names[] = {
    {priority::high, "high", "high"},
    {priority::normal, "normal", "normal"},
    {priority::low, "low", "low"},
};

constexpr enum_name<job_status> job_status_names[] = {
    {job_status::queued, "queued", "queued"},
    {job_status::scheduled, "scheduled", "scheduled"},
    {job_status::processing, "processing", "processing"},
    {job_status::retrying, "retrying", "retrying"},
    {job_status::completed, "completed", "completed"},
    {job_status::failed, "failed", "failed"},
    {job_status::cancelled, "cancelled", "cancelled"},
};

constexpr enum_name<stage_state> stage_state_names[] = {
    {stage_state::pending, "pending", "pending"},
    {stage_state::running, "running", "running"},
    {stage_state::done, "done", "done"},
    {stage_state::failed, "failed", "failed"},
    {stage_state::skipped, "skipped", "skipped"},
};

constexpr enum_name<event_kind> event_kind_names[] = {
    {event_kind::submitted, "submitted", "submitted"},
    {event_kind::scheduled, "scheduled", "scheduled"},
    {event_kind::queued, "queued", "queued"},
    {event_kind::started, "started", "started"},
    {event_kind::progressed, "progressed", "progressed"},
    {event_kind::checkpointed, "checkpointed", "checkpointed"},
    {event_kind::retry_scheduled, "retryScheduled", "retry_scheduled"},
    {event_kind::completed, "completed", "completed"},
    {event_kind::failed, "failed", "failed"},
    {event_kind::dead_lettered, "deadLettered", "dead_lettered"},
    {event_kind::cancel_requested, "cancelRequested", "cancel_requested"},
    {event_kind::cancelled, "cancelled", "cancelled"},
    {event_kind::redriven, "redriven", "redriven"},
    {event_kind::lease_expired, "leaseExpired", "lease_expired"},
    {event_kind::worker_lost, "workerLost", "worker_lost"},
    {event_kind::purged, "purged", "purged"},
    {event_kind::webhook_attempted, "webhookAttempted", "webhook_attempted"},
    {event_kind::report_rejected, "reportRejected", "report_rejected"},
};

constexpr enum_name<webhook_outcome> webhook_outcome_names[] = {
    {webhook_outcome::delivered, "delivered", "delivered"},
    {webhook_outcome::retrying, "retrying", "retrying"},
    {webhook_outcome::failed, "failed", "failed"},
    {webhook_outcome::disabled, "disabled", "disabled"},
};

constexpr enum_name<completion_outcome> completion_outcome_names[] = {
    {completion_outcome::succeeded, "succeeded", "succeeded"},
    {completion_outcome::failed_retryable, "failedRetryable",
     "failed_retryable"},
    {completion_outcome::failed_permanent, "failedPermanent",
     "failed_permanent"},
    {completion_outcome::cancelled, "cancelled", "cancelled"},
    {completion_outcome::timed_out, "timedOut", "timed_out"},
};

} // namespace

const char* to_string(priority x) {
  return lookup(priority_names, x);
}

const char* to_string(job_status x) {
  return lookup(job_status_names, x);
}

const char* to_string(stage_state x) {
  return lookup(stage_state_names, x);
}

const char* to_string(event_kind x) {
  return lookup(event_kind_names, x);
}

const char* to_string(completion_outcome x) {
  return lookup(completion_outcome_names, x);
}

const char* to_string(webhook_outcome x) {
  return lookup(webhook_outcome_names, x);
}

bool from_string(std::string_view str, priority& x) {
  return parse(priority_names, str, x);
}

bool from_string(std::string_view str, job_status& x) {
  return parse(job_status_names, str, x);
}

bool from_string(std::string_view str, stage_state& x) {
  return parse(stage_state_names, str, x);
}

bool from_string(std::string_view str, event_kind& x) {
  return parse(event_kind_names, str, x);
}

bool from_string(std::string_view str, completion_outcome& x) {
  return parse(completion_outcome_names, str, x);
}

bool from_string(std::string_view str, webhook_outcome& x) {
  return parse(webhook_outcome_names, str, x);
}

bool is_terminal(job_status x) {
  return x == job_status::completed || x == job_status::failed
         || x == job_status::cancelled;
}

bool is_final(webhook_outcome x) {
  return x != webhook_outcome::retrying;
}

// -- comparison ---------------------------------------------------------------

namespace {

// Each `fields` overload lists every member once; equality compares them.
auto fields(const backoff_policy& x) {
  return std::tie(x.initial_delay_ms, x.max_delay_ms, x.multiplier, x.jitter);
}

auto fields(const resource_request& x) {
  return std::tie(x.name, x.amount);
}

auto fields(const job_spec& x) {
  return std::tie(x.type, x.input, x.tenant, x.idempotency_key, x.callback_url,
                  x.rate_limit_key, x.extra_rate_limit_keys, x.breaker_key,
                  x.concurrency_key, x.concurrency_limit, x.resources,
                  x.backoff, x.run_at_ms, x.timeout_ms, x.max_attempts, x.prio);
}

auto fields(const stage& x) {
  return std::tie(x.name, x.percent, x.state);
}

auto fields(const progress_update& x) {
  return std::tie(x.job_id, x.stage, x.message, x.stages, x.checkpoint,
                  x.percent, x.at_ms, x.eta_ms, x.attempt);
}

auto fields(const error_info& x) {
  return std::tie(x.code, x.message, x.retryable);
}

auto fields(const job_record& x) {
  return std::tie(x.job_id, x.spec, x.worker_id, x.result, x.error, x.stages,
                  x.checkpoint, x.progress, x.created_at_ms, x.started_at_ms,
                  x.completed_at_ms, x.retry_at_ms, x.lease_expiry_ms, x.eta_ms,
                  x.sequence, x.attempt, x.retry_count, x.checkpoint_attempt,
                  x.status, x.cancel_requested, x.dead_lettered,
                  x.webhook_pending_sequence, x.lost_count, x.last_lost_attempt,
                  x.waiting_for);
}

auto fields(const webhook_attempt& x) {
  return std::tie(x.url, x.webhook_id, x.error, x.at_ms, x.next_attempt_at_ms,
                  x.terminal_sequence, x.attempt_number, x.status_code,
                  x.outcome);
}

auto fields(const job_event& x) {
  return std::tie(x.job_id, x.sequence, x.at_ms, x.attempt, x.kind, x.spec,
                  x.progress, x.error, x.worker_id, x.checkpoint, x.result,
                  x.reason, x.run_at_ms, x.lease_expiry_ms,
                  x.next_attempt_at_ms, x.webhook);
}

auto fields(const resource_capacity& x) {
  return std::tie(x.resource_class, x.slots);
}

auto fields(const register_worker& x) {
  return std::tie(x.node_id, x.worker_id, x.capacity, x.job_types, x.role,
                  x.proof, x.running, x.protocol_min, x.protocol_max,
                  x.prefetch, x.draining, x.resources, x.elastic,
                  x.elastic_idle_ms, x.lent);
}

auto fields(const lease& x) {
  return std::tie(x.job_id, x.spec, x.checkpoint, x.lease_expiry_ms, x.attempt,
                  x.partition_epoch);
}

auto fields(const lease_batch& x) {
  return std::tie(x.leases);
}

auto fields(const running_attempt& x) {
  return std::tie(x.job_id, x.attempt, x.resource_class);
}

auto fields(const heartbeat& x) {
  return std::tie(x.node_id, x.at_ms, x.running, x.unacknowledged, x.lent,
                  x.offered, x.refused, x.draining);
}

auto fields(const coordinator_reply& x) {
  return std::tie(x.coordinator_id, x.challenge, x.superseded, x.settled,
                  x.handed_over, x.adopted, x.owned_elsewhere, x.lease_ttl_ms,
                  x.heartbeat_interval_ms, x.protocol);
}

auto fields(const progress_batch& x) {
  return std::tie(x.updates);
}

auto fields(const completion& x) {
  return std::tie(x.job_id, x.result, x.error, x.attempt, x.outcome);
}

auto fields(const completion_batch& x) {
  return std::tie(x.completions);
}

auto fields(const tree_snapshot& x) {
  return std::tie(x.node_id, x.taken_at_ms, x.root);
}

} // namespace

#define DROVER_MODEL_EQUALITY(type)                                            \
  bool operator==(const type& x, const type& y) {                              \
    return fields(x) == fields(y);                                             \
  }

DROVER_MODEL_EQUALITY(backoff_policy)
DROVER_MODEL_EQUALITY(resource_request)
DROVER_MODEL_EQUALITY(job_spec)
DROVER_MODEL_EQUALITY(stage)
DROVER_MODEL_EQUALITY(progress_update)
DROVER_MODEL_EQUALITY(error_info)
DROVER_MODEL_EQUALITY(job_record)
DROVER_MODEL_EQUALITY(webhook_attempt)
DROVER_MODEL_EQUALITY(job_event)
DROVER_MODEL_EQUALITY(resource_capacity)
DROVER_MODEL_EQUALITY(register_worker)
DROVER_MODEL_EQUALITY(lease)
DROVER_MODEL_EQUALITY(lease_batch)
DROVER_MODEL_EQUALITY(running_attempt)
DROVER_MODEL_EQUALITY(heartbeat)
DROVER_MODEL_EQUALITY(progress_batch)
DROVER_MODEL_EQUALITY(completion)
DROVER_MODEL_EQUALITY(completion_batch)
DROVER_MODEL_EQUALITY(coordinator_reply)
DROVER_MODEL_EQUALITY(tree_snapshot)

#undef DROVER_MODEL_EQUALITY

} // namespace drover
