#pragma once

// Drover's job model as plain C++ values: one struct per Cap'n Proto struct
// in schemas/ (same fields, snake_case, same defaults), free of Cap'n Proto
// types so any translation unit can use them cheaply. runtime/codec converts
// them to and from Cap'n Proto bytes and JSON; inside a node they travel as
// they are.
//
// Conventions:
// - Times are Unix milliseconds (`*_ms`, int64), 0 = unset/none.
// - JSON payloads (job input, result) are `std::string`s holding JSON text,
//   empty = none. Opaque binary (checkpoints) is a `std::string` of bytes.
// - Percentages are doubles in [0, 100].
// - Every default equals the schema's default, so an absent field decodes
//   to the default-constructed value.
// - Structs are lean on purpose: a queued job is one `job_record` in memory.

#include "runtime/tree.hpp"

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace drover {

// -- enums (values equal the schema's ordinals; append only) ------------------
//
// `to_string` returns the schema's enumerant name (camelCase, as in the JSON
// API: "retryScheduled"); `from_string` accepts that name or its snake_case
// spelling ("retry_scheduled") and returns false for anything else.

/// Dispatch class (schemas/job_spec.capnp: Priority).
enum class priority : uint8_t { high = 0, normal = 1, low = 2 };

/// Job status (schemas/job_record.capnp: JobStatus).
enum class job_status : uint8_t {
  queued = 0,
  scheduled = 1,
  processing = 2,
  retrying = 3,
  completed = 4,
  failed = 5,
  cancelled = 6,
};

/// Stage life cycle (schemas/progress.capnp: StageState).
enum class stage_state : uint8_t {
  pending = 0,
  running = 1,
  done = 2,
  failed = 3,
  skipped = 4,
};

/// Audit-log event kinds (schemas/job_event.capnp: EventKind, where each
/// kind's meaning and the details it carries are documented).
enum class event_kind : uint8_t {
  submitted = 0,
  scheduled = 1,
  queued = 2,
  started = 3,
  progressed = 4,
  checkpointed = 5,
  retry_scheduled = 6,
  completed = 7,
  failed = 8,
  dead_lettered = 9,
  cancel_requested = 10,
  cancelled = 11,
  redriven = 12,
  lease_expired = 13,
  worker_lost = 14,
  purged = 15,
  webhook_attempted = 16,
  report_rejected = 17,
};

/// What a webhook delivery attempt led to (schemas/job_event.capnp:
/// WebhookOutcome). delivered, failed and disabled are final.
enum class webhook_outcome : uint8_t {
  delivered = 0,
  retrying = 1,
  failed = 2,
  disabled = 3,
};

/// How an attempt ended (schemas/node_protocol.capnp: CompletionOutcome).
enum class completion_outcome : uint8_t {
  succeeded = 0,
  failed_retryable = 1,
  failed_permanent = 2,
  cancelled = 3,
  timed_out = 4,
};

const char* to_string(priority x);
const char* to_string(job_status x);
const char* to_string(stage_state x);
const char* to_string(event_kind x);
const char* to_string(completion_outcome x);
const char* to_string(webhook_outcome x);

bool from_string(std::string_view str, priority& x);
bool from_string(std::string_view str, job_status& x);
bool from_string(std::string_view str, stage_state& x);
bool from_string(std::string_view str, event_kind& x);
bool from_string(std::string_view str, completion_outcome& x);
bool from_string(std::string_view str, webhook_outcome& x);

/// True for completed, failed and cancelled.
bool is_terminal(job_status x);

/// True for delivered, failed and disabled: no attempt follows.
bool is_final(webhook_outcome x);

// -- job specification (schemas/job_spec.capnp) -------------------------------

/// Delays between attempts; see BackoffPolicy for the formula.
struct backoff_policy {
  int64_t initial_delay_ms = 1000;
  int64_t max_delay_ms = 300000;
  /// Finite, >= 1.0.
  double multiplier = 2.0;
  /// In [0, 1].
  double jitter = 0.2;
};

/// Slots of one resource class an attempt occupies.
struct resource_request {
  std::string name;
  /// >= 1.
  uint32_t amount = 1;
};

/// What a client submits.
struct job_spec {
  std::string type;
  /// JSON text; empty = no input.
  std::string input;
  std::string tenant;
  /// Empty = no deduplication.
  std::string idempotency_key;
  /// Empty = no webhook.
  std::string callback_url;
  /// Empty = not rate limited.
  std::string rate_limit_key;
  /// More rate limits after rate_limit_key (at most 3, distinct, none
  /// without it): a token of each as well.
  std::vector<std::string> extra_rate_limit_keys;
  /// Empty = no circuit breaker.
  std::string breaker_key;
  /// The job's own concurrency key within its tenant; empty = none.
  std::string concurrency_key;
  /// Attempts of `concurrency_key` running at once: 1..1,000,000 with a
  /// key, 0 without.
  uint32_t concurrency_limit = 0;
  /// Empty = one slot of the default class.
  std::vector<resource_request> resources;
  backoff_policy backoff;
  /// 0 = as soon as possible.
  int64_t run_at_ms = 0;
  /// Per attempt; 0 = no limit.
  int64_t timeout_ms = 0;
  /// Attempts in total, the first included; >= 1.
  uint32_t max_attempts = 3;
  priority prio = priority::normal;
};

// -- progress (schemas/progress.capnp) ----------------------------------------

/// One named step of a job.
struct stage {
  std::string name;
  /// In [0, 100].
  double percent = 0;
  stage_state state = stage_state::pending;
};

/// One progress report of a running attempt.
struct progress_update {
  std::string job_id;
  /// Current stage name; empty = none.
  std::string stage;
  /// Status line; empty = none.
  std::string message;
  /// Complete stage list when it changed; empty = unchanged.
  std::vector<drover::stage> stages;
  /// New checkpoint to persist (opaque bytes); empty = none.
  std::string checkpoint;
  /// In [0, 100]; never decreases within an attempt.
  double percent = 0;
  int64_t at_ms = 0;
  /// Remaining time from `at_ms`; -1 = unknown.
  int64_t eta_ms = -1;
  /// Fencing token.
  uint32_t attempt = 0;
};

// -- job record (schemas/job_record.capnp) ------------------------------------

/// Why an attempt or a job failed. All-default = no error.
struct error_info {
  std::string code;
  std::string message;
  bool retryable = false;
};

/// Current state of a job (what replaying its events produces). Tenant and
/// type live in `spec`.
struct job_record {
  std::string job_id;
  job_spec spec;
  /// Worker running (or that last ran) the job.
  std::string worker_id;
  /// JSON text of a completed job's output; empty = none.
  std::string result;
  /// Last error; all-default = none.
  error_info error;
  std::vector<stage> stages;
  /// Last committed checkpoint (opaque bytes); empty = none.
  std::string checkpoint;
  /// Overall percent of the current attempt, in [0, 100].
  double progress = 0;
  int64_t created_at_ms = 0;
  /// Start of the current (or last) attempt; 0 = never started.
  int64_t started_at_ms = 0;
  /// Time of the terminal transition; 0 = not terminal.
  int64_t completed_at_ms = 0;
  /// While retrying: when the next attempt becomes ready.
  int64_t retry_at_ms = 0;
  /// While processing: when the lease lapses unless renewed.
  int64_t lease_expiry_ms = 0;
  /// Remaining time as last reported; -1 = unknown.
  int64_t eta_ms = -1;
  /// Last event applied.
  uint64_t sequence = 0;
  /// Current (or last) attempt; 0 = never started. The fencing token.
  uint32_t attempt = 0;
  /// Retries since submission or the last redrive.
  uint32_t retry_count = 0;
  /// Attempt that wrote `checkpoint`; 0 = none.
  uint32_t checkpoint_attempt = 0;
  job_status status = job_status::queued;
  bool cancel_requested = false;
  /// A failed job currently in the dead-letter queue.
  bool dead_lettered = false;
  /// Sequence of the terminal event whose webhook is still owed; 0 = none
  /// (see JobRecord.webhookPendingSequence).
  uint64_t webhook_pending_sequence = 0;
  /// Attempts lost (worker died, lease lapsed, coordinator stopped) since
  /// submission or the last redrive; they do not count against
  /// max_attempts (see runtime/retry.hpp for their own cap).
  uint32_t lost_count = 0;
  /// The last lost attempt; 0 = none. A retry_scheduled for it is free.
  uint32_t last_lost_attempt = 0;
  /// In answers only (never stored): why a queued job does not run; empty
  /// = nothing but the queue ahead of it.
  std::string waiting_for;
};

// -- audit log (schemas/job_event.capnp) --------------------------------------

/// One webhook delivery attempt (WebhookAttempt).
struct webhook_attempt {
  std::string url;
  /// "<job_id>.<terminal_sequence>", stable across the attempts.
  std::string webhook_id;
  /// Why it did not deliver; empty when delivered.
  std::string error;
  /// Start of the attempt (Unix ms).
  int64_t at_ms = 0;
  /// For retrying: start of the next attempt; else 0.
  int64_t next_attempt_at_ms = 0;
  /// The terminal event this delivery reports.
  uint64_t terminal_sequence = 0;
  /// 1, 2, ...; 0 = no request was sent.
  uint32_t attempt_number = 0;
  /// HTTP status; 0 = no answer.
  uint16_t status_code = 0;
  webhook_outcome outcome = webhook_outcome::delivered;
};

/// One audit-log entry. Only the detail fields that `kind` carries are
/// encoded (see EventKind); the others must keep their defaults, or a round
/// trip through bytes or JSON won't reproduce the value:
///
/// | kind                                   | detail fields                  |
/// |----------------------------------------|--------------------------------|
/// | submitted                              | spec                           |
/// | scheduled                              | run_at_ms                      |
/// | queued                                 | (none)                         |
/// | started, lease_expired, worker_lost    | worker_id, lease_expiry_ms     |
/// | progressed                             | progress                       |
/// | checkpointed                           | checkpoint                     |
/// | retry_scheduled                        | error, next_attempt_at_ms      |
/// | completed                              | result                         |
/// | failed, dead_lettered                  | error                          |
/// | cancel_requested, cancelled, redriven, | reason                         |
/// | purged                                 |                                |
/// | webhook_attempted                      | webhook                        |
/// | report_rejected                        | reason                         |
struct job_event {
  std::string job_id;
  uint64_t sequence = 0;
  int64_t at_ms = 0;
  uint32_t attempt = 0;
  event_kind kind = event_kind::submitted;
  // details
  job_spec spec;
  progress_update progress;
  error_info error;
  std::string worker_id;
  /// Opaque bytes.
  std::string checkpoint;
  /// JSON text.
  std::string result;
  std::string reason;
  int64_t run_at_ms = 0;
  int64_t lease_expiry_ms = 0;
  int64_t next_attempt_at_ms = 0;
  webhook_attempt webhook;
};

// -- node protocol (schemas/node_protocol.capnp) ------------------------------

/// Slots a worker offers for one resource class.
struct resource_capacity {
  std::string resource_class;
  uint32_t slots = 0;
};

/// Sent by a worker when it connects.
/// An attempt a worker is running.
struct running_attempt {
  std::string job_id;
  uint32_t attempt = 0;
  /// The slot class it occupies (joins only).
  std::string resource_class;
};

/// A node joining a coordinator: the hello (no proof yet) and the join
/// (with the proof over the coordinator's challenge). See
/// schemas/node_protocol.capnp.
struct register_worker {
  std::string node_id;
  std::string worker_id;
  std::vector<resource_capacity> capacity;
  std::vector<std::string> job_types;
  /// "worker" or "gateway".
  std::string role;
  /// HMAC-SHA256 proof (runtime/join_proof.hpp); empty in a hello.
  std::string proof;
  std::vector<running_attempt> running;
  uint32_t protocol_min = 0;
  uint32_t protocol_max = 0;
  /// Leases per class buffered beyond the slots.
  uint32_t prefetch = 0;
  bool draining = false;
  /// Resource pools (runtime/resources.hpp), sorted by name.
  std::vector<resource_request> resources;
  /// Elastic mode: per class, the slots it starts at (<= its capacity),
  /// and how long an unused slot stays; empty = off.
  std::vector<resource_capacity> elastic;
  uint32_t elastic_idle_ms = 0;
  /// Attempts of this coordinator's share handed over to another one that
  /// still run on the node's slots (with their class): their slots stay
  /// taken (Heartbeat.lent keeps them so).
  std::vector<running_attempt> lent;
};

/// One attempt handed to a worker.
struct lease {
  std::string job_id;
  job_spec spec;
  /// Checkpoint to resume from (opaque bytes); empty = start fresh.
  std::string checkpoint;
  int64_t lease_expiry_ms = 0;
  /// Fencing token the worker echoes back.
  uint32_t attempt = 0;
  /// The epoch at which the sending coordinator holds the job's partition
  /// (runtime/partition_epochs.hpp); 0 = none.
  int64_t partition_epoch = 0;
};

struct lease_batch {
  std::vector<lease> leases;
};

/// Periodic liveness report of a worker node; renews the listed leases.
struct heartbeat {
  std::string node_id;
  int64_t at_ms = 0;
  std::vector<running_attempt> running;
  /// Completions sent but not yet acknowledged.
  std::vector<running_attempt> unacknowledged;
  /// Handed over by this coordinator, still running on the node's slots.
  std::vector<running_attempt> lent;
  /// Handed over by another coordinator, offered for adoption (with their
  /// resource class).
  std::vector<running_attempt> offered;
  /// Leases refused for their stale partition epoch: not run.
  std::vector<running_attempt> refused;
  bool draining = false;
};

/// The coordinator's answer to a hello, join, heartbeat or report.
struct coordinator_reply {
  std::string coordinator_id;
  /// Hello: one-time nonce the join proves the secret over.
  std::string challenge;
  std::vector<running_attempt> superseded;
  std::vector<running_attempt> settled;
  /// Attempts of partitions handed to another coordinator: keep running,
  /// offer them to the node's other coordinators.
  std::vector<running_attempt> handed_over;
  /// Offered attempts taken over here: report them here.
  std::vector<running_attempt> adopted;
  /// Attempts re-reported here whose partition another coordinator took:
  /// as handed_over, with a shorter time to be claimed.
  std::vector<running_attempt> owned_elsewhere;
  int64_t lease_ttl_ms = 0;
  int64_t heartbeat_interval_ms = 0;
  uint32_t protocol = 0;
};

struct progress_batch {
  std::vector<progress_update> updates;
};

/// The end of one attempt.
struct completion {
  std::string job_id;
  /// JSON text, for succeeded; empty = none.
  std::string result;
  /// For failure outcomes; all-default otherwise.
  error_info error;
  uint32_t attempt = 0;
  completion_outcome outcome = completion_outcome::succeeded;
};

struct completion_batch {
  std::vector<completion> completions;
};

// -- admin (schemas/admin.capnp) ----------------------------------------------

/// A node's supervision tree at one moment.
struct tree_snapshot {
  std::string node_id;
  int64_t taken_at_ms = 0;
  tree_node root;
};

// -- comparison (field by field; tests and idempotency checks use it) ---------

#define DROVER_MODEL_EQUALITY(type)                                            \
  bool operator==(const type& x, const type& y);                               \
  inline bool operator!=(const type& x, const type& y) {                       \
    return !(x == y);                                                          \
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
