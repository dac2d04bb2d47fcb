#include "runtime/job_api.hpp"

#include <algorithm>
#include <cstdint>
#include <tuple>

namespace drover {

bool operator==(const job_query& x, const job_query& y) {
  return std::tie(x.status, x.dead_lettered, x.tenant, x.type, x.after, x.limit)
         == std::tie(y.status, y.dead_lettered, y.tenant, y.type, y.after,
                     y.limit);
}

bool operator==(const queue_stats& x, const queue_stats& y) {
  return std::tie(x.depth, x.oldest_age_ms, x.dispatched, x.delayed, x.running,
                  x.idle_workers, x.completed, x.failed, x.cancelled, x.retried,
                  x.since_ms, x.admission_in_flight, x.admission_memory_bytes,
                  x.admission_memory_limit_bytes, x.admission_refused)
             == std::tie(y.depth, y.oldest_age_ms, y.dispatched, y.delayed,
                         y.running, y.idle_workers, y.completed, y.failed,
                         y.cancelled, y.retried, y.since_ms,
                         y.admission_in_flight, y.admission_memory_bytes,
                         y.admission_memory_limit_bytes, y.admission_refused)
         && x.start_latency == y.start_latency && x.run_time == y.run_time
         && x.by_type == y.by_type && x.by_partition == y.by_partition;
}

bool operator==(const partition_figures& x, const partition_figures& y) {
  return std::tie(x.partition, x.waiting, x.running)
         == std::tie(y.partition, y.waiting, y.running);
}

bool operator==(const latency_histogram& x, const latency_histogram& y) {
  return x.counts == y.counts && x.sum_ms == y.sum_ms;
}

bool operator==(const type_figures& x, const type_figures& y) {
  return std::tie(x.resource_class, x.job_type, x.ready, x.delayed, x.running,
                  x.oldest_age_ms, x.dispatched, x.completed,
                  x.arrivals_per_second, x.completions_per_second,
                  x.mean_run_ms, x.recommended_slots)
         == std::tie(y.resource_class, y.job_type, y.ready, y.delayed,
                     y.running, y.oldest_age_ms, y.dispatched, y.completed,
                     y.arrivals_per_second, y.completions_per_second,
                     y.mean_run_ms, y.recommended_slots);
}

void latency_histogram::observe(int64_t ms) {
  if (counts.empty())
    counts.resize(latency_bounds_ms.size() + 1);
  ms = std::max<int64_t>(0, ms);
  size_t i = 0;
  while (i < latency_bounds_ms.size() && ms > latency_bounds_ms[i])
    ++i;
  ++counts[i];
  sum_ms += static_cast<uint64_t>(ms);
}

uint64_t latency_histogram::count() const {
  uint64_t n = 0;
  for (auto c : counts)
    n = c > UINT64_MAX - n ? UINT64_MAX : n + c; // saturating
  return n;
}

} // namespace drover
