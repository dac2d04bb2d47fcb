// The cluster with real processes (docs/cluster.md; the harness is
// tests/support/cluster.hpp), who may join it: the join secret, the
// protocol version, mutual TLS, join proofs and a node id already in use.
// One coordinator on a private PostgreSQL database, worker nodes joining it
// over CAF on loopback, ports chosen at run time. Each test checks from
// the audit log (drover.events) that no acknowledged job is lost, none
// completes twice and nothing is left running.
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

#include <csignal>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <string>
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
