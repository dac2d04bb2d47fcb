#include "runtime/job_api.hpp"

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
                     y.cancelled, y.retried, y.since_ms, y.admission_in_flight,
                     y.admission_memory_bytes, y.admission_memory_limit_bytes,
                     y.admission_refused);
}

} // namespace drover
