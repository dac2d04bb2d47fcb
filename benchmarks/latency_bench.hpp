#pragma once

// What the files of drover_bench_latency share: its options and the two
// workloads, which latency_bench_workloads.cpp runs and main
// (latency_bench.cpp) calls.

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace drover::bench::latency {

struct options {
  std::string workload = "B3";
  std::string store = "postgres";
  std::string pg_url;
  uint32_t slots = 32;
  size_t threads = 2;
  /// CAF scheduling policy: stealing (the node's default) or sharing.
  std::string scheduler = "stealing";
  // B3
  uint64_t probes = 200;
  int64_t gap_ms = 10;
  double bg_rate = 0;
  double warmup_s = -1; // per workload default
  // B2
  std::vector<double> rates{500,  1000,  2000,  3000,  4000, 6000,
                            8000, 12000, 16000, 24000, 32000};
  double seconds = 5;
  double p99_bound_ms = 100;
  uint64_t max_outstanding = 200000;
};

/// B3: submit -> handler start, idle then half-loaded. Exit status of the
/// program (0, or 4 if a job failed or was lost).
int run_b3(const options& opt);

/// B2: open-loop ack latency at each offered rate. Exit status as run_b3.
int run_b2(const options& opt);

} // namespace drover::bench::latency
