#pragma once

// What the files of drover_bench_lifecycle share: its options, the results
// of its measurements and the functions main calls. lifecycle_bench.cpp
// holds main, the option parsing and the report; lifecycle_bench_memory.cpp
// the heap accounting and the memory phase; lifecycle_bench_refs.cpp the
// CAF reference rates; lifecycle_bench_jobs.cpp the job system's runs
// (throughput, client API, latency).

#include "actors/job_system.hpp"
#include "benchmarks/bench_support.hpp"

#include "runtime/type_ids.hpp"

#include <caf/actor_system.hpp>
#include <caf/duration.hpp>
#include <caf/optional.hpp>
#include <caf/scoped_actor.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace drover::bench::lifecycle {

struct options {
  uint64_t jobs = 100000;
  uint32_t slots = 4;
  size_t threads = 2;
  uint64_t latency_jobs = 2000;
  uint64_t runs = 3;
  uint64_t window = 1000;
  uint64_t mem_jobs = 0; // 0 = jobs
  uint64_t ref_msgs = 1000000;
  uint64_t ref_spawns = 100000;
  uint64_t ref_threads = 20000;
  bool quick = false;
  /// Re-measure the queued jobs' heap 31 s later (default: not in --quick).
  int mem_wait = -1;
  /// Run only one part: all, memory, refs, throughput, latency.
  std::string only = "all";
  /// Executors of the throughput runs: both, thread, inline.
  std::string exec = "both";
};

// -- heap accounting (lifecycle_bench_memory.cpp) -----------------------------

extern bool g_heap_count;

int64_t heap_live();

// -- CAF references (lifecycle_bench_refs.cpp) --------------------------------

double caf_send_rate(caf::actor_system& sys, uint64_t n);

double caf_request_rate(caf::actor_system& sys, uint64_t n, uint64_t window,
                        caf::duration timeout = caf::infinite);

double caf_spawn_rate(caf::actor_system& sys, uint64_t n, uint64_t window);

double thread_start_rate(uint64_t n);

// -- Drover (lifecycle_bench_jobs.cpp) ----------------------------------------

enum class exec_mode {
  /// A thread per attempt: what the worker does without an executor.
  thread,
  /// The body runs on the worker's scheduler thread. Not a deployment
  /// option (handlers may block); it shows the actor pipeline's own cost.
  inline_
};

const char* to_string(exec_mode m);

std::shared_ptr<handler_registry> make_handlers();

struct job_system_run {
  supervisor_actor root;
  std::shared_ptr<job_system_handles> handles;
};

caf::optional<queue_stats> stats(caf::scoped_actor& self,
                                 const queue_actor& queue);

job_system_run
start_job_system(caf::actor_system& sys, std::map<std::string, uint32_t> slots,
                 std::function<void(std::function<void()>)> executor);

void stop_job_system(caf::actor_system& sys, job_system_run& run);

submit_request noop_request(const std::string& type = "noop");

issue_fn submit_issuer(queue_actor queue, submit_request req,
                       std::shared_ptr<std::string> first_error);

struct throughput_result {
  double submit_rate = 0; // acks/s
  double drain_rate = 0;  // jobs/s
  double retained_bytes_per_job = 0;
  /// The same 31 s later (CAF's request timeouts expired); -1 = not measured.
  double retained_late = -1;
  bool ok = true;
  std::string problem;
};

throughput_result drover_throughput(caf::actor_system& sys, const options& opt,
                                    exec_mode mode, bool wait_late = false);

double client_submit_rate(caf::actor_system& sys, uint64_t n, uint64_t threads);

struct latency_result {
  std::vector<double> ack_us, start_us, done_us;
  /// Reference: a blocking request/response to a local actor, same client.
  std::vector<double> caf_us;
  uint64_t failures = 0;
  std::string problem;
};

latency_result drover_latency(caf::actor_system& sys, const options& opt);

// -- memory (lifecycle_bench_memory.cpp) --------------------------------------

struct memory_result {
  double store_bytes = 0;        // memory store alone, per submitted job
  double system_bytes = 0;       // whole job system, per queued job
  double system_rss = 0;         // RSS growth per queued job (cross-check)
  double system_bytes_late = -1; // heap, 31 s later (after CAF's timeouts)
  uint64_t queued = 0;
};

memory_result drover_memory(caf::actor_system& sys, const options& opt);

} // namespace drover::bench::lifecycle
