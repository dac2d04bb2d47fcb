// drover_bench_workers' phases: the coordinator process (drover-node
// --roles coordinator, started and stopped per phase; its RSS and CPU from
// /proc, its queue and nodes through droverctl) and one phase: a fresh
// database, a coordinator, N simulated worker nodes (workers_bench_sim.cpp),
// the join storm, then the memory or drain measurements and the audit log's
// verification. main and the output are in workers_bench.cpp.

#include "benchmarks/workers_bench.hpp"

#include "benchmarks/issue6_support.hpp"
#include "benchmarks/node_child.hpp"

#include <caf/io/middleman.hpp>
#include <caf/send.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>

using namespace std::chrono_literals;

namespace drover::bench::workers {

namespace {

const std::string join_secret = "bench-workers-secret-0123456789";

// -- the coordinator process
// --------------------------------------------------------

struct node_proc : node_child {
  int admin_port = 0;
  int cluster_port = 0;
  double ready_s = -1;
  std::thread drain; // reads stdout after "ready" (the pipe must not fill)
};

node_proc* start_coordinator(const options& opt, const std::string& db_url,
                             const std::string& log_path,
                             const std::string& state_dir) {
  auto n = new node_proc;
  // As tests/support/cluster.hpp's coordinator_args, with the production
  // defaults for the attempt lease (2 s) and the worker heartbeat (500 ms),
  // and config/cluster/coordinator.ini's scheduler (sharing).
  std::vector<std::string> args{
      opt.node,      "--node-id",     "coord",     "--roles",
      "coordinator", "--store",       "postgres",  "--pg-url",
      db_url,        "--admin-port",  "0",         "--cluster-port",
      "0",           "--join-secret", join_secret, "--scheduler-policy",
      "sharing",     "--state-dir",   state_dir};
  args.insert(args.end(), opt.coord_args.begin(), opt.coord_args.end());
  auto t0 = steady::now();
  static_cast<node_child&>(*n) = spawn_node(std::move(args), log_path);
  auto line = read_until(*n, " node: ready ", log_path);
  n->ready_s = seconds_since(t0);
  n->admin_port = port_field(line, "admin");
  n->cluster_port = port_field(line, "cluster");
  if (n->admin_port <= 0 || n->cluster_port <= 0) {
    std::cerr << "no admin or cluster port in: " << line << std::endl;
    std::exit(3);
  }
  n->drain = std::thread{[fd = n->out_fd] {
    char chunk[4096];
    while (read(fd, chunk, sizeof(chunk)) > 0) {
      // discarded: announcements only
    }
  }};
  return n;
}

void stop_coordinator(node_proc* n) {
  kill(n->pid, SIGTERM);
  int status = 0;
  waitpid(n->pid, &status, 0);
  if (n->drain.joinable())
    n->drain.join();
  close(n->out_fd);
  delete n;
}

/// A value (kB -> bytes) of /proc/<pid>/status, e.g. "VmRSS".
int64_t proc_status_bytes(pid_t pid, const std::string& key) {
  std::ifstream in{"/proc/" + std::to_string(pid) + "/status"};
  std::string line;
  while (std::getline(in, line))
    if (line.compare(0, key.size() + 1, key + ":") == 0)
      return std::atoll(line.c_str() + key.size() + 1) * 1024;
  return -1;
}

/// droverctl `args` against the coordinator's admin port; its stdout.
std::string ctl(const options& opt, int admin_port, const std::string& args) {
  auto cmd = opt.ctl + " " + args + " --port " + std::to_string(admin_port)
             + " --timeout-ms 30000 2>/dev/null";
  std::string out;
  if (FILE* p = popen(cmd.c_str(), "r")) {
    char buf[65536];
    size_t r;
    while ((r = fread(buf, 1, sizeof(buf), p)) > 0)
      out.append(buf, r);
    pclose(p);
  }
  return out;
}

/// Queued jobs (all priorities) per `droverctl stats`; -1 on failure.
int64_t queue_depth(const options& opt, int admin_port) {
  auto out = ctl(opt, admin_port, "stats");
  std::istringstream in{out};
  std::string line;
  int64_t total = 0;
  int rows = 0;
  while (std::getline(in, line)) {
    std::istringstream f{line};
    std::string name;
    int64_t depth = 0;
    f >> name;
    if (name == "high" || name == "normal" || name == "low") {
      f >> depth;
      total += depth;
      ++rows;
    }
  }
  return rows == 3 ? total : -1;
}

/// Busy and total jiffies of the whole machine (/proc/stat).
std::pair<double, double> machine_jiffies() {
  std::ifstream in{"/proc/stat"};
  std::string cpu;
  in >> cpu;
  double v[8] = {};
  for (auto& x : v)
    in >> x;
  double idle = v[3] + v[4];
  double total = 0;
  for (auto x : v)
    total += x;
  return {total - idle, total};
}

size_t count_of(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (auto at = text.find(needle); at != std::string::npos;
       at = text.find(needle, at + 1))
    ++n;
  return n;
}

// -- one phase: a fresh database, a coordinator, N simulated nodes
// ------------------

void preload_jobs(const std::string& db_url, uint64_t jobs) {
  std::string first_error;
  auto sub = preload_noop_jobs(db_url, jobs, 2000, first_error);
  if (sub.errors > 0) {
    std::cerr << sub.errors << " submits failed: " << first_error << std::endl;
    std::exit(4);
  }
}

uint64_t sql_count(const std::string& db_url, const std::string& stmt) {
  return std::stoull("0" + sql_value(db_url, stmt));
}

std::string kind_is(event_kind k) {
  return "kind = " + std::to_string(static_cast<int>(k));
}

void beat_summary(sim_stats& s, int window, double& p50, double& p99,
                  double& max) {
  std::lock_guard<std::mutex> g{s.mx};
  auto& xs = s.beat_us[window];
  p50 = percentile(xs, 0.5);
  p99 = percentile(xs, 0.99);
  max = xs.empty() ? 0 : *std::max_element(xs.begin(), xs.end());
}

/// Waits until `pred` holds, checking every `step`; false after `limit`.
template <class Pred>
bool wait_for(Pred pred, std::chrono::milliseconds step,
              std::chrono::seconds limit) {
  auto deadline = steady::now() + limit;
  while (!pred()) {
    if (steady::now() > deadline)
      return false;
    std::this_thread::sleep_for(step);
  }
  return true;
}

} // namespace

phase_result run_phase(const options& opt, const std::string& tag,
                       uint32_t workers, uint32_t slots_each, uint64_t jobs) {
  phase_result res;
  res.workers = workers;
  res.slots_each = slots_each;
  res.jobs = jobs;
  auto fail = [&](const std::string& why) {
    res.ok = false;
    res.problem += (res.problem.empty() ? "" : "; ") + why;
    std::cerr << "  " << tag << ": " << why << std::endl;
  };
  auto suffix = std::to_string(getpid()) + "_" + tag;
  auto db = "drover_bench_workers_" + suffix;
  auto db_url = create_db(opt.pg_url, db);
  require_d2(db_url);
  auto log_path = "/tmp/drover_bench_workers_" + suffix + ".log";
  auto state_dir = "/tmp/drover-bench-workers-" + suffix;
  if (jobs > 0) {
    std::cerr << "  " << tag << ": preloading " << jobs << " jobs" << std::endl;
    preload_jobs(db_url, jobs);
  }
  auto* coord = start_coordinator(opt, db_url, log_path, state_dir);
  res.ready_s = coord->ready_s;
  auto pid = coord->pid;
  std::cerr << "  " << tag << ": coordinator pid " << pid << " ready in "
            << coord->ready_s << " s (log " << log_path << ")" << std::endl;
  auto stats = std::make_shared<sim_stats>();
  {
    caf::actor_system_config cfg;
    register_types(cfg);
    cfg.load<caf::io::middleman>();
    cfg.set("scheduler.max-threads", size_t{2});
    cfg.set("scheduler.policy", caf::atom("sharing"));
    cfg.set("middleman.heartbeat-interval", caf::timespan{1s});
    caf::actor_system sys{cfg};
    auto ep = sys.middleman().remote_actor<cluster_endpoint_actor>(
        "127.0.0.1", static_cast<uint16_t>(coord->cluster_port));
    if (!ep) {
      std::cerr << "cannot reach the cluster port: " << sys.render(ep.error())
                << std::endl;
      std::exit(3);
    }
    if (jobs > 0) {
      // The queue holds every preloaded job before the first node joins.
      auto t0 = steady::now();
      if (!wait_for(
              [&] {
                return queue_depth(opt, coord->admin_port)
                       >= static_cast<int64_t>(jobs);
              },
              100ms, 300s))
        fail("the coordinator did not recover the queue");
      res.recovery_s = seconds_since(t0);
    } else {
      std::this_thread::sleep_for(1s); // settle after ready
      res.rss_ready = proc_status_bytes(pid, "VmRSS");
      auto c0 = pid_cpu_seconds(pid);
      auto t0 = steady::now();
      std::this_thread::sleep_for(3s);
      res.idle0_cpu_per_s = (pid_cpu_seconds(pid) - c0) / seconds_since(t0);
    }
    // The join storm: every node says hello at once.
    auto pg_pids = pg_pids_of(opt.pg_url, db);
    auto pg0 = pids_cpu_seconds(pg_pids);
    auto m0 = machine_jiffies();
    auto cpu0 = pid_cpu_seconds(pid);
    auto bench0 = process_cpu_seconds();
    auto t0 = steady::now();
    std::vector<sim_agent_actor> agents;
    agents.reserve(workers);
    for (uint32_t i = 0; i < workers; ++i)
      agents.push_back(sys.spawn(sim_agent, "sim-" + std::to_string(i),
                                 slots_each, *ep, stats, join_secret));
    stats->window = jobs > 0 ? 2 : 0;
    if (!wait_for(
            [&] {
              return stats->joined.load() + stats->refused.load() >= workers;
            },
            5ms, 300s)
        || stats->refused > 0)
      fail("only " + std::to_string(stats->joined.load()) + " of "
           + std::to_string(workers) + " nodes joined");
    res.join_s = seconds_since(t0);
    res.join_cpu_s = pid_cpu_seconds(pid) - cpu0;
    std::cerr << "  " << tag << ": " << stats->joined << " nodes joined in "
              << res.join_s << " s" << std::endl;
    if (jobs == 0) {
      auto nodes = ctl(opt, coord->admin_port, "nodes --json");
      res.admin_connected = count_of(nodes, "\"connected\":true");
      if (res.admin_connected != workers)
        fail("the admin node list shows " + std::to_string(res.admin_connected)
             + " connected nodes");
      std::this_thread::sleep_for(2s); // settle: four heartbeat rounds
      res.rss_joined = proc_status_bytes(pid, "VmRSS");
      stats->window = 1;
      auto c0 = pid_cpu_seconds(pid);
      auto ti = steady::now();
      std::this_thread::sleep_for(5s);
      res.idleN_cpu_per_s = (pid_cpu_seconds(pid) - c0) / seconds_since(ti);
      stats->window = 0;
      res.rss_after_idle = proc_status_bytes(pid, "VmRSS");
      res.hwm = proc_status_bytes(pid, "VmHWM");
      beat_summary(*stats, 1, res.idle_beat_p50_us, res.idle_beat_p99_us,
                   res.idle_beat_max_us);
    } else {
      // Until every outcome is reported, then until the audit log holds
      // every `completed` event.
      auto progress
          = [&] { return stats->reported.load() + stats->settled.load(); };
      uint64_t last = progress();
      auto since = steady::now();
      while (stats->reported.load() < jobs) {
        if (progress() != last) {
          last = progress();
          since = steady::now();
        } else if (steady::now() - since > 60s) {
          fail("the drain stalled at " + std::to_string(stats->reported.load())
               + " reported outcomes");
          break;
        }
        std::this_thread::sleep_for(5ms);
      }
      if (res.ok
          && !wait_for(
              [&] {
                return sql_count(db_url,
                                 "SELECT count(*) FROM drover.events WHERE "
                                     + kind_is(event_kind::completed))
                       >= jobs;
              },
              10ms, 60s))
        fail("not every job completed in the audit log");
      res.drain_cpu_s = pid_cpu_seconds(pid) - cpu0;
      res.drain_wall_s = seconds_since(t0);
      res.bench_cpu_s = process_cpu_seconds() - bench0;
      res.pg_cpu_s = pids_cpu_seconds(pg_pids) - pg0;
      auto m1 = machine_jiffies();
      res.machine_busy = (m1.first - m0.first) / (m1.second - m0.second);
      stats->window = 0;
      res.hwm = proc_status_bytes(pid, "VmHWM");
      beat_summary(*stats, 2, res.drain_beat_p50_us, res.drain_beat_p99_us,
                   res.drain_beat_max_us);
    }
    {
      std::lock_guard<std::mutex> g{stats->mx};
      res.join_p50_ms = percentile(stats->join_ms, 0.5);
      res.join_p99_ms = percentile(stats->join_ms, 0.99);
      res.join_max_ms = stats->join_ms.empty()
                            ? 0
                            : *std::max_element(stats->join_ms.begin(),
                                                stats->join_ms.end());
      res.first_error = stats->first_error;
    }
    if (opt.hold_s > 0) {
      std::cerr << "  " << tag << ": holding, nodes connected" << std::endl;
      std::this_thread::sleep_for(std::chrono::duration<double>{opt.hold_s});
    }
    for (auto& a : agents)
      caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
    agents.clear();
  } // the actor system ends here (and with it the connection)
  if (opt.hold_s > 0) {
    std::cerr << "  " << tag << ": holding, nodes stopped" << std::endl;
    std::this_thread::sleep_for(std::chrono::duration<double>{opt.hold_s});
  }
  stop_coordinator(coord);
  res.hello_errors = stats->hello_errors;
  res.join_errors = stats->join_errors;
  res.leases = stats->leases;
  res.lease_batches = stats->lease_batches;
  res.reports = stats->reports;
  res.heartbeats = stats->heartbeats;
  res.heartbeat_errors = stats->heartbeat_errors;
  res.heartbeats_skipped = stats->heartbeats_skipped;
  res.report_errors = stats->report_errors;
  res.superseded = stats->superseded;
  res.duplicate_leases = stats->duplicate_leases;
  res.settled = stats->settled;
  if (jobs > 0) {
    auto first = sql_value(db_url, "SELECT min(at_ms) FROM drover.events WHERE "
                                       + kind_is(event_kind::started));
    auto lastc = sql_value(db_url, "SELECT max(at_ms) FROM drover.events WHERE "
                                       + kind_is(event_kind::completed));
    if (!first.empty() && !lastc.empty())
      res.audit_drain_s = (std::stoll(lastc) - std::stoll(first)) / 1000.0;
    res.completed_events
        = sql_count(db_url, "SELECT count(*) FROM drover.events WHERE "
                                + kind_is(event_kind::completed));
    res.completed_jobs = sql_count(
        db_url, "SELECT count(*) FROM drover.jobs WHERE status = "
                    + std::to_string(static_cast<int>(job_status::completed)));
    res.twice = sql_count(
        db_url, "SELECT count(*) FROM (SELECT job_id FROM drover.events WHERE "
                    + kind_is(event_kind::completed)
                    + " GROUP BY job_id HAVING count(*) > 1) t");
    res.lease_expired
        = sql_count(db_url, "SELECT count(*) FROM drover.events WHERE "
                                + kind_is(event_kind::lease_expired));
    res.report_rejected
        = sql_count(db_url, "SELECT count(*) FROM drover.events WHERE "
                                + kind_is(event_kind::report_rejected));
    res.worker_lost
        = sql_count(db_url, "SELECT count(*) FROM drover.events WHERE "
                                + kind_is(event_kind::worker_lost));
    if (res.completed_events != jobs || res.completed_jobs != jobs
        || res.twice != 0)
      fail("verification failed: " + std::to_string(res.completed_events)
           + " completed events, " + std::to_string(res.completed_jobs)
           + " completed jobs, " + std::to_string(res.twice)
           + " jobs completed twice, of " + std::to_string(jobs));
  }
  drop_db(opt.pg_url, db);
  if (res.ok)
    unlink(log_path.c_str());
  else
    res.problem += " (coordinator log: " + log_path + ")";
  return res;
}

} // namespace drover::bench::workers
