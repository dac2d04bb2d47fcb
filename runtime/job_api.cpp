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

namespace {

void add_histogram(latency_histogram& into, const latency_histogram& other) {
  if (into.counts.size() < other.counts.size())
    into.counts.resize(other.counts.size());
  for (size_t i = 0; i < other.counts.size(); ++i)
    into.counts[i] += other.counts[i];
  into.sum_ms += other.sum_ms;
}

void add_type(type_figures& into, const type_figures& x) {
  auto done = into.completed + x.completed;
  if (done > 0)
    into.mean_run_ms = (into.mean_run_ms * static_cast<double>(into.completed)
                        + x.mean_run_ms * static_cast<double>(x.completed))
                       / static_cast<double>(done);
  else
    into.mean_run_ms = std::max(into.mean_run_ms, x.mean_run_ms);
  into.ready += x.ready;
  into.delayed += x.delayed;
  into.running += x.running;
  into.oldest_age_ms = std::max(into.oldest_age_ms, x.oldest_age_ms);
  into.dispatched += x.dispatched;
  into.completed = done;
  into.arrivals_per_second += x.arrivals_per_second;
  into.completions_per_second += x.completions_per_second;
  into.recommended_slots += x.recommended_slots;
}

} // namespace

void add_figures(queue_stats& into, const queue_stats& other) {
  for (size_t i = 0; i < into.depth.size(); ++i) {
    into.depth[i] += other.depth[i];
    into.oldest_age_ms[i]
        = std::max(into.oldest_age_ms[i], other.oldest_age_ms[i]);
    into.dispatched[i] += other.dispatched[i];
  }
  into.delayed += other.delayed;
  into.running += other.running;
  into.idle_workers += other.idle_workers;
  into.completed += other.completed;
  into.failed += other.failed;
  into.cancelled += other.cancelled;
  into.retried += other.retried;
  if (other.since_ms > 0
      && (into.since_ms == 0 || other.since_ms < into.since_ms))
    into.since_ms = other.since_ms;
  into.admission_in_flight += other.admission_in_flight;
  into.admission_memory_bytes += other.admission_memory_bytes;
  into.admission_memory_limit_bytes += other.admission_memory_limit_bytes;
  into.admission_refused += other.admission_refused;
  add_histogram(into.start_latency, other.start_latency);
  add_histogram(into.run_time, other.run_time);
  for (const auto& t : other.by_type) {
    auto i = std::find_if(into.by_type.begin(), into.by_type.end(),
                          [&](const type_figures& x) {
                            return x.resource_class == t.resource_class
                                   && x.job_type == t.job_type;
                          });
    if (i == into.by_type.end())
      into.by_type.push_back(t);
    else
      add_type(*i, t);
  }
  std::sort(into.by_type.begin(), into.by_type.end(),
            [](const type_figures& x, const type_figures& y) {
              return std::tie(x.resource_class, x.job_type)
                     < std::tie(y.resource_class, y.job_type);
            });
  auto by_number = [](const partition_figures& x, const partition_figures& y) {
    return x.partition < y.partition;
  };
  if (!std::is_sorted(into.by_partition.begin(), into.by_partition.end(),
                      by_number))
    std::sort(into.by_partition.begin(), into.by_partition.end(), by_number);
  for (const auto& p : other.by_partition) {
    auto i = std::lower_bound(
        into.by_partition.begin(), into.by_partition.end(), p.partition,
        [](const partition_figures& x, int32_t q) { return x.partition < q; });
    if (i != into.by_partition.end() && i->partition == p.partition) {
      i->waiting += p.waiting;
      i->running += p.running;
    } else {
      into.by_partition.insert(i, p);
    }
  }
}

uint64_t latency_histogram::count() const {
  uint64_t n = 0;
  for (auto c : counts)
    n = c > UINT64_MAX - n ? UINT64_MAX : n + c; // saturating
  return n;
}

} // namespace drover
