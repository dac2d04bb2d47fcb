#pragma once

// Requests and answers of the job API that are not part of the job model:
// list queries and queue statistics. Plain data; carried between actors
// (and nodes) like the model types (see runtime/type_ids.hpp).

#include <array>
#include <cstdint>
#include <string>

namespace drover {

/// Filter and page for listing jobs (store: list_atom).
struct job_query {
  /// Only jobs in this status; -1 = any (values of job_status otherwise).
  int32_t status = -1;
  /// Only jobs currently in the dead-letter queue.
  bool dead_lettered = false;
  /// Only this tenant's jobs; empty = all tenants.
  std::string tenant;
  /// Only this job type; empty = all types.
  std::string type;
  /// Page: jobs with an id greater than this; empty = from the start.
  std::string after;
  /// Page size, within [1, 10000].
  uint32_t limit = 100;
};

/// Queue figures (queue: stats_atom). Arrays are indexed by priority:
/// high, normal, low.
struct queue_stats {
  std::array<uint64_t, 3> depth{};
  /// Age of the oldest ready job per priority, ms; 0 when empty.
  std::array<int64_t, 3> oldest_age_ms{};
  /// Jobs started per priority since the queue started.
  std::array<uint64_t, 3> dispatched{};
  /// Scheduled jobs and retries waiting for their time.
  uint64_t delayed = 0;
  uint64_t running = 0;
  uint64_t idle_workers = 0;
  uint64_t completed = 0;
  uint64_t failed = 0;
  uint64_t cancelled = 0;
  uint64_t retried = 0;
  /// Unix ms since which the counters (dispatched, completed, failed,
  /// cancelled, retried) count: the queue's start. 0 = unknown.
  int64_t since_ms = 0;
  /// Admission control (runtime/admission.hpp): submissions in flight to
  /// the store, estimated bytes of queued work and its bound (0 = none),
  /// submissions refused since the queue started.
  uint64_t admission_in_flight = 0;
  uint64_t admission_memory_bytes = 0;
  uint64_t admission_memory_limit_bytes = 0;
  uint64_t admission_refused = 0;
};

bool operator==(const job_query& x, const job_query& y);
bool operator==(const queue_stats& x, const queue_stats& y);

} // namespace drover
