// drover_bench_drain: B1 (preload N jobs, then drain with durable
// completion) and B7 (the same as worker slots are added) of issue 6, on
// one node's job system in this process, with the memory store (D0) or the
// PostgreSQL store (D2: every submit acknowledged after COMMIT, every
// completion committed, fsync and synchronous_commit on).
//
//   drover_bench_drain --store postgres --pg-url URL --jobs 100000
//                      --slots 4 --job-us 0 --runs 3 [--workload B1|B7]
//                      [--perf-ctl FIFO] [--executor cache|thread] [--scheduler
//                      stealing|sharing]
//                      [--fence on|off] [--flow off|on|both]
//
// Per run: a fresh job system (and, for postgres, a fresh database created
// from --pg-url's server); N jobs submitted through the queue with a window
// of --window outstanding submits while every worker's first attempt is
// held back; then the hold is released and the drain is timed until the
// queue has counted N completions; then the completions are verified: the
// queue's counters, and for postgres `SELECT count(*)` of completed jobs
// and of `completed` events in the audit log. A job of --job-us > 0 sleeps
// that long in its handler (a job that waits, not one that computes).
//
// CPU over the drain: this process (getrusage), and the PostgreSQL
// processes serving the run's database (its backends plus the cluster's
// auxiliary processes: WAL writer, checkpointer, ...; other databases'
// backends are left out).
//
// --executor cache (the default) runs attempt bodies as a node does: on
// threads of their own, reused through runtime/thread_cache.hpp.
// --executor thread starts a new thread per attempt instead (what Drover
// did before the cache): an analysis variant that shows what a thread
// start per attempt costs. --perf-ctl FIFO writes "enable" to a `perf record
// --control fifo:FIFO -D -1` control FIFO when the drain starts and
// "disable" when it ends, so a profile covers the drain only.
//
// --fence on (the default, what drover-node does) takes the database's
// partition leases before the store starts and gives the store their fence:
// every write transaction then checks the 64 lease rows FOR SHARE
// (runtime/pg_lease.hpp). --fence off measures the store without it.
//
// --flow on gives every job a rate limiter (1,000,000/s: never the
// bottleneck) and a circuit breaker (never opens), so the drain pays for a
// limit check, a token and a breaker outcome per job; --flow both
// alternates runs without and with them in the same process, and first
// times 10,000,000 limit checks (flow_control::gate + take) on one thread.
//
// Prints one JSON line per run and one summary line (medians, ranges);
// exit 4 if any run lost or failed a job.

#include "benchmarks/issue6_support.hpp"
#include "runtime/flow_control.hpp"
#include "runtime/pg_lease.hpp"

#include <fcntl.h>

using namespace drover;
using namespace drover::bench;
using namespace std::chrono_literals;

namespace {

struct options {
  std::string store = "memory";
  std::string pg_url;
  std::string workload = "B1";
  std::string perf_ctl;
  std::string executor = "cache";
  uint64_t jobs = 100000;
  std::vector<uint32_t> slots{4};
  int64_t job_us = 0;
  uint64_t window = 2000;
  size_t threads = 2;
  /// CAF scheduling policy: stealing (the node's default) or sharing.
  std::string scheduler = "stealing";
  int runs = 1;
  /// postgres: check the partition leases in every write ("on"/"off").
  std::string fence = "on";
  /// A rate limiter and a breaker on every job: "off", "on" or "both".
  std::string flow = "off";
};

/// The limiter and breaker of --flow on: never the bottleneck.
flow_limits bench_flow() {
  flow_limits f;
  f.rates["bench"] = {1e6, 1e6, {}};
  f.breakers["bench"] = {1000000, 30000, 1, {}, {}};
  return f;
}

/// Nanoseconds per limit check (gate + take) on one thread.
double limit_check_ns() {
  int64_t now = 1;
  flow_control f{bench_flow(), now};
  auto flow = f.intern("bench", "bench");
  const int n = 10000000;
  uint64_t passed = 0;
  auto t0 = steady::now();
  for (int i = 0; i < n; ++i) {
    now += 1; // 1 ms: 1,000 tokens, far more than one a check
    if (!f.gate(flow, now)) {
      f.take(flow, now);
      ++passed;
    }
  }
  auto s = seconds_since(t0);
  if (passed != static_cast<uint64_t>(n)) {
    std::cerr << "limit check: " << passed << " of " << n << " passed\n";
    std::exit(4);
  }
  return s * 1e9 / n;
}

struct run_result {
  double submit_per_s = 0;
  double drain_per_s = 0;
  double drain_s = 0;
  double cpu_s_per_job = 0;
  double pg_cpu_s_per_job = 0;
  uint64_t completed = 0;
  uint64_t verified = 0;
  int64_t jobs_updates = -1, jobs_hot_updates = -1; // drover.jobs, whole run
  std::array<double, 3> load_start{};
  bool ok = true;
  std::string problem;
};

void perf_ctl(const std::string& fifo, const char* cmd) {
  if (fifo.empty())
    return;
  int fd = ::open(fifo.c_str(), O_WRONLY);
  if (fd < 0) {
    std::cerr << "cannot open " << fifo << std::endl;
    return;
  }
  auto n = ::write(fd, cmd, std::strlen(cmd));
  (void)n;
  ::close(fd);
}

run_result run_once(const options& opt, uint32_t slots, int run_no,
                    bool with_flow) {
  run_result res;
  res.load_start = loadavg();
  caf::actor_system_config cfg;
  register_types(cfg);
  cfg.set("scheduler.max-threads", opt.threads);
  cfg.set("scheduler.policy", caf::atom_from_string(opt.scheduler));
  caf::actor_system sys{cfg};
  std::string db, db_url;
  if (opt.store == "postgres") {
    db = "drover_bench_drain_" + std::to_string(getpid()) + "_"
         + std::to_string(run_no);
    db_url = create_db(opt.pg_url, db);
    require_d2(db_url);
  }
  std::shared_ptr<const pg::write_fence> fence;
  if (!db_url.empty() && opt.fence == "on") {
    // As drover-node does before its store starts; a TTL longer than any
    // run, so no renewal is needed.
    auto grant = pg::claim_coordinator(db_url, pg::this_process("bench"),
                                       std::chrono::hours{1});
    if (!grant) {
      std::cerr << "cannot take the leases: " << describe(grant.error())
                << std::endl;
      std::exit(2);
    }
    fence = grant->fence();
  }
  auto hold = std::make_shared<gate>();
  auto handlers = std::make_shared<handler_registry>();
  auto job_us = opt.job_us;
  handlers->register_handler("noop", [hold, job_us](task_context&) {
    hold->wait();
    if (job_us > 0)
      std::this_thread::sleep_for(
          std::chrono::microseconds{job_us}); // the job's work
    return task_outcome::success();
  });
  // Empty: the job system's default executor (the thread cache).
  std::function<void(std::function<void()>)> exec;
  if (opt.executor == "thread")
    exec = [](std::function<void()> f) { std::thread{std::move(f)}.detach(); };
  auto rs = start_system(sys, {{"cpu", slots}}, handlers, db_url, exec, fence,
                         with_flow ? bench_flow() : flow_limits{});
  caf::scoped_actor self{sys};
  wait_idle_workers(self, rs, slots);
  auto queue = rs.handles->queue();
  submit_request req;
  req.type = "noop";
  if (with_flow) {
    req.rate_limit_key = "bench";
    req.breaker_key = "bench";
  }
  std::string first_error;
  auto sub = preload(sys, queue, req, opt.jobs, opt.window, first_error);
  res.submit_per_s = sub.ok / sub.seconds;
  if (sub.errors > 0) {
    res.ok = false;
    res.problem
        = std::to_string(sub.errors) + " submits failed: " + first_error;
  }
  auto pids = db.empty() ? std::vector<int>{} : pg_pids_of(opt.pg_url, db);
  auto cpu0 = process_cpu_seconds();
  auto pg0 = pids_cpu_seconds(pids);
  perf_ctl(opt.perf_ctl, "enable\n");
  auto t0 = steady::now();
  hold->release();
  // Completions are counted by the queue once the store acknowledged them.
  uint64_t last = 0;
  auto stalled_since = steady::now();
  for (;;) {
    auto s = get_stats(self, rs);
    uint64_t done = s ? s->completed + s->failed + s->cancelled : last;
    if (done >= sub.ok)
      break;
    if (done != last) {
      last = done;
      stalled_since = steady::now();
    } else if (steady::now() - stalled_since > 30s) {
      res.ok = false;
      res.problem = "stalled at " + std::to_string(done) + " of "
                    + std::to_string(sub.ok);
      break;
    }
    std::this_thread::sleep_for(2ms); // polling the counter; 2 ms resolution
  }
  res.drain_s = seconds_since(t0);
  perf_ctl(opt.perf_ctl, "disable\n");
  auto cpu = process_cpu_seconds() - cpu0;
  auto pg_cpu = pids_cpu_seconds(pids) - pg0;
  auto s = get_stats(self, rs);
  res.completed = s ? s->completed : 0;
  res.drain_per_s = res.completed / res.drain_s;
  res.cpu_s_per_job = res.completed > 0 ? cpu / res.completed : 0;
  res.pg_cpu_s_per_job = res.completed > 0 ? pg_cpu / res.completed : 0;
  stop_system(sys, rs);
  if (!db_url.empty()) {
    auto jobs = sql_value(
        db_url, "SELECT count(*) FROM drover.jobs WHERE status = "
                    + std::to_string(static_cast<int>(job_status::completed)));
    auto events = sql_value(
        db_url, "SELECT count(*) FROM drover.events WHERE kind = "
                    + std::to_string(static_cast<int>(event_kind::completed)));
    res.verified = std::strtoull(jobs.c_str(), nullptr, 10);
    // Row updates of drover.jobs and how many were HOT (no index entries
    // written); the store's connections are closed, so the statistics are
    // flushed.
    std::vector<std::string> upd;
    if (sql(db_url,
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables "
            "WHERE schemaname = 'drover' AND relname = 'jobs'",
            &upd)
        && upd.size() == 2) {
      res.jobs_updates = std::atoll(upd[0].c_str());
      res.jobs_hot_updates = std::atoll(upd[1].c_str());
    }
    if (res.verified != sub.ok
        || std::strtoull(events.c_str(), nullptr, 10) != sub.ok) {
      res.ok = false;
      res.problem += " verification: " + jobs + " completed jobs, " + events
                     + " completed events, expected " + std::to_string(sub.ok);
    }
    drop_db(opt.pg_url, db);
  } else {
    res.verified = res.completed;
  }
  if (res.completed != sub.ok) {
    res.ok = false;
    res.problem += " queue counted " + std::to_string(res.completed)
                   + " completions of " + std::to_string(sub.ok);
  }
  return res;
}

void usage() {
  std::cerr << "usage: drover_bench_drain [--store memory|postgres] "
               "[--pg-url URL] [--jobs N] [--slots 1,2,4] [--job-us N] "
               "[--window N] [--threads N] [--runs N] [--workload B1|B7] "
               "[--perf-ctl FIFO] [--executor cache|thread] [--scheduler "
               "stealing|sharing] "
               "[--fence on|off] [--flow off|on|both]\n";
}

} // namespace

int main(int argc, char** argv) {
  options opt;
  option_reader args{argc, argv};
  while (args.next()) {
    if (args.key() == "--store")
      opt.store = args.value();
    else if (args.key() == "--pg-url")
      opt.pg_url = args.value();
    else if (args.key() == "--jobs")
      opt.jobs = std::strtoull(args.value().c_str(), nullptr, 10);
    else if (args.key() == "--slots")
      opt.slots = parse_list<uint32_t>(args.value());
    else if (args.key() == "--job-us")
      opt.job_us = std::strtoll(args.value().c_str(), nullptr, 10);
    else if (args.key() == "--window")
      opt.window = std::strtoull(args.value().c_str(), nullptr, 10);
    else if (args.key() == "--scheduler")
      opt.scheduler = args.value();
    else if (args.key() == "--threads")
      opt.threads = std::strtoul(args.value().c_str(), nullptr, 10);
    else if (args.key() == "--runs")
      opt.runs = std::max(1, std::atoi(args.value().c_str()));
    else if (args.key() == "--workload")
      opt.workload = args.value();
    else if (args.key() == "--perf-ctl")
      opt.perf_ctl = args.value();
    else if (args.key() == "--executor")
      opt.executor = args.value();
    else if (args.key() == "--flow")
      opt.flow = args.value();
    else if (args.key() == "--fence")
      opt.fence = args.value();
    else {
      usage();
      return 2;
    }
  }
  if ((opt.store != "memory" && opt.store != "postgres")
      || (opt.executor != "cache" && opt.executor != "thread")
      || (opt.scheduler != "stealing" && opt.scheduler != "sharing")
      || (opt.fence != "on" && opt.fence != "off")
      || (opt.flow != "on" && opt.flow != "off" && opt.flow != "both")) {
    usage();
    return 2;
  }
  if (opt.store == "postgres" && opt.pg_url.empty()) {
    std::cerr << "--store postgres needs --pg-url\n";
    return 2;
  }
  if (opt.slots.empty()) {
    usage();
    return 2;
  }
  const char* durability = opt.store == "postgres" ? "D2" : "D0";
  bool all_ok = true;
  std::vector<bool> modes;
  if (opt.flow != "on")
    modes.push_back(false);
  if (opt.flow != "off")
    modes.push_back(true);
  if (opt.flow == "both") {
    json_line j;
    j.str("system", "drover")
        .str("workload", "limit check")
        .num("limit_check_ns", limit_check_ns(), 1)
        .load();
    j.print();
  }
  for (auto slots : opt.slots) {
    std::map<bool, std::vector<double>> drains, submits, cpus, pg_cpus;
    // Runs alternate between the modes: both see the same machine.
    for (int r = 0; r < opt.runs; ++r)
      for (bool with_flow : modes) {
        auto res = run_once(opt, slots, r, with_flow);
        all_ok = all_ok && res.ok;
        drains[with_flow].push_back(res.drain_per_s);
        submits[with_flow].push_back(res.submit_per_s);
        cpus[with_flow].push_back(res.cpu_s_per_job);
        pg_cpus[with_flow].push_back(res.pg_cpu_s_per_job);
        json_line j;
        j.str("system", "drover")
            .str("workload", opt.workload)
            .str("durability", durability)
            .str("store", opt.store)
            .str("executor", opt.executor)
            .str("scheduler", opt.scheduler)
            .str("fence", opt.store == "postgres" ? opt.fence : "n/a")
            .str("flow", with_flow ? "limiter+breaker" : "none")
            .integer("slots", slots)
            .integer("job_us", opt.job_us)
            .integer("jobs", static_cast<int64_t>(opt.jobs))
            .integer("run", r + 1)
            .integer("completed", static_cast<int64_t>(res.completed))
            .integer("verified", static_cast<int64_t>(res.verified))
            .num("preload_submits_per_s", res.submit_per_s)
            .num("drain_seconds", res.drain_s, 3)
            .num("drain_jobs_per_s", res.drain_per_s)
            .num("cpu_s_per_job", res.cpu_s_per_job, 8)
            .num("postgres_cpu_s_per_job", res.pg_cpu_s_per_job, 8)
            .integer("jobs_row_updates", res.jobs_updates)
            .integer("jobs_row_hot_updates", res.jobs_hot_updates)
            .load("loadavg_at_start", res.load_start)
            .load("loadavg_at_end")
            .boolean("ok", res.ok);
        if (!res.ok)
          j.str("problem", res.problem);
        j.print();
      }
    for (bool with_flow : modes) {
      auto& d = drains[with_flow];
      json_line j;
      j.boolean("summary", true)
          .str("system", "drover")
          .str("workload", opt.workload)
          .str("durability", durability)
          .str("executor", opt.executor)
          .str("scheduler", opt.scheduler)
          .str("flow", with_flow ? "limiter+breaker" : "none")
          .integer("slots", slots)
          .integer("job_us", opt.job_us)
          .integer("jobs", static_cast<int64_t>(opt.jobs))
          .integer("runs", opt.runs)
          .num("drain_jobs_per_s_median", median(d))
          .num("drain_min", *std::min_element(d.begin(), d.end()))
          .num("drain_max", *std::max_element(d.begin(), d.end()))
          .num("preload_submits_per_s_median", median(submits[with_flow]))
          .num("cpu_s_per_job_median", median(cpus[with_flow]), 8)
          .num("postgres_cpu_s_per_job_median", median(pg_cpus[with_flow]), 8);
      if (modes.size() == 2 && with_flow)
        j.num("drain_ratio_with_to_without", median(d) / median(drains[false]),
              3);
      j.load();
      j.print();
    }
  }
  return all_ok ? 0 : 4;
}
