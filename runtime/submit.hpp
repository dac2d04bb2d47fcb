#pragma once

// Submissions: what a client asks for, and how it becomes a job spec.
//
// A submit_request leaves every optional field unset to mean "the job
// type's default" (its handler's retry policy, timeout and resource class).
// `prepare_spec` validates the request against the registered handlers and
// the limits, fills in defaults and returns the effective job_spec that is
// stored — or a specific error (`errc::invalid_request`, or `errc::too_large`
// for an oversized input), in which case nothing is created.
//
// Whatever path a submission came by (HTTP, droverctl, the C++ client), this
// is where it is checked before the store sees it: every string must be
// valid UTF-8 without NUL (runtime/json_strict.hpp), the input strict JSON
// (no duplicate names, no unpaired surrogates), and the job type's own
// input check (handler_options::validate_input) must accept it. The input
// is stored in canonical form (members sorted, no insignificant
// whitespace), so idempotent retries compare specs canonically.

#include "runtime/model.hpp"
#include "runtime/task.hpp"

#include <caf/expected.hpp>
#include <caf/optional.hpp>

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace drover {

struct submit_request {
  /// Required: a registered job type.
  std::string type;
  /// JSON text; "" = no input (null).
  std::string input;
  std::string tenant;
  std::string idempotency_key;
  std::string callback_url;
  std::string rate_limit_key;
  /// Instead of rate_limit_key: up to four.
  std::vector<std::string> rate_limit_keys;
  std::string breaker_key;
  std::string concurrency_key;
  /// With concurrency_key: 1..1,000,000 (absent = 1).
  caf::optional<int64_t> concurrency_limit;
  /// Overrides the type's resource class; at most one entry for now.
  std::vector<resource_request> resources;
  /// high = 0, normal = 1, low = 2; anything else is refused.
  caf::optional<int32_t> priority;
  /// RFC 3339 UTC time ("2026-12-01T10:00:00Z", fractional seconds and
  /// numeric offsets accepted). Mutually exclusive with delay_ms.
  caf::optional<std::string> run_at;
  /// Run no earlier than this many ms after submission.
  caf::optional<int64_t> delay_ms;
  caf::optional<int32_t> max_attempts;
  caf::optional<int64_t> timeout_ms;
  caf::optional<backoff_policy> backoff;
};

bool operator==(const submit_request& x, const submit_request& y);

/// Most rate limits one job names.
constexpr size_t max_rate_limit_keys = 4;

/// Every rate limit `spec` names, in order.
std::vector<std::string> rate_limit_keys_of(const job_spec& spec);

struct submit_limits {
  /// Largest accepted input, in bytes of JSON text.
  size_t max_input_bytes = 1024 * 1024;
  /// Deepest accepted input nesting.
  size_t max_input_depth = 64;
  /// Upper bound for max_attempts.
  int32_t max_attempts = 1000;
  /// How far in the future run_at / delay may point.
  int64_t max_schedule_ahead_ms = 366LL * 24 * 3600 * 1000;
  /// Upper bound for a per-attempt timeout.
  int64_t max_timeout_ms = 7LL * 24 * 3600 * 1000;
  /// Bounds of string fields.
  size_t max_key_bytes = 256;
  size_t max_url_bytes = 2048;
  /// Resource classes some worker has slots of; a job asking for another is
  /// refused (it could never run). Empty = not checked.
  std::set<std::string> resource_classes;
  /// With resource_classes (no worker nodes may join): the pools of this
  /// node's workers (runtime/resources.hpp); a job needing more than they
  /// hold is refused (it could never run).
  std::map<std::string, uint32_t> resource_pools;
};

/// Validates `req` and builds the effective spec. `now_ms` is the Unix time
/// of submission.
caf::expected<job_spec> prepare_spec(const submit_request& req,
                                     const handler_registry& handlers,
                                     const submit_limits& limits,
                                     int64_t now_ms);

/// Parses an RFC 3339 time to Unix ms; none if malformed.
caf::optional<int64_t> parse_rfc3339_ms(const std::string& text);

/// The resource class a spec occupies.
const std::string& resource_class_of(const job_spec& spec);

} // namespace drover
