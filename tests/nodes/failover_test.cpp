// Coordinator failover with a standby (docs/cluster.md): a second
// coordinator on the same database, started with --standby, waits while
// the active one renews the partition leases and takes over when it stops;
// worker nodes given both addresses follow. Real processes, real
// PostgreSQL, a real SIGKILL; the invariants are read from the audit log.

#include "support/cluster.hpp"
#include "support/gateway_api.hpp"
#include "support/gateway_node.hpp"
#include "support/http_client.hpp"

#include <catch2/catch.hpp>

#include <csignal>
#include <iostream>
#include <string>
#include <sys/wait.h>
#include <vector>

using namespace drover::testing;
using namespace drover::testing::cluster_harness;
using namespace std::chrono_literals;

TEST_CASE("kill -9 of the active coordinator: the standby takes over, the "
          "worker follows, and every acknowledged job completes once",
          "[pg][cluster][process][failover]") {
  cluster c;
  c.start_coordinator();
  auto& standby = c.start_standby("coord-b");
  CHECK(lease_owner(c.db.url()) == "coord@1");
  c.start_worker("w1", {"--slots", "cpu=4"});
  std::vector<std::string> jobs;
  for (int i = 0; i < 16; ++i)
    jobs.push_back(c.submit(400));
  REQUIRE(poll_until(
      [&] {
        return scalar(c.db.url(), "SELECT count(*) FROM drover.events WHERE "
                                  "kind = "
                                      + std::to_string(completed_kind))
               >= 2;
      },
      20s));
  // The standby is still standing by: it has not touched the leases. The
  // coordinators view shows both.
  CHECK(lease_owner(c.db.url()) == "coord@1");
  {
    auto [rc, out] = droverctl({"nodes", "--port", c.admin, "--json"});
    INFO(out);
    REQUIRE(rc == 0);
    CHECK(out.find("\"coordinators\":[{\"node_id\" : \"coord\"")
          != std::string::npos);
    CHECK(out.find("\"node_id\" : \"coord-b\"") != std::string::npos);
    CHECK(out.find("\"state\" : \"standby\", \"partitions\" : 0")
          != std::string::npos);
  }
  auto killed = std::chrono::steady_clock::now();
  c.coordinator->signal(SIGKILL);
  auto ready = standby.wait_for_line("node: ready", 30s);
  INFO(tail_of(c.logs.path() + "/coord-b.log"));
  REQUIRE(ready);
  auto took = std::chrono::steady_clock::now() - killed;
  INFO("takeover after kill -9 took "
       << std::chrono::duration_cast<std::chrono::milliseconds>(took).count()
       << " ms (lease TTL 2000 ms)");
  CHECK(took < 2000ms + scaled(3s));
  std::cout
      << "failover_test: the standby was ready "
      << std::chrono::duration_cast<std::chrono::milliseconds>(took).count()
      << " ms after kill -9 of the active coordinator (lease TTL 2000 "
         "ms)\n";
  // One epoch more on every partition, all of them the standby's.
  CHECK(lease_owner(c.db.url()) == "coord-b@2");
  c.admin = admin_port_of(*ready);
  // New work is accepted by the new coordinator ...
  for (int i = 0; i < 4; ++i)
    jobs.push_back(c.submit(50));
  // ... and the worker node, which knew both addresses, finishes
  // everything there: each acknowledged job exactly once.
  c.check_all_done_once(jobs, 60s);
  CHECK(c.wait_log("coord-b", "taking over", 1s));
  // Now coord-b is the active one; the killed coordinator is gone (not
  // heard from for two lease TTLs) or, just after the kill, still listed
  // as it was last heard.
  auto [rc, out] = droverctl({"nodes", "--port", c.admin, "--json"});
  INFO(out);
  REQUIRE(rc == 0);
  CHECK(out.find("\"coordinators\":[{\"node_id\" : \"coord-b\"")
        != std::string::npos);
  CHECK(out.find("\"state\" : \"active\", \"partitions\" : 64")
        != std::string::npos);
  CHECK(scalar(c.db.url(), "SELECT count(*) FROM drover.jobs") == 20);
}

TEST_CASE("SIGTERM of the active coordinator hands over at once: the "
          "standby is ready well within the lease TTL and adopts the "
          "running attempts",
          "[pg][cluster][process][failover]") {
  // A long TTL, so that a takeover that waited for expiry would show.
  const std::vector<std::string> ttl{"--lease-ttl-ms", "20000",
                                     "--lease-renew-interval-ms", "1000"};
  cluster c;
  c.start_coordinator(ttl);
  auto& standby = c.start_standby("coord-b", ttl);
  c.start_worker("w1", {"--slots", "cpu=4"});
  std::vector<std::string> jobs;
  for (int i = 0; i < 4; ++i) {
    // Steps: the worker reports progress, proof that it runs the attempt
    // (a `started` event alone is written before the lease goes out).
    auto input
        = "{\"ms\":" + std::to_string(3000 * time_scale()) + ",\"steps\":30}";
    auto [rc, out]
        = droverctl({"submit", "sleep", "--port", c.admin, "--input", input});
    INFO(out);
    REQUIRE(rc == 0);
    jobs.push_back(job_id_of(out));
  }
  REQUIRE(poll_until(
      [&] {
        for (const auto& j : jobs)
          if (c.events(j, 4) == 0) // progressed
            return false;
        return true;
      },
      20s));
  auto stopped = std::chrono::steady_clock::now();
  c.coordinator->signal(SIGTERM);
  auto ready = standby.wait_for_line("node: ready", 30s);
  INFO(tail_of(c.logs.path() + "/coord.log"));
  INFO(tail_of(c.logs.path() + "/coord-b.log"));
  REQUIRE(ready);
  auto took = std::chrono::steady_clock::now() - stopped;
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(took);
  std::cout << "failover_test: hand-over after SIGTERM took " << ms.count()
            << " ms (lease TTL 20000 ms)" << std::endl;
  CHECK(took < scaled(5s));
  auto st = c.coordinator->wait_exit(10s);
  REQUIRE(st);
  CHECK(WIFEXITED(*st));
  CHECK(WEXITSTATUS(*st) == 0);
  CHECK(lease_owner(c.db.url()) == "coord-b@2");
  c.admin = admin_port_of(*ready);
  // The attempts kept running on w1 and were adopted: one `started` each.
  c.check_all_done_once(jobs, 60s);
  for (const auto& j : jobs) {
    auto conn = must(drover::pg::connection::open(c.db.url()));
    auto history = run(conn, "SELECT string_agg(kind::text || '/' || "
                             "attempt::text, ' ' ORDER BY seq) FROM "
                             "drover.events WHERE job_id = '"
                                 + j + "'");
    INFO(j << " kind/attempt: " << history.value(0, 0));
    CHECK(c.events(j, started_kind) == 1);
  }
}

TEST_CASE("a standby stopped while standing by exits 0 and leaves the "
          "leases alone",
          "[pg][cluster][process][failover]") {
  cluster c;
  c.start_coordinator();
  auto& standby = c.start_standby("coord-b");
  auto before = lease_owner(c.db.url());
  standby.signal(SIGTERM);
  auto st = standby.wait_exit(10s);
  REQUIRE(st);
  REQUIRE(WIFEXITED(*st));
  CHECK(WEXITSTATUS(*st) == 0);
  CHECK(c.wait_log("coord-b", "stopped while standing by", 1s));
  CHECK(lease_owner(c.db.url()) == before);
  // The active coordinator still serves.
  auto job = c.submit(0);
  c.start_worker("w1");
  c.check_all_done_once({job}, 30s);
}

TEST_CASE("a coordinator stopped past its lease and woken after the standby "
          "took over writes nothing more and steps down",
          "[pg][cluster][process][failover]") {
  cluster c;
  c.start_coordinator();
  auto& standby = c.start_standby("coord-b");
  c.start_worker("w1", {"--slots", "cpu=2"});
  std::vector<std::string> jobs;
  for (int i = 0; i < 6; ++i)
    jobs.push_back(c.submit(300));
  REQUIRE(poll_until([&] { return c.all_started({jobs.front()}); }, 20s));
  c.coordinator->signal(SIGSTOP);
  auto ready = standby.wait_for_line("node: ready", 30s);
  INFO(tail_of(c.logs.path() + "/coord-b.log"));
  REQUIRE(ready);
  CHECK(lease_owner(c.db.url()) == "coord-b@2");
  c.admin = admin_port_of(*ready);
  for (int i = 0; i < 4; ++i)
    jobs.push_back(c.submit(50));
  c.check_all_done_once(jobs, 60s);
  auto events_before = scalar(c.db.url(), "SELECT count(*) FROM drover.events");
  // The old coordinator wakes up: its first renewal or write meets the new
  // epoch; it says it was deposed and exits 3 without writing a row.
  c.coordinator->signal(SIGCONT);
  auto st = c.coordinator->wait_exit(20s);
  REQUIRE(st);
  REQUIRE(WIFEXITED(*st));
  CHECK(WEXITSTATUS(*st) == 3);
  CHECK(c.wait_log("coord", "deposed", 1s));
  CHECK(scalar(c.db.url(), "SELECT count(*) FROM drover.events")
        == events_before);
  CHECK(lease_owner(c.db.url()) == "coord-b@2");
  // Every job still ended exactly once.
  for (const auto& j : jobs)
    CHECK(c.events(j, completed_kind) == 1);
}

TEST_CASE("a gateway node follows the failover: it joins the standby and "
          "keeps serving HTTP without a restart",
          "[pg][cluster][process][failover]") {
  const std::string gateway_secret = "cluster-test-gateway-secret-42";
  cluster c;
  c.start_coordinator({"--gateway-join-secret", gateway_secret});
  auto& standby
      = c.start_standby("coord-b", {"--gateway-join-secret", gateway_secret});
  c.start_worker("w1");
  process gw{c.gateway_args("gw", gateway_secret), c.logs.path() + "/gw.log"};
  auto gw_ready = gw.wait_for_line("node: ready", 30s);
  INFO(tail_of(c.logs.path() + "/gw.log"));
  REQUIRE(gw_ready);
  auto port = http_port_of(*gw_ready);
  auto submit = [&]() -> std::string {
    http_client client{port};
    auto res
        = client.post("/api/jobs", R"({"type": "sleep", "input": {"ms": 20}})");
    if (res.status != 202)
      return {};
    auto key = std::string{"\"job_id\":\""};
    auto at = res.body.find(key);
    REQUIRE(at != std::string::npos);
    return res.body.substr(at + key.size(), res.body.find('"', at + key.size())
                                                - at - key.size());
  };
  std::vector<std::string> jobs;
  jobs.push_back(submit());
  REQUIRE(!jobs.back().empty());
  // A long job's progress stream through the gateway, open across the
  // failover: the relay subscribes again at the standby once it joined it.
  auto streamed = gateway_api::submit(
      http_client{port}, "{\"type\": \"sleep\", \"input\": {\"ms\": "
                             + std::to_string(16000 * time_scale())
                             + ", \"steps\": 32}}");
  jobs.push_back(streamed);
  gateway_api::stream_across stream{port, streamed};
  auto before = stream.first(30s);
  c.coordinator->signal(SIGKILL);
  REQUIRE(standby.wait_for_line("node: ready", 30s));
  // The same gateway process accepts submits again once it has joined the
  // standby (a 503 meanwhile, never a 202 that is lost).
  std::string after;
  REQUIRE(poll_until(
      [&] {
        after = submit();
        return !after.empty();
      },
      20s, std::chrono::milliseconds{200}));
  jobs.push_back(after);
  auto rest = stream.rest(60s);
  INFO("progress " << before << " % before the kill, live up to "
                   << rest.live_top << " % after it");
  CHECK(rest.errors == 0);
  CHECK(rest.last == "completed");
  // Live progress after the kill, well past what the killed coordinator
  // could have sent (an update or two past `before`): from the new owner.
  CHECK(rest.live >= 2);
  CHECK(rest.live_top >= before + 20);
  c.check_all_done_once(jobs, 30s);
  CHECK(c.wait_log("gw", "joined a coordinator again", 1s));
  CHECK_FALSE(gw.wait_exit(std::chrono::milliseconds{0}));
}
