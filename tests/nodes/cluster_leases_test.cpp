// The cluster with real processes (docs/cluster.md; the harness is
// tests/support/cluster.hpp), its jobs and leases: jobs spread over worker
// nodes, a worker killed, stopped or drained, a coordinator or worker
// restarted, a gateway node in front, lease TTLs and credits. One
// coordinator on a private PostgreSQL database, worker nodes joining it
// over CAF on loopback, ports chosen at run time. Each test checks from
// the audit log (drover.events) that no acknowledged job is lost, none
// completes twice and nothing is left running.
//
// Waits are on events with deadlines: a "ready"/"joined" line, a process
// exit, or a query re-run until it holds.

#include "drover/client.hpp"
#include "runtime/client_protocol.hpp"
#include "runtime/pg.hpp"
#include "runtime/type_ids.hpp"
#include "support/cluster.hpp"
#include "support/gateway_node.hpp"
#include "support/http_client.hpp"
#include "support/process.hpp"
#include "support/scratch.hpp"
#include "support/test_db.hpp"

#include <catch2/catch.hpp>

#include <csignal>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <string>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace drover;
using namespace std::chrono_literals;
using drover::testing::admin_port_of;
using drover::testing::droverctl;
using drover::testing::job_id_of;
using drover::testing::must;
using drover::testing::poll_until;
using drover::testing::process;
using drover::testing::run;
using drover::testing::scalar;
using drover::testing::scaled;
using drover::testing::scratch_dir;
using drover::testing::tail_of;
using drover::testing::test_db;
using drover::testing::time_scale;
using namespace drover::testing::cluster_harness;

TEST_CASE("jobs spread over two worker nodes, and a job type registered by "
          "one worker runs only there",
          "[pg][cluster][process]") {
  cluster c;
  c.start_coordinator();
  c.start_worker("w1", {"--job-types", "sleep,exec"});
  c.start_worker("w2", {"--job-types", "sleep"});
  std::vector<std::string> sleeps;
  for (int i = 0; i < 8; ++i)
    sleeps.push_back(c.submit(300));
  std::vector<std::string> execs;
  for (int i = 0; i < 3; ++i)
    execs.push_back(c.submit(0, "exec"));
  auto all = sleeps;
  all.insert(all.end(), execs.begin(), execs.end());
  c.check_all_done_once(all, 30s);
  std::set<std::string> sleep_nodes;
  for (auto& j : sleeps)
    sleep_nodes.insert(node_of(c.worker_of(j)));
  CHECK(sleep_nodes == std::set<std::string>{"w1", "w2"});
  for (auto& j : execs)
    CHECK(node_of(c.worker_of(j)) == "w1");
  // The node list shows both, with what they registered.
  auto [rc, nodes] = droverctl({"nodes", "--port", c.admin, "--json"});
  REQUIRE(rc == 0);
  CHECK(nodes.find(R"("node":"w1")") != std::string::npos);
  CHECK(nodes.find(R"("job_types":["sleep"])") != std::string::npos);
  // For people: a table, a row per node, and the coordinators below.
  auto [hrc, table] = droverctl({"nodes", "--port", c.admin});
  INFO(table);
  REQUIRE(hrc == 0);
  CHECK(table.rfind("NODE", 0) == 0);
  CHECK(table.find("CONNECTED") != std::string::npos);
  for (auto node : {"w1", "w2"}) {
    auto row = table.find(std::string{"\n"} + node + " ");
    REQUIRE(row != std::string::npos);
    auto line = table.substr(row + 1, table.find('\n', row + 1) - row - 1);
    CHECK(line.find("worker") != std::string::npos);
    CHECK(line.find("yes") != std::string::npos); // connected
    CHECK(line.find("cpu=") != std::string::npos);
  }
  CHECK(table.find("COORDINATOR") != std::string::npos);
  CHECK(table.find("active") != std::string::npos);
  CHECK(table.find('{') == std::string::npos); // no JSON
  // The tree spans the worker nodes and their slots.
  auto [trc, tree] = droverctl({"tree", "--port", c.admin});
  REQUIRE(trc == 0);
  CHECK(tree.find("node w2") != std::string::npos);
  CHECK(tree.find("w1/cpu-1") != std::string::npos);
}

TEST_CASE("SIGKILL of a worker mid-job: its jobs are leased again within "
          "TTL + 1 s and finish on the other worker, not counted as failures",
          "[pg][cluster][process]") {
  cluster c;
  c.start_coordinator();
  auto& w1 = c.start_worker("w1", {"--worker-prefetch", "0"});
  c.start_worker("w2", {"--worker-prefetch", "0"});
  std::vector<std::string> jobs;
  for (int i = 0; i < 4; ++i)
    jobs.push_back(c.submit(3000));
  REQUIRE(poll_until([&] { return c.all_started(jobs); }, 10s));
  std::vector<std::string> on_w1;
  for (auto& j : jobs)
    if (node_of(c.worker_of(j)) == "w1")
      on_w1.push_back(j);
  REQUIRE(on_w1.size() == 2);
  auto killed = std::chrono::steady_clock::now();
  w1.signal(SIGKILL);
  REQUIRE(poll_until(
      [&] {
        for (auto& j : on_w1)
          if (c.events(j, lease_expired_kind) == 0)
            return false;
        return true;
      },
      10s));
  auto relapsed = std::chrono::steady_clock::now() - killed;
  CHECK(relapsed < attempt_ttl + scaled(1s));
  c.check_all_done_once(jobs, 30s);
  for (auto& j : on_w1) {
    CHECK(node_of(c.worker_of(j)) == "w2");
    auto [rc, out] = droverctl({"get", j, "--port", c.admin, "--json"});
    // Lost, not failed: the retry budget is untouched.
    CHECK(out.find(R"("retry_count":0)") != std::string::npos);
    CHECK(out.find(R"("lost_count":1)") != std::string::npos);
    CHECK(out.find(R"("attempt":2)") != std::string::npos);
  }
}

TEST_CASE("a worker stopped past its lease: the job runs elsewhere and the "
          "zombie's late outcome is refused and recorded",
          "[pg][cluster][process]") {
  cluster c;
  c.start_coordinator();
  auto& w1 = c.start_worker("w1", {"--slots", "cpu=1"});
  auto job = c.submit(2500, "sleep", 25);
  REQUIRE(c.wait_running(job));
  REQUIRE(node_of(c.worker_of(job)) == "w1");
  w1.signal(SIGSTOP);
  // Its lease lapses; the second worker gets attempt 2.
  c.start_worker("w2", {"--slots", "cpu=1"});
  REQUIRE(poll_until([&] { return c.events(job, started_kind) == 2; }, 10s));
  CHECK(c.events(job, lease_expired_kind) == 1);
  c.check_all_done_once({job}, 30s);
  CHECK(node_of(c.worker_of(job)) == "w2");
  // The zombie wakes up: its attempt 1 ends (the sleep is over) and its
  // outcome, or its heartbeat, meets the fence.
  w1.signal(SIGCONT);
  INFO(tail_of(c.logs.path() + "/coord.log"));
  CHECK(poll_until([&] { return c.events(job, report_rejected_kind) == 1; },
                   15s));
  CHECK(scalar(c.db.url(), "SELECT count(*) FROM drover.events WHERE job_id "
                           "= '"
                               + job + "' AND kind = "
                               + std::to_string(report_rejected_kind)
                               + " AND attempt = 1")
        == 1);
  CHECK(c.events(job, completed_kind) == 1);
}

TEST_CASE("SIGTERM drains a worker: running attempts finish, no new leases, "
          "exit 0",
          "[pg][cluster][process]") {
  cluster c;
  c.start_coordinator();
  auto& w1 = c.start_worker("w1");
  std::vector<std::string> jobs{c.submit(1500), c.submit(1500)};
  REQUIRE(poll_until([&] { return c.all_started(jobs); }, 10s));
  w1.signal(SIGTERM);
  REQUIRE(c.wait_log("w1", "draining", 10s));
  // Submitted while draining: waits for another worker.
  auto later = c.submit(100);
  auto st = w1.wait_exit(20s);
  REQUIRE(st);
  CHECK(WIFEXITED(*st));
  CHECK(WEXITSTATUS(*st) == 0);
  for (auto& j : jobs) {
    CHECK(c.events(j, completed_kind) == 1);
    CHECK(c.events(j, started_kind) == 1);
    CHECK(node_of(c.worker_of(j)) == "w1");
  }
  CHECK(c.events(later, started_kind) == 0);
  // No connected worker runs it: visible in the node list, not parked.
  auto [nrc, nodes] = droverctl({"nodes", "--port", c.admin, "--json"});
  REQUIRE(nrc == 0);
  INFO(nodes);
  CHECK(
      nodes.find(
          R"("waiting_without_worker":[{"resource_class":"cpu","job_type":"sleep","jobs":1}])")
      != std::string::npos);
  // And the job itself says why it waits.
  auto [grc, got] = droverctl({"get", later, "--port", c.admin, "--json"});
  REQUIRE(grc == 0);
  CHECK(got.find("\"waiting_for\":\"no connected worker runs resource class "
                 "'cpu' with job type 'sleep'\"")
        != std::string::npos);
  c.start_worker("w2");
  jobs.push_back(later);
  c.check_all_done_once(jobs, 20s);
  CHECK(node_of(c.worker_of(later)) == "w2");
}

TEST_CASE("a coordinator restarted while a long job runs on a worker: the "
          "job continues without a new attempt",
          "[pg][cluster][process]") {
  cluster c;
  c.start_coordinator();
  c.start_worker("w1", {"--slots", "cpu=1"});
  auto job = c.submit(6000, "sleep", 60);
  // Running on the worker: a lease still on its way dies with the
  // coordinator, and the job then rightly runs again (CI saw that).
  REQUIRE(c.wait_running(job));
  c.coordinator->signal(SIGKILL);
  REQUIRE(c.coordinator->wait_exit(10s));
  c.start_coordinator();
  c.check_all_done_once({job}, 30s);
  CHECK(c.events(job, started_kind) == 1);
  CHECK(c.events(job, lease_expired_kind) == 0);
  auto [rc, out] = droverctl({"get", job, "--port", c.admin, "--json"});
  CHECK(out.find(R"("attempt":1)") != std::string::npos);
}

TEST_CASE("a worker restarted while the coordinator is down joins when it "
          "comes back",
          "[pg][cluster][process]") {
  cluster c;
  c.start_coordinator();
  c.start_worker("w1");
  c.coordinator->signal(SIGTERM);
  REQUIRE(c.coordinator->wait_exit(20s));
  c.workers["w1"]->signal(SIGKILL);
  REQUIRE(c.workers["w1"]->wait_exit(10s));
  auto& w1 = c.start_worker("w1", {}, false);
  REQUIRE(c.wait_log("w1", "cannot reach the coordinator", 10s));
  c.start_coordinator();
  REQUIRE(w1.wait_for_line("joined the coordinator", 20s));
  auto job = c.submit(100);
  c.check_all_done_once({job}, 20s);
  CHECK(node_of(c.worker_of(job)) == "w1");
}

TEST_CASE("a gateway node in front of the coordinator serves the HTTP API, and "
          "a gateway with the workers' secret is refused",
          "[pg][cluster][process]") {
  const std::string gateway_secret = "cluster-test-gateway-secret-42";
  cluster c;
  c.start_coordinator({"--gateway-join-secret", gateway_secret});
  c.start_worker("w1");

  process gw{c.gateway_args("gw", gateway_secret), c.logs.path() + "/gw.log"};
  auto ready = gw.wait_for_line("ready", 30s);
  INFO(tail_of(c.logs.path() + "/gw.log"));
  REQUIRE(ready);
  auto port = drover::testing::http_port_of(*ready);
  drover::testing::http_client client{port};
  auto res
      = client.post("/api/jobs", R"({"type": "sleep", "input": {"ms": 50}})");
  INFO(res.body);
  REQUIRE(res.status == 202);
  auto key = std::string{"\"job_id\":\""};
  auto at = res.body.find(key);
  REQUIRE(at != std::string::npos);
  auto job = res.body.substr(
      at + key.size(), res.body.find('"', at + key.size()) - at - key.size());
  c.check_all_done_once({job}, 20s);
  CHECK(node_of(c.worker_of(job)) == "w1");
  auto nodes = client.get("/api/admin/nodes");
  CHECK(nodes.status == 200);
  CHECK(nodes.body.find(R"("role":"gateway")") != std::string::npos);
  // The workers' secret does not make a gateway (it would get the API).
  process intruder{c.gateway_args("gw2", secret), c.logs.path() + "/gw2.log"};
  auto st = intruder.wait_exit(30s);
  REQUIRE(st);
  CHECK(WIFEXITED(*st));
  CHECK(WEXITSTATUS(*st) == 2);
  CHECK(c.wait_log("gw2", "could not join", 1s));
}

TEST_CASE("a worker past its drain deadline hands its attempts back: they "
          "run elsewhere at once, not counted as failures",
          "[pg][cluster][process]") {
  cluster c;
  c.start_coordinator();
  auto& w1 = c.start_worker("w1", {"--drain-timeout-ms", "300"});
  auto job = c.submit(20000);
  REQUIRE(poll_until([&] { return c.events(job, started_kind) == 1; }, 10s));
  auto stopped = std::chrono::steady_clock::now();
  w1.signal(SIGTERM);
  auto st = w1.wait_exit(15s);
  REQUIRE(st);
  CHECK(WIFEXITED(*st));
  CHECK(WEXITSTATUS(*st) == 0);
  // Handed back, not left to lapse: reclaimed well before the TTL would
  // have passed after the drain deadline.
  REQUIRE(
      poll_until([&] { return c.events(job, lease_expired_kind) == 1; }, 10s));
  CHECK(std::chrono::steady_clock::now() - stopped
        < attempt_ttl + scaled(300ms));
  auto [rc, out] = droverctl({"get", job, "--port", c.admin, "--json"});
  INFO(out);
  CHECK(out.find(R"("retry_count":0)") != std::string::npos);
  CHECK(out.find(R"("lost_count":1)") != std::string::npos);
  CHECK(out.find(R"("status":"failed")") == std::string::npos);
  CHECK(c.events(job, completed_kind) == 0);
}

TEST_CASE("the lease TTL can be set per job type", "[pg][cluster][process]") {
  cluster c;
  c.start_coordinator({"--attempt-lease-ttl", "sleep=4000"});
  auto& w1 = c.start_worker("w1");
  auto job = c.submit(20000);
  REQUIRE(poll_until([&] { return c.events(job, started_kind) == 1; }, 10s));
  auto killed = std::chrono::steady_clock::now();
  w1.signal(SIGKILL);
  REQUIRE(
      poll_until([&] { return c.events(job, lease_expired_kind) == 1; }, 15s));
  auto lapsed = std::chrono::steady_clock::now() - killed;
  // The sleep type's 4 s (less the time since the last heartbeat), not the
  // default 2 s (which would have lapsed by 2.25 s at most).
  CHECK(lapsed > 2600ms);
  CHECK(lapsed < 5000ms + scaled(1s));
}

TEST_CASE("a stopped worker is sent no more leases than its credits, and "
          "every job still finishes once after it wakes",
          "[pg][cluster][process]") {
  cluster c;
  c.start_coordinator();
  // One slot and two buffered leases: three credits.
  auto& w1
      = c.start_worker("w1", {"--slots", "cpu=1", "--worker-prefetch", "2"});
  // Short jobs first, so that the buffer credits open (they do only for
  // classes whose jobs are measured short).
  std::vector<std::string> warm;
  for (int i = 0; i < 3; ++i)
    warm.push_back(c.submit(0));
  c.check_all_done_once(warm, 30s);
  std::vector<std::string> jobs;
  jobs.push_back(c.submit(3000));
  REQUIRE(
      poll_until([&] { return c.events(jobs[0], started_kind) == 1; }, 10s));
  w1.signal(SIGSTOP);
  for (int i = 0; i < 20; ++i)
    jobs.push_back(c.submit(50));
  auto leases = [&] {
    auto [rc, out] = droverctl({"nodes", "--port", c.admin, "--json"});
    auto key = std::string{R"("counters":{"leases":)"};
    auto at = out.find(key);
    REQUIRE(at != std::string::npos);
    return std::stoi(out.substr(at + key.size()));
  };
  // Its leases lapse; the stopped node holds its credits until it lets go,
  // so nothing more is pushed toward it however much waits: at most its
  // slot and its two buffer credits (the buffer closes once the 3 s job
  // has run 200 ms, so it may get fewer).
  REQUIRE(poll_until([&] { return c.events(jobs[0], lease_expired_kind) == 1; },
                     10s));
  CHECK(leases() >= 3 + 1);
  CHECK(leases() <= 3 + 3);
  // Nothing else runs it meanwhile: its credits stay with the stopped node
  // and no other node exists.
  CHECK(c.events(jobs[0], started_kind) == 1);
  w1.signal(SIGCONT);
  c.check_all_done_once(jobs, 60s);
}

TEST_CASE("buffer credits open only for short jobs: a job is never buffered "
          "behind a long one",
          "[pg][cluster][process]") {
  cluster c;
  c.start_coordinator();
  c.start_worker("w1", {"--slots", "cpu=1", "--worker-prefetch", "4"});
  auto started_at = [&](const std::string& job) {
    return scalar(c.db.url(), "SELECT min(at_ms) FROM drover.events WHERE "
                              "job_id = '"
                                  + job + "' AND kind = 3");
  };
  auto completed_at = [&](const std::string& job) {
    return scalar(c.db.url(), "SELECT max(at_ms) FROM drover.events WHERE "
                              "job_id = '"
                                  + job + "' AND kind = 7");
  };
  // Nothing measured yet: the only slot takes the long job and the next
  // job waits in the queue, not in the node's buffer. A job's `started` is
  // written when it is leased, so a buffered job would have started before
  // the long one completed (hundreds of ms before; 100 ms allow for the
  // order in which the two events are stamped).
  auto long1 = c.submit(600);
  REQUIRE(poll_until([&] { return c.events(long1, started_kind) == 1; }, 10s));
  auto next1 = c.submit(0);
  c.check_all_done_once({long1, next1}, 30s);
  CHECK(started_at(next1) > completed_at(long1) - 100);
  if (time_scale() > 1) {
    // "Short" is the node's own threshold (100 ms from lease to outcome),
    // which a sanitizer's slowdown puts out of reach of even a 0 ms job.
    WARN("time scale " << time_scale()
                       << ": the part that needs jobs measured short is "
                          "not run");
    return;
  }
  // Once its jobs are measured short, the node buffers behind a busy slot:
  // the next job is leased while the long one still runs. (Submitted right
  // after it: a measured attempt running over 200 ms closes the buffer.)
  std::vector<std::string> warm;
  for (int i = 0; i < 12; ++i)
    warm.push_back(c.submit(0));
  c.check_all_done_once(warm, 30s);
  auto long2 = c.submit(1500);
  auto next2 = c.submit(0);
  c.check_all_done_once({long2, next2}, 30s);
  CHECK(started_at(next2) + 500 < completed_at(long2));
  // That long job made the class long again: no more buffering.
  CHECK(c.events(long2, completed_kind) == 1);
  auto long3 = c.submit(600);
  REQUIRE(poll_until([&] { return c.events(long3, started_kind) == 1; }, 10s));
  auto next3 = c.submit(0);
  c.check_all_done_once({long3, next3}, 30s);
  CHECK(started_at(next3) > completed_at(long3) - 100);
}
