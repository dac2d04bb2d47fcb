#pragma once

// The HTTP API's JSON: request bodies in, resources out (docs/api.md).
//
// Field names are the HTTP contract (snake_case, seconds for durations,
// RFC 3339 for times, `{"gpu": 1}` for resources), so they are mapped here
// field by field rather than taken from the Cap'n Proto schemas' camelCase
// JSON (decision 0004). Request bodies are parsed by Cap'n Proto's JSON
// parser after the size and depth checks of runtime/codec and the \u repair
// of runtime/json_text; nothing here throws.
//
// Parsing is strict, as Stripe's API is: an unknown field, a value of the
// wrong type or out of range is an `errc::invalid_request` naming the field
// ("max_attempts: expected an integer"); text that isn't JSON is
// `errc::malformed`; too big or too deep are `too_large` / `too_deep`.
// Range checks that need the job types (attempt limits, schedule bounds,
// key lengths) are prepare_spec's, behind the node API.
//
// Implemented in gateway/http_api.cpp (request bodies),
// gateway/http_api_jobs.cpp (job resources, SSE event names),
// gateway/http_api_admin.cpp (queues, supervision tree) and
// gateway/http_api_errors.cpp (errors), with the writer of
// gateway/detail/http_api_writer.hpp.

#include "runtime/codec.hpp"
#include "runtime/job_api.hpp"
#include "runtime/model.hpp"
#include "runtime/submit.hpp"

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace drover::http {

/// A job submission body (`POST /api/jobs`, one item of a batch). The
/// tenant is never taken from the body: it comes from the API key.
caf::expected<submit_request> parse_submit(std::string_view body,
                                           const decode_limits& limits);

/// One item of a batch: the request, or why this item was refused.
struct batch_item {
  submit_request request;
  caf::error error;
};

/// `{"jobs": [spec, ...]}` with 1..max_items items. A malformed envelope
/// is an error for the whole body; a bad item is an error for that item.
caf::expected<std::vector<batch_item>> parse_batch(std::string_view body,
                                                   const decode_limits& limits,
                                                   size_t max_items);

/// `{"spec": "..."}` of a PUT /api/admin/rate-limits/{key} or
/// /api/admin/breakers/{key} body: the setting as the configuration writes
/// it after `NAME:` (1-1024 bytes; the queue checks the rest).
caf::expected<std::string> parse_flow_spec(std::string_view body,
                                           const decode_limits& limits);

/// `{"reason": "..."}` of a cancel or retry body; "" when the body is empty.
caf::expected<std::string> parse_reason(std::string_view body,
                                        const decode_limits& limits);

/// A WebSocket client's command: `{"action": "subscribe", "job_id": "...",
/// "last_event_id": 3}` or `{"action": "unsubscribe", "job_id": "..."}`.
struct ws_command {
  bool subscribe = true;
  std::string job_id;
  /// Events up to this sequence are not sent again; 0 = from the start.
  uint64_t last_event_id = 0;
};
caf::expected<ws_command> parse_ws_command(std::string_view text,
                                           const decode_limits& limits);

// -- resources ----------------------------------------------------------------

/// RFC 3339 UTC with milliseconds ("2026-11-29T23:59:01.123Z").
std::string rfc3339(int64_t unix_ms);

/// snake_case of a camelCase enumerant name ("retryScheduled" ->
/// "retry_scheduled").
std::string snake_case(std::string_view camel);

/// The job resource (`GET /api/jobs/{id}`).
std::string job_json(const job_record& job);

/// The answer to a submission: `{"job_id", "status", "check_status_url"}`.
std::string submitted_json(const job_record& job);

/// One audit-log event: `{"sequence", "attempt", "kind", "at", "details"}`.
std::string event_json(const job_event& event);

/// `{"job_id": ..., "events": [...]}`.
std::string events_json(const std::string& job_id,
                        const std::vector<job_event>& events);

/// A page of them: `{"job_id", "events", "has_more", "next_after"}` (the
/// last sequence shown while `has_more`, else null).
std::string events_page_json(const std::string& job_id,
                             const std::vector<job_event>& events,
                             bool has_more);

/// A live progress report (not yet in the audit log).
std::string progress_json(const progress_update& update);

/// A page of jobs: `{"data": [...], "has_more", "next_cursor"}`.
std::string job_page_json(const std::vector<job_record>& jobs, bool has_more);

/// Queue figures; `rates` = jobs dispatched per second per priority since
/// the previous sample (negative = unknown).
std::string queues_json(const queue_stats& stats,
                        const std::array<double, 3>& rates);

/// The supervision tree (`GET /api/admin/tree`); nodes named "job <id>"
/// get a `job` member from `jobs` (status, progress, stage, ETA, attempt).
std::string tree_json(const tree_node& root,
                      const std::map<std::string, job_record>& jobs);

/// Ids of the running jobs in a tree (nodes named "job <id>").
void running_job_ids(const tree_node& root, std::vector<std::string>& out);

/// `{"error": {"code", "message"}}`.
std::string error_json(std::string_view code, std::string_view message);

/// HTTP status and API error code for an error from the node or a parser.
struct error_status {
  unsigned status;
  std::string code;
};
error_status classify(const caf::error& err);

/// The text an error carries for a client (a Drover error's context; a
/// generic line for CAF's own errors such as timeouts).
std::string context_of(const caf::error& err);

/// The SSE event name for an audit-log event: progress, stage, completed,
/// failed, cancelled, webhook (a delivery attempt, logged after the
/// terminal event), or status for the other transitions. `previous_stage`
/// is the stage of the previous progress event, to tell a stage change.
std::string sse_event_name(const job_event& event,
                           const std::string& previous_stage);

/// The stage a progress event reports (the running one); "" if none.
std::string current_stage(const job_event& event);

/// The stage a live progress report is in: its `stage`, else the running
/// one of its stage list; "" if none.
std::string current_stage(const progress_update& update);

} // namespace drover::http
