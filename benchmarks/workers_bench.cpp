// drover_bench_workers: issue 13's simulated-scale run — one real
// coordinator (drover-node --roles coordinator, PostgreSQL store, D2)
// serving N simulated worker nodes, with its CPU per job and its memory per
// connected worker node.
//
//   drover_bench_workers --node build/nodes/drover-node --pg-url URL
//        [--workers 1000] [--ref-workers 10] [--jobs 20000]
//        [--slots-per-worker 1] [--ctl build/nodes/droverctl]
//        [--coordinator-arg ARG]... [--memory-only on] [--hold-s S]
//
// (Diagnostics: --coordinator-arg passes one more option to every
// coordinator, e.g. --coordinator-arg --attempt-lease-ttl-ms=8000;
// --memory-only on runs the memory phase alone; --hold-s S waits S
// seconds after each phase's measurements, with the nodes connected and
// again after they stopped, to inspect the coordinator.)
//
// The simulated worker nodes live in this process: one CAF actor system
// (io middleman, 2 threads, sharing scheduler) connects to the
// coordinator's cluster port once and spawns N actors that each speak the
// worker protocol as a node of their own (runtime/cluster_protocol.hpp,
// as actors/worker_agent.cpp does): hello, join with the HMAC proof over
// the challenge, a heartbeat every heartbeat_interval_ms (the first one at
// a random offset within the interval, as independent nodes would send
// them), and an immediate `succeeded` report for every lease (all leases
// of a batch in one report, at most one report in flight per node, the
// rest queued). CAF shares one TCP connection per remote node, so the N
// simulated nodes share one connection: per-connection kernel and socket
// costs are not in the figures; every per-node structure of the
// coordinator (its node link, slot actors, the proxies of the nodes'
// agents, heartbeats, lease checks) is. No job runs anywhere: a lease is
// answered at once.
//
// Three phases, each on a fresh database and a fresh coordinator:
//   memory: no jobs. RSS of the coordinator once ready (after a 1 s
//       settle) and its CPU while idle (3 s); N nodes join (the join storm:
//       all hellos at once); once every join is answered and the admin
//       node list (droverctl nodes) shows N connected nodes, a 2 s settle,
//       then RSS again -> bytes per connected worker node, and the CPU of
//       5 s with N idle nodes heartbeating -> idle CPU per node.
//   drain: --jobs no-op `sleep` jobs ({"ms":0}) preloaded (as
//       drover_bench_recovery does) before the coordinator starts; once its
//       queue holds them all (droverctl stats), N nodes join and drain
//       them. Coordinator CPU from just before the first hello to the last
//       `completed` row in the audit log, / jobs = CPU per job (the join
//       storm included; the memory phase's join CPU is reported to take
//       it out). Drain time: first `started` to last `completed`
//       (drover.events at_ms).
//   reference: the same drain with --ref-workers nodes holding the same
//       slots in total (N * slots / ref each), so that the ratio of the
//       two CPU-per-job figures isolates what the number of nodes costs.
// Verified from each drain's audit log: one `completed` event per job, no
// job with two, every job completed. Exit 4 otherwise.
//
// Output: one JSON line, then a human-readable summary.

#include "benchmarks/workers_bench.hpp"

#include "benchmarks/issue6_support.hpp"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>

using namespace drover;
using namespace drover::bench;
using namespace drover::bench::workers;
using namespace std::chrono_literals;

namespace {

void usage() {
  std::cerr << "usage: drover_bench_workers --node PATH --pg-url URL\n"
               "         [--workers 1000] [--ref-workers 10] [--jobs 20000]\n"
               "         [--slots-per-worker 1] [--ctl PATH]\n"
               "         [--coordinator-arg ARG]... [--memory-only on]\n"
               "         [--hold-s S]\n";
}

} // namespace

int main(int argc, char** argv) {
  options opt;
  option_reader args{argc, argv};
  while (args.next()) {
    if (args.key() == "--node")
      opt.node = args.value();
    else if (args.key() == "--ctl")
      opt.ctl = args.value();
    else if (args.key() == "--pg-url")
      opt.pg_url = args.value();
    else if (args.key() == "--workers")
      opt.workers = static_cast<uint32_t>(std::stoul(args.value()));
    else if (args.key() == "--ref-workers")
      opt.ref_workers = static_cast<uint32_t>(std::stoul(args.value()));
    else if (args.key() == "--jobs")
      opt.jobs = std::stoull(args.value());
    else if (args.key() == "--slots-per-worker")
      opt.slots = static_cast<uint32_t>(std::stoul(args.value()));
    else if (args.key() == "--coordinator-arg")
      opt.coord_args.push_back(args.value());
    else if (args.key() == "--hold-s")
      opt.hold_s = std::stod(args.value());
    else if (args.key() == "--memory-only")
      opt.memory_only = args.value() == "on";
    else {
      usage();
      return 2;
    }
  }
  if (opt.ctl.empty() && !opt.node.empty()) {
    auto slash = opt.node.rfind('/');
    opt.ctl = (slash == std::string::npos ? std::string{}
                                          : opt.node.substr(0, slash + 1))
              + "droverctl";
  }
  if (opt.node.empty() || opt.pg_url.empty() || opt.workers == 0
      || opt.ref_workers == 0 || opt.slots == 0 || opt.jobs == 0
      || access(opt.node.c_str(), X_OK) != 0
      || access(opt.ctl.c_str(), X_OK) != 0) {
    usage();
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  auto load0 = loadavg();
  uint64_t total_slots = uint64_t{opt.workers} * opt.slots;
  auto ref_slots = static_cast<uint32_t>(
      std::max<uint64_t>(1, total_slots / opt.ref_workers));
  std::cerr << "memory phase: " << opt.workers << " nodes, no jobs"
            << std::endl;
  auto mem = run_phase(opt, "mem", opt.workers, opt.slots, 0);
  phase_result big, ref;
  if (opt.memory_only) {
    std::printf(
        "{\"workers\":%u,\"rss_per_worker_bytes\":%.0f,"
        "\"join_storm_s\":%.3f,\"idle_cpu_no_workers_ms_per_s\":%.2f,"
        "\"idle_cpu_workers_ms_per_s\":%.2f,\"idle_heartbeats\":%llu,"
        "\"idle_heartbeat_rtt_p99_us\":%.0f,\"join_retries\":%llu,"
        "\"join_max_ms\":%.1f,\"ok\":%s}\n",
        opt.workers,
        static_cast<double>(mem.rss_joined - mem.rss_ready) / opt.workers,
        mem.join_s, mem.idle0_cpu_per_s * 1e3, mem.idleN_cpu_per_s * 1e3,
        static_cast<unsigned long long>(mem.heartbeats), mem.idle_beat_p99_us,
        static_cast<unsigned long long>(mem.hello_errors + mem.join_errors),
        mem.join_max_ms, mem.ok ? "true" : "false");
    if (!mem.first_error.empty())
      std::printf("first error seen by a node: %s\n", mem.first_error.c_str());
    return mem.ok ? 0 : 4;
  }
  std::cerr << "drain phase: " << opt.workers << " nodes x " << opt.slots
            << " slots, " << opt.jobs << " jobs" << std::endl;
  big = run_phase(opt, "drain", opt.workers, opt.slots, opt.jobs);
  std::cerr << "reference: " << opt.ref_workers << " nodes x " << ref_slots
            << " slots, " << opt.jobs << " jobs" << std::endl;
  ref = run_phase(opt, "ref", opt.ref_workers, ref_slots, opt.jobs);
  bool ok = mem.ok && big.ok && ref.ok;
  auto per_node_bytes
      = static_cast<double>(mem.rss_joined - mem.rss_ready) / opt.workers;
  auto per_node_bytes_idle
      = static_cast<double>(mem.rss_after_idle - mem.rss_ready) / opt.workers;
  auto idle_us_per_node_s
      = (mem.idleN_cpu_per_s - mem.idle0_cpu_per_s) * 1e6 / opt.workers;
  auto cpu_job = [](const phase_result& p) {
    return p.drain_cpu_s * 1e6 / static_cast<double>(p.jobs);
  };
  auto big_net_us = (big.drain_cpu_s - mem.join_cpu_s) * 1e6 / opt.jobs;
  auto ratio = cpu_job(ref) > 0 ? cpu_job(big) / cpu_job(ref) : 0;
  auto ratio_net = cpu_job(ref) > 0 ? big_net_us / cpu_job(ref) : 0;
  json_line j;
  j.str("system", "drover")
      .str("workload", "issue13-sim-workers")
      .str("durability", "D2")
      .integer("workers", opt.workers)
      .integer("slots_per_worker", opt.slots)
      .integer("ref_workers", opt.ref_workers)
      .integer("ref_slots_per_worker", ref_slots)
      .integer("jobs", static_cast<int64_t>(opt.jobs))
      // memory phase
      .num("mem_ready_s", mem.ready_s, 3)
      .integer("rss_ready_bytes", mem.rss_ready)
      .integer("rss_joined_bytes", mem.rss_joined)
      .integer("rss_after_idle_bytes", mem.rss_after_idle)
      .integer("rss_peak_bytes", mem.hwm)
      .num("rss_per_worker_bytes", per_node_bytes)
      .num("rss_per_worker_after_idle_bytes", per_node_bytes_idle)
      .integer("admin_connected", static_cast<int64_t>(mem.admin_connected))
      .num("join_storm_s", mem.join_s, 3)
      .num("join_storm_cpu_s", mem.join_cpu_s, 3)
      .num("join_cpu_per_worker_us", mem.join_cpu_s * 1e6 / opt.workers, 1)
      .num("join_p50_ms", mem.join_p50_ms, 1)
      .num("join_p99_ms", mem.join_p99_ms, 1)
      .num("join_max_ms", mem.join_max_ms, 1)
      .integer("join_retries",
               static_cast<int64_t>(mem.hello_errors + mem.join_errors))
      .num("idle_cpu_no_workers_ms_per_s", mem.idle0_cpu_per_s * 1e3, 2)
      .num("idle_cpu_workers_ms_per_s", mem.idleN_cpu_per_s * 1e3, 2)
      .num("idle_cpu_per_worker_us_per_s", idle_us_per_node_s, 2)
      .num("idle_heartbeat_rtt_p50_us", mem.idle_beat_p50_us)
      .num("idle_heartbeat_rtt_p99_us", mem.idle_beat_p99_us)
      .num("idle_heartbeat_rtt_max_us", mem.idle_beat_max_us)
      .integer("idle_heartbeats", static_cast<int64_t>(mem.heartbeats))
      .integer("idle_heartbeat_errors",
               static_cast<int64_t>(mem.heartbeat_errors));
  auto drain_fields = [&](const std::string& p, const phase_result& r) {
    j.num(p + "ready_s", r.ready_s, 3)
        .num(p + "recovery_s", r.recovery_s, 3)
        .num(p + "join_s", r.join_s, 3)
        .num(p + "join_max_ms", r.join_max_ms, 1)
        .integer(p + "join_retries",
                 static_cast<int64_t>(r.hello_errors + r.join_errors))
        .num(p + "drain_s", r.audit_drain_s, 3)
        .num(p + "jobs_per_s",
             r.audit_drain_s > 0 ? static_cast<double>(r.jobs) / r.audit_drain_s
                                 : 0)
        .num(p + "window_s", r.drain_wall_s, 3)
        .num(p + "coord_cpu_s", r.drain_cpu_s, 3)
        .num(p + "coord_cpu_per_job_us", cpu_job(r), 1)
        .num(p + "sim_cpu_per_job_us", r.bench_cpu_s * 1e6 / r.jobs, 1)
        .num(p + "pg_cpu_per_job_us", r.pg_cpu_s * 1e6 / r.jobs, 1)
        .num(p + "machine_busy", r.machine_busy, 3)
        .integer(p + "coord_rss_peak_bytes", r.hwm)
        .num(p + "heartbeat_rtt_p50_us", r.drain_beat_p50_us)
        .num(p + "heartbeat_rtt_p99_us", r.drain_beat_p99_us)
        .num(p + "heartbeat_rtt_max_us", r.drain_beat_max_us)
        .integer(p + "heartbeats", static_cast<int64_t>(r.heartbeats))
        .integer(p + "heartbeat_errors",
                 static_cast<int64_t>(r.heartbeat_errors))
        .integer(p + "heartbeats_skipped",
                 static_cast<int64_t>(r.heartbeats_skipped))
        .integer(p + "leases", static_cast<int64_t>(r.leases))
        .integer(p + "lease_batches", static_cast<int64_t>(r.lease_batches))
        .integer(p + "reports", static_cast<int64_t>(r.reports))
        .integer(p + "report_errors", static_cast<int64_t>(r.report_errors))
        .integer(p + "superseded", static_cast<int64_t>(r.superseded))
        .integer(p + "completed_events",
                 static_cast<int64_t>(r.completed_events))
        .integer(p + "completed_jobs", static_cast<int64_t>(r.completed_jobs))
        .integer(p + "completed_twice", static_cast<int64_t>(r.twice))
        .integer(p + "lease_expired_events",
                 static_cast<int64_t>(r.lease_expired))
        .integer(p + "report_rejected_events",
                 static_cast<int64_t>(r.report_rejected))
        .integer(p + "worker_lost_events", static_cast<int64_t>(r.worker_lost));
  };
  drain_fields("drain_", big);
  drain_fields("ref_", ref);
  j.num("drain_coord_cpu_per_job_net_of_joins_us", big_net_us, 1)
      .num("cpu_per_job_ratio", ratio, 3)
      .num("cpu_per_job_ratio_net_of_joins", ratio_net, 3)
      .load("loadavg_at_start", load0)
      .load("loadavg_at_end")
      .boolean("ok", ok);
  std::string problems;
  for (auto* p : {&mem, &big, &ref})
    if (!p->ok || !p->first_error.empty())
      problems += (problems.empty() ? "" : "; ") + p->problem
                  + (p->first_error.empty() ? ""
                                            : " (first error seen by a node: "
                                                  + p->first_error + ")");
  if (!problems.empty())
    j.str("problem", problems);
  j.print();
  // The human-readable summary.
  std::printf(
      "\nOne coordinator (PostgreSQL store, D2: fsync and synchronous_commit "
      "on), %u simulated worker nodes x %u slot(s), one CAF connection\n",
      opt.workers, opt.slots);
  std::printf("  memory: RSS %s bytes ready, %s with %u nodes joined -> %s "
              "bytes per node (%s after 5 s idle); peak %s\n",
              fmt(mem.rss_ready).c_str(), fmt(mem.rss_joined).c_str(),
              opt.workers, fmt(per_node_bytes).c_str(),
              fmt(per_node_bytes_idle).c_str(), fmt(mem.hwm).c_str());
  std::printf(
      "  join storm: %u nodes in %.3f s (p50 %.1f ms, p99 %.1f ms, "
      "max %.1f ms), %llu retries, coordinator CPU %.3f s (%.1f us "
      "per node)\n",
      opt.workers, mem.join_s, mem.join_p50_ms, mem.join_p99_ms,
      mem.join_max_ms,
      static_cast<unsigned long long>(mem.hello_errors + mem.join_errors),
      mem.join_cpu_s, mem.join_cpu_s * 1e6 / opt.workers);
  std::printf("  idle: coordinator CPU %.2f ms/s without nodes, %.2f ms/s with "
              "%u heartbeating -> %.2f us per node per second; heartbeat "
              "RTT p50 %.0f us, p99 %.0f us, max %.0f us\n",
              mem.idle0_cpu_per_s * 1e3, mem.idleN_cpu_per_s * 1e3, opt.workers,
              idle_us_per_node_s, mem.idle_beat_p50_us, mem.idle_beat_p99_us,
              mem.idle_beat_max_us);
  for (auto* p : {&big, &ref})
    std::printf(
        "  drain, %u nodes x %u slots: %llu jobs in %.3f s (%s jobs/s, "
        "audit log), coordinator CPU %.1f us/job (simulated nodes %.1f, "
        "PostgreSQL %.1f; machine %.0f %% busy), heartbeat RTT p99 %.0f us, "
        "lease_expired %llu, completed %llu events / %llu jobs, twice "
        "%llu\n",
        p->workers, p->slots_each, static_cast<unsigned long long>(p->jobs),
        p->audit_drain_s,
        fmt(p->audit_drain_s > 0 ? p->jobs / p->audit_drain_s : 0).c_str(),
        cpu_job(*p), p->bench_cpu_s * 1e6 / p->jobs,
        p->pg_cpu_s * 1e6 / p->jobs, p->machine_busy * 100,
        p->drain_beat_p99_us, static_cast<unsigned long long>(p->lease_expired),
        static_cast<unsigned long long>(p->completed_events),
        static_cast<unsigned long long>(p->completed_jobs),
        static_cast<unsigned long long>(p->twice));
  std::printf("  CPU per job, %u nodes / %u nodes: %.3f (%.3f without the "
              "join storm's %.3f s)\n",
              opt.workers, opt.ref_workers, ratio, ratio_net, mem.join_cpu_s);
  if (!problems.empty())
    std::printf("  PROBLEM: %s\n", problems.c_str());
  std::fflush(stdout);
  return ok ? 0 : 4;
}
