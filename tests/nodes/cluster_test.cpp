// The cluster with real processes (docs/cluster.md; the harness is
// tests/support/cluster.hpp): one coordinator on a private PostgreSQL
// database, worker nodes joining it over CAF on loopback, ports chosen at
// run time. Each test checks from the audit log (drover.events) that no
// acknowledged job is lost, none completes twice and nothing is left
// running.
//
// Waits are on events with deadlines: a "ready"/"joined" line, a process
// exit, or a query re-run until it holds.

#include "drover/client.hpp"
#include "runtime/client_protocol.hpp"
#include "runtime/join_proof.hpp"
#include "runtime/pg.hpp"
#include "runtime/tls.hpp"
#include "runtime/type_ids.hpp"
#include "support/cluster.hpp"
#include "support/gateway_node.hpp"
#include "support/http_client.hpp"
#include "support/process.hpp"
#include "support/scratch.hpp"
#include "support/test_db.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/io/middleman.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <csignal>
#include <fstream>
#include <iterator>
#include <map>
#include <netinet/in.h>
#include <set>
#include <string>
#include <sys/socket.h>
#include <sys/stat.h>
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

namespace {

/// This test's own CAF node, connected to a coordinator's cluster port: a
/// peer that speaks the protocol by hand (the handshake's refusals).
struct in_process_peer {
  explicit in_process_peer(uint16_t port) : sys{configure(cfg)} {
    auto e = sys.middleman().remote_actor<cluster_endpoint_actor>("127.0.0.1",
                                                                  port);
    REQUIRE(e);
    endpoint = std::move(*e);
  }

  static caf::actor_system_config& configure(caf::actor_system_config& c) {
    register_types(c);
    c.load<caf::io::middleman>();
    c.set("scheduler.max-threads", 1);
    return c;
  }

  caf::actor_system_config cfg;
  caf::actor_system sys;
  cluster_endpoint_actor endpoint;
};

} // namespace

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

TEST_CASE("a worker without the join secret is refused on both sides",
          "[pg][cluster][process]") {
  cluster c;
  c.start_coordinator();
  auto& bad = c.start_worker(
      "intruder", {"--join-secret", "not-the-cluster-secret"}, false);
  auto st = bad.wait_exit(20s);
  REQUIRE(st);
  CHECK(WIFEXITED(*st));
  CHECK(WEXITSTATUS(*st) == 2);
  CHECK(c.wait_log("intruder", "refused", 1s));
  CHECK(c.wait_log("intruder", "join secret", 1s));
  REQUIRE(c.wait_log("coord", "refused a node", 5s));
  // Nothing was leased to it.
  auto [rc, nodes] = droverctl({"nodes", "--port", c.admin, "--json"});
  CHECK(nodes.find("intruder") == std::string::npos);
}

TEST_CASE("a node speaking another protocol version is refused with both "
          "ranges named",
          "[pg][cluster][process]") {
  cluster c;
  c.start_coordinator();
  in_process_peer peer{c.cluster_port};
  auto& sys = peer.sys;
  auto& endpoint = peer.endpoint;
  caf::scoped_actor self{sys};
  register_worker hello;
  hello.node_id = "future";
  hello.role = "worker";
  hello.protocol_min = 99;
  hello.protocol_max = 100;
  hello.capacity = {resource_capacity{"cpu", 1}};
  hello.job_types = {"sleep"};
  std::string refusal;
  self->request(endpoint, 10s, hello_atom::value, hello)
      .receive([&](coordinator_reply&) { refusal = "(accepted)"; },
               [&](caf::error& err) { refusal = sys.render(err); });
  INFO(refusal);
  CHECK(refusal.find("99-100") != std::string::npos);
  CHECK(refusal.find("speaks 1") != std::string::npos);
  REQUIRE(c.wait_log("coord", "incompatible cluster protocol", 5s));
}

namespace {

/// A throwaway CA and certificates signed by it, made with the openssl
/// command (readable by the user nodes run as).
struct test_pki {
  scratch_dir dir{"drover-pki"};

  explicit test_pki(const std::string& ca_name) {
    openssl({"req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
             path("ca.key"), "-out", path("ca.pem"), "-days", "2", "-subj",
             "/CN=" + ca_name});
  }

  std::string path(const std::string& name) const {
    return dir.path() + "/" + name;
  }

  /// Certificate and key of `node`, signed by this CA.
  void issue(const std::string& node) {
    openssl({"req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", path(node + ".key"), "-out",
             path(node + ".csr"), "-subj", "/CN=" + node});
    openssl({"x509", "-req", "-in", path(node + ".csr"), "-CA", path("ca.pem"),
             "-CAkey", path("ca.key"), "-CAcreateserial", "-out",
             path(node + ".pem"), "-days", "2"});
    for (auto f : {node + ".key", node + ".pem", std::string{"ca.pem"}})
      REQUIRE(chmod(path(f).c_str(), 0644) == 0);
    REQUIRE(chmod(dir.path().c_str(), 0755) == 0);
  }

  std::vector<std::string> args(const std::string& node,
                                const test_pki& trust) const {
    return {"--tls-certificate", path(node + ".pem"), "--tls-key",
            path(node + ".key"), "--tls-ca",          trust.path("ca.pem")};
  }

  static void openssl(std::vector<std::string> args) {
    args.insert(args.begin(), "/usr/bin/openssl");
    auto [rc, out] = drover::testing::run_to_exit(std::move(args));
    INFO(out);
    REQUIRE(rc == 0);
  }
};

} // namespace

TEST_CASE("mutual TLS on the cluster and admin ports: a worker or client "
          "with a certificate from the cluster's CA gets in and runs jobs, "
          "one without TLS or with another CA's certificate never does",
          "[pg][cluster][process][tls]") {
  test_pki pki{"drover-cluster-ca"};
  pki.issue("coord");
  pki.issue("w1");
  pki.issue("ctl");
  test_pki rogue{"someone-else-ca"};
  rogue.issue("w3");
  rogue.issue("ctl");
  cluster c;
  c.start_coordinator(pki.args("coord", pki));
  // The admin port has the node's TLS: droverctl with the cluster's
  // certificates gets in, without TLS or with another CA's it does not
  // (exit 3: unavailable, the handshake fails before any message).
  c.ctl_args = pki.args("ctl", pki);
  {
    auto [prc, plain] = droverctl(
        {"nodes", "--port", c.admin, "--json", "--timeout-ms", "3000"});
    CHECK(prc == 3);
    auto [rrc, strange] = droverctl(
        {"nodes", "--port", c.admin, "--json", "--timeout-ms", "3000",
         "--tls-certificate", rogue.path("ctl.pem"), "--tls-key",
         rogue.path("ctl.key"), "--tls-ca", rogue.path("ca.pem")});
    CHECK(rrc == 3);
    // Incomplete TLS settings are a usage error.
    auto [urc, usage] = droverctl(
        {"nodes", "--port", c.admin, "--tls-certificate", pki.path("ctl.pem")});
    CHECK(urc == 2);
    CHECK(usage.find("all three") != std::string::npos);
  }
  c.start_worker("w1", pki.args("w1", pki));
  auto job = c.submit(100);
  c.check_all_done_once({job}, 20s);
  CHECK(node_of(c.worker_of(job)) == "w1");
  // Without TLS: the handshake fails before any message.
  c.start_worker("w2", {}, false);
  CHECK(c.wait_log("w2", "cannot reach the coordinator", 15s));
  // A certificate the cluster's CA did not sign (and which does not trust
  // the coordinator's): refused in the handshake.
  c.start_worker("w3", rogue.args("w3", rogue), false);
  CHECK(c.wait_log("w3", "cannot reach the coordinator", 15s));
  auto [rc, nodes] = c.ctl({"nodes", "--port", c.admin, "--json"});
  REQUIRE(rc == 0);
  CHECK(nodes.find(R"("node":"w1")") != std::string::npos);
  CHECK(nodes.find(R"("node":"w2")") == std::string::npos);
  CHECK(nodes.find(R"("node":"w3")") == std::string::npos);
  // The strangers' failed handshakes cost the joined worker nothing: it
  // keeps its connection (a failed handshake once left an error in
  // OpenSSL's per-thread queue that failed the next TLS read of another
  // connection, see runtime/tls_errors.cpp).
  auto after = c.submit(100);
  c.check_all_done_once({after}, 20s);
  CHECK(node_of(c.worker_of(after)) == "w1");
  CHECK(c.log_count("w1", "lost the coordinator") == 0);
  CHECK(c.log_count("coord", "lost the connection to a worker node") == 0);
  // The client API with the cluster's certificates submits and follows a
  // job; without them it gets no answer, with half of them it refuses.
  {
    client_options opts;
    opts.nodes = {"127.0.0.1:" + c.admin};
    opts.tls = {pki.path("ctl.pem"), pki.path("ctl.key"), pki.path("ca.pem")};
    opts.timeout = 20s;
    auto tls_client = client::make(opts);
    REQUIRE(tls_client);
    submit_request req;
    req.type = "sleep";
    req.input = R"({"ms": 10})";
    auto sub = (*tls_client)->submit(req);
    INFO((sub ? std::string{} : describe(sub.error())));
    REQUIRE(sub);
    auto done = (*tls_client)->wait(sub->job.job_id, 20s);
    REQUIRE(done);
    CHECK(done->status == job_status::completed);
    opts.tls = {};
    opts.timeout = 3s;
    auto plain = client::make(opts);
    REQUIRE(plain);
    auto refused = (*plain)->get(sub->job.job_id);
    REQUIRE_FALSE(refused);
    CHECK(is(refused.error(), errc::unavailable));
    opts.tls.certificate = pki.path("ctl.pem");
    auto half = client::make(opts);
    REQUIRE_FALSE(half);
    CHECK(is(half.error(), errc::bad_config));
  }
  // Anyone with a certificate can kill the door (CAF lets no actor refuse
  // exit_reason::kill): the node puts a new one on the same TLS port (the
  // old listener closed first, or the port would still be taken).
  {
    caf::actor_system_config cfg;
    register_types(cfg);
    cfg.load<caf::io::middleman>();
    use_tls({pki.path("ctl.pem"), pki.path("ctl.key"), pki.path("ca.pem")},
            cfg);
    caf::actor_system sys{cfg};
    auto door = connect_client_door(
        sys, "127.0.0.1", static_cast<uint16_t>(std::stoi(c.admin)), 10s, true);
    REQUIRE(door);
    caf::anon_send_exit(*door, caf::exit_reason::kill);
    CHECK(c.wait_log("coord", "a new one serves the same port", 20s));
    CHECK(c.log_count("coord", "could not be put back") == 0);
    auto [grc, got] = c.ctl({"get", after, "--port", c.admin, "--json"});
    CHECK(grc == 0);
  }
  // Incomplete TLS settings stop a node at start (exit 2).
  auto [brc, bout] = drover::testing::run_to_exit(
      {DROVER_NODE_BIN, "--roles", "worker", "--coordinator", "127.0.0.1:1",
       "--tls-certificate", pki.path("w1.pem")});
  CHECK(brc == 2);
  CHECK(bout.find("all three") != std::string::npos);
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

TEST_CASE("a join proof works once: a replay, a wrong proof and a proof "
          "for another role are refused",
          "[pg][cluster][process]") {
  cluster c;
  c.start_coordinator();
  in_process_peer peer{c.cluster_port};
  auto& sys = peer.sys;
  auto& endpoint = peer.endpoint;
  // A stand-in agent: takes leases and does nothing with them.
  auto agent = sys.spawn([]() -> worker_agent_actor::behavior_type {
    return {
        [](lease_atom, lease_batch&) {},
        [](cancel_atom, std::string&, uint32_t) {},
        [](abandon_atom, std::string&, uint32_t) {},
    };
  });
  caf::scoped_actor self{sys};
  register_worker reg;
  reg.node_id = "probe";
  reg.role = "worker";
  reg.protocol_min = cluster_protocol_min;
  reg.protocol_max = cluster_protocol_max;
  reg.capacity = {resource_capacity{"cpu", 1}};
  reg.job_types = {"sleep"};
  auto hello = [&] {
    std::string challenge;
    self->request(endpoint, 10s, hello_atom::value, reg)
        .receive([&](coordinator_reply& r) { challenge = r.challenge; },
                 [&](caf::error& err) { FAIL(sys.render(err)); });
    REQUIRE(challenge.size() == 32);
    return challenge;
  };
  auto join = [&](const register_worker& r) {
    std::string outcome;
    self->request(endpoint, 10s, join_atom::value, r, agent)
        .receive([&](coordinator_reply&, node_link_actor&) { outcome = "ok"; },
                 [&](caf::error& err) { outcome = sys.render(err); });
    return outcome;
  };
  // Right proof: joins.
  auto ch = hello();
  reg.proof = join_proof(secret, "worker", "probe", ch);
  CHECK(join(reg) == "ok");
  // The same proof again: its challenge is used up.
  auto replay = join(reg);
  INFO(replay);
  CHECK(replay.find("no open challenge") != std::string::npos);
  // A wrong proof uses its challenge up too, and is refused for good.
  hello();
  reg.proof = join_proof("not-the-secret-at-all", "worker", "probe", ch);
  auto wrong = join(reg);
  CHECK(wrong.find("wrong or missing join secret") != std::string::npos);
  // A worker's proof does not make a gateway: the role is in the proof.
  reg.role = "gateway";
  auto gch = hello();
  reg.proof = join_proof(secret, "worker", "probe", gch);
  std::string as_gateway;
  self->request(endpoint, 10s, join_atom::value, reg)
      .receive([&](coordinator_reply&, caf::actor&) { as_gateway = "ok"; },
               [&](caf::error& err) { as_gateway = sys.render(err); });
  CHECK(as_gateway.find("refused") != std::string::npos);
  caf::anon_send_exit(agent, caf::exit_reason::user_shutdown);
}

TEST_CASE("a second process with the id of a live worker node is refused "
          "and exits 2, and the first keeps its work",
          "[pg][cluster][process]") {
  cluster c;
  c.start_coordinator();
  c.start_worker("w1", {"--slots", "cpu=1"});
  auto job = c.submit(1500);
  REQUIRE(poll_until([&] { return c.events(job, started_kind) == 1; }, 10s));
  process twin{{DROVER_NODE_BIN, "--node-id", "w1", "--roles", "worker",
                "--coordinator", "127.0.0.1:" + std::to_string(c.cluster_port),
                "--join-secret", secret, "--slots", "cpu=1"},
               c.logs.path() + "/twin.log"};
  auto st = twin.wait_exit(20s);
  REQUIRE(st);
  CHECK(WIFEXITED(*st));
  CHECK(WEXITSTATUS(*st) == 2);
  CHECK(c.wait_log("twin", "already connected and heartbeating", 1s));
  c.check_all_done_once({job}, 20s);
  CHECK(c.events(job, started_kind) == 1);
  CHECK(node_of(c.worker_of(job)) == "w1");
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
