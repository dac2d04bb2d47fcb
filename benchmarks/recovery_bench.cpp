// drover_bench_recovery: B5 of issue 6 — SIGKILL a real drover-node that
// holds unfinished jobs, restart it, and measure how long it takes to
// dispatch again and to reach full speed; verify in the audit log that no
// job was lost and none completed twice.
//
//   drover_bench_recovery --node build/nodes/drover-node --pg-url URL
//        [--unfinished 100000] [--run-before-kill 10000] [--slots 32]
//        [--drain-seconds 0] [--recovery-page N] [--standby on|off]
//        [--lease-ttl-ms MS] [--share on|off]
//
// 1. Preload (in this process, PostgreSQL store, D2): U + K jobs of the
//    node's built-in type `sleep` with input {"ms":0} (a no-op) go into a
//    fresh database through a job system whose workers serve another class,
//    so that every job stays queued. That system then stops.
// 2. drover-node (--store postgres --pg-url DB --admin-port 0 --http-port 0
//    --slots cpu=S) starts on the database, recovers the queue and runs
//    jobs. Once its /api/admin/queues counts K completions it gets SIGKILL:
//    about U jobs are unfinished, some of them in the middle of an attempt.
// 3. The node starts again on the same database (with --standby on: a
//    second node, started with --standby before the kill, takes over; the
//    restart_* times then count from the kill) and runs until every job
//    completed (or for --drain-seconds, then SIGTERM; the rest must still
//    be queued).
// 4. From the audit log (drover.events, at_ms of each `started` and
//    `completed` event, written by the node, wall clock, 1 ms resolution):
//    time from the restart's exec() to the first `started` event
//    ("dispatching again"), and to full speed: the end of the first 500 ms
//    window whose completion rate reaches 90 % of the run's steady rate (the
//    median of 250 ms buckets over the middle 80 % of the run). The rate
//    before the kill is reported the same way.
//    Verified: N jobs exist; completed jobs = completed events; no job has
//    two `completed` events; after a full drain every job is completed;
//    every attempt interrupted by the kill got its `worker_lost` event.
//
// --share on: three coordinators share the partitions (--share-partitions,
// each with --slots) instead of one node; the first is killed and the two
// others take its share (run_share).
//
// One JSON line. Exit 4 if a job was lost or completed twice.

#include "benchmarks/issue6_support.hpp"
#include "benchmarks/node_child.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <map>

using namespace drover;
using namespace drover::bench;
using namespace std::chrono_literals;

namespace {

struct options {
  std::string node;
  std::string pg_url;
  uint64_t unfinished = 100000;
  uint64_t before_kill = 10000;
  uint32_t slots = 32;
  double drain_seconds = 0;
  uint64_t window = 2000;
  /// The node's --recovery-page-jobs (0 = its default).
  uint32_t recovery_page = 0;
  /// Failover instead of a restart: a second node started with --standby
  /// before the kill takes over; its times count from the kill.
  bool standby = false;
  /// Three coordinators sharing the partitions (--share-partitions), each
  /// with --slots; one is killed, the two others take its share.
  bool share = false;
  /// The nodes' --lease-ttl-ms (0 = their default, 5,000).
  uint32_t lease_ttl_ms = 0;
};

// -- a drover-node child process
// ----------------------------------------------------

struct node_proc : node_child {
  int http_port = 0;
  int64_t exec_ms = 0;        // wall clock just before fork
  steady::time_point exec_at; // the same, steady
  double ready_s = -1;        // exec -> "ready" line
};

/// Reads until `n` is ready: its ready time and HTTP port.
void await_ready(node_proc& n, const std::string& log_path) {
  auto line = read_until(n, " node: ready ", log_path);
  n.ready_s = seconds_since(n.exec_at);
  n.http_port = port_field(line, "http");
  if (n.http_port <= 0) {
    std::cerr << "no http port in: " << line << std::endl;
    std::exit(3);
  }
}

/// Starts drover-node on the database. A standby (--standby, its own node
/// id) returns once it stands by; any other once it is ready.
node_proc start_node(const options& opt, const std::string& db_url,
                     const std::string& log_path, bool standby = false,
                     const std::string& share_id = {}) {
  std::vector<std::string> args{opt.node,
                                "--store",
                                "postgres",
                                "--pg-url",
                                db_url,
                                "--admin-port",
                                "0",
                                "--http-port",
                                "0",
                                "--slots",
                                "cpu=" + std::to_string(opt.slots),
                                "--node-id",
                                !share_id.empty() ? share_id
                                : standby         ? "bench-b5-standby"
                                                  : "bench-b5",
                                "--state-dir",
                                "/tmp/drover-bench-b5"};
  if (standby)
    args.push_back("--standby");
  if (!share_id.empty())
    args.push_back("--share-partitions");
  if (opt.lease_ttl_ms > 0) {
    args.push_back("--lease-ttl-ms");
    args.push_back(std::to_string(opt.lease_ttl_ms));
  }
  if (opt.recovery_page > 0) {
    args.push_back("--recovery-page-jobs");
    args.push_back(std::to_string(opt.recovery_page));
  }
  node_proc n;
  n.exec_ms = wall_ms();
  n.exec_at = steady::now();
  static_cast<node_child&>(n) = spawn_node(std::move(args), log_path);
  if (standby)
    read_until(n, " node: standing by ", log_path);
  else
    await_ready(n, log_path);
  return n;
}

/// GET path on 127.0.0.1:port; the body, "" on failure.
std::string http_get(int port, const std::string& path) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  if (s < 0)
    return {};
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{2, 0};
  setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  if (connect(s, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    close(s);
    return {};
  }
  auto req = "GET " + path
             + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
  if (write(s, req.data(), req.size()) != static_cast<ssize_t>(req.size())) {
    close(s);
    return {};
  }
  std::string resp;
  char buf[4096];
  ssize_t r;
  while ((r = read(s, buf, sizeof(buf))) > 0)
    resp.append(buf, static_cast<size_t>(r));
  close(s);
  auto body = resp.find("\r\n\r\n");
  return body == std::string::npos ? std::string{} : resp.substr(body + 4);
}

int64_t json_int(const std::string& body, const std::string& key) {
  auto p = body.find("\"" + key + "\":");
  if (p == std::string::npos)
    return -1;
  return std::strtoll(body.c_str() + p + key.size() + 3, nullptr, 10);
}

void kill_node(node_proc& n, int sig) {
  if (n.pid <= 0)
    return;
  kill(n.pid, sig);
  int status = 0;
  waitpid(n.pid, &status, 0);
  close(n.out_fd);
  n.pid = -1;
}

// -- the audit log's timeline
// --------------------------------------------------------

struct timeline {
  double first_start_s = -1;    // first `started` after exec
  double first_complete_s = -1; // first `completed` after exec
  double steady_rate = 0;   // jobs/s, median of 250 ms buckets (middle 80 %)
  double full_speed_s = -1; // end of the first 500 ms window >= 90 % steady
  uint64_t completed = 0;
};

timeline timeline_of(const std::string& db_url, int64_t from_ms,
                     int64_t to_ms) {
  timeline t;
  auto range = " AND at_ms >= " + std::to_string(from_ms)
               + (to_ms > 0 ? " AND at_ms < " + std::to_string(to_ms) : "");
  auto started = sql_value(
      db_url, "SELECT min(at_ms) FROM drover.events WHERE kind = "
                  + std::to_string(static_cast<int>(event_kind::started))
                  + range);
  auto completed = sql_value(
      db_url, "SELECT min(at_ms) FROM drover.events WHERE kind = "
                  + std::to_string(static_cast<int>(event_kind::completed))
                  + range);
  if (!started.empty())
    t.first_start_s = (std::stoll(started) - from_ms) / 1000.0;
  if (!completed.empty())
    t.first_complete_s = (std::stoll(completed) - from_ms) / 1000.0;
  // Completions per 250 ms bucket.
  auto rows = sql_rows(
      db_url, "SELECT (at_ms - " + std::to_string(from_ms)
                  + ") / 250 AS b, count(*) FROM drover.events "
                    "WHERE kind = "
                  + std::to_string(static_cast<int>(event_kind::completed))
                  + range + " GROUP BY b ORDER BY b");
  if (rows.empty())
    return t;
  std::map<int64_t, double> buckets;
  for (auto& [b, c] : rows) {
    buckets[std::stoll(b)] = std::stod(c);
    t.completed += std::stoull(c);
  }
  auto first = buckets.begin()->first, last = buckets.rbegin()->first;
  std::vector<double> rates;
  auto n = last - first + 1;
  for (auto b = first + n / 10; b <= last - n / 10; ++b)
    rates.push_back((buckets.count(b) ? buckets[b] : 0) * 4);
  t.steady_rate = median(rates);
  for (auto b = std::max<int64_t>(0, first); b <= last; ++b) {
    auto c = (buckets.count(b) ? buckets[b] : 0)
             + (buckets.count(b + 1) ? buckets[b + 1] : 0);
    if (c * 2 >= 0.9 * t.steady_rate) {
      t.full_speed_s = (b + 2) * 0.25;
      break;
    }
  }
  return t;
}

void usage() {
  std::cerr
      << "usage: drover_bench_recovery --node PATH --pg-url URL\n"
         "         [--unfinished N] [--run-before-kill K] [--slots S]\n"
         "         [--drain-seconds S] [--window N] [--recovery-page N]\n";
}

} // namespace

/// Polls `completed` every `poll` until it reaches `target` (or for
/// `drain_seconds` when > 0); -1, or the count it stalled at when it did
/// not move for 60 s.
template <class F>
int64_t drain(F completed, uint64_t target, double drain_seconds,
              std::chrono::milliseconds poll) {
  auto t0 = steady::now();
  int64_t last = -1;
  auto since = steady::now();
  for (;;) {
    auto c = static_cast<int64_t>(completed());
    if (c >= static_cast<int64_t>(target))
      return -1;
    if (drain_seconds > 0 && seconds_since(t0) >= drain_seconds)
      return -1;
    if (c != last) {
      last = c;
      since = steady::now();
    } else if (steady::now() - since > 60s) {
      return c;
    }
    std::this_thread::sleep_for(poll);
  }
}

/// --share on: three coordinators share the partitions; once K jobs
/// completed, the first is killed and the two others take its share. Times
/// count from the kill: until the survivors hold every partition, and until
/// the first `started` in a partition the killed one held ("dispatching
/// again"). Returns a problem, or nullptr.
const char* run_share(const options& opt, const std::string& db_url,
                      const std::string& log_path, uint64_t total, json_line& j,
                      uint64_t& processing_at_kill) {
  auto count = [&](const std::string& sql) {
    return std::stoull("0" + sql_value(db_url, sql));
  };
  auto completed = [&] {
    return count("SELECT count(*) FROM drover.jobs WHERE status = "
                 + std::to_string(static_cast<int>(job_status::completed)));
  };
  auto partitions = count("SELECT partitions FROM drover.partitioning");
  std::vector<node_proc> nodes;
  // Whatever way out: no node outlives the run (kill_node skips stopped
  // ones).
  struct stop_all {
    std::vector<node_proc>& nodes;
    ~stop_all() {
      for (auto& n : nodes)
        kill_node(n, SIGKILL);
    }
  } guard{nodes};
  for (const auto* id : {"bench-s1", "bench-s2", "bench-s3"})
    nodes.push_back(start_node(opt, db_url, log_path, false, id));
  auto held_by = [&](const std::string& owners) {
    return count("SELECT count(*) FROM drover.partition_leases WHERE "
                 "expires_at > now() AND owner_node IN ("
                 + owners + ")");
  };
  auto deadline = steady::now() + 300s;
  while (held_by("'bench-s1','bench-s2','bench-s3'") < partitions
         || count("SELECT count(DISTINCT owner_node) FROM "
                  "drover.partition_leases WHERE expires_at > now()")
                < 3) {
    if (steady::now() > deadline)
      return " the three coordinators never shared the partitions";
    std::this_thread::sleep_for(20ms);
  }
  auto shared_at = steady::now();
  // Counting completions is a scan of the jobs: every 250 ms, not more
  // (with a million jobs it would load PostgreSQL more than the nodes).
  deadline = steady::now() + 600s;
  while (completed() < opt.before_kill) {
    if (steady::now() > deadline)
      return " the first run stalled";
    std::this_thread::sleep_for(250ms);
  }
  auto mine = sql_value(db_url, "SELECT string_agg(partition::text, ',') FROM "
                                "drover.partition_leases WHERE owner_node = "
                                "'bench-s1'");
  auto kill_ms = wall_ms();
  auto kill_at = steady::now();
  kill_node(nodes[0], SIGKILL);
  j.num("shared_to_kill_s",
        std::chrono::duration<double>(kill_at - shared_at).count(), 1);
  auto done_at_kill = completed();
  // Attempts of the killed one's partitions only (the survivors' own run
  // on): each must get its worker_lost.
  processing_at_kill = count(
      "SELECT count(*) FROM drover.jobs WHERE status = "
      + std::to_string(static_cast<int>(job_status::processing))
      + " AND drover.partition_of(job_id) = ANY('{" + mine + "}'::int[])");
  j.integer("partitions_of_killed",
            static_cast<int64_t>(std::count(mine.begin(), mine.end(), ',')
                                 + (mine.empty() ? 0 : 1)))
      .integer("completed_before_kill", static_cast<int64_t>(done_at_kill))
      .integer("unfinished_at_kill", static_cast<int64_t>(total - done_at_kill))
      .integer("processing_at_kill", static_cast<int64_t>(processing_at_kill));
  while (held_by("'bench-s2','bench-s3'") < partitions) {
    if (steady::now() > deadline)
      return " the survivors never took the killed one's partitions";
    std::this_thread::sleep_for(5ms);
  }
  j.num("kill_to_taken_s", seconds_since(kill_at), 3);
  if (auto c = drain(completed, total, opt.drain_seconds, 250ms); c >= 0)
    return " the survivors stalled";
  auto again = sql_value(
      db_url, "SELECT min(at_ms) FROM drover.events WHERE kind = "
                  + std::to_string(static_cast<int>(event_kind::started))
                  + " AND at_ms >= " + std::to_string(kill_ms)
                  + " AND drover.partition_of(job_id) = ANY('{" + mine
                  + "}'::int[])");
  if (!again.empty())
    j.num("kill_to_dispatching_again_s", (std::stoll(again) - kill_ms) / 1000.0,
          3);
  // Both survivors stop together: one stopping alone would hand its
  // partitions to the other, which would be stopped in the middle of them.
  for (size_t i = 1; i < nodes.size(); ++i)
    kill(nodes[i].pid, SIGTERM);
  for (size_t i = 1; i < nodes.size(); ++i)
    kill_node(nodes[i], SIGTERM);
  auto after = timeline_of(db_url, kill_ms, 0);
  j.num("rate_after_kill_per_s", after.steady_rate)
      .num("after_kill_full_speed_s", after.full_speed_s, 3);
  return nullptr;
}

int main(int argc, char** argv) {
  options opt;
  option_reader args{argc, argv};
  while (args.next()) {
    if (args.key() == "--node")
      opt.node = args.value();
    else if (args.key() == "--pg-url")
      opt.pg_url = args.value();
    else if (args.key() == "--unfinished")
      opt.unfinished = std::stoull(args.value());
    else if (args.key() == "--run-before-kill")
      opt.before_kill = std::stoull(args.value());
    else if (args.key() == "--lease-ttl-ms")
      opt.lease_ttl_ms = static_cast<uint32_t>(std::stoul(args.value()));
    else if (args.key() == "--standby")
      opt.standby = args.value() == "on";
    else if (args.key() == "--share")
      opt.share = args.value() == "on";
    else if (args.key() == "--recovery-page")
      opt.recovery_page = static_cast<uint32_t>(std::stoul(args.value()));
    else if (args.key() == "--slots")
      opt.slots = static_cast<uint32_t>(std::stoul(args.value()));
    else if (args.key() == "--drain-seconds")
      opt.drain_seconds = std::stod(args.value());
    else if (args.key() == "--window")
      opt.window = std::stoull(args.value());
    else {
      usage();
      return 2;
    }
  }
  if (opt.node.empty() || opt.pg_url.empty()
      || access(opt.node.c_str(), X_OK) != 0) {
    usage();
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  auto load0 = loadavg();
  auto db = "drover_bench_b5_" + std::to_string(getpid());
  auto db_url = create_db(opt.pg_url, db);
  require_d2(db_url);
  auto log_path = "/tmp/drover_bench_b5_" + std::to_string(getpid()) + ".log";
  uint64_t total = opt.unfinished + opt.before_kill;
  bool ok = true;
  std::string problem;
  json_line j;
  j.str("system", "drover")
      .str("workload", "B5")
      .str("durability", "D2")
      .integer("jobs", static_cast<int64_t>(total))
      .integer("slots", opt.slots)
      .integer("recovery_page", opt.recovery_page) // 0: the node default
      .str("mode", opt.share     ? "three sharing coordinators, one killed"
                   : opt.standby ? "failover to a standby"
                                 : "restart")
      .integer("lease_ttl_ms", opt.lease_ttl_ms); // 0: the node default
  // 1. Preload.
  {
    std::string first_error;
    auto sub
        = preload_noop_jobs(db_url, total, opt.window, first_error, opt.share);
    j.num("preload_submits_per_s", sub.ok / sub.seconds);
    if (sub.errors > 0) {
      std::cerr << sub.errors << " submits failed: " << first_error
                << std::endl;
      drop_db(opt.pg_url, db);
      return 4;
    }
  }
  auto completed_sql = [&] {
    return std::stoull(
        "0"
        + sql_value(db_url, "SELECT count(*) FROM drover.jobs WHERE status = "
                                + std::to_string(
                                    static_cast<int>(job_status::completed))));
  };
  uint64_t processing_at_kill = 0;
  if (opt.share) {
    if (auto failed
        = run_share(opt, db_url, log_path, total, j, processing_at_kill)) {
      ok = false;
      problem += failed;
    }
  } else {
    // 2. First run (with its standby, if any), then SIGKILL.
    auto n1 = start_node(opt, db_url, log_path);
    node_proc n2;
    if (opt.standby)
      n2 = start_node(opt, db_url, log_path, true);
    int64_t kill_ms = 0;
    steady::time_point kill_at;
    {
      auto deadline = steady::now() + 300s;
      for (;;) {
        auto c = json_int(http_get(n1.http_port, "/api/admin/queues"),
                          "completed_total");
        if (c >= static_cast<int64_t>(opt.before_kill))
          break;
        if (steady::now() > deadline) {
          std::cerr << "the first node run stalled at " << c << std::endl;
          kill_node(n1, SIGKILL);
          drop_db(opt.pg_url, db);
          return 3;
        }
        std::this_thread::sleep_for(20ms);
      }
      kill_ms = wall_ms();
      kill_at = steady::now();
      kill_node(n1, SIGKILL);
    }
    auto done_at_kill = completed_sql();
    processing_at_kill = std::stoull(
        "0"
        + sql_value(db_url, "SELECT count(*) FROM drover.jobs WHERE status = "
                                + std::to_string(
                                    static_cast<int>(job_status::processing))));
    auto unfinished = total - done_at_kill;
    auto before = timeline_of(db_url, n1.exec_ms, kill_ms);
    j.num("first_start_ready_s", n1.ready_s, 3)
        .num("first_start_dispatch_s", before.first_start_s, 3)
        .num("rate_before_kill_per_s", before.steady_rate)
        .integer("completed_before_kill", static_cast<int64_t>(done_at_kill))
        .integer("unfinished_at_kill", static_cast<int64_t>(unfinished))
        .integer("processing_at_kill",
                 static_cast<int64_t>(processing_at_kill));
    // 3. Restart, or the standby takes over (its times count from the kill).
    if (opt.standby) {
      n2.exec_ms = kill_ms;
      n2.exec_at = kill_at;
      await_ready(n2, log_path);
    } else {
      std::this_thread::sleep_for(200ms);
      n2 = start_node(opt, db_url, log_path);
    }
    {
      auto completed = [&] {
        return json_int(http_get(n2.http_port, "/api/admin/queues"),
                        "completed_total");
      };
      if (auto c = drain(completed, unfinished, opt.drain_seconds, 20ms);
          c >= 0) {
        ok = false;
        problem += " the restarted node stalled at " + std::to_string(c);
      }
      auto stop_at = steady::now();
      kill_node(n2, SIGTERM);
      j.num("stop_s", seconds_since(stop_at), 3);
    }
    auto after = timeline_of(db_url, n2.exec_ms, 0);
    j.num("restart_ready_s", n2.ready_s, 3)
        .num("restart_dispatch_s", after.first_start_s, 3)
        .num("restart_first_completion_s", after.first_complete_s, 3)
        .num("restart_full_speed_s", after.full_speed_s, 3)
        .num("rate_after_restart_per_s", after.steady_rate);
  }
  // 4. Verify.
  auto count = [&](const std::string& sql) {
    return std::stoull("0" + sql_value(db_url, sql));
  };
  auto status_is
      = [](job_status s) { return std::to_string(static_cast<int>(s)); };
  auto kind_is
      = [](event_kind k) { return std::to_string(static_cast<int>(k)); };
  auto all = count("SELECT count(*) FROM drover.jobs");
  auto completed = completed_sql();
  auto events = count("SELECT count(*) FROM drover.events WHERE kind = "
                      + kind_is(event_kind::completed));
  auto twice = count("SELECT count(*) FROM (SELECT job_id FROM drover.events "
                     "WHERE kind = "
                     + kind_is(event_kind::completed)
                     + " GROUP BY job_id HAVING count(*) > 1) t");
  auto lost_events = count("SELECT count(*) FROM drover.events WHERE kind = "
                           + kind_is(event_kind::worker_lost));
  auto not_done = count("SELECT count(*) FROM drover.jobs WHERE status NOT IN ("
                        + status_is(job_status::completed) + ","
                        + status_is(job_status::queued) + ","
                        + status_is(job_status::retrying) + ")");
  // The SIGTERM that ends a --drain-seconds run is an orderly stop: it
  // leaves the attempts running on its slots to the next coordinator
  // (job_supervisor.cpp, user_shutdown), their jobs `processing`, at most
  // one a slot of the nodes it stopped.
  auto left_running = count("SELECT count(*) FROM drover.jobs WHERE status = "
                            + status_is(job_status::processing));
  auto stopped_slots = uint64_t{opt.slots} * (opt.share ? 2 : 1);
  j.integer("verified_jobs", static_cast<int64_t>(all))
      .integer("verified_completed", static_cast<int64_t>(completed))
      .integer("completed_events", static_cast<int64_t>(events))
      .integer("completed_twice", static_cast<int64_t>(twice))
      .integer("worker_lost_events", static_cast<int64_t>(lost_events))
      .integer("left_running_at_stop", static_cast<int64_t>(left_running))
      .integer("neither_completed_nor_waiting",
               static_cast<int64_t>(not_done - left_running));
  bool full = opt.drain_seconds <= 0;
  if (all != total || events != completed || twice != 0
      || not_done != left_running || left_running > stopped_slots
      || (full && completed != total) || lost_events < processing_at_kill) {
    ok = false;
    problem += " verification failed";
  }
  j.integer("lost", static_cast<int64_t>(full ? total - completed : 0));
  drop_db(opt.pg_url, db);
  j.load("loadavg_at_start", load0).load("loadavg_at_end").boolean("ok", ok);
  if (!ok)
    j.str("problem", problem + " (node log: " + log_path + ")");
  else
    unlink(log_path.c_str());
  j.print();
  return ok ? 0 : 4;
}
