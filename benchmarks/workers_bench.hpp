#pragma once

// What the files of drover_bench_workers share: its options, the simulated
// worker node's actor and state, and one phase's result. workers_bench.cpp
// holds main, the option parsing and the output; workers_bench_sim.cpp the
// simulated worker nodes; workers_bench_phase.cpp the coordinator process
// and one phase (a fresh database, a coordinator, N simulated nodes).

#include "benchmarks/bench_support.hpp"

#include "runtime/cluster_protocol.hpp"
#include "runtime/type_ids.hpp"

#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace drover::bench::workers {

struct options {
  std::string node;
  std::string ctl;
  std::string pg_url;
  uint32_t workers = 1000;
  uint32_t ref_workers = 10;
  uint64_t jobs = 20000;
  uint32_t slots = 1;
  /// Diagnostics: more drover-node options for every coordinator, and
  /// the memory phase alone.
  std::vector<std::string> coord_args;
  bool memory_only = false;
  /// Diagnostics: seconds to wait, after a phase's measurements, with the
  /// nodes still connected and again once they are stopped (to inspect
  /// the coordinator, e.g. with gdb).
  double hold_s = 0;
};

// -- the simulated worker nodes (workers_bench_sim.cpp) -----------------------

using sim_beat_atom = caf::atom_constant<caf::atom("sw_beat")>;
using sim_hello_atom = caf::atom_constant<caf::atom("sw_hello")>;

using sim_agent_actor
    = worker_agent_actor::extend<caf::reacts_to<sim_beat_atom>,
                                 caf::reacts_to<sim_hello_atom>>;

/// What the simulated nodes saw, shared by all of them.
struct sim_stats {
  std::atomic<uint64_t> joined{0};
  std::atomic<uint64_t> hello_errors{0};
  std::atomic<uint64_t> join_errors{0};
  std::atomic<uint64_t> refused{0};
  std::atomic<uint64_t> leases{0};
  std::atomic<uint64_t> lease_batches{0};
  std::atomic<uint64_t> duplicate_leases{0};
  std::atomic<uint64_t> reports{0};
  std::atomic<uint64_t> reported{0};
  std::atomic<uint64_t> report_errors{0};
  std::atomic<uint64_t> settled{0};
  std::atomic<uint64_t> superseded{0};
  std::atomic<uint64_t> heartbeats{0};
  std::atomic<uint64_t> heartbeat_errors{0};
  /// Beats skipped because the previous heartbeat was still unanswered.
  std::atomic<uint64_t> heartbeats_skipped{0};
  /// Which sample set heartbeat round trips go to (0 = none).
  std::atomic<int> window{0};
  std::mutex mx;
  std::vector<double> join_ms;                // hello sent -> join answered
  std::map<int, std::vector<double>> beat_us; // by window
  std::string first_error;

  void error(const std::string& what) {
    std::lock_guard<std::mutex> g{mx};
    if (first_error.empty())
      first_error = what;
  }
};

struct sim_state {
  std::string node_id;
  uint32_t slots = 1;
  cluster_endpoint_actor endpoint;
  node_link_actor link;
  std::shared_ptr<sim_stats> stats;
  /// Leased, not yet reported (the heartbeat's `running`).
  std::map<std::string, uint32_t> running;
  /// Outcomes waiting for the report in flight to be answered.
  std::vector<completion> outbox;
  /// Reported, not yet settled (the heartbeat's `unacknowledged`).
  std::set<std::pair<std::string, uint32_t>> unacked;
  bool report_in_flight = false;
  bool beat_in_flight = false;
  bool beating = false;
  std::chrono::milliseconds heartbeat_interval{500};
  std::chrono::milliseconds lease_ttl{2000};
  steady::time_point hello_at;
  bool first_hello = true;
  std::minstd_rand rng{std::random_device{}()};

  static inline const char* name = "drover.sim_worker";
};

using sim_ptr = sim_agent_actor::stateful_pointer<sim_state>;

sim_agent_actor::behavior_type sim_agent(sim_ptr self, std::string node_id,
                                         uint32_t slots,
                                         cluster_endpoint_actor endpoint,
                                         std::shared_ptr<sim_stats> stats,
                                         std::string secret);

// -- one phase (workers_bench_phase.cpp) --------------------------------------

struct phase_result {
  uint32_t workers = 0;
  uint32_t slots_each = 0;
  uint64_t jobs = 0;
  bool ok = true;
  std::string problem;
  double ready_s = 0;
  // join storm
  double join_s = 0;
  double join_cpu_s = 0;
  double join_p50_ms = 0, join_p99_ms = 0, join_max_ms = 0;
  uint64_t hello_errors = 0, join_errors = 0;
  // memory phase
  int64_t rss_ready = 0, rss_joined = 0, rss_after_idle = 0, hwm = 0;
  double idle0_cpu_per_s = 0; // no nodes
  double idleN_cpu_per_s = 0; // N nodes heartbeating
  size_t admin_connected = 0;
  double idle_beat_p50_us = 0, idle_beat_p99_us = 0, idle_beat_max_us = 0;
  // drain phase
  double recovery_s = 0;
  double drain_cpu_s = 0;   // coordinator, first hello -> last completed
  double drain_wall_s = 0;  // the same window
  double bench_cpu_s = 0;   // this process (the simulated nodes), same window
  double pg_cpu_s = 0;      // PostgreSQL (the database's backends), same
  double machine_busy = 0;  // share of all cores busy, same window
  double audit_drain_s = 0; // first started -> last completed
  double drain_beat_p50_us = 0, drain_beat_p99_us = 0, drain_beat_max_us = 0;
  uint64_t completed_events = 0, completed_jobs = 0, twice = 0;
  uint64_t lease_expired = 0, report_rejected = 0, worker_lost = 0;
  uint64_t leases = 0, lease_batches = 0, reports = 0, heartbeats = 0;
  uint64_t heartbeat_errors = 0, heartbeats_skipped = 0, report_errors = 0;
  uint64_t superseded = 0, duplicate_leases = 0, settled = 0;
  std::string first_error;
};

phase_result run_phase(const options& opt, const std::string& tag,
                       uint32_t workers, uint32_t slots_each, uint64_t jobs);

} // namespace drover::bench::workers
