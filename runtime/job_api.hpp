#pragma once

// Requests and answers of the job API that are not part of the job model:
// list queries and queue statistics. Plain data; carried between actors
// (and nodes) like the model types (see runtime/type_ids.hpp).

#include <array>
#include <cstdint>
#include <string>
#include <vector>

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

/// Upper bounds (ms) of the buckets of a latency histogram; a last bucket
/// (+Inf) follows them.
constexpr std::array<int64_t, 16> latency_bounds_ms{
    5,    10,   25,    50,    100,   250,    500,     1000,
    2500, 5000, 10000, 30000, 60000, 300000, 1800000, 3600000};

/// Observations of a duration: a count per bucket of latency_bounds_ms
/// (not cumulative; empty = none yet) and their sum.
struct latency_histogram {
  std::vector<uint64_t> counts;
  uint64_t sum_ms = 0;

  void observe(int64_t ms);
  uint64_t count() const;
};

/// The queue's figures of one resource class and job type.
struct type_figures {
  std::string resource_class;
  std::string job_type;
  /// Ready jobs (held back by a limit or not), scheduled jobs and retries,
  /// attempts running.
  uint64_t ready = 0;
  uint64_t delayed = 0;
  uint64_t running = 0;
  /// Age of its oldest ready job, ms (0 = none).
  int64_t oldest_age_ms = 0;
  /// Since the queue started.
  uint64_t dispatched = 0;
  uint64_t completed = 0;
  /// Scaling signals (runtime/scaling.hpp): jobs becoming ready and jobs
  /// completed per second (decaying over a minute), the mean run time of
  /// its recent attempts (ms; 0 = none ended yet), and the slots that
  /// would keep up.
  double arrivals_per_second = 0;
  double completions_per_second = 0;
  double mean_run_ms = 0;
  uint64_t recommended_slots = 0;
};

/// Figures of one partition of the job space (runtime/partition.hpp).
struct partition_figures {
  int32_t partition = 0;
  /// Jobs waiting (ready, held back, scheduled, retrying) and submissions
  /// in flight to the store (admission control's count).
  uint64_t waiting = 0;
  /// Attempts leased to workers.
  uint64_t running = 0;
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
  /// How long jobs waited ready before an attempt started (from the time
  /// they became ready: submitted, due, or woken for a retry), and how
  /// long attempts ran until their outcome was recorded; since the queue
  /// started.
  latency_histogram start_latency;
  latency_histogram run_time;
  /// Per resource class and job type: every pair with a job waiting or
  /// running, or one dispatched since the queue started.
  std::vector<type_figures> by_type;
  /// Per partition with a job waiting or running, by partition.
  std::vector<partition_figures> by_partition;
};

/// Adds `other`'s figures to `into`: what a gateway node in front of
/// several coordinators that share the partitions answers for all of them.
/// Counts, gauges, rates and histograms are summed (admission's memory
/// bound too: each coordinator has its own), ages and `since_ms` take the
/// oldest, per-type figures are merged by class and type (their mean run
/// time weighted by completions) and per-partition ones put together (a
/// partition two coordinators both report, for a moment during a hand-off,
/// is summed).
void add_figures(queue_stats& into, const queue_stats& other);

bool operator==(const latency_histogram& x, const latency_histogram& y);
bool operator==(const type_figures& x, const type_figures& y);
bool operator==(const partition_figures& x, const partition_figures& y);

bool operator==(const job_query& x, const job_query& y);
bool operator==(const queue_stats& x, const queue_stats& y);

} // namespace drover
