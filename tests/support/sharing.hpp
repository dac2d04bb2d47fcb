#pragma once

// Coordinators sharing one database (--share-partitions) as real processes,
// for the multi-process tests (tests/nodes/share_test.cpp,
// share_gateway_test.cpp).

#include "drover/client.hpp"
#include "support/cluster.hpp"

#include <catch2/catch.hpp>

#include <csignal>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace drover::testing::cluster_harness {

using namespace std::chrono_literals;

/// Coordinators sharing `c`'s database, each with four local slots.
struct sharing {
  explicit sharing(cluster& of) : c(of) {}

  cluster& c;
  std::map<std::string, std::unique_ptr<process>> nodes;
  std::map<std::string, std::string> admin;
  std::map<std::string, uint16_t> ports;
  /// Each one's last "ready" line (its admin and, if any, HTTP address).
  std::map<std::string, std::string> ready_lines;

  /// `local`: with four local slots; else only worker nodes run its jobs.
  /// `extra`: more options. Started again, `name` keeps its cluster port.
  void start(const std::string& name, bool local = true,
             std::vector<std::string> extra = {}) {
    auto log = c.logs.path() + "/" + name + ".log";
    auto& p = nodes[name];
    // A restarted coordinator keeps its cluster port: worker nodes know it.
    if (ports.count(name) == 0)
      ports[name] = free_port();
    auto port = ports[name];
    extra.push_back("--share-partitions");
    if (local)
      extra.insert(extra.end(),
                   {"--roles", "coordinator,worker", "--slots", "cpu=4"});
    p = std::make_unique<process>(c.coordinator_args(name, port, extra), log);
    auto ready = p->wait_for_line("ready", 30s);
    INFO(tail_of(log));
    REQUIRE(ready);
    admin[name] = admin_port_of(*ready);
    ready_lines[name] = *ready;
  }

  /// c1, c2 and c3 (with local slots and `extra` options), once they hold
  /// the partitions evenly.
  void start_three(const std::vector<std::string>& extra = {}) {
    for (const auto* name : {"c1", "c2", "c3"})
      start(name, true, extra);
    INFO(logs_of({"c1", "c2", "c3"}));
    REQUIRE(poll_until([&] { return spread_over({"c1", "c2", "c3"}); }, 20s));
  }

  /// Unexpired leases per owner node.
  std::map<std::string, int64_t> shares() {
    std::map<std::string, int64_t> out;
    auto conn = must(drover::pg::connection::open(c.url()));
    auto res = run(conn, "SELECT owner_node, count(*) FROM "
                         "drover.partition_leases WHERE owner IS NOT NULL "
                         "AND expires_at > now() GROUP BY owner_node");
    for (int row = 0; row < res.rows(); ++row)
      out[std::string{res.value(row, 0)}]
          = std::stoll(std::string{res.value(row, 1)});
    return out;
  }

  /// Every partition held, by exactly `names`, evenly (64 / n or one more).
  bool spread_over(const std::vector<std::string>& names) {
    auto s = shares();
    if (s.size() != names.size())
      return false;
    int64_t total = 0;
    auto n = static_cast<int64_t>(names.size());
    for (const auto& name : names) {
      auto i = s.find(name);
      if (i == s.end() || i->second < 64 / n || i->second > (64 + n - 1) / n)
        return false;
      total += i->second;
    }
    return total == 64;
  }

  std::string submit(const std::string& name, int ms) {
    auto input
        = "{\"ms\":" + std::to_string(ms * time_scale()) + ",\"steps\":10}";
    auto [rc, out] = droverctl(
        {"submit", "sleep", "--port", admin.at(name), "--input", input});
    INFO(out);
    REQUIRE(rc == 0);
    return job_id_of(out);
  }

  /// The --coordinator list of `names`' cluster ports.
  std::string coordinator_list(const std::vector<std::string>& names) {
    std::string list;
    for (const auto& n : names)
      list += (list.empty() ? "" : ",") + std::string{"127.0.0.1:"}
              + std::to_string(ports.at(n));
    return list;
  }

  /// A worker node that joins every coordinator of `names`
  /// (--share-partitions) with `slots`.
  void start_worker(const std::string& name,
                    const std::vector<std::string>& names,
                    const std::string& slots) {
    nodes[name] = std::make_unique<process>(
        std::vector<std::string>{
            DROVER_NODE_BIN, "--node-id", name, "--roles", "worker",
            "--coordinator", coordinator_list(names), "--join-secret", secret,
            "--slots", slots, "--share-partitions"},
        c.logs.path() + "/" + name + ".log");
  }

  /// True once `coordinator` logged that `agent` joined it.
  bool joined(const std::string& coordinator, const std::string& agent) {
    return c.log_count(coordinator, "worker node joined node=" + agent + " ")
           > 0;
  }

  /// Where the agents of w1 and w2 for `dead` joined among `survivors`
  /// (worker node -> coordinator), once both have.
  std::map<std::string, std::string>
  failed_over(const std::string& dead,
              const std::vector<std::string>& survivors) {
    std::map<std::string, std::string> at;
    REQUIRE(poll_until(
        [&] {
          for (const auto* w : {"w1", "w2"})
            for (const auto& name : survivors)
              if (joined(name, std::string{w} + "." + dead))
                at[w] = name;
          return at.size() == 2;
        },
        30s));
    return at;
  }

  /// c1, c2 and c3 without local slots (with `extra` options), once they
  /// hold the partitions evenly, and worker nodes w1 and w2 with `slots`,
  /// once each has an agent joined to each coordinator ("w1.c1", "w1.c2",
  /// ...).
  void start_three_with_workers(const std::string& slots,
                                const std::vector<std::string>& extra = {}) {
    const std::vector<std::string> names{"c1", "c2", "c3"};
    for (const auto& name : names)
      start(name, false, extra);
    REQUIRE(poll_until([&] { return spread_over(names); }, 20s));
    for (const auto* w : {"w1", "w2"})
      start_worker(w, names, slots);
    INFO(logs_of({"c1", "c2", "c3", "w1", "w2"}));
    REQUIRE(poll_until(
        [&] {
          for (const auto* w : {"w1", "w2"})
            for (const auto& name : names)
              if (!joined(name, std::string{w} + "." + name))
                return false;
          return true;
        },
        30s));
  }

  /// Jobs running on c3's agents, and the machine each runs on.
  struct on_agents {
    std::vector<std::string> jobs;
    std::map<std::string, std::string> machine;
  };

  /// `count` jobs of `ms` through c3 (start_three_with_workers), each
  /// running on one of its agents, then c3 killed (SIGKILL) once c1 and c2
  /// hold every partition between them.
  on_agents run_on_c3_agents_then_kill(int count, int ms) {
    on_agents out;
    for (int i = 0; i < count; ++i)
      out.jobs.push_back(submit("c3", ms));
    for (const auto& id : out.jobs) {
      REQUIRE(c.wait_running(id, 30s));
      auto w = c.worker_of(id, admin.at("c3"));
      REQUIRE(w.find(".c3/") != std::string::npos);
      out.machine[id] = w.substr(0, w.find(".c3/"));
    }
    REQUIRE(spread_over({"c1", "c2", "c3"}));
    nodes["c3"]->signal(SIGKILL);
    REQUIRE(nodes["c3"]->wait_exit(10s));
    REQUIRE(poll_until([&] { return spread_over({"c1", "c2"}); }, 30s));
    return out;
  }

  /// c3 started again (run_on_c3_agents_then_kill): each agent of
  /// `joined_at` (failed_over) goes home within `within`, while every job
  /// of `running` still runs.
  void
  restart_c3_agents_home(const std::map<std::string, std::string>& joined_at,
                         const std::vector<std::string>& running,
                         std::chrono::seconds within) {
    start("c3", false);
    for (const auto& [w, at] : joined_at) {
      INFO(w);
      CHECK(
          c.wait_log(w, "left the coordinator it had failed over to", within));
    }
    for (const auto& id : running) {
      INFO(id);
      CHECK(c.events(id, completed_kind) == 0);
    }
  }

  /// The owner node of `job`'s partition, from the lease table.
  std::string owner_of(const std::string& job) {
    auto conn = must(drover::pg::connection::open(c.url()));
    auto res = run(conn, "SELECT owner_node FROM drover.partition_leases "
                         "WHERE partition = drover.partition_of('"
                             + job + "')");
    return std::string{res.value(0, 0)};
  }

  /// The admin ports of `names`, "127.0.0.1:port" each.
  std::vector<std::string>
  admin_addresses(const std::vector<std::string>& names) {
    std::vector<std::string> out;
    for (const auto& n : names)
      out.push_back("127.0.0.1:" + admin.at(n));
    return out;
  }

  /// A C++ client given the admin ports of `names` (it routes by itself).
  std::unique_ptr<drover::client>
  client_of(const std::vector<std::string>& names) {
    drover::client_options o;
    o.nodes = admin_addresses(names);
    o.timeout = 30s;
    o.reconnect_max = 500ms;
    auto made = drover::client::make(o);
    REQUIRE(made);
    return std::move(*made);
  }

  std::string logs_of(const std::vector<std::string>& names) {
    std::string out;
    for (const auto& n : names)
      out += "--- " + n + "\n" + tail_of(c.logs.path() + "/" + n + ".log");
    return out;
  }
};

} // namespace drover::testing::cluster_harness
