// Failover under faults (issue 13), with real drover-node processes on a
// PostgreSQL of the test's own (support/pg_cluster.hpp), which the test
// cuts off from one coordinator and stops with `-m immediate`:
//
// - the active coordinator loses PostgreSQL (its sessions killed, its role
//   refused new ones): it stops renewing, the standby takes over with the
//   next epoch, and once PostgreSQL lets the old one in again its first
//   renewal meets that epoch: it exits 3 without writing anything;
// - PostgreSQL stops with `-m immediate` while the standby waits to take
//   over from a killed coordinator: the standby stands by through the
//   outage and takes over once the database is back;
// - a worker node is cut off from its coordinator by a network partition
//   (support/tcp_proxy.hpp) past its attempts' leases: they run again on
//   the other worker, and after the heal — the held bytes let through, or
//   the connections reset, as the seed decides — the cut-off worker's late
//   outcomes are refused and recorded, and it serves again.
//
// After the faults heal, every stored job is audited against
// ../shared/RELIABILITY.md (support/audit.hpp). Job lengths are seeded;
// the seed is printed (DROVER_TEST_SEED replays one). Waits are on events
// with deadlines.

#include "support/audit.hpp"
#include "support/cluster.hpp"
#include "support/pg_cluster.hpp"
#include "support/tcp_proxy.hpp"

#include <catch2/catch.hpp>

#include <csignal>
#include <iostream>
#include <random>
#include <set>
#include <string>
#include <sys/wait.h>
#include <vector>

using namespace drover::testing;
using namespace drover::testing::cluster_harness;
using namespace drover::testing::audit_log;
using namespace std::chrono_literals;

namespace {

/// `n` sleep jobs of 100..400 ms (seeded) through the admin port.
void submit_some(cluster& c, std::mt19937_64& rng, int n,
                 std::set<std::string>& acked) {
  std::uniform_int_distribution<int> ms{100, 400};
  for (int i = 0; i < n; ++i)
    acked.insert(c.submit(ms(rng)));
}

void audit_all(const std::string& url, const std::set<std::string>& acked) {
  auto jobs = load_all(url);
  auto totals = audit(jobs, acked);
  CHECK(totals.completed == acked.size());
  CHECK(jobs.size() == acked.size()); // no job the clients did not see
  std::cout << "failover_fault_test: " << acked.size() << " jobs, "
            << totals.attempts << " attempts, " << totals.interrupted
            << " interrupted" << std::endl;
}

} // namespace

TEST_CASE("a coordinator cut off from PostgreSQL loses its leases to the "
          "standby and, let back in, writes nothing and exits 3",
          "[pg][cluster][process][failover][faults]") {
  auto seed = test_seed();
  std::cout << "failover_fault_test cut-off: seed " << seed << std::endl;
  INFO("seed " << seed << " (DROVER_TEST_SEED replays it)");
  std::mt19937_64 rng{seed};
  throwaway_cluster pg;
  // The active coordinator logs in as a role of its own, so that the test
  // can cut exactly it off: its sessions killed, new ones refused.
  auto admin = must(drover::pg::connection::open(pg.url()));
  run(admin, "CREATE ROLE coord_a LOGIN SUPERUSER");
  cluster c;
  c.pg_url = must(drover::pg::conninfo_with(pg.url(), {{"user", "coord_a"}}));
  c.start_coordinator();
  c.pg_url = pg.url();
  auto& standby = c.start_standby("coord-b");
  c.start_worker("w1", {"--slots", "cpu=4"});
  std::set<std::string> acked;
  submit_some(c, rng, 12, acked);
  REQUIRE(poll_until([&] { return c.all_started({*acked.begin()}); }, 20s));

  run(admin, "ALTER ROLE coord_a NOLOGIN");
  auto killed = scalar(pg.url(), "SELECT count(pg_terminate_backend(pid)) "
                                 "FROM pg_stat_activity WHERE usename = "
                                 "'coord_a'");
  INFO("sessions of the active coordinator killed: " << killed);
  CHECK(killed >= 1);
  auto ready = standby.wait_for_line("node: ready", 30s);
  INFO(tail_of(c.logs.path() + "/coord-b.log"));
  INFO(tail_of(c.logs.path() + "/coord.log"));
  REQUIRE(ready);
  CHECK(lease_owner(pg.url()) == "coord-b@2");
  c.admin = admin_port_of(*ready);
  // The cut-off coordinator is still running: it cannot reach PostgreSQL.
  CHECK_FALSE(c.coordinator->wait_exit(0ms));
  CHECK(c.wait_log("coord", "cannot renew the partition leases", 1s));

  // Let it back in: its next renewal meets epoch 2.
  run(admin, "ALTER ROLE coord_a LOGIN");
  auto st = c.coordinator->wait_exit(20s);
  REQUIRE(st);
  REQUIRE(WIFEXITED(*st));
  CHECK(WEXITSTATUS(*st) == 3);
  CHECK(c.wait_log("coord", "deposed", 1s));
  CHECK(lease_owner(pg.url()) == "coord-b@2");

  // The worker follows to the new coordinator; more work is accepted.
  submit_some(c, rng, 4, acked);
  c.check_all_done_once({acked.begin(), acked.end()}, 60s);
  audit_all(pg.url(), acked);
}

TEST_CASE("PostgreSQL stopped with -m immediate during a takeover: the "
          "standby waits it out and takes over when it is back",
          "[pg][cluster][process][failover][faults]") {
  auto seed = test_seed();
  std::cout << "failover_fault_test pg-down: seed " << seed << std::endl;
  INFO("seed " << seed << " (DROVER_TEST_SEED replays it)");
  std::mt19937_64 rng{seed};
  throwaway_cluster pg;
  cluster c;
  c.pg_url = pg.url();
  c.start_coordinator();
  auto& standby = c.start_standby("coord-b");
  c.start_worker("w1", {"--slots", "cpu=4"});
  std::set<std::string> acked;
  submit_some(c, rng, 12, acked);
  REQUIRE(poll_until([&] { return c.all_started({*acked.begin()}); }, 20s));

  // PostgreSQL crashes, and the active coordinator dies with its lease
  // unexpired: the standby must wait out the outage to take over.
  pg.stop_immediately();
  c.coordinator->signal(SIGKILL);
  INFO(tail_of(c.logs.path() + "/coord-b.log"));
  REQUIRE(c.wait_log("coord-b", "standing by without PostgreSQL", 20s));
  CHECK_FALSE(standby.wait_exit(0ms));
  pg.start();
  auto ready = standby.wait_for_line("node: ready", 30s);
  INFO(pg.server_log());
  REQUIRE(ready);
  CHECK(lease_owner(pg.url()) == "coord-b@2");
  c.admin = admin_port_of(*ready);
  submit_some(c, rng, 4, acked);
  c.check_all_done_once({acked.begin(), acked.end()}, 60s);
  audit_all(pg.url(), acked);
}

TEST_CASE("a worker cut off from its coordinator past its leases: its jobs "
          "run on the other worker, its late outcomes are refused, and it "
          "serves again after the heal",
          "[pg][cluster][process][faults]") {
  auto seed = test_seed();
  std::mt19937_64 rng{seed};
  bool reset = rng() % 2 == 0;
  std::cout << "failover_fault_test partition: seed " << seed << ", heal by "
            << (reset ? "resetting the connections" : "letting bytes through")
            << std::endl;
  INFO("seed " << seed << " (DROVER_TEST_SEED replays it)");
  cluster c;
  c.start_coordinator();
  tcp_proxy proxy{c.cluster_port};
  c.start_worker("w1", {"--slots", "cpu=2", "--coordinator",
                        "127.0.0.1:" + std::to_string(proxy.port())});
  std::set<std::string> acked;
  std::vector<std::string> on_w1;
  // Jobs long enough to outlive the partition's start: whatever w1 runs
  // when it is cut off is still running when its leases lapse.
  std::uniform_int_distribution<int> ms{3000, 4000};
  for (int i = 0; i < 2; ++i)
    on_w1.push_back(c.submit(ms(rng)));
  acked.insert(on_w1.begin(), on_w1.end());
  REQUIRE(poll_until([&] { return c.all_started(on_w1); }, 20s));
  for (const auto& j : on_w1)
    REQUIRE(node_of(c.worker_of(j)) == "w1");

  proxy.cut();
  // The second worker joins after the cut: w1's jobs cannot have ended
  // before it.
  c.start_worker("w2", {"--slots", "cpu=2"});
  // The coordinator hears nothing more from w1: the attempts' leases lapse
  // and the jobs run again, on w2.
  INFO(tail_of(c.logs.path() + "/coord.log"));
  REQUIRE(poll_until(
      [&] {
        for (const auto& j : on_w1)
          if (c.events(j, started_kind) < 2)
            return false;
        return true;
      },
      30s));
  for (const auto& j : on_w1) {
    CHECK(c.events(j, lease_expired_kind) == 1);
    CHECK(node_of(c.worker_of(j)) == "w2");
  }
  // Meanwhile w1 finishes its superseded attempts (its sleeps end).
  REQUIRE(c.wait_log("w1", "a heartbeat went unanswered", 20s));
  if (reset)
    proxy.reset();
  proxy.heal();
  // w1's late outcomes (or heartbeats) of attempt 1 meet the fence.
  CHECK(poll_until(
      [&] {
        for (const auto& j : on_w1)
          if (c.events(j, report_rejected_kind) == 0)
            return false;
        return true;
      },
      30s));
  // It serves again: with w2 stopped, new work can only run on w1.
  auto& w2 = *c.workers["w2"];
  w2.signal(SIGTERM);
  REQUIRE(w2.wait_exit(30s));
  std::vector<std::string> after;
  for (int i = 0; i < 3; ++i)
    after.push_back(c.submit(50));
  acked.insert(after.begin(), after.end());
  c.check_all_done_once({acked.begin(), acked.end()}, 60s);
  for (const auto& j : after)
    CHECK(node_of(c.worker_of(j)) == "w1");
  audit_all(c.url(), acked);
}
