// Slots lent to another coordinator (docs/cluster.md, "Running attempts
// survive a hand-off"). When a coordinator hands a partition over, the
// attempts of it that run on worker nodes run on for the new owner, on a
// slot of the old owner's share, and the old owner's link keeps that slot
// taken while the node lists the attempt as lent.
//
// - A coordinator that restarts meanwhile learns of those attempts from the
//   node's join (RegisterWorker.lent): it keeps their slots taken too, and
//   does not book jobs onto them (they would wait in the node's buffer
//   behind the handed-over attempt, however long it runs, while other nodes
//   idle).
// - An attempt handed on again by the coordinator that took it is offered
//   back to the node's agent for its first coordinator (its lender): if the
//   partition is that coordinator's again, it adopts the attempt on the
//   slot it runs on; if not, the slot stays taken.
//
// The node side: a real worker node (drover-node --roles worker) whose
// coordinator, played by this test (support/stand_in_coordinator.hpp),
// hands its running attempt over and restarts, lists the attempt in its
// next join.
//
// The coordinator side: the coordinator is real (drover-node on the test's
// PostgreSQL), and the worker node is played by this test over CAF: a join
// listing a lent attempt, or a heartbeat offering it back, is what a real node
// sends only after hand-offs and restarts timed around a running attempt.

#include "runtime/cluster_protocol.hpp"
#include "runtime/join_proof.hpp"
#include "runtime/type_ids.hpp"
#include "support/cluster.hpp"
#include "support/process.hpp"
#include "support/stand_in_coordinator.hpp"
#include "support/time_scale.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/io/middleman.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <csignal>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

using namespace drover;
using namespace std::chrono_literals;
using drover::testing::droverctl;
using drover::testing::poll_until;
using drover::testing::time_scale;
using namespace drover::testing::cluster_harness;

namespace {

using beat_atom = caf::atom_constant<caf::atom("beat")>;

/// What the test's worker node says in its heartbeats and what it got.
struct node_side {
  std::mutex mx;
  std::vector<lease> leases;
  std::vector<running_attempt> running;
  std::vector<running_attempt> lent;
  std::vector<running_attempt> offered;
  /// Attempts the coordinator said it adopted (CoordinatorReply.adopted).
  std::set<std::string> adopted;
  /// Heartbeats the coordinator answered.
  std::atomic<int> beats{0};
  /// Whether its heartbeats say it drains.
  std::atomic<bool> draining{false};

  std::vector<lease> received() {
    std::lock_guard<std::mutex> guard{mx};
    return leases;
  }

  bool was_adopted(const std::string& job_id) {
    std::lock_guard<std::mutex> guard{mx};
    return adopted.count(job_id) > 0;
  }

  void says(std::vector<running_attempt> run, std::vector<running_attempt> l,
            std::vector<running_attempt> o) {
    std::lock_guard<std::mutex> guard{mx};
    running = std::move(run);
    lent = std::move(l);
    offered = std::move(o);
  }
};

/// The test's worker agent: keeps the leases it is sent and, from its
/// join on, heartbeats the link at the coordinator's interval (the link
/// takes heartbeats from its node's agent only; a node that stops becomes
/// suspect, and a suspect node's slots are withdrawn: that alone would keep
/// jobs off the node). A beat names the join it belongs to: a rejoin starts
/// a new round and the old one ends.
using probe_agent_actor
    = worker_agent_actor::extend<caf::reacts_to<beat_atom, int>,
                                 caf::reacts_to<done_atom, completion>>;

struct beat_plan {
  node_link_actor link;
  std::chrono::milliseconds interval{0};
  int round = 0;
};

probe_agent_actor::behavior_type
probe_agent(probe_agent_actor::pointer self, std::shared_ptr<node_side> side,
            std::shared_ptr<std::pair<std::mutex, beat_plan>> plan) {
  return {
      [side](lease_atom, lease_batch& batch) {
        std::lock_guard<std::mutex> guard{side->mx};
        for (auto& l : batch.leases)
          side->leases.push_back(l);
      },
      [](cancel_atom, std::string&, uint32_t) {},
      [](abandon_atom, std::string&, uint32_t) {},
      [self, plan](done_atom, completion& c) {
        // An outcome, reported through the link like a worker node's.
        node_link_actor link;
        {
          std::lock_guard<std::mutex> guard{plan->first};
          link = plan->second.link;
        }
        completion_batch batch;
        batch.completions.push_back(std::move(c));
        self->request(link, 10s, report_atom::value, progress_batch{},
                      std::move(batch))
            .then([](coordinator_reply&) {}, [](caf::error&) {});
      },
      [self, side, plan](beat_atom, int round) {
        beat_plan now;
        {
          std::lock_guard<std::mutex> guard{plan->first};
          now = plan->second;
        }
        if (round != now.round)
          return; // a rejoin started another round
        heartbeat hb;
        hb.node_id = "lent-probe";
        hb.at_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
        {
          std::lock_guard<std::mutex> guard{side->mx};
          hb.running = side->running;
          hb.lent = side->lent;
          hb.offered = side->offered;
        }
        hb.draining = side->draining;
        self->request(now.link, 10s, heartbeat_atom::value, std::move(hb))
            .then(
                [side](coordinator_reply& r) {
                  {
                    std::lock_guard<std::mutex> guard{side->mx};
                    for (auto& a : r.adopted)
                      side->adopted.insert(a.job_id);
                  }
                  ++side->beats;
                },
                [](caf::error&) {
                  // The link went with its coordinator (a restart).
                });
        self->delayed_send(self, now.interval, beat_atom::value, round);
      },
  };
}

/// The test's worker node: one cpu slot, runs `sleep`.
struct probe_node {
  explicit probe_node(caf::actor_system& s) : sys{s} {
    agent = sys.spawn(probe_agent, side, plan);
  }

  ~probe_node() {
    caf::anon_send_exit(agent, caf::exit_reason::user_shutdown);
  }

  /// Joins the coordinator on `port`, listing `lent` as its lent attempts,
  /// and heartbeats it from then on.
  void join(uint16_t port, std::vector<running_attempt> lent) {
    std::optional<cluster_endpoint_actor> endpoint;
    REQUIRE(poll_until(
        [&] {
          auto e = sys.middleman().remote_actor<cluster_endpoint_actor>(
              "127.0.0.1", port);
          if (e)
            endpoint = *e;
          return e.engaged();
        },
        20s, 100ms));
    caf::scoped_actor self{sys};
    register_worker reg;
    reg.node_id = "lent-probe";
    reg.role = "worker";
    reg.protocol_min = cluster_protocol_min;
    reg.protocol_max = cluster_protocol_max;
    reg.capacity = {resource_capacity{"cpu", 1}};
    reg.job_types = {"sleep"};
    reg.lent = std::move(lent);
    std::string challenge;
    self->request(*endpoint, 10s, hello_atom::value, reg)
        .receive([&](coordinator_reply& r) { challenge = r.challenge; },
                 [&](caf::error& err) { FAIL(sys.render(err)); });
    reg.proof = join_proof(secret, "worker", reg.node_id, challenge);
    worker_agent_actor as_agent = agent;
    int round = 0;
    self->request(*endpoint, 10s, join_atom::value, reg, as_agent)
        .receive(
            [&](coordinator_reply& r, node_link_actor& l) {
              link = l;
              std::lock_guard<std::mutex> guard{plan->first};
              plan->second.link = l;
              plan->second.interval
                  = std::chrono::milliseconds{r.heartbeat_interval_ms};
              round = ++plan->second.round;
            },
            [&](caf::error& err) { FAIL(sys.render(err)); });
    REQUIRE(round > 0);
    caf::anon_send(agent, beat_atom::value, round);
  }

  /// Waits for `n` more heartbeats to be answered.
  void beats(int n) {
    int until = side->beats + n;
    REQUIRE(poll_until([&] { return side->beats >= until; }, 20s));
  }

  caf::actor_system& sys;
  std::shared_ptr<node_side> side = std::make_shared<node_side>();
  std::shared_ptr<std::pair<std::mutex, beat_plan>> plan
      = std::make_shared<std::pair<std::mutex, beat_plan>>();
  probe_agent_actor agent;
  node_link_actor link;
};

/// A coordinator and the test's worker node (not joined yet).
struct lent_fixture {
  lent_fixture() {
    c.start_coordinator();
  }

  cluster c;
  caf::actor_system_config cfg;
  caf::actor_system sys{
      drover::testing::stand_in::stand_in_coordinator::configure(cfg)};
  probe_node node{sys};
};

/// The node's view at the coordinator (GET /api/admin/nodes).
std::string nodes_view(cluster& c) {
  auto [rc, out] = droverctl({"nodes", "--port", c.admin, "--json"});
  REQUIRE(rc == 0);
  return out;
}

/// Whether the node's view shows `needle` within a few seconds (a
/// heartbeat's offer makes a moment in which it does not).
bool view_shows(cluster& c, const std::string& needle) {
  std::string last;
  bool shown = poll_until(
      [&] {
        last = nodes_view(c);
        return last.find(needle) != std::string::npos;
      },
      5s, 50ms);
  INFO(last);
  return shown;
}

/// What the coordinator answers a hello of `reg` (the join is refused for
/// the same reasons): an error, or none.
std::string hello_refusal(caf::actor_system& sys, uint16_t port,
                          const register_worker& reg) {
  auto endpoint
      = sys.middleman().remote_actor<cluster_endpoint_actor>("127.0.0.1", port);
  REQUIRE(endpoint);
  caf::scoped_actor self{sys};
  std::string refusal;
  self->request(*endpoint, 10s, hello_atom::value, reg)
      .receive([](coordinator_reply&) {},
               [&](caf::error& err) { refusal = sys.render(err); });
  return refusal;
}

std::string job_json(cluster& c, const std::string& job) {
  auto [rc, out] = droverctl({"get", job, "--port", c.admin, "--json"});
  REQUIRE(rc == 0);
  return out;
}

} // namespace

TEST_CASE("a coordinator keeps the slot of an attempt it handed over, listed "
          "in a worker node's join, taken until the node no longer lists it",
          "[pg][cluster][process]") {
  lent_fixture f;
  auto& c = f.c;
  auto& node = f.node;
  // Its only slot runs an attempt this coordinator handed over before it
  // restarted; the node offers it back too, and the coordinator refuses it
  // (the job is not this coordinator's to adopt): the slot stays taken.
  const running_attempt handed_over{"handed-over-job", 4, "cpu"};
  // A node cannot list what holds no slot of its own: an empty job id (a
  // slot taken by it stays free, and each such entry would free it again),
  // a class it does not have, more than its slots.
  {
    register_worker bad;
    bad.node_id = "lent-probe";
    bad.role = "worker";
    bad.protocol_min = cluster_protocol_min;
    bad.protocol_max = cluster_protocol_max;
    bad.capacity = {resource_capacity{"cpu", 1}};
    bad.job_types = {"sleep"};
    for (auto lent :
         {std::vector<running_attempt>{{"", 1, "cpu"}},
          std::vector<running_attempt>{{"j", 1, "gpu"}},
          std::vector<running_attempt>{{"j", 1, "cpu"}, {"k", 1, "cpu"}}}) {
      bad.lent = lent;
      auto refusal = hello_refusal(f.sys, c.cluster_port, bad);
      INFO(refusal);
      CHECK(refusal.find("invalid_request") != std::string::npos);
    }
  }
  node.side->says({}, {handed_over}, {handed_over});
  node.join(c.cluster_port, {handed_over});
  // Each heartbeat's offer is asked of the queue and refused (the attempt
  // shows as a lease in flight meanwhile), and the attempt goes back to the
  // lent ones.
  CHECK(view_shows(c, R"("running":1,"leases_in_flight":0,"lent":1)"));
  {
    auto [rc, table] = droverctl({"nodes", "--port", c.admin});
    INFO(table);
    CHECK(rc == 0);
    CHECK(table.find(" LENT ") != std::string::npos);
  }

  auto job = c.submit(50);
  // Four heartbeats answered after the submit, each listing the attempt:
  // the queue had the job and the node's only slot all that while. A free
  // slot is leased within milliseconds of a submit (before, the link
  // offered this one at the join).
  node.beats(4);
  CHECK(node.side->received().empty());
  CHECK(job_json(c, job).find(R"("status":"queued")") != std::string::npos);
  CHECK(view_shows(c, R"("leases_in_flight":0,"lent":1)"));

  // The attempt ended on the node: no longer listed, its slot is free
  // again and takes the job.
  node.side->says({}, {}, {});
  REQUIRE(poll_until([&] { return !node.side->received().empty(); }, 10s));
  auto got = node.side->received();
  REQUIRE(got.size() == 1);
  CHECK(got.front().job_id == job);
  CHECK(view_shows(c, R"("leases_in_flight":1,"lent":0)"));
}

TEST_CASE("an attempt a coordinator handed over comes back to it on its own "
          "slot when the node offers it back and its partition is ours",
          "[pg][cluster][process]") {
  lent_fixture f;
  auto& c = f.c;
  auto& node = f.node;
  node.join(c.cluster_port, {});
  auto job = c.submit(50);
  REQUIRE(poll_until([&] { return !node.side->received().empty(); }, 10s));
  auto leased = node.side->received().front();
  REQUIRE(leased.job_id == job);
  const running_attempt attempt{job, leased.attempt, "cpu"};
  node.side->says({attempt}, {}, {});
  REQUIRE(poll_until(
      [&] {
        return job_json(c, job).find(R"("status":"processing")")
               != std::string::npos;
      },
      10s));

  // The coordinator restarts; meanwhile (as far as it can tell) it had
  // handed the attempt over, and the coordinator that took it hands it on
  // back: the node lists it as lent and offers it.
  c.coordinator->signal(SIGKILL);
  REQUIRE(c.coordinator->wait_exit(10s));
  node.side->says({}, {attempt}, {attempt});
  c.start_coordinator();
  node.join(c.cluster_port, {attempt});
  bool back = poll_until([&] { return node.side->was_adopted(job); }, 10s);
  INFO(drover::testing::tail_of(c.logs.path() + "/coord.log"));
  REQUIRE(back);
  // Adopted on the slot it runs on: no borrowed slot, nothing lent, and
  // the node's only slot is taken. Adopted on a borrowed slot, the attempt
  // would leave the node's own slot offered, and the next job would be
  // leased to a node that has no free slot.
  auto view = nodes_view(c);
  INFO(view);
  CHECK(view.find(R"("running":1,"leases_in_flight":1,"lent":0)")
        != std::string::npos);
  // Adopted, not claimed yet (the node still lists it as lent and offered):
  // a drain meanwhile does not take it for an attempt handed back.
  node.side->draining = true;
  node.beats(3);
  CHECK(view_shows(c, R"("leases_in_flight":1,"lent":0)"));
  CHECK(view_shows(c, R"("leases_expired":0)"));
  node.side->draining = false;
  node.side->says({attempt}, {}, {});
  auto next = c.submit(50);
  node.beats(4);
  CHECK(node.side->received().size() == 1);

  // The node's agent took it back (it reports it as its own): its outcome
  // completes the job, on the attempt it started with, and frees the slot
  // for the next job.
  completion done;
  done.job_id = job;
  done.attempt = attempt.attempt;
  done.result = "{}";
  caf::anon_send(node.agent, done_atom::value, done);
  REQUIRE(poll_until(
      [&] {
        return job_json(c, job).find(R"("status":"completed")")
               != std::string::npos;
      },
      10s));
  REQUIRE(poll_until([&] { return node.side->received().size() == 2; }, 10s));
  CHECK(node.side->received().back().job_id == next);
  auto out = job_json(c, job);
  CHECK(out.find(R"("attempt":)" + std::to_string(attempt.attempt))
        != std::string::npos);
  CHECK(out.find(R"("lost_count":0)") != std::string::npos);
}

TEST_CASE("a worker node lists the attempts its coordinator handed over in "
          "its next join",
          "[pg][cluster][process]") {
  cluster c; // its database stays unused: the coordinator is the test's
  drover::testing::stand_in::stand_in_coordinator coord{c.cluster_port};
  c.start_worker("w1", {"--slots", "cpu=1"});
  auto& seen = *coord.seen;
  REQUIRE(poll_until(
      [&] {
        std::lock_guard<std::mutex> guard{seen.mx};
        return seen.joins.size() == 1;
      },
      10s));
  auto long_run = drover::testing::stand_in::sleep_lease("long", 2, 1);
  long_run.spec.input = "{\"ms\":" + std::to_string(60000 * time_scale()) + "}";
  lease_batch batch;
  batch.leases = {long_run};
  seen.send(std::move(batch));
  REQUIRE(poll_until(
      [&] {
        std::lock_guard<std::mutex> guard{seen.mx};
        return seen.running.count(long_run.job_id) == 1;
      },
      10s));
  // Its partition goes to another coordinator: the node runs it on, lent.
  {
    std::lock_guard<std::mutex> guard{seen.mx};
    seen.hand_over.push_back(running_attempt{long_run.job_id, 1, {}});
  }
  REQUIRE(poll_until(
      [&] {
        std::lock_guard<std::mutex> guard{seen.mx};
        return seen.lent.count(long_run.job_id) == 1;
      },
      10s));
  // The coordinator restarts (its link ends): the node joins again and
  // lists the attempt as lent, with its class, not as running.
  {
    std::lock_guard<std::mutex> guard{seen.mx};
    seen.drop_link = true;
  }
  REQUIRE(poll_until(
      [&] {
        std::lock_guard<std::mutex> guard{seen.mx};
        return seen.joins.size() == 2;
      },
      20s));
  std::lock_guard<std::mutex> guard{seen.mx};
  auto& again = seen.joins.back();
  INFO(drover::testing::tail_of(c.logs.path() + "/w1.log"));
  CHECK(again.lent
        == std::vector<running_attempt>{
            running_attempt{long_run.job_id, 1, "cpu"}});
  for (const auto& ra : again.running)
    CHECK(ra.job_id != long_run.job_id);
}
