// drover_bench_lifecycle: the job lifecycle on one node, measured against
// CAF's own message rates in the same run (a benchmark, not a test; the
// results and their analysis are in docs/benchmarks.md).
//
//   drover_bench_lifecycle [--jobs N] [--slots N] [--threads N]
//                          [--latency-jobs N] [--runs N] [--window N]
//                          [--mem-jobs N] [--ref-msgs N] [--exec WHICH]
//                          [--only PART] [--no-heap-count]
//                          [--[no-]mem-wait] [--quick]
//
// Each measurement runs in an actor system of its own (real CAF scheduler,
// scheduler.max-threads = --threads):
//   1. bytes per queued job: global operator new/delete count live heap
//      bytes (malloc_usable_size); a whole job system whose jobs have no
//      worker of their class, then a memory store alone;
//   2. per run (--runs, default 3; interleaved so that background load hits
//      references and Drover alike): CAF reference rates (plain send,
//      request/response with a window of outstanding requests, with and
//      without a timeout, spawn + request, thread start), then Drover:
//      preload N no-op jobs through the queue's submit while the workers'
//      first attempts are held back, release them, measure the drain; once
//      with a thread per attempt, once with an inline executor (analysis);
//      and submits through the client API in process (local_client) for
//      comparison;
//   3. one-at-a-time latency: submit, wait for the final record, repeat;
//      plus plain request/responses from the same blocking client.
// The table shows medians over the runs and how busy other processes kept
// the machine meanwhile. Durability: the memory store (D0, nothing durable).

#include "benchmarks/lifecycle_bench.hpp"

#include "actors/job_system.hpp"
#include "benchmarks/bench_support.hpp"

#include "runtime/type_ids.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/exit_reason.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/stateful_actor.hpp>

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <future>
#include <iostream>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

// -- the benchmark
// --------------------------------------------------------------

using namespace drover;
using namespace std::chrono_literals;
using namespace drover::bench::lifecycle;
using steady = std::chrono::steady_clock;

namespace {

using namespace drover::bench;

/// How busy the machine was with *other* processes: system-wide busy CPU
/// time (/proc/stat) minus this process's (getrusage), per wall second.
class other_load {
public:
  other_load() {
    reset();
  }

  void reset() {
    t0_ = steady::now();
    busy0_ = system_busy_s();
    own0_ = own_cpu_s();
  }

  /// Average number of cores other processes kept busy since reset().
  double cores() const {
    auto wall = seconds_since(t0_);
    if (wall <= 0)
      return 0;
    auto others = (system_busy_s() - busy0_) - (own_cpu_s() - own0_);
    return std::max(0.0, others / wall);
  }

private:
  static double system_busy_s() {
    std::ifstream in{"/proc/stat"};
    std::string cpu;
    uint64_t user = 0, nice = 0, sys = 0, idle = 0, iowait = 0, irq = 0,
             softirq = 0, steal = 0;
    in >> cpu >> user >> nice >> sys >> idle >> iowait >> irq >> softirq
        >> steal;
    return static_cast<double>(user + nice + sys + irq + softirq + steal)
           / static_cast<double>(sysconf(_SC_CLK_TCK));
  }

  static double own_cpu_s() {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    auto tv = [](const timeval& t) {
      return static_cast<double>(t.tv_sec)
             + static_cast<double>(t.tv_usec) / 1e6;
    };
    return tv(ru.ru_utime) + tv(ru.ru_stime);
  }

  steady::time_point t0_;
  double busy0_ = 0;
  double own0_ = 0;
};

// -- main
// ---------------------------------------------------------------------------

void usage() {
  std::cout
      << "usage: drover_bench_lifecycle [options]\n"
         "  --jobs N          jobs preloaded per throughput run (100000)\n"
         "  --slots N         worker slots of class cpu (4)\n"
         "  --threads N       CAF scheduler threads, scheduler.max-threads "
         "(2)\n"
         "  --latency-jobs N  one-at-a-time jobs per latency run (2000)\n"
         "  --runs N          repetitions; the table shows medians (3)\n"
         "  --window N        outstanding requests of a driver (1000)\n"
         "  --mem-jobs N      jobs of the memory phase (= --jobs)\n"
         "  --ref-msgs N      messages of the CAF references (1000000)\n"
         "  --no-heap-count   no heap accounting (skips the memory phase)\n"
         "  --mem-wait / --no-mem-wait\n"
         "                    re-measure queued jobs' heap 31 s later (on;\n"
         "                    off with --quick)\n"
         "  --only PART       all, memory, refs, throughput, latency (all)\n"
         "  --exec WHICH      throughput runs: both, thread, inline (both)\n"
         "  --quick           small N everywhere: a smoke run\n";
}

bool parse(int argc, char** argv, options& opt) {
  auto num = [&](int& i) -> uint64_t {
    if (i + 1 >= argc)
      throw std::invalid_argument{std::string{argv[i]} + " needs a value"};
    return std::stoull(argv[++i]);
  };
  bool jobs_set = false, lat_set = false, ref_set = false;
  try {
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      if (a == "--jobs") {
        opt.jobs = num(i);
        jobs_set = true;
      } else if (a == "--slots")
        opt.slots = static_cast<uint32_t>(num(i));
      else if (a == "--threads")
        opt.threads = num(i);
      else if (a == "--latency-jobs") {
        opt.latency_jobs = num(i);
        lat_set = true;
      } else if (a == "--runs")
        opt.runs = std::max<uint64_t>(1, num(i));
      else if (a == "--window")
        opt.window = std::max<uint64_t>(1, num(i));
      else if (a == "--mem-jobs")
        opt.mem_jobs = num(i);
      else if (a == "--ref-msgs") {
        opt.ref_msgs = num(i);
        ref_set = true;
      } else if (a == "--no-heap-count")
        g_heap_count = false;
      else if (a == "--quick")
        opt.quick = true;
      else if (a == "--mem-wait")
        opt.mem_wait = 1;
      else if (a == "--no-mem-wait")
        opt.mem_wait = 0;
      else if (a == "--exec") {
        if (i + 1 >= argc)
          throw std::invalid_argument{"--exec needs a value"};
        opt.exec = argv[++i];
        if (opt.exec != "both" && opt.exec != "thread" && opt.exec != "inline")
          throw std::invalid_argument{"unknown executor " + opt.exec};
      } else if (a == "--only") {
        if (i + 1 >= argc)
          throw std::invalid_argument{"--only needs a value"};
        opt.only = argv[++i];
        if (opt.only != "all" && opt.only != "memory" && opt.only != "refs"
            && opt.only != "throughput" && opt.only != "latency")
          throw std::invalid_argument{"unknown part " + opt.only};
      } else if (a == "--help" || a == "-h") {
        usage();
        std::exit(0);
      } else
        throw std::invalid_argument{"unknown option " + a};
    }
  } catch (const std::exception& e) {
    std::cerr << e.what() << "\n";
    usage();
    return false;
  }
  if (opt.quick) {
    if (!jobs_set)
      opt.jobs = 5000;
    if (!lat_set)
      opt.latency_jobs = 200;
    if (!ref_set)
      opt.ref_msgs = 100000;
    opt.ref_spawns = 10000;
    opt.ref_threads = 2000;
  }
  if (opt.mem_jobs == 0)
    opt.mem_jobs = opt.jobs;
  if (opt.mem_wait < 0)
    opt.mem_wait = opt.quick ? 0 : 1;
  if (opt.jobs == 0 || opt.slots == 0 || opt.threads == 0) {
    std::cerr << "--jobs, --slots and --threads must be positive\n";
    return false;
  }
  return true;
}

std::string cpu_model() {
  std::ifstream in{"/proc/cpuinfo"};
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("model name", 0) == 0) {
      auto c = line.find(':');
      return c == std::string::npos ? line : line.substr(c + 2);
    }
  return "unknown";
}

/// Runs `f` in an actor system of its own: each measurement starts with an
/// empty actor clock (CAF 0.17 keeps every request timeout in it until the
/// deadline, answered or not) and leaves nothing behind for the next one.
template <class F>
auto in_fresh_system(const options& opt, F f) {
  caf::actor_system_config cfg;
  cfg.set("scheduler.max-threads", opt.threads);
  register_types(cfg);
  caf::actor_system sys{cfg};
  return f(sys);
}

} // namespace

int main(int argc, char** argv) {
  options opt;
  if (!parse(argc, argv, opt))
    return 1;
  auto part
      = [&](const char* name) { return opt.only == "all" || opt.only == name; };
  std::cout << "# drover_bench_lifecycle\n\n"
            << "machine: " << std::thread::hardware_concurrency()
            << " hardware threads, " << cpu_model() << "\n"
            << "durability: D0 (memory store; nothing is durable)\n"
            << "settings: jobs=" << opt.jobs << " slots=" << opt.slots
            << " (class cpu) scheduler.max-threads=" << opt.threads
            << " latency-jobs=" << opt.latency_jobs << " runs=" << opt.runs
            << " window=" << opt.window << " mem-jobs=" << opt.mem_jobs
            << " ref-msgs=" << opt.ref_msgs << " only=" << opt.only
            << (g_heap_count ? "" : " (heap accounting off)") << "\n"
            << "submit driver: one event-based actor keeping " << opt.window
            << " submit requests to the queue outstanding\n"
            << "each measurement runs in a fresh actor system\n"
            << std::endl;

  // 1. Memory first, while the heap is fresh (RSS is then meaningful too).
  bool have_mem = g_heap_count && part("memory");
  memory_result mem;
  if (have_mem) {
    std::cout << "[memory] " << opt.mem_jobs << " queued jobs"
              << (opt.mem_wait ? " (then 31 s wait)" : "") << "..."
              << std::endl;
    mem = in_fresh_system(
        opt, [&](caf::actor_system& sys) { return drover_memory(sys, opt); });
  }

  // 2. Rates, interleaved per run so that background load hits all alike.
  bool have_refs = part("refs");
  bool have_tp = part("throughput");
  bool have_lat = part("latency");
  std::vector<double> send_rates, req_rates, req_to_rates, spawn_rates,
      thread_rates;
  std::vector<double> submit_t, drain_t, retained_t, submit_i, drain_i,
      client_rates;
  std::vector<std::string> problems;
  std::vector<double> run_loads;
  double retained_late = -1;
  for (uint64_t r = 0; (have_refs || have_tp) && r < opt.runs; ++r) {
    auto tag = "[run " + std::to_string(r + 1) + "/" + std::to_string(opt.runs)
               + "] ";
    other_load run_load;
    if (have_refs) {
      std::cout << tag << "CAF references..." << std::endl;
      send_rates.push_back(in_fresh_system(opt, [&](caf::actor_system& sys) {
        return caf_send_rate(sys, opt.ref_msgs);
      }));
      req_rates.push_back(in_fresh_system(opt, [&](caf::actor_system& sys) {
        return caf_request_rate(sys, opt.ref_msgs, opt.window);
      }));
      req_to_rates.push_back(in_fresh_system(opt, [&](caf::actor_system& sys) {
        return caf_request_rate(sys, opt.ref_msgs, opt.window,
                                caf::duration{30s});
      }));
      spawn_rates.push_back(in_fresh_system(opt, [&](caf::actor_system& sys) {
        return caf_spawn_rate(sys, opt.ref_spawns, opt.window);
      }));
      thread_rates.push_back(thread_start_rate(opt.ref_threads));
      std::cout << "  send " << fmt(send_rates.back()) << "/s, request "
                << fmt(req_rates.back()) << "/s, request with timeout "
                << fmt(req_to_rates.back()) << "/s, spawn "
                << fmt(spawn_rates.back()) << "/s, thread "
                << fmt(thread_rates.back()) << "/s" << std::endl;
    }
    if (have_tp) {
      throughput_result t, i;
      if (opt.exec != "inline") {
        std::cout << tag << "Drover, " << to_string(exec_mode::thread) << "..."
                  << std::endl;
        // The first run also re-measures the retained heap 31 s later.
        auto late = g_heap_count && opt.mem_wait && r == 0;
        t = in_fresh_system(opt, [&](caf::actor_system& sys) {
          return drover_throughput(sys, opt, exec_mode::thread, late);
        });
        if (t.retained_late >= 0)
          retained_late = t.retained_late;
        if (!t.ok)
          problems.push_back(tag + "thread: " + t.problem);
        submit_t.push_back(t.submit_rate);
        drain_t.push_back(t.drain_rate);
        retained_t.push_back(t.retained_bytes_per_job);
      }
      client_rates.push_back(in_fresh_system(opt, [&](caf::actor_system& sys) {
        return client_submit_rate(sys, std::min<uint64_t>(opt.jobs, 20000), 4);
      }));
      if (opt.exec != "thread") {
        std::cout << tag << "Drover, " << to_string(exec_mode::inline_) << "..."
                  << std::endl;
        i = in_fresh_system(opt, [&](caf::actor_system& sys) {
          return drover_throughput(sys, opt, exec_mode::inline_);
        });
        if (!i.ok)
          problems.push_back(tag + "inline: " + i.problem);
        submit_i.push_back(i.submit_rate);
        drain_i.push_back(i.drain_rate);
      }
      std::cout << "  client API in process x4 threads: submit "
                << fmt(client_rates.back()) << "/s" << std::endl;
      std::cout << "  submit " << fmt(t.submit_rate) << "/s, drain "
                << fmt(t.drain_rate) << "/s; inline: submit "
                << fmt(i.submit_rate) << "/s, drain " << fmt(i.drain_rate)
                << "/s" << std::endl;
    }
    run_loads.push_back(run_load.cores());
    std::cout << "  other processes kept " << fmt(run_loads.back(), 2)
              << " cores busy during this run" << std::endl;
  }

  // 3. One-at-a-time latency.
  std::vector<double> ack50, ack99, start50, start99, done50, done99, caf50,
      caf99;
  uint64_t lat_failures = 0;
  other_load lat_load;
  for (uint64_t r = 0; have_lat && r < opt.runs; ++r) {
    std::cout << "[latency " << r + 1 << "/" << opt.runs << "] "
              << opt.latency_jobs << " jobs one at a time..." << std::endl;
    auto l = in_fresh_system(
        opt, [&](caf::actor_system& sys) { return drover_latency(sys, opt); });
    lat_failures += l.failures;
    if (!l.problem.empty())
      problems.push_back("latency run " + std::to_string(r + 1) + ": "
                         + l.problem);
    ack50.push_back(percentile(l.ack_us, 0.5));
    ack99.push_back(percentile(l.ack_us, 0.99));
    start50.push_back(percentile(l.start_us, 0.5));
    start99.push_back(percentile(l.start_us, 0.99));
    done50.push_back(percentile(l.done_us, 0.5));
    done99.push_back(percentile(l.done_us, 0.99));
    caf50.push_back(percentile(l.caf_us, 0.5));
    caf99.push_back(percentile(l.caf_us, 0.99));
  }

  auto lat_cores = lat_load.cores();
  auto range2 = [](const std::vector<double>& xs) {
    std::string out;
    for (auto x : xs)
      out += (out.empty() ? "" : ", ") + fmt(x, 2);
    return out;
  };
  auto range = [](const std::vector<double>& xs) {
    return fmt(*std::min_element(xs.begin(), xs.end())) + " – "
           + fmt(*std::max_element(xs.begin(), xs.end()));
  };
  auto row = [&](const std::string& name, const std::vector<double>& xs) {
    if (xs.empty())
      return;
    std::cout << "| " << name << " | " << fmt(median(xs)) << " | " << range(xs)
              << " |\n";
  };
  auto lat_row = [&](const std::string& name, const std::vector<double>& p50,
                     const std::vector<double>& p99) {
    std::cout << "| " << name << " | " << fmt(median(p50)) << " / "
              << fmt(median(p99)) << " | " << range(p50) << " / " << range(p99)
              << " |\n";
  };
  std::cout << "\n## Results (median of " << opt.runs
            << " runs; range = min – max over the runs)\n\n";
  if (!run_loads.empty())
    std::cout << "Other processes kept " << fmt(median(run_loads), 2) << " of "
              << std::thread::hardware_concurrency()
              << " cores busy during the rate runs (median; per run: "
              << range2(run_loads) << ")";
  if (have_lat)
    std::cout << (run_loads.empty() ? "Other processes kept " : "; ")
              << fmt(lat_cores, 2) << " cores busy during the latency runs";
  std::cout << ".\n\n"
            << "| figure | median | range |\n|---|---:|---:|\n";
  if (have_refs) {
    row("CAF local send, msg/s", send_rates);
    row("CAF request/response, " + std::to_string(opt.window)
            + " outstanding, no timeout, req/s",
        req_rates);
    row("CAF request/response, " + std::to_string(opt.window)
            + " outstanding, 30 s timeout, req/s",
        req_to_rates);
    row("CAF spawn + 1 request/response + quit, /s", spawn_rates);
    row("std::thread start (detached, empty body), /s", thread_rates);
  }
  if (have_tp) {
    row("Drover submit, acks/s (" + std::to_string(opt.jobs) + " preloaded)",
        submit_t);
    row("Drover drain, no-op jobs/s (" + std::to_string(opt.slots)
            + " slots, thread per attempt)",
        drain_t);
    row("Drover submit, acks/s, inline-executor run", submit_i);
    row("Drover submit via the client API in process, 4 threads, acks/s "
        "(alternative driver, "
            + std::to_string(std::min<uint64_t>(opt.jobs, 20000)) + " jobs)",
        client_rates);
    row("Drover drain, jobs/s, inline executor (analysis only)", drain_i);
    if (g_heap_count)
      row("heap retained per completed job 50 ms after the drain, B",
          retained_t);
    if (retained_late >= 0)
      row("heap retained per completed job 31 s after the drain (run 1), B",
          {retained_late});
  }
  if (have_lat) {
    lat_row("one at a time: CAF request/response (blocking client, "
            "reference), p50 / p99 µs",
            caf50, caf99);
    lat_row("one at a time: submit → ack, p50 / p99 µs", ack50, ack99);
    lat_row("one at a time: submit → handler start, p50 / p99 µs", start50,
            start99);
    lat_row("one at a time: submit → final record at client, p50 / p99 µs",
            done50, done99);
  }
  if (have_refs && have_tp && !drain_t.empty() && !drain_i.empty()) {
    auto req = median(req_rates);
    auto req_to = median(req_to_rates);
    auto send = median(send_rates);
    auto drain = median(drain_t);
    auto sub = median(submit_t);
    std::cout << "\n## Ratios (of medians)\n\n"
              << "| ratio | value |\n|---|---:|\n"
              << "| Drover drain / CAF request-response (no timeout) | "
              << fmt(drain / req, 4) << " (a job costs " << fmt(req / drain, 1)
              << " request-responses) |\n"
              << "| Drover drain / CAF request-response (30 s timeout) | "
              << fmt(drain / req_to, 4) << " (" << fmt(req_to / drain, 1)
              << ") |\n"
              << "| Drover drain / CAF local send | " << fmt(drain / send, 4)
              << " (a job costs " << fmt(send / drain, 1) << " sends) |\n"
              << "| Drover drain, inline executor / CAF request-response | "
              << fmt(median(drain_i) / req, 4) << " |\n"
              << "| Drover submit / CAF request-response (no timeout) | "
              << fmt(sub / req, 4) << " |\n"
              << "| Drover submit / CAF request-response (30 s timeout) | "
              << fmt(sub / req_to, 4) << " |\n";
  }
  if (have_mem) {
    std::cout << "\n## Memory per queued job (" << opt.mem_jobs
              << " jobs of a class without workers, input "
              << noop_request().input.size() << " B of JSON; heap = live "
              << "bytes of operator new, malloc_usable_size)\n\n"
              << "| figure | bytes |\n|---|---:|\n"
              << "| whole job system, heap, per queued job | "
              << fmt(mem.system_bytes) << " |\n";
    if (mem.system_bytes_late >= 0)
      std::cout << "| whole job system, heap, per queued job, 31 s later | "
                << fmt(mem.system_bytes_late) << " |\n";
    std::cout << "| memory store alone (record + `submitted` event + map "
                 "node), per job | "
              << fmt(mem.store_bytes) << " |\n"
              << "| the rest (whole − store alone) | "
              << fmt(mem.system_bytes - mem.store_bytes) << " |\n";
    if (mem.system_bytes_late >= 0)
      std::cout << "| the rest, 31 s later (= the queue's own share) | "
                << fmt(mem.system_bytes_late - mem.store_bytes) << " |\n";
    std::cout << "| whole job system, RSS growth, per queued job | "
              << fmt(mem.system_rss) << " |\n"
              << "| jobs the queue reported queued | " << mem.queued << " |\n"
              << "| sizeof(job_record) | " << sizeof(job_record) << " |\n"
              << "| sizeof(job_spec) | " << sizeof(job_spec) << " |\n"
              << "| sizeof(job_event) | " << sizeof(job_event) << " |\n"
              << "| sizeof(std::string) | " << sizeof(std::string) << " |\n";
  }
  if (lat_failures > 0)
    problems.push_back(std::to_string(lat_failures)
                       + " latency jobs failed or timed out");
  if (!problems.empty()) {
    std::cout << "\n## PROBLEMS\n\n";
    for (auto& p : problems)
      std::cout << "- " << p << "\n";
  }
  std::cout << std::flush;
  return problems.empty() ? 0 : 4;
}
