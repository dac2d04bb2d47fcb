// Epochs on worker leases (docs/cluster.md, "Epochs on leases"). The stamp:
// a real coordinator, alone or sharing the partitions, stamps a lease with
// the epoch its partition lease has in PostgreSQL. The check: a
// real worker node (drover-node --roles worker) joins a coordinator this
// test plays by hand over CAF, which sends it leases stamped with partition
// epochs the way a deposed coordinator and its successor would. The worker
// node must run every lease of the newest epoch it has seen per partition,
// refuse an older one (and say so in its log and metrics), and treat
// another partition, or a lease without an epoch, on its own.
//
// The coordinator is a stand-in because a real one sends a stale lease only
// in a race (paused between dispatch and send, woken after its successor
// leased the partition): here the order is the test's.

#include "runtime/cluster_protocol.hpp"
#include "runtime/join_proof.hpp"
#include "runtime/partition.hpp"
#include "runtime/type_ids.hpp"
#include "support/cluster.hpp"
#include "support/http_client.hpp"
#include "support/metrics_text.hpp"
#include "support/process.hpp"
#include "support/stand_in_coordinator.hpp"
#include "support/test_db.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/io/middleman.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

using namespace drover;
using namespace std::chrono_literals;
using drover::testing::droverctl;
using drover::testing::http_client;
using drover::testing::job_id_of;
using drover::testing::parse_metrics;
using drover::testing::poll_until;
using drover::testing::scalar;
using drover::testing::tail_of;
using drover::testing::time_scale;
using namespace drover::testing::cluster_harness;
using namespace drover::testing::stand_in;

TEST_CASE("a worker node refuses a lease stamped with an epoch older than "
          "one it was sent for the same partition and runs the rest",
          "[pg][cluster][process]") {
  cluster c; // its database stays unused: the coordinator is the test's
  stand_in_coordinator coord{c.cluster_port};
  auto metrics_port = free_port();
  c.start_worker("w1", {"--slots", "cpu=1", "--metrics-port",
                        std::to_string(metrics_port)});
  REQUIRE(poll_until(
      [&] {
        std::lock_guard<std::mutex> guard{coord.seen->mx};
        return coord.seen->agent.has_value();
      },
      10s));
  auto& seen = *coord.seen;
  // One slot: the node runs its leases in the order they came. The
  // successor's lease (epoch 6) comes before the deposed owner's (5) of
  // the same partition; partition 4 and an unstamped lease are their own.
  lease_batch batch;
  batch.leases = {sleep_lease("new1", 3, 6), sleep_lease("stale", 3, 5),
                  sleep_lease("other", 4, 1), sleep_lease("unstamped", 3, 0),
                  sleep_lease("new2", 3, 6)};
  seen.send(std::move(batch));
  // Anonymous leases (not from the link) are not taken at all.
  lease_batch anon;
  anon.leases = {sleep_lease("anon", 4, 1)};
  caf::anon_send(*seen.agent, lease_atom::value, std::move(anon));
  // Had "stale" been taken, it would have run before "new2".
  REQUIRE(poll_until([&] { return seen.done().count("new2-3") == 1; }, 20s));
  INFO(tail_of(c.logs.path() + "/w1.log"));
  CHECK(seen.done()
        == std::set<std::string>{"new1-3", "other-4", "unstamped-3", "new2-3"});
  CHECK(c.wait_log("w1", "refused a lease from a deposed coordinator", 5s));
  CHECK(c.log_count("w1", "partition=3 epoch=5 newest_epoch=6") == 1);
  CHECK(c.log_count("w1", "anonymous leases: not taken") == 1);
  // Another batch: the fence holds across messages, and a newer epoch
  // raises it for the one before.
  lease_batch later;
  later.leases = {sleep_lease("stale2", 3, 4), sleep_lease("newer", 3, 7),
                  sleep_lease("stale3", 3, 6), sleep_lease("last", 4, 1)};
  seen.send(std::move(later));
  REQUIRE(poll_until([&] { return seen.done().count("last-4") == 1; }, 20s));
  CHECK(seen.done()
        == std::set<std::string>{"new1-3", "other-4", "unstamped-3", "new2-3",
                                 "newer-3", "last-4"});
  // A lease buffered behind a busy slot is checked again when the slot
  // frees: the newer epoch came meanwhile.
  lease_batch busy;
  busy.leases = {sleep_lease("long", 5, 1), sleep_lease("buffered", 6, 5)};
  busy.leases[0].spec.input
      = "{\"ms\":" + std::to_string(1500 * time_scale()) + "}";
  seen.send(std::move(busy));
  REQUIRE(poll_until(
      [&] {
        std::lock_guard<std::mutex> guard{seen.mx};
        return seen.running.count("long-5") == 1;
      },
      10s));
  lease_batch successor;
  successor.leases = {sleep_lease("successor", 6, 6)};
  seen.send(std::move(successor));
  REQUIRE(
      poll_until([&] { return seen.done().count("successor-6") == 1; }, 20s));
  CHECK(seen.done().count("long-5") == 1);
  CHECK(seen.done().count("buffered-6") == 0);
  CHECK(c.log_count("w1", "partition=6 epoch=5 newest_epoch=6") == 1);
  {
    std::lock_guard<std::mutex> guard{seen.mx};
    // (A buffered lease is listed while it waits.)
    for (const auto* stale : {"stale-3", "stale2-3", "stale3-3", "anon-4"})
      CHECK(seen.running.count(stale) == 0);
  }
  CHECK(c.log_count("w1", "refused a lease from a deposed coordinator") == 4);
  // ...and tells their sender, which frees their slots at once.
  REQUIRE(poll_until(
      [&] {
        std::lock_guard<std::mutex> guard{seen.mx};
        return seen.refused.size() == 4;
      },
      10s));
  {
    std::lock_guard<std::mutex> guard{seen.mx};
    CHECK(seen.refused
          == std::set<std::string>{"stale-3", "stale2-3", "stale3-3",
                                   "buffered-6"});
  }
  // The node's metrics count them.
  REQUIRE(c.workers["w1"]->wait_for_line("ready", 10s));
  http_client client{metrics_port};
  auto res = client.get("/metrics");
  REQUIRE(res.status == 200);
  auto m = parse_metrics(res.body);
  CHECK(m["drover_worker_stale_leases_refused_total"][""] == "4.0");
  CHECK(m["drover_worker_leases_received_total"][""] == "12.0");
}

TEST_CASE("a coordinator stamps each lease with the epoch at which it holds "
          "the job's partition",
          "[pg][cluster][process]") {
  auto share = GENERATE(false, true);
  INFO("--share-partitions: " << share);
  cluster c;
  if (share)
    c.start_coordinator({"--share-partitions"});
  else
    c.start_coordinator();
  // This test's own worker: joins over CAF with the secret and keeps the
  // leases it is sent.
  caf::actor_system_config cfg;
  caf::actor_system sys{stand_in_coordinator::configure(cfg)};
  auto endpoint = sys.middleman().remote_actor<cluster_endpoint_actor>(
      "127.0.0.1", c.cluster_port);
  REQUIRE(endpoint);
  auto leases = std::make_shared<std::pair<std::mutex, std::vector<lease>>>();
  auto agent = sys.spawn([leases]() -> worker_agent_actor::behavior_type {
    return {
        [leases](lease_atom, lease_batch& batch) {
          std::lock_guard<std::mutex> guard{leases->first};
          for (auto& l : batch.leases)
            leases->second.push_back(l);
        },
        [](cancel_atom, std::string&, uint32_t) {},
        [](abandon_atom, std::string&, uint32_t) {},
    };
  });
  caf::scoped_actor self{sys};
  register_worker reg;
  reg.node_id = "stamp-probe";
  reg.role = "worker";
  reg.protocol_min = cluster_protocol_min;
  reg.protocol_max = cluster_protocol_max;
  reg.capacity = {resource_capacity{"cpu", 1}};
  reg.job_types = {"sleep"};
  std::string challenge;
  self->request(*endpoint, 10s, hello_atom::value, reg)
      .receive([&](coordinator_reply& r) { challenge = r.challenge; },
               [&](caf::error& err) { FAIL(sys.render(err)); });
  reg.proof = join_proof(secret, "worker", reg.node_id, challenge);
  bool joined = false;
  self->request(*endpoint, 10s, join_atom::value, reg, agent)
      .receive([&](coordinator_reply&, node_link_actor&) { joined = true; },
               [&](caf::error& err) { FAIL(sys.render(err)); });
  REQUIRE(joined);
  // A sharing coordinator owns nothing for a moment after it is ready.
  std::string job;
  REQUIRE(poll_until(
      [&] {
        auto [rc, out] = droverctl(
            {"submit", "sleep", "--port", c.admin, "--input", R"({"ms":50})"});
        if (rc != 0)
          return false;
        job = job_id_of(out);
        return true;
      },
      20s, 200ms));
  REQUIRE(poll_until(
      [&] {
        std::lock_guard<std::mutex> guard{leases->first};
        return !leases->second.empty();
      },
      10s));
  lease got;
  {
    std::lock_guard<std::mutex> guard{leases->first};
    got = leases->second.front();
  }
  CHECK(got.job_id == job);
  auto partition = partition_of_id(job);
  auto epoch
      = scalar(c.url(), "SELECT epoch FROM drover.partition_leases WHERE "
                        "partition = "
                            + std::to_string(partition));
  CHECK(epoch > 0);
  CHECK(got.partition_epoch == epoch);
  caf::anon_send_exit(agent, caf::exit_reason::user_shutdown);
}
