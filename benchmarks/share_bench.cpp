// drover_bench_share: issue 13's submit and drain throughput with one, two
// and three coordinators sharing the partitions (--share-partitions), in
// one run, and what each job costs in CPU and commits.
//
//   drover_bench_share --node build/nodes/drover-node --pg-url URL
//        [--jobs 20000] [--coordinators 1,2,3] [--workers 2]
//        [--slots-per-worker 6] [--batch 1] [--connections 8]
//        [--connections-per-coordinator C] [--settle-seconds 12]
//        [--background-seconds 4] [--type-limit L] [--keep-logs on]
//        [--coordinator-arg ARG]... [--gateway-arg ARG]...
//        [--worker-arg ARG]...
//
// For each N of --coordinators, in turn, on a fresh database of the same
// PostgreSQL (D2: fsync and synchronous_commit on, checked; every submit
// is acknowledged after its COMMIT, every completion committed):
// 1. N coordinators (drover-node --roles coordinator --share-partitions:
//    no local slots; config/cluster/coordinator.ini's sharing scheduler)
//    start one after the other; once they hold the 64 partitions evenly, a
//    gateway node (--roles gateway --share-partitions, all N in its
//    --coordinator list, no HTTP rate limit; otherwise the defaults, as
//    config/cluster/gateway.ini) starts, and the run waits until its log
//    says it joined all N.
// 2. Idle for --settle-seconds (the coordinators' CPU with nothing to do:
//    lease renewals, membership rounds), then the commits they make
//    without work over --background-seconds. PostgreSQL publishes a
//    backend's commit count at most once a second, an idle one's within
//    10 s: the counts are read after such idle windows, and the
//    background's commits are taken out of each phase's.
// 3. Submit: --jobs no-op jobs (`sleep` {"ms":0}, runtime/
//    builtin_handlers.cpp) through the gateway's HTTP API, without
//    idempotency keys (the gateway sends keyless submits to the
//    coordinators in turn, and each puts them into its own partitions),
//    --batch jobs a request (1: POST /api/jobs; more: POST /api/jobs/batch)
//    on --connections keep-alive connections (or C per coordinator with
//    --connections-per-coordinator C). No worker node is connected
//    yet, so nothing runs. Submit throughput: acknowledged jobs over the
//    time from the first request to the last answer. Then idle again for
//    --settle-seconds.
// 4. Drain: --workers worker nodes (--roles worker --share-partitions
//    --slots cpu=S, config/cluster/worker-*.ini's scheduler: sharing, one
//    thread) start and join every coordinator, each coordinator getting
//    about S/N of each node's slots: the same slots in all for every N.
//    Drain throughput, from the audit log: completions from the first
//    `completed` event to the last, over that time.
// 5. CPU per job of each phase from /proc/PID/stat (utime + stime): the
//    coordinators together, the gateway, the worker nodes (from their
//    exec: start-up and joins included), the PostgreSQL backends of the
//    run's database (those seen at the phase's start or end; one that
//    ended in between is missed, and counted), the server's WAL writer,
//    checkpointer and background writer (shared with whatever else uses
//    this server), and this process (the HTTP client; not the system's).
//    Commits per job: pg_stat_database.xact_commit of the run's database.
//    Messages between the nodes per job (lease batches, reports,
//    heartbeats) and leases per batch: the worker agents' counters in
//    every coordinator's node list, read through the gateway.
// Verified from the store before the next N: the jobs in drover.jobs are
// exactly the acknowledged submits, every one completed, with one
// `completed` event each. Exit 4 otherwise.
//
// Output: one JSON line per N, then one summary line with the ratios to the
// first N (N=2/N=1, N=3/N=1) and a table.
//
// --type-limit L: each N runs twice, each on a fresh database: as above
// (no limit, the reference), then with --concurrency-limit sleep=L on
// every coordinator, so that each job needs a permit from PostgreSQL
// before it takes its slot; then one more summary line (the limited
// drain's ratios to the reference of the same N) and a table
// (benchmarks/share_permits.hpp). With L above the slots in all, the
// difference is what asking for permits costs.

#include "benchmarks/share_permits.hpp"

using namespace drover;
using namespace drover::bench;
using namespace std::chrono_literals;

namespace {

struct options {
  std::string node;
  std::string pg_url;
  uint64_t jobs = 20000;
  std::vector<uint32_t> coordinators{1, 2, 3};
  uint32_t workers = 2;
  uint32_t slots_per_worker = 6;
  uint32_t batch = 1;
  uint32_t connections = 8;
  /// If not 0: this many connections per coordinator (N times as many in
  /// all), instead of --connections for every N.
  uint32_t connections_per_coordinator = 0;
  /// Each idle window (before and after the submits): long enough for
  /// PostgreSQL to publish the idle backends' commit counts (it flushes a
  /// backend's statistics at most once a second, an idle one's within
  /// 10 s).
  double settle_seconds = 12;
  /// After the first settling: the coordinators' commits without work.
  double background_seconds = 4;
  /// If not 0: every N also with --concurrency-limit sleep=L.
  uint32_t type_limit = 0;
  bool keep_logs = false;
  /// Diagnostics: more options for every coordinator, gateway or worker
  /// node (e.g. --gateway-arg --scheduler-policy=sharing).
  std::vector<std::string> coordinator_args, gateway_args, worker_args;
};

const std::string join_secret = "bench-share-join-secret-0123456789";
const std::string gateway_secret = "bench-share-gateway-secret-0123456";

struct config_result {
  uint32_t n = 0;
  uint32_t limit = 0; // the jobs' type's concurrency limit (0: none)
  bool ok = false;
  std::string problem;
  double submit_per_s = 0;
  double drain_per_s = 0;
  phase_cpu submit, drain;
  double idle_coord_ms_per_s = 0;
  int64_t jobs = 0;
  permit_counts permits;
};

/// Starts `n` coordinators and waits until they hold the 64 partitions
/// evenly; their cluster addresses go to `list`. The problem, "" if none.
std::string start_coordinators(const options& opt, fleet& f, uint32_t n,
                               uint32_t limit, const std::string& url,
                               pg::connection& db, std::string& list) {
  for (uint32_t i = 1; i <= n; ++i) {
    auto id = "c" + std::to_string(i);
    std::vector<std::string> args{opt.node,
                                  "--node-id",
                                  id,
                                  "--roles",
                                  "coordinator",
                                  "--store",
                                  "postgres",
                                  "--pg-url",
                                  url,
                                  "--admin-port",
                                  "0",
                                  "--cluster-port",
                                  "0",
                                  "--join-secret",
                                  join_secret,
                                  "--gateway-join-secret",
                                  gateway_secret,
                                  "--scheduler-policy",
                                  "sharing",
                                  "--share-partitions"};
    if (limit > 0) {
      args.emplace_back("--concurrency-limit");
      args.push_back(share_job_type + "=" + std::to_string(limit));
    }
    args.insert(args.end(), opt.coordinator_args.begin(),
                opt.coordinator_args.end());
    std::string ready;
    if (!f.read_until(f.start(id, std::move(args)), " node: ready ", 1, 60s,
                      &ready))
      return id + " did not start";
    list += (list.empty() ? "" : ",") + std::string{"127.0.0.1:"}
            + std::to_string(port_field(ready, "cluster"));
  }
  auto leases = [&](const std::string& what) {
    return query_int(db, "SELECT " + what
                             + " FROM (SELECT owner_node, count(*) AS c FROM "
                               "drover.partition_leases WHERE owner IS NOT "
                               "NULL AND expires_at > now() GROUP BY "
                               "owner_node) t");
  };
  auto even = poll_within(60s, 50ms, [&] {
    return leases("sum(c)") == 64 && leases("count(*)") == n
           && leases("min(c)") >= 64 / n;
  });
  return even ? "" : "the coordinators did not share the 64 partitions evenly";
}

/// One configuration: N coordinators (the jobs' type limited to `limit`
/// if not 0), the gateway, the worker nodes.
config_result run_config(const options& opt, uint32_t n, uint32_t limit,
                         json_line& j) {
  config_result out;
  out.n = n;
  out.limit = limit;
  auto fail = [&](const std::string& why) {
    out.problem = why;
    return out;
  };
  auto name = "drover_bench_share_" + std::to_string(getpid()) + "_"
              + std::to_string(n) + (limit > 0 ? "_limited" : "");
  auto url = create_db(opt.pg_url, name);
  require_d2(url);
  struct drop_guard {
    const options& opt;
    std::string name;
    ~drop_guard() {
      drop_db(opt.pg_url, name);
    }
  } dropped{opt, name};
  auto db = pg::connection::open(url);
  if (!db)
    return fail("cannot connect: " + describe(db.error()));
  fleet f{"/tmp/" + name};
  j.integer("coordinators", n)
      .integer("type_limit", limit)
      .integer("worker_nodes", opt.workers)
      .integer("slots_total", opt.workers * opt.slots_per_worker)
      .num("slots_per_coordinator",
           static_cast<double>(opt.workers * opt.slots_per_worker) / n, 1)
      .load("loadavg_at_start");
  // 1. Coordinators, then the gateway.
  std::string list;
  if (auto problem = start_coordinators(opt, f, n, limit, url, *db, list);
      !problem.empty())
    return fail(problem);
  std::vector<std::string> gw_args{opt.node,
                                   "--node-id",
                                   "gw",
                                   "--roles",
                                   "gateway",
                                   "--coordinator",
                                   list,
                                   "--join-secret",
                                   gateway_secret,
                                   "--share-partitions",
                                   "--http-port",
                                   "0",
                                   "--http-rate-limit",
                                   "0"};
  gw_args.insert(gw_args.end(), opt.gateway_args.begin(),
                 opt.gateway_args.end());
  auto& gw = f.start("gw", std::move(gw_args));
  std::string ready;
  if (!f.read_until(gw, " node: ready ", 1, 60s, &ready))
    return fail("the gateway did not start");
  auto http_port = port_field(ready, "http");
  if (!poll_within(60s, 20ms, [&] {
        return f.log_count(gw, "the gateway joined a coordinator") >= n;
      }))
    return fail("the gateway did not join every coordinator");
  // 2. Idle: PostgreSQL's counts settle, then the commits the coordinators
  // make without work (lease renewals, membership rounds) are counted over
  // --background-seconds, to be taken out of the phases' counts.
  out.idle_coord_ms_per_s = idle_window(f, opt.settle_seconds);
  auto settled = commits_of(url);
  auto settled_at = steady::now();
  idle_window(f, opt.background_seconds);
  auto commits0 = commits_of(url);
  auto commits0_at = steady::now();
  // (commits_of's own statement is one of them.)
  auto background
      = static_cast<double>(commits0 - settled - 1)
        / std::chrono::duration<double>(commits0_at - settled_at).count();
  auto net_commits = [&](int64_t from, int64_t to, double background_s,
                         int64_t own, int64_t jobs) {
    return (static_cast<double>(to - from - own) - background * background_s)
           / static_cast<double>(jobs);
  };
  j.num("idle_coordinators_cpu_ms_per_s", out.idle_coord_ms_per_s, 1)
      .num("idle_commits_per_s", background, 1);
  // 3. Submit.
  auto p = probe(f, *db);
  auto connections = opt.connections_per_coordinator > 0
                         ? opt.connections_per_coordinator * n
                         : opt.connections;
  auto sub = submit_over_http(http_port, opt.jobs, opt.batch, connections,
                              R"({"type":"sleep","input":{"ms":0}})");
  out.submit = cpu_per_job(p, f, *db, static_cast<int64_t>(sub.acked));
  out.submit_per_s = sub.acked / sub.seconds;
  std::string statuses;
  for (auto& [status, count] : sub.statuses)
    statuses += (statuses.empty() ? "" : " ") + std::to_string(status) + ":"
                + std::to_string(count);
  // Where the jobs went: each coordinator's partitions.
  std::string by_owner;
  if (auto r = db->exec("SELECT l.owner_node, count(*) FROM drover.jobs j "
                        "JOIN drover.partition_leases l ON l.partition = "
                        "drover.partition_of(j.job_id) GROUP BY 1 ORDER BY 1"))
    for (int i = 0; i < r->rows(); ++i)
      by_owner += (i == 0 ? "" : " ") + std::string{r->value(i, 0)} + ":"
                  + std::string{r->value(i, 1)};
  // What the drain must complete: every job the store holds (verified
  // below to be the acknowledged ones).
  auto stored = query_int(*db, "SELECT count(*) FROM drover.jobs");
  auto idle_after = idle_window(f, opt.settle_seconds);
  auto commits1 = commits_of(url);
  auto commits1_at = steady::now();
  // The bench's own statements since commits0: 7.
  out.submit.commits = net_commits(
      commits0, commits1,
      std::chrono::duration<double>(commits1_at - commits0_at).count(), 7,
      stored);
  j.integer("jobs", static_cast<int64_t>(opt.jobs))
      .integer("batch", opt.batch)
      .integer("connections", connections)
      .integer("submit_acked", static_cast<int64_t>(sub.acked))
      .integer("submit_refused", static_cast<int64_t>(sub.refused))
      .integer("submit_unknown", static_cast<int64_t>(sub.unknown))
      .str("submit_http_statuses", statuses)
      .num("submit_s", sub.seconds, 3)
      .num("submit_jobs_per_s", out.submit_per_s);
  if (!sub.first_error.empty())
    j.str("submit_first_error", sub.first_error.substr(0, 300));
  out.submit.add_to(j, "submit");
  j.str("jobs_by_coordinator", by_owner)
      .num("idle_after_submit_coordinators_cpu_ms_per_s", idle_after, 1);
  // 4. Drain. The worker nodes' CPU counts from their exec.
  p = probe(f, *db);
  std::vector<node_proc*> workers;
  for (uint32_t w = 1; w <= opt.workers; ++w) {
    auto id = "w" + std::to_string(w);
    std::vector<std::string> args{opt.node,
                                  "--node-id",
                                  id,
                                  "--roles",
                                  "worker",
                                  "--coordinator",
                                  list,
                                  "--share-partitions",
                                  "--join-secret",
                                  join_secret,
                                  "--slots",
                                  "cpu=" + std::to_string(opt.slots_per_worker),
                                  "--scheduler-policy",
                                  "sharing",
                                  "--scheduler-threads",
                                  "1"};
    args.insert(args.end(), opt.worker_args.begin(), opt.worker_args.end());
    workers.push_back(&f.start(id, std::move(args)));
  }
  for (auto* w : workers)
    if (!f.read_until(*w, "joined the coordinator", n, 60s, nullptr))
      return fail(w->name + " did not join every coordinator");
  int64_t done = -1;
  int64_t polls = 0;
  auto since = steady::now();
  auto finished = poll_within(900s, 100ms, [&] {
    ++polls;
    auto c = query_int(*db, "SELECT count(*) FROM drover.jobs WHERE status = "
                                + completed_status());
    if (c != done) {
      done = c;
      since = steady::now();
    }
    return c >= stored || steady::now() - since > 60s;
  });
  if (!finished || done < stored)
    return fail("the drain stalled at " + std::to_string(done) + " of "
                + std::to_string(stored));
  out.drain = cpu_per_job(p, f, *db, stored);
  auto at = [&](const char* fn, event_kind k) {
    return query_int(*db, std::string{"SELECT "} + fn
                              + "(at_ms) FROM drover.events WHERE kind = "
                              + kind(k));
  };
  auto first = at("min", event_kind::completed);
  auto last = at("max", event_kind::completed);
  auto first_start = at("min", event_kind::started);
  auto span = static_cast<double>(last - first) / 1000.0;
  out.drain_per_s = span > 0 ? static_cast<double>(stored - 1) / span : 0;
  // Each coordinator's share drains on its own slots: when its last
  // completion came, in seconds after the first completion of all.
  std::string last_by_owner;
  if (auto r
      = db->exec("SELECT l.owner_node, max(e.at_ms) FROM "
                 "drover.events e JOIN drover.partition_leases l ON "
                 "l.partition = drover.partition_of(e.job_id) WHERE "
                 "e.kind = "
                 + kind(event_kind::completed) + " GROUP BY 1 ORDER BY 1"))
    for (int i = 0; i < r->rows(); ++i)
      last_by_owner
          += (i == 0 ? "" : " ") + std::string{r->value(i, 0)} + ":"
             + fmt(static_cast<double>(
                       std::atoll(std::string{r->value(i, 1)}.c_str()) - first)
                       / 1000.0,
                   2);
  j.str("drain_last_completion_by_coordinator_s", last_by_owner);
  auto agents = counters_of_agents(http_port, n);
  j.integer("worker_agents_seen", agents.agents)
      .num("leases_per_batch",
           static_cast<double>(agents.leases)
               / static_cast<double>(std::max<int64_t>(1, agents.batches)),
           1)
      .num("node_messages_per_job",
           static_cast<double>(agents.batches + agents.reports
                               + agents.heartbeats)
               / static_cast<double>(stored),
           3);
  // 5. Stop (worker nodes, the gateway, then the coordinators together:
  // one stopping alone would hand its partitions to the others), verify.
  auto stop_at = steady::now();
  auto stuck = f.stop_all();
  // A backend publishes its counts before it leaves pg_stat_activity:
  // once only this bench's is left, the count is whole. The bench's own
  // statements since commits1 (its polls and 9 more) are taken out.
  db = pg::connection::open(url);
  if (!db)
    return fail("cannot connect again: " + describe(db.error()));
  poll_within(30s, 20ms, [&] { return backends(*db).empty(); });
  auto commits2 = commits_of(url);
  out.drain.commits = net_commits(
      commits1, commits2,
      std::chrono::duration<double>(stop_at - commits1_at).count(), polls + 9,
      stored);
  out.permits = read_permit_counts(*db);
  out.jobs = stored;
  j.num("drain_first_to_last_completion_s", span, 3)
      .num("drain_first_start_to_last_completion_s",
           static_cast<double>(last - first_start) / 1000.0, 3)
      .num("drain_jobs_per_s", out.drain_per_s);
  out.drain.add_to(j, "drain");
  add_permits_to(j, out.permits, stored);
  auto count = [&](const std::string& sql) { return query_int(*db, sql); };
  auto jobs = count("SELECT count(*) FROM drover.jobs");
  auto completed = count("SELECT count(*) FROM drover.jobs WHERE status = "
                         + completed_status());
  auto events = count("SELECT count(*) FROM drover.events WHERE kind = "
                      + kind(event_kind::completed));
  auto more_than_once = [&](event_kind k) {
    return count("SELECT count(*) FROM (SELECT job_id FROM drover.events "
                 "WHERE kind = "
                 + kind(k) + " GROUP BY job_id HAVING count(*) > 1) t");
  };
  auto twice = more_than_once(event_kind::completed);
  j.integer("verified_jobs", jobs)
      .integer("verified_completed", completed)
      .integer("completed_events", events)
      .integer("completed_twice", twice)
      .integer("started_twice", more_than_once(event_kind::started))
      .integer("worker_lost_events",
               count("SELECT count(*) FROM drover.events WHERE kind = "
                     + kind(event_kind::worker_lost)))
      .str("stopped_by_sigkill", stuck)
      .load("loadavg_at_end");
  if (jobs != stored || jobs != static_cast<int64_t>(sub.acked)
      || jobs != static_cast<int64_t>(opt.jobs) || completed != jobs
      || events != jobs || twice != 0)
    return fail("verification failed");
  out.ok = true;
  if (!opt.keep_logs)
    f.remove_logs();
  return out;
}

void usage() {
  std::cerr << "usage: drover_bench_share --node PATH --pg-url URL\n"
               "         [--jobs 20000] [--coordinators 1,2,3] [--workers 2]\n"
               "         [--slots-per-worker 6] [--batch 1] [--connections 8]\n"
               "         [--connections-per-coordinator C]\n"
               "         [--settle-seconds 12] [--background-seconds 4]\n"
               "         [--type-limit L] [--keep-logs on] [--coordinator-arg "
               "ARG]...\n"
               "         [--gateway-arg ARG]... [--worker-arg ARG]...\n";
}

std::string ratio(double x, double ref) {
  return ref > 0 ? fmt(x / ref, 2) : "null";
}

} // namespace

int main(int argc, char** argv) {
  options opt;
  option_reader args{argc, argv};
  while (args.next()) {
    auto& k = args.key();
    if (k == "--node")
      opt.node = args.value();
    else if (k == "--pg-url")
      opt.pg_url = args.value();
    else if (k == "--jobs")
      opt.jobs = std::stoull(args.value());
    else if (k == "--coordinators")
      opt.coordinators = parse_list<uint32_t>(args.value());
    else if (k == "--workers")
      opt.workers = static_cast<uint32_t>(std::stoul(args.value()));
    else if (k == "--slots-per-worker")
      opt.slots_per_worker = static_cast<uint32_t>(std::stoul(args.value()));
    else if (k == "--batch")
      opt.batch = static_cast<uint32_t>(std::stoul(args.value()));
    else if (k == "--connections")
      opt.connections = static_cast<uint32_t>(std::stoul(args.value()));
    else if (k == "--connections-per-coordinator")
      opt.connections_per_coordinator
          = static_cast<uint32_t>(std::stoul(args.value()));
    else if (k == "--settle-seconds")
      opt.settle_seconds = std::stod(args.value());
    else if (k == "--background-seconds")
      opt.background_seconds = std::stod(args.value());
    else if (k == "--type-limit")
      opt.type_limit = static_cast<uint32_t>(std::stoul(args.value()));
    else if (k == "--coordinator-arg")
      opt.coordinator_args.push_back(args.value());
    else if (k == "--gateway-arg")
      opt.gateway_args.push_back(args.value());
    else if (k == "--worker-arg")
      opt.worker_args.push_back(args.value());
    else if (k == "--keep-logs")
      opt.keep_logs = args.value() == "on";
    else {
      usage();
      return 2;
    }
  }
  if (opt.node.empty() || opt.pg_url.empty()
      || access(opt.node.c_str(), X_OK) != 0 || opt.coordinators.empty()
      || opt.jobs == 0) {
    usage();
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  require_d2(opt.pg_url);
  std::vector<config_result> results;
  bool ok = true;
  std::vector<permit_row> permit_rows;
  std::vector<uint32_t> limits{0};
  if (opt.type_limit > 0)
    limits.push_back(opt.type_limit);
  for (auto n : opt.coordinators)
    for (auto limit : limits) {
      json_line j;
      j.str("system", "drover")
          .str("workload", "issue 13: sharing coordinators, submit and drain")
          .str("durability", "D2 (fsync=on, synchronous_commit=on, checked)");
      auto r = run_config(opt, n, limit, j);
      j.boolean("ok", r.ok);
      if (!r.ok)
        j.str("problem", r.problem);
      j.print();
      ok = ok && r.ok;
      permit_rows.push_back(
          {n, limit, r.ok, r.jobs, r.drain_per_s, r.drain, r.permits});
      if (limit == 0)
        results.push_back(r);
    }
  // Ratios to the first configuration (N=1 by default), per phase.
  const auto& ref = results.front();
  json_line sum;
  sum.str("summary", "ratios to N=" + std::to_string(ref.n));
  for (const auto& r : results) {
    auto phase = [](const phase_cpu& x, const phase_cpu& x0, double rate,
                    double rate0) {
      return "{\"jobs_per_s\":" + ratio(rate, rate0)
             + ",\"coordinators_us_per_job\":"
             + ratio(x.coordinators, x0.coordinators)
             + ",\"system_us_per_job\":" + ratio(x.system(), x0.system())
             + ",\"commits_per_job\":" + ratio(x.commits, x0.commits) + "}";
    };
    auto key = "n" + std::to_string(r.n) + "_over_n" + std::to_string(ref.n);
    sum.raw(key + "_submit",
            phase(r.submit, ref.submit, r.submit_per_s, ref.submit_per_s))
        .raw(key + "_drain",
             phase(r.drain, ref.drain, r.drain_per_s, ref.drain_per_s));
  }
  sum.boolean("ok", ok).print();
  std::printf("\n%-3s | %9s %10s %10s %9s | %9s %10s %10s %9s | %8s\n", "N",
              "submit/s", "coord us/j", "syst. us/j", "commits/j", "drain/s",
              "coord us/j", "syst. us/j", "commits/j", "idle ms/s");
  for (const auto& r : results)
    std::printf("%-3u | %9s %10s %10s %9s | %9s %10s %10s %9s | %8s\n", r.n,
                fmt(r.submit_per_s).c_str(), fmt(r.submit.coordinators).c_str(),
                fmt(r.submit.system()).c_str(),
                fmt(r.submit.commits, 3).c_str(), fmt(r.drain_per_s).c_str(),
                fmt(r.drain.coordinators).c_str(),
                fmt(r.drain.system()).c_str(), fmt(r.drain.commits, 3).c_str(),
                fmt(r.idle_coord_ms_per_s, 1).c_str());
  std::printf("(system: coordinators + gateway + worker nodes + PostgreSQL "
              "backends of the run's database; idle: the coordinators "
              "together, CPU ms per second)\n");
  std::fflush(stdout);
  if (opt.type_limit > 0)
    print_permit_summary(permit_rows, opt.type_limit);
  return ok ? 0 : 4;
}
