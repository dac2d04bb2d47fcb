// drover_bench_deep: B4 of issue 6 — a deep queue.
//
//   drover_bench_deep --pg-url URL [--jobs 1000000] [--slots 32]
//                     [--drain-jobs 100000] [--late-s 31] [--store memory]
//
// Phase A, queued jobs with no workers of their class: a job system (PostgreSQL
// store, D2) whose only workers serve another class receives N submits of
// a no-op type with input {"n":1} (7 bytes). Measured before and after:
//   - the process: heap in use (glibc mallinfo2: uordblks + hblkhd, every
//     arena, C and C++ allocations alike) and RSS;
//   - PostgreSQL: pg_table_size and pg_indexes_size of drover.jobs and
//     drover.events (table, TOAST, free-space and visibility maps; indexes
//     separately).
// The heap is measured again --late-s later, after CAF's 30 s request
// timeouts have expired (see docs/benchmarks.md, D0 findings).
//
// Phase B, the drain from that deep queue: the first system stops, a new
// one with --slots workers of the jobs' class starts on the same database
// and recovers the N queued jobs (the workers' first attempts are held
// until recovery is complete, so that it is timed on its own and the heap
// of the recovered queue can be measured), then the hold is released and
// the first --drain-jobs completions are timed (0 = all N).
// Verification: the audit log's counts (completed = the queue's count,
// every other job still queued, N jobs in all).
//
// One JSON line. Exit 4 on a lost or failed job.

#include "benchmarks/issue6_support.hpp"

#include <malloc.h>

using namespace drover;
using namespace drover::bench;
using namespace std::chrono_literals;

namespace {

struct options {
  std::string store = "postgres";
  std::string pg_url;
  uint64_t jobs = 1000000;
  uint64_t drain_jobs = 100000;
  uint32_t slots = 32;
  uint64_t window = 2000;
  size_t threads = 2;
  double late_s = 31;
};

int64_t heap_in_use() {
  auto mi = mallinfo2();
  return static_cast<int64_t>(mi.uordblks + mi.hblkhd);
}

struct pg_sizes {
  int64_t jobs_table = 0, jobs_indexes = 0, events_table = 0,
          events_indexes = 0;
  int64_t total() const {
    return jobs_table + jobs_indexes + events_table + events_indexes;
  }
};

pg_sizes sizes_of(const std::string& url) {
  pg_sizes out;
  std::vector<std::string> row;
  if (sql(url,
          "SELECT pg_table_size('drover.jobs'), pg_indexes_size('drover.jobs'),"
          " pg_table_size('drover.events'), pg_indexes_size('drover.events')",
          &row)
      && row.size() == 4) {
    out.jobs_table = std::stoll(row[0]);
    out.jobs_indexes = std::stoll(row[1]);
    out.events_table = std::stoll(row[2]);
    out.events_indexes = std::stoll(row[3]);
  }
  return out;
}

void settle(double s = 1.0) {
  std::this_thread::sleep_for(std::chrono::duration<double>(s));
}

void usage() {
  std::cerr
      << "usage: drover_bench_deep [--store postgres|memory] [--pg-url URL]\n"
         "         [--jobs N] [--drain-jobs N] [--slots N] [--window N]\n"
         "         [--threads N] [--late-s S]\n";
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
      opt.jobs = std::stoull(args.value());
    else if (args.key() == "--drain-jobs")
      opt.drain_jobs = std::stoull(args.value());
    else if (args.key() == "--slots")
      opt.slots = static_cast<uint32_t>(std::stoul(args.value()));
    else if (args.key() == "--window")
      opt.window = std::stoull(args.value());
    else if (args.key() == "--threads")
      opt.threads = std::stoul(args.value());
    else if (args.key() == "--late-s")
      opt.late_s = std::stod(args.value());
    else {
      usage();
      return 2;
    }
  }
  bool pg = opt.store == "postgres";
  if ((!pg && opt.store != "memory") || (pg && opt.pg_url.empty())) {
    usage();
    return 2;
  }
  if (opt.drain_jobs == 0 || opt.drain_jobs > opt.jobs)
    opt.drain_jobs = opt.jobs;
  auto load0 = loadavg();
  caf::actor_system_config cfg;
  register_types(cfg);
  cfg.set("scheduler.max-threads", opt.threads);
  caf::actor_system sys{cfg};
  std::string db, db_url;
  if (pg) {
    db = "drover_bench_deep_" + std::to_string(getpid());
    db_url = create_db(opt.pg_url, db);
    require_d2(db_url);
  }
  auto hold = std::make_shared<gate>();
  auto handlers = std::make_shared<handler_registry>();
  handlers->register_handler("noop", [hold](task_context&) {
    hold->wait();
    return task_outcome::success();
  });
  bool ok = true;
  std::string problem;
  json_line j;
  j.str("system", "drover")
      .str("workload", "B4")
      .str("durability", pg ? "D2" : "D0")
      .str("store", opt.store)
      .integer("jobs", static_cast<int64_t>(opt.jobs))
      .integer("input_bytes", 7);
  // -- phase A
  // --------------------------------------------------------------------
  {
    auto rs = start_system(sys, {{"other", 1}}, handlers, db_url);
    {
      caf::scoped_actor self{sys};
      wait_idle_workers(self, rs, 1);
    }
    // One job first, so the schema exists and the connections are open.
    submit_request req;
    req.type = "noop";
    req.input = R"({"n":1})";
    std::string first_error;
    preload(sys, rs.handles->queue(), req, 1, 1, first_error);
    settle();
    auto heap0 = heap_in_use();
    auto rss0 = rss_bytes();
    auto pg0 = pg ? sizes_of(db_url) : pg_sizes{};
    auto sub = preload(sys, rs.handles->queue(), req, opt.jobs, opt.window,
                       first_error);
    if (sub.errors > 0) {
      ok = false;
      problem += std::to_string(sub.errors) + " submits failed: " + first_error;
    }
    settle();
    auto heap1 = heap_in_use();
    auto rss1 = rss_bytes();
    auto pg1 = pg ? sizes_of(db_url) : pg_sizes{};
    uint64_t depth = 0;
    {
      caf::scoped_actor self{sys};
      if (auto s = get_stats(self, rs))
        depth = depth_of(*s);
    }
    double n = static_cast<double>(opt.jobs);
    j.num("preload_submits_per_s", sub.ok / sub.seconds)
        .integer("queued", static_cast<int64_t>(depth))
        .num("process_heap_bytes_per_queued_job", (heap1 - heap0) / n, 1)
        .num("process_rss_bytes_per_queued_job", (rss1 - rss0) / n, 1);
    if (opt.late_s > 0) {
      settle(opt.late_s);
      j.num("late_s", opt.late_s, 0)
          .num("process_heap_bytes_per_queued_job_late",
               (heap_in_use() - heap0) / n, 1)
          .num("process_rss_bytes_per_queued_job_late",
               (rss_bytes() - rss0) / n, 1);
    }
    if (pg)
      j.num("pg_bytes_per_queued_job", (pg1.total() - pg0.total()) / n, 1)
          .num("pg_jobs_table_bytes_per_job",
               (pg1.jobs_table - pg0.jobs_table) / n, 1)
          .num("pg_jobs_indexes_bytes_per_job",
               (pg1.jobs_indexes - pg0.jobs_indexes) / n, 1)
          .num("pg_events_table_bytes_per_job",
               (pg1.events_table - pg0.events_table) / n, 1)
          .num("pg_events_indexes_bytes_per_job",
               (pg1.events_indexes - pg0.events_indexes) / n, 1);
    if (depth != opt.jobs + 1) {
      ok = false;
      problem += " queue depth " + std::to_string(depth) + ", expected "
                 + std::to_string(opt.jobs + 1);
    }
    stop_system(sys, rs);
  }
  // -- phase B
  // --------------------------------------------------------------------
  if (pg) {
    uint64_t total = opt.jobs + 1;
    settle(0.5);
    auto heap0 = heap_in_use();
    auto rss0 = rss_bytes();
    auto t_start = steady::now();
    auto rs = start_system(sys, {{"cpu", opt.slots}}, handlers, db_url);
    caf::scoped_actor self{sys};
    double recovered_s = -1;
    for (;;) {
      auto s = get_stats(self, rs);
      if (s && depth_of(*s) + s->running >= total) {
        recovered_s = seconds_since(t_start);
        break;
      }
      if (seconds_since(t_start) > 600) {
        ok = false;
        problem += " recovery did not finish within 600 s";
        break;
      }
      std::this_thread::sleep_for(5ms);
    }
    settle();
    auto heap1 = heap_in_use();
    auto rss1 = rss_bytes();
    double n = static_cast<double>(total);
    j.num("recovery_s", recovered_s, 3)
        .num("process_heap_bytes_per_recovered_job", (heap1 - heap0) / n, 1)
        .num("process_rss_bytes_per_recovered_job", (rss1 - rss0) / n, 1);
    auto pids = pg_pids_of(opt.pg_url, db);
    auto cpu0 = process_cpu_seconds();
    auto pgcpu0 = pids_cpu_seconds(pids);
    auto t0 = steady::now();
    hold->release();
    uint64_t done = 0, last = 0;
    auto since = steady::now();
    for (;;) {
      auto s = get_stats(self, rs);
      done = s ? s->completed : last;
      if (s && (s->failed > 0 || s->cancelled > 0)) {
        ok = false;
        problem += " failed or cancelled jobs";
        break;
      }
      if (done >= opt.drain_jobs)
        break;
      if (done != last) {
        last = done;
        since = steady::now();
      } else if (steady::now() - since > 30s) {
        ok = false;
        problem += " drain stalled at " + std::to_string(done);
        break;
      }
      std::this_thread::sleep_for(2ms);
    }
    auto secs = seconds_since(t0);
    auto cpu = process_cpu_seconds() - cpu0;
    auto pgcpu = pids_cpu_seconds(pids) - pgcpu0;
    j.integer("slots", opt.slots)
        .integer("drained", static_cast<int64_t>(done))
        .num("drain_seconds", secs, 3)
        .num("deep_drain_jobs_per_s", done / secs)
        .num("cpu_s_per_job", cpu / std::max<uint64_t>(1, done), 8)
        .num("postgres_cpu_s_per_job", pgcpu / std::max<uint64_t>(1, done), 8);
    stop_system(sys, rs);
    auto completed = std::stoull(
        "0"
        + sql_value(db_url, "SELECT count(*) FROM drover.jobs WHERE status = "
                                + std::to_string(
                                    static_cast<int>(job_status::completed))));
    auto queued = std::stoull(
        "0"
        + sql_value(db_url, "SELECT count(*) FROM drover.jobs WHERE status = "
                                + std::to_string(
                                    static_cast<int>(job_status::queued))));
    auto all = std::stoull(
        "0" + sql_value(db_url, "SELECT count(*) FROM drover.jobs"));
    auto events = std::stoull(
        "0"
        + sql_value(db_url, "SELECT count(*) FROM drover.events WHERE kind = "
                                + std::to_string(
                                    static_cast<int>(event_kind::completed))));
    j.integer("verified_completed", static_cast<int64_t>(completed))
        .integer("verified_queued", static_cast<int64_t>(queued));
    // Attempts that were running at the shutdown end as worker_lost and go
    // back to the queue (or retrying); count every non-completed job as
    // still to do, and none may be missing.
    if (all != total || completed < done || events != completed) {
      ok = false;
      problem += " verification: " + std::to_string(completed)
                 + " completed jobs, " + std::to_string(events)
                 + " completed events, " + std::to_string(all) + " jobs of "
                 + std::to_string(total);
    }
  }
  if (pg)
    drop_db(opt.pg_url, db);
  j.load("loadavg_at_start", load0).load("loadavg_at_end").boolean("ok", ok);
  if (!ok)
    j.str("problem", problem);
  j.print();
  return ok ? 0 : 4;
}
