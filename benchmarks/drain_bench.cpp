// drover_bench_drain: B1 (preload N no-op jobs, then drain with durable
// completion) and B7 (the same as worker slots are added) of issue 6, on
// one node's job system in this process, with the memory store (D0) or the
// PostgreSQL store (D2: every submit acknowledged after COMMIT, every
// completion committed, fsync and synchronous_commit on).
//
//   drover_bench_drain --store postgres --pg-url URL --jobs 100000
//                      --slots 4 --job-us 0 --runs 3
//
// Per run: a fresh job system (and, for postgres, a fresh database created
// from --pg-url's server); N jobs submitted through the queue with a window
// of --window outstanding submits while every worker's first attempt is
// held back; then the hold is released and the drain is timed until the
// queue has counted N completions; then the completions are verified: the
// queue's counters, and for postgres `SELECT count(*)` of completed jobs
// and of `completed` events in the audit log. CPU: this process
// (getrusage) plus every `postgres` process (/proc/<pid>/stat), over the
// drain. Prints one JSON line per run and one summary line (medians);
// exit 4 if any run lost or failed a job.

#include "benchmarks/bench_support.hpp"

#include "actors/job_system.hpp"
#include "actors/pg_store.hpp"
#include "runtime/errors.hpp"
#include "runtime/pg.hpp"
#include "runtime/submit.hpp"
#include "runtime/type_ids.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/exit_reason.hpp>
#include <caf/scoped_actor.hpp>

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <mutex>
#include <sstream>
#include <thread>

using namespace drover;
using namespace drover::bench;
using namespace std::chrono_literals;

namespace {

struct options {
  std::string store = "memory";
  std::string pg_url;
  uint64_t jobs = 100000;
  std::vector<uint32_t> slots{4};
  int64_t job_us = 0;
  uint64_t window = 2000;
  size_t threads = 2;
  int runs = 1;
};

/// Holds the attempts back until released (each attempt runs on its own
/// thread, the default executor, so a held attempt blocks only its thread).
struct hold {
  std::mutex mx;
  std::condition_variable cv;
  bool open = false;
  void wait() {
    std::unique_lock<std::mutex> lock{mx};
    cv.wait(lock, [this] { return open; });
  }
  void release() {
    {
      std::lock_guard<std::mutex> guard{mx};
      open = true;
    }
    cv.notify_all();
  }
};

double process_cpu_seconds() {
  rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec
         + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/// CPU seconds of every process named "postgres" (server and backends).
double postgres_cpu_seconds() {
  double total = 0;
  auto ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  DIR* d = opendir("/proc");
  if (!d)
    return 0;
  while (auto* e = readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9')
      continue;
    std::ifstream in{std::string{"/proc/"} + e->d_name + "/stat"};
    std::string line;
    if (!std::getline(in, line))
      continue;
    auto open = line.find('(');
    auto close = line.rfind(')');
    if (open == std::string::npos || close == std::string::npos
        || line.substr(open + 1, close - open - 1) != "postgres")
      continue;
    std::istringstream rest{line.substr(close + 2)};
    std::string field;
    double utime = 0, stime = 0;
    for (int i = 3; i <= 15 && rest >> field; ++i) {
      if (i == 14)
        utime = std::atof(field.c_str());
      if (i == 15)
        stime = std::atof(field.c_str());
    }
    total += (utime + stime) / ticks;
  }
  closedir(d);
  return total;
}

/// URL of database `db` on the server of `url` (libpq URI form
/// postgresql:///name?...).
std::string with_db(const std::string& url, const std::string& db) {
  auto p = url.find("///");
  auto q = url.find('?');
  if (p == std::string::npos)
    return url;
  return url.substr(0, p + 3) + db + (q == std::string::npos ? "" : url.substr(q));
}

bool sql(const std::string& url, const std::string& stmt,
         std::string* first_value = nullptr) {
  auto s = pg::connection::open(url);
  if (!s) {
    std::cerr << "cannot connect: " << describe(s.error()) << std::endl;
    return false;
  }
  auto r = s->exec(stmt);
  if (!r) {
    std::cerr << stmt << ": " << describe(r.error()) << std::endl;
    return false;
  }
  if (first_value && r->rows() > 0)
    *first_value = std::string{r->value(0, 0)};
  return true;
}

struct run_result {
  double submit_per_s = 0;
  double drain_per_s = 0;
  double cpu_s_per_job = 0;
  double pg_cpu_s_per_job = 0;
  uint64_t completed = 0;
  uint64_t verified = 0;
  bool ok = true;
  std::string problem;
};

run_result run_once(const options& opt, uint32_t slots, int run_no) {
  run_result res;
  caf::actor_system_config cfg;
  register_types(cfg);
  cfg.set("scheduler.max-threads", opt.threads);
  caf::actor_system sys{cfg};
  std::string db_url;
  if (opt.store == "postgres") {
    auto db = "drover_bench_drain_" + std::to_string(getpid()) + "_"
              + std::to_string(run_no);
    if (!sql(opt.pg_url, "DROP DATABASE IF EXISTS " + db)
        || !sql(opt.pg_url, "CREATE DATABASE " + db))
      std::exit(2);
    db_url = with_db(opt.pg_url, db);
  }
  auto gate = std::make_shared<hold>();
  auto handlers = std::make_shared<handler_registry>();
  auto job_us = opt.job_us;
  handlers->register_handler("noop", [gate, job_us](task_context&) {
    gate->wait();
    if (job_us > 0)
      std::this_thread::sleep_for(std::chrono::microseconds{job_us}); // the job's work
    return task_outcome::success();
  });
  job_system_config jc;
  jc.slots = {{"cpu", slots}};
  jc.handlers = handlers;
  if (!db_url.empty()) {
    pg_store_config pc;
    pc.conninfo = db_url;
    jc.make_store = [pc](caf::actor_system& s) { return spawn_pg_store(s, pc); };
  }
  auto handles = std::make_shared<job_system_handles>();
  supervisor_spec spec{"bench", {}, {job_system_child(jc, handles)}};
  auto root = spawn_supervisor(sys, spec);
  if (!root) {
    std::cerr << "cannot start: " << describe(root.error()) << std::endl;
    std::exit(2);
  }
  caf::scoped_actor self{sys};
  auto stats = [&]() -> caf::optional<queue_stats> {
    caf::optional<queue_stats> out;
    if (auto q = handles->queue())
      self->request(q, 5s, stats_atom::value)
        .receive([&](queue_stats& s) { out = s; }, [](caf::error&) {});
    return out;
  };
  // Ready: every worker announced itself.
  auto deadline = steady::now() + 30s;
  for (;;) {
    if (auto s = stats(); s && s->idle_workers == slots)
      break;
    if (steady::now() > deadline) {
      std::cerr << "the job system did not start" << std::endl;
      std::exit(3);
    }
    std::this_thread::sleep_for(1ms);
  }
  auto queue = handles->queue();
  submit_request req;
  req.type = "noop";
  auto first_error = std::make_shared<std::string>();
  auto sub = run_windowed(
    sys, opt.jobs, opt.window,
    [queue, req, first_error](caf::event_based_actor* a, uint64_t,
                              std::function<void(bool)> done) {
      a->request(queue, caf::infinite, submit_atom::value, req)
        .then([done](job_record&) { done(true); },
              [done, first_error](caf::error& err) {
                if (first_error->empty())
                  *first_error = describe(err);
                done(false);
              });
    });
  res.submit_per_s = sub.ok / sub.seconds;
  if (sub.errors > 0) {
    res.ok = false;
    res.problem = std::to_string(sub.errors) + " submits failed: " + *first_error;
  }
  auto cpu0 = process_cpu_seconds();
  auto pg0 = db_url.empty() ? 0 : postgres_cpu_seconds();
  auto t0 = steady::now();
  gate->release();
  // Completions are counted by the queue once the store acknowledged them.
  uint64_t last = 0;
  auto stalled_since = steady::now();
  for (;;) {
    auto s = stats();
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
  auto secs = seconds_since(t0);
  auto cpu = process_cpu_seconds() - cpu0;
  auto pg_cpu = db_url.empty() ? 0 : postgres_cpu_seconds() - pg0;
  auto s = stats();
  res.completed = s ? s->completed : 0;
  res.drain_per_s = res.completed / secs;
  res.cpu_s_per_job = res.completed > 0 ? cpu / res.completed : 0;
  res.pg_cpu_s_per_job = res.completed > 0 ? pg_cpu / res.completed : 0;
  self->monitor(*root);
  self->send_exit(*root, caf::exit_reason::user_shutdown);
  self->receive([](caf::down_msg&) {});
  if (!db_url.empty()) {
    std::string jobs, events;
    sql(db_url,
        "SELECT count(*) FROM drover.jobs WHERE status = "
          + std::to_string(static_cast<int>(job_status::completed)),
        &jobs);
    sql(db_url,
        "SELECT count(*) FROM drover.events WHERE kind = "
          + std::to_string(static_cast<int>(event_kind::completed)),
        &events);
    res.verified = std::strtoull(jobs.c_str(), nullptr, 10);
    if (res.verified != sub.ok || std::strtoull(events.c_str(), nullptr, 10) != sub.ok) {
      res.ok = false;
      res.problem += " verification: " + jobs + " completed jobs, " + events
                     + " completed events, expected " + std::to_string(sub.ok);
    }
    auto db = db_url.substr(db_url.find("///") + 3);
    db = db.substr(0, db.find('?'));
    sql(opt.pg_url, "DROP DATABASE IF EXISTS " + db);
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

} // namespace

int main(int argc, char** argv) {
  options opt;
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << k << " needs a value\n";
        std::exit(2);
      }
      return argv[++i];
    };
    if (k == "--store")
      opt.store = next();
    else if (k == "--pg-url")
      opt.pg_url = next();
    else if (k == "--jobs")
      opt.jobs = std::strtoull(next().c_str(), nullptr, 10);
    else if (k == "--slots") {
      opt.slots.clear();
      std::stringstream ss{next()};
      std::string item;
      while (std::getline(ss, item, ','))
        opt.slots.push_back(static_cast<uint32_t>(std::stoul(item)));
    } else if (k == "--job-us")
      opt.job_us = std::strtoll(next().c_str(), nullptr, 10);
    else if (k == "--window")
      opt.window = std::strtoull(next().c_str(), nullptr, 10);
    else if (k == "--threads")
      opt.threads = std::strtoul(next().c_str(), nullptr, 10);
    else if (k == "--runs")
      opt.runs = std::atoi(next().c_str());
    else {
      std::cerr << "usage: drover_bench_drain [--store memory|postgres] "
                   "[--pg-url URL] [--jobs N] [--slots 1,2,4] [--job-us N] "
                   "[--window N] [--threads N] [--runs N]\n";
      return 2;
    }
  }
  if (opt.store == "postgres" && opt.pg_url.empty()) {
    std::cerr << "--store postgres needs --pg-url\n";
    return 2;
  }
  const char* durability = opt.store == "postgres" ? "D2" : "D0";
  bool all_ok = true;
  for (auto slots : opt.slots) {
    std::vector<double> drains, submits, cpus, pg_cpus;
    for (int r = 0; r < opt.runs; ++r) {
      auto res = run_once(opt, slots, r);
      all_ok = all_ok && res.ok;
      drains.push_back(res.drain_per_s);
      submits.push_back(res.submit_per_s);
      cpus.push_back(res.cpu_s_per_job);
      pg_cpus.push_back(res.pg_cpu_s_per_job);
      std::printf("{\"system\":\"drover\",\"workload\":\"B1\",\"durability\":"
                  "\"%s\",\"store\":\"%s\",\"slots\":%u,\"job_us\":%lld,"
                  "\"jobs\":%llu,\"completed\":%llu,\"verified\":%llu,"
                  "\"preload_submits_per_s\":%.0f,\"drain_jobs_per_s\":%.0f,"
                  "\"cpu_s_per_job\":%.8f,\"postgres_cpu_s_per_job\":%.8f,"
                  "\"ok\":%s%s%s%s}\n",
                  durability, opt.store.c_str(), slots,
                  static_cast<long long>(opt.job_us),
                  static_cast<unsigned long long>(opt.jobs),
                  static_cast<unsigned long long>(res.completed),
                  static_cast<unsigned long long>(res.verified),
                  res.submit_per_s, res.drain_per_s, res.cpu_s_per_job,
                  res.pg_cpu_s_per_job, res.ok ? "true" : "false",
                  res.ok ? "" : ",\"problem\":\"", res.problem.c_str(),
                  res.ok ? "" : "\"");
      std::fflush(stdout);
    }
    std::printf("{\"summary\":true,\"workload\":\"B1\",\"durability\":\"%s\","
                "\"slots\":%u,\"job_us\":%lld,\"runs\":%d,"
                "\"drain_jobs_per_s_median\":%.0f,\"drain_min\":%.0f,"
                "\"drain_max\":%.0f,\"preload_submits_per_s_median\":%.0f,"
                "\"cpu_s_per_job_median\":%.8f,"
                "\"postgres_cpu_s_per_job_median\":%.8f}\n",
                durability, slots, static_cast<long long>(opt.job_us),
                opt.runs, median(drains),
                *std::min_element(drains.begin(), drains.end()),
                *std::max_element(drains.begin(), drains.end()),
                median(submits), median(cpus), median(pg_cpus));
  }
  return all_ok ? 0 : 4;
}
