#pragma once

// GET /metrics: the node's figures in the Prometheus text exposition format
// (version 0.0.4), docs/api.md "Metrics". Standard names and units:
// seconds and bytes, counters end in _total and count since the queue (or
// the process) started; durable totals come from the admin API.

#include "runtime/job_api.hpp"
#include "runtime/worker_figures.hpp"

#include <cstdint>
#include <string>

namespace drover::http {

/// This process's own figures (Linux /proc and getrusage).
struct process_figures {
  double cpu_seconds = 0;
  uint64_t resident_bytes = 0;
  uint64_t virtual_bytes = 0;
  double start_time_seconds = 0;
  uint64_t open_fds = 0;
};

process_figures read_process_figures();

/// The exposition of the queue's figures and the process's.
std::string metrics_text(const queue_stats& queue, const process_figures& p);

/// The process's families alone (process_*), as every node exports them.
std::string process_metrics_text(const process_figures& p);

/// A worker node's exposition (drover_worker_*; docs/operations.md,
/// "Metrics of a worker node"), then the process's.
std::string worker_metrics_text(const worker_figures& w,
                                const process_figures& p);

/// The exposition of the rate limiters and circuit breakers, from the
/// queue's flow JSON (flow_control::to_json); "" if it is not that JSON.
std::string flow_metrics_text(const std::string& flow_json);

/// Content-Type of metrics_text.
inline constexpr const char* metrics_content_type
    = "text/plain; version=0.0.4; charset=utf-8";

} // namespace drover::http
