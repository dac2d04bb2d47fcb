#pragma once

// The cluster of real processes the cluster tests start (docs/cluster.md):
// a coordinator on a private PostgreSQL database (and standbys on the
// same database), worker nodes joining over CAF on loopback, ports chosen
// at run time, and what the tests read back: the audit log
// (drover.events), droverctl's view and each process's log.

#include "support/process.hpp"
#include "support/scratch.hpp"
#include "support/test_db.hpp"

#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <chrono>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <netinet/in.h>
#include <string>
#include <sys/socket.h>
#include <unistd.h>
#include <vector>

namespace drover::testing::cluster_harness {

using namespace std::chrono_literals;

constexpr auto attempt_ttl = std::chrono::milliseconds{2000};
inline const std::string secret = "cluster-test-secret-0123456789";

// Event kinds (schemas/job_event.capnp).
constexpr int started_kind = 3;
constexpr int progressed_kind = 4;
constexpr int completed_kind = 7;
constexpr int lease_expired_kind = 13;
constexpr int report_rejected_kind = 17;

/// A port that was free a moment ago.
inline uint16_t free_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  socklen_t len = sizeof(addr);
  REQUIRE(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
  close(fd);
  return ntohs(addr.sin_port);
}

/// A coordinator, its worker nodes and their logs.
struct cluster {
  test_db db;
  /// Another PostgreSQL for this cluster's nodes (a throwaway_cluster a
  /// fault test stops); empty = `db`.
  std::string pg_url;
  scratch_dir logs{"drover-cluster"};
  uint16_t cluster_port = free_port();
  std::unique_ptr<process> coordinator;
  std::string admin;
  /// Added to every droverctl command the cluster runs (the client's TLS
  /// settings against coordinators with TLS).
  std::vector<std::string> ctl_args;
  std::map<std::string, std::unique_ptr<process>> workers;
  std::map<std::string, std::unique_ptr<process>> standbys;
  std::vector<uint16_t> standby_ports;

  /// The database the nodes use.
  std::string url() const {
    return pg_url.empty() ? db.url() : pg_url;
  }

  /// Starts coordinator `name` (cluster port `port`, `extra` options) that
  /// must stop by itself, and waits up to 30 s for it: its exit code, or
  /// -1 if it did not stop or was killed by a signal. Its log is
  /// logs/<name>.log.
  int exit_code_of(const std::string& name, uint16_t port,
                   std::vector<std::string> extra) {
    process p{coordinator_args(name, port, std::move(extra)),
              logs.path() + "/" + name + ".log"};
    auto st = p.wait_exit(std::chrono::seconds{30});
    return st && WIFEXITED(*st) ? WEXITSTATUS(*st) : -1;
  }

  /// The arguments of a coordinator on this cluster's database.
  std::vector<std::string> coordinator_args(const std::string& name,
                                            uint16_t port,
                                            std::vector<std::string> extra) {
    std::vector<std::string> args{DROVER_NODE_BIN,
                                  "--node-id",
                                  name,
                                  "--roles",
                                  "coordinator",
                                  "--store",
                                  "postgres",
                                  "--pg-url",
                                  url(),
                                  "--admin-port",
                                  "0",
                                  "--cluster-port",
                                  std::to_string(port),
                                  "--join-secret",
                                  secret,
                                  "--attempt-lease-ttl-ms",
                                  std::to_string(attempt_ttl.count()),
                                  "--worker-heartbeat-interval-ms",
                                  "300",
                                  "--lease-ttl-ms",
                                  "2000",
                                  "--lease-renew-interval-ms",
                                  "300"};
    // An option of `extra` given above replaces its value; the rest (and
    // flags, and options given twice in `extra`) are appended.
    auto base = static_cast<std::ptrdiff_t>(args.size());
    for (size_t i = 0; i < extra.size(); ++i) {
      auto end = args.begin() + base;
      auto opt = std::find(args.begin(), end, extra[i]);
      if (opt != end && opt + 1 != end && i + 1 < extra.size()
          && extra[i].rfind("--", 0) == 0) {
        *(opt + 1) = extra[++i];
        continue;
      }
      args.push_back(extra[i]);
    }
    return args;
  }

  void start_coordinator(std::vector<std::string> extra = {}) {
    coordinator = std::make_unique<process>(
        coordinator_args("coord", cluster_port, std::move(extra)),
        logs.path() + "/coord.log");
    auto ready = coordinator->wait_for_line("ready", 30s);
    INFO(tail_of(logs.path() + "/coord.log"));
    REQUIRE(ready);
    admin = admin_port_of(*ready);
  }

  /// A coordinator started with --standby on the same database and its
  /// own cluster port: it waits (and says "standing by") until the
  /// active coordinator stops renewing the leases, then takes over.
  /// Worker nodes started afterwards know its address too.
  process& start_standby(const std::string& name,
                         std::vector<std::string> extra = {}) {
    auto port = free_port();
    auto& p = standbys[name];
    extra.push_back("--standby");
    p = std::make_unique<process>(
        coordinator_args(name, port, std::move(extra)),
        logs.path() + "/" + name + ".log");
    standby_ports.emplace_back(port);
    INFO(tail_of(logs.path() + "/" + name + ".log"));
    REQUIRE(p->wait_for_line("standing by", 30s));
    return *p;
  }

  /// A gateway node that joins this cluster's coordinators with
  /// `join_secret` (theirs is --gateway-join-secret) and picks its HTTP port.
  std::vector<std::string> gateway_args(const std::string& name,
                                        const std::string& join_secret) const {
    return {DROVER_NODE_BIN,
            "--node-id",
            name,
            "--roles",
            "gateway",
            "--coordinator",
            coordinator_list(),
            "--join-secret",
            join_secret,
            "--http-port",
            "0"};
  }

  /// The --coordinator list: the active coordinator, then the standbys.
  std::string coordinator_list() const {
    auto list = "127.0.0.1:" + std::to_string(cluster_port);
    for (auto port : standby_ports)
      list += ",127.0.0.1:" + std::to_string(port);
    return list;
  }

  process& start_worker(const std::string& name,
                        std::vector<std::string> extra = {},
                        bool wait_joined = true) {
    std::vector<std::string> args{
        DROVER_NODE_BIN,    "--node-id",     name,
        "--roles",          "worker",        "--coordinator",
        coordinator_list(), "--join-secret", secret,
        "--slots",          "cpu=2"};
    for (size_t i = 0; i + 1 < extra.size(); i += 2) {
      auto opt = std::find(args.begin(), args.end(), extra[i]);
      if (opt != args.end())
        *(opt + 1) = extra[i + 1];
      else
        args.insert(args.end(), {extra[i], extra[i + 1]});
    }
    auto log = logs.path() + "/" + name + ".log";
    auto& w = workers[name];
    w = std::make_unique<process>(args, log);
    if (wait_joined) {
      auto joined = w->wait_for_line("joined the coordinator", 30s);
      INFO(tail_of(log));
      REQUIRE(joined);
    }
    return *w;
  }

  /// `steps` > 0: a sleep that reports progress that often (see
  /// wait_running).
  std::string submit(int ms, const std::string& type = "sleep", int steps = 0) {
    // A sleep's length is what lets a test act while it runs: stretched
    // with the code's speed (time_scale.hpp).
    auto input = type == "sleep"
                     ? "{\"ms\":" + std::to_string(ms * time_scale())
                           + (steps > 0 ? ",\"steps\":" + std::to_string(steps)
                                        : std::string{})
                           + "}"
                     : std::string{R"({"argv":["true"]})"};
    auto [rc, out] = ctl({"submit", type, "--port", admin, "--input", input});
    INFO(out);
    REQUIRE(rc == 0);
    return job_id_of(out);
  }

  /// Waits until the job's handler runs on a worker, not only `started`
  /// on the coordinator: its first progress report is in the audit log (a
  /// job submitted with steps). Before that its lease may still be on its
  /// way, and a coordinator or worker killed then rightly runs it again.
  bool wait_running(const std::string& job,
                    std::chrono::milliseconds timeout = 10s) {
    return poll_until([&] { return events(job, progressed_kind) > 0; },
                      timeout);
  }

  int64_t events(const std::string& job, int kind) {
    return scalar(url(), "SELECT count(*) FROM drover.events WHERE job_id = '"
                             + job + "' AND kind = " + std::to_string(kind));
  }

  /// Every job terminal, each completed exactly once.
  void check_all_done_once(const std::vector<std::string>& jobs,
                           std::chrono::milliseconds timeout) {
    INFO(tail_of(logs.path() + "/coord.log"));
    bool done = poll_until(
        [&] {
          return scalar(url(), "SELECT count(*) FROM drover.jobs WHERE "
                               "final_status IS NULL")
                 == 0;
        },
        timeout);
    if (!done) {
      INFO("not finished: " << unfinished());
      REQUIRE(done);
    }
    for (auto& j : jobs) {
      INFO(j);
      CHECK(events(j, completed_kind) == 1);
    }
  }

  /// Each job not yet finished: its status, its partition's owner and its
  /// events as attempt:kind@ms since the first (to read a failure).
  std::string unfinished() {
    auto conn = must(drover::pg::connection::open(url()));
    auto res = run(
        conn,
        "SELECT j.job_id || ' status ' || j.status || ' owner ' || "
        "coalesce((SELECT owner_node || '@' || epoch FROM "
        "drover.partition_leases WHERE partition = "
        "drover.partition_of(j.job_id)), '-') || ' events ' || "
        "coalesce((SELECT string_agg(e.attempt || ':' || e.kind || '@' || "
        "(e.at_ms - j.created_at_ms), ' ' ORDER BY e.seq) FROM drover.events "
        "e WHERE e.job_id = j.job_id), '') FROM drover.jobs j WHERE "
        "j.final_status IS NULL ORDER BY j.job_id LIMIT 20");
    std::string out;
    for (int i = 0; i < res.rows(); ++i)
      out += "\n  " + std::string{res.value(i, 0)};
    return out;
  }

  /// droverctl with `args` and ctl_args.
  std::pair<int, std::string> ctl(std::vector<std::string> args) const {
    args.insert(args.end(), ctl_args.begin(), ctl_args.end());
    return droverctl(std::move(args));
  }

  /// The worker (node/slot) that ran the job's last attempt, as the
  /// coordinator at admin port `via` (default: this cluster's) reads it.
  std::string worker_of(const std::string& job, const std::string& via = {}) {
    auto [rc, out]
        = ctl({"get", job, "--port", via.empty() ? admin : via, "--json"});
    REQUIRE(rc == 0);
    auto key = std::string{"\"worker_id\":\""};
    auto pos = out.find(key);
    REQUIRE(pos != std::string::npos);
    auto end = out.find('"', pos + key.size());
    return out.substr(pos + key.size(), end - pos - key.size());
  }

  /// How often `name`'s log (stderr) holds `needle` so far.
  int log_count(const std::string& name, const std::string& needle) {
    std::ifstream in{logs.path() + "/" + name + ".log"};
    std::string all{std::istreambuf_iterator<char>{in},
                    std::istreambuf_iterator<char>{}};
    int n = 0;
    for (auto at = all.find(needle); at != std::string::npos;
         at = all.find(needle, at + 1))
      ++n;
    return n;
  }

  /// Waits until `name`'s log (stderr) holds `needle`.
  bool wait_log(const std::string& name, const std::string& needle,
                std::chrono::milliseconds timeout) {
    return poll_until([&] { return log_count(name, needle) > 0; }, timeout);
  }

  bool all_started(const std::vector<std::string>& jobs) {
    for (auto& j : jobs)
      if (events(j, started_kind) == 0)
        return false;
    return true;
  }
};

/// Owner node and epoch of every lease row, as "node@epoch" if all agree,
/// else "mixed".
inline std::string lease_owner(const std::string& url) {
  auto conn = must(drover::pg::connection::open(url));
  auto res = run(conn, "SELECT count(DISTINCT (owner_node, epoch)), "
                       "min(owner_node), min(epoch) FROM "
                       "drover.partition_leases");
  if (std::string{res.value(0, 0)} != "1")
    return "mixed";
  return std::string{res.value(0, 1)} + "@" + std::string{res.value(0, 2)};
}

inline std::string node_of(const std::string& worker_id) {
  return worker_id.substr(0, worker_id.find('/'));
}

} // namespace drover::testing::cluster_harness
