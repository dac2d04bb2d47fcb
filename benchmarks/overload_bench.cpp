// drover_bench_overload: an open-loop overload against a real drover-node
// (issue 15, admission control; docs/benchmarks.md). Does the node's memory
// stay bounded when submissions arrive faster than its workers drain them?
//
//   drover_bench_overload --node build/nodes/drover-node --pg-url URL
//        [--seconds 300] [--bound-mb 4] [--slots 2] [--job-ms 10]
//        [--factor 2] [--cache-jobs N]
//
// Two runs, one after the other, each on a fresh database (PostgreSQL
// store, D2): the reference with admission control's memory bound off
// (--admission-queue-memory-mb 0) and the measured one with --bound-mb.
// In each, a drover-node (all roles, --slots cpu=S) runs `sleep` jobs of
// --job-ms: its workers drain at most S * 1000 / job-ms jobs per second.
// A client (Drover::client, over the admin port) submits at --factor times
// that rate, open loop: every 100 ms a batch of rate / 10 jobs, whatever
// the answers (a batch the node refuses is counted; a tick
// whose call took longer than 100 ms makes the next ticks' batches count as
// missed, not sent later). The client's timeout is 500 ms: within it, it
// retries a batch the node refused with 503 (backpressure), as a real
// client would.
//
// Per run, one JSON line: jobs accepted and refused, the node's resident
// memory (VmRSS) at the start, at the end, its peak (sampled every 100 ms)
// and every 10 s, and the jobs waiting in the database at the end. The figure
// that matters is the RSS growth of the bounded run against the reference's, in
// the same minutes.

#include "benchmarks/issue6_support.hpp"
#include "benchmarks/node_child.hpp"
#include "drover/client.hpp"
#include "runtime/errors.hpp"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <iostream>
#include <thread>

using namespace drover;
using namespace drover::bench;
using clock_type = std::chrono::steady_clock;

namespace {

struct options {
  std::string node = "build/nodes/drover-node";
  std::string pg_url;
  int seconds = 300;
  int bound_mb = 4;
  int slots = 2;
  int job_ms = 10;
  double factor = 2;
  /// The bounded run's --store-cache-jobs (0 = the store's default).
  int cache_jobs = 0;
};

/// VmRSS of process `pid`, bytes (0 if it is gone).
int64_t rss_of(pid_t pid) {
  std::ifstream in{"/proc/" + std::to_string(pid) + "/status"};
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0)
      return std::atoll(line.c_str() + 6) * 1024;
  return 0;
}

void run(const options& o, bool bounded) {
  auto name = std::string{"drover_bench_overload_"} + (bounded ? "b" : "r");
  auto db = create_db(o.pg_url, name);
  auto log = "/tmp/" + name + ".log";
  std::vector<std::string> args{o.node,
                                "--node-id",
                                "overload",
                                "--admin-port",
                                "0",
                                "--http-port",
                                "0",
                                "--store",
                                "postgres",
                                "--pg-url",
                                db,
                                "--slots",
                                "cpu=" + std::to_string(o.slots),
                                "--admission-queue-memory-mb",
                                bounded ? std::to_string(o.bound_mb) : "0"};
  if (bounded && o.cache_jobs > 0) {
    // The store's cache is the other thing that grows with the jobs that
    // pass: bounded too in the measured run.
    args.push_back("--store-cache-jobs");
    args.push_back(std::to_string(o.cache_jobs));
  }
  auto node = spawn_node(args, log);
  auto ready = read_until(node, " node: ready ", log);
  client_options co;
  co.nodes = {"127.0.0.1:" + std::to_string(port_field(ready, "admin"))};
  // A refusal is an answer; a call that takes longer than a tick is late.
  co.timeout = std::chrono::milliseconds{500};
  auto c = client::make(co);
  if (!c) {
    std::cerr << describe(c.error()) << '\n';
    std::exit(2);
  }
  double drain_rate = o.slots * 1000.0 / o.job_ms;
  auto per_tick = std::max<size_t>(
      1, static_cast<size_t>(drain_rate * o.factor / 10.0 + 0.5));
  submit_request req;
  req.type = "sleep";
  req.input = "{\"ms\": " + std::to_string(o.job_ms) + "}";
  std::vector<submit_request> batch(per_tick, req);

  std::atomic<bool> done{false};
  std::atomic<int64_t> peak{0};
  // RSS every 10 s (MiB), to see whether it levels off.
  std::string series;
  auto rss_start = rss_of(node.pid);
  std::thread sampler{[&] {
    for (int i = 0; !done; ++i) {
      auto r = rss_of(node.pid);
      if (r > peak)
        peak = r;
      if (i % 100 == 0)
        series += (series.empty() ? "" : " ") + std::to_string(r / 1048576);
      std::this_thread::sleep_for(std::chrono::milliseconds{100});
    }
  }};
  uint64_t accepted = 0, refused = 0, unknown = 0;
  uint64_t late = 0; // ticks whose batch was not sent
  std::string last_refusal;
  auto start = clock_type::now();
  auto end = start + std::chrono::seconds{o.seconds};
  auto tick = std::chrono::milliseconds{100};
  for (int64_t t = 0;; ++t) {
    auto due = start + t * tick;
    auto now = clock_type::now();
    if (now >= end)
      break;
    if (now < due) {
      std::this_thread::sleep_until(due);
    } else if (now - due >= tick) {
      // Open loop: the ticks missed while a call took long are gone (the
      // arrivals they stood for are counted as late, not sent later).
      auto missed = (now - due) / tick;
      late += static_cast<uint64_t>(missed);
      t += missed;
    }
    auto res = (*c)->submit(batch);
    if (res) {
      for (auto& item : *res)
        (item.job.job_id.empty() ? refused : accepted) += 1;
    } else if (is(res.error(), errc::outcome_unknown)) {
      // Sent, and not answered within the deadline (or answered with an
      // error that may have acted): some of these jobs may exist.
      unknown += per_tick;
      last_refusal = describe(res.error());
    } else {
      refused += per_tick;
      last_refusal = describe(res.error());
    }
  }
  auto rss_end = rss_of(node.pid);
  done = true;
  sampler.join();
  kill(node.pid, SIGTERM);
  int st = 0;
  waitpid(node.pid, &st, 0);
  auto waiting = sql_value(
      db, "SELECT count(*) FROM drover.jobs WHERE status IN ("
              + std::to_string(static_cast<int>(job_status::queued)) + ", "
              + std::to_string(static_cast<int>(job_status::scheduled)) + ", "
              + std::to_string(static_cast<int>(job_status::retrying)) + ")");
  auto total = sql_value(db, "SELECT count(*) FROM drover.jobs");
  json_line j;
  j.str("figure", bounded ? "overload_bounded" : "overload_reference")
      .str("durability", "D2 (PostgreSQL, synchronous commit)")
      .integer("seconds", o.seconds)
      .integer("bound_mb", bounded ? o.bound_mb : 0)
      .integer("store_cache_jobs", bounded ? o.cache_jobs : 0)
      .num("drain_capacity_per_s", drain_rate)
      .num("offered_per_s", static_cast<double>(per_tick) * 10.0)
      .integer("accepted", static_cast<int64_t>(accepted))
      .integer("refused", static_cast<int64_t>(refused))
      .integer("outcome_unknown", static_cast<int64_t>(unknown))
      .integer("ticks_missed", static_cast<int64_t>(late))
      .integer("jobs_in_db", std::atoll(total.c_str()))
      .integer("waiting_at_end", std::atoll(waiting.c_str()))
      .num("rss_start_mb", static_cast<double>(rss_start) / 1048576.0, 1)
      .num("rss_end_mb", static_cast<double>(rss_end) / 1048576.0, 1)
      .num("rss_peak_mb", static_cast<double>(peak.load()) / 1048576.0, 1)
      .str("rss_mb_every_10s", series)
      .str("last_refusal", last_refusal)
      .print();
  drop_db(o.pg_url, name);
}

} // namespace

int main(int argc, char** argv) {
  options o;
  if (const char* url = std::getenv("DROVER_PG_URL"))
    o.pg_url = url;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--node")
      o.node = v;
    else if (k == "--pg-url")
      o.pg_url = v;
    else if (k == "--seconds")
      o.seconds = std::stoi(v);
    else if (k == "--bound-mb")
      o.bound_mb = std::stoi(v);
    else if (k == "--slots")
      o.slots = std::stoi(v);
    else if (k == "--job-ms")
      o.job_ms = std::stoi(v);
    else if (k == "--factor")
      o.factor = std::stod(v);
    else if (k == "--cache-jobs")
      o.cache_jobs = std::stoi(v);
    else {
      std::cerr << "drover_bench_overload: unknown option " << k << '\n';
      return 2;
    }
  }
  if (o.pg_url.empty() || o.seconds < 1 || o.bound_mb < 1 || o.slots < 1
      || o.job_ms < 1 || !(o.factor > 0)) {
    std::cerr << "usage: drover_bench_overload --pg-url URL [--node PATH] "
                 "[--seconds N] [--bound-mb N] [--slots N] [--job-ms N] "
                 "[--factor X] [--cache-jobs N]\n";
    return 2;
  }
  require_d2(o.pg_url);
  run(o, false);
  run(o, true);
}
