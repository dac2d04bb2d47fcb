// A coordinator restarted under its node id (docs/cluster.md, "Several
// active coordinators"): it is the same member as its dead predecessor, so
// it takes back exactly its predecessor's share and its agents come home to
// it; an older instance that finds a newer one under its node id hands
// everything over and stops; a process started under the node id of one
// that runs is refused. A coordinator stopped with --keep-share-on-stop
// restarts as a crashed one does. Real processes, a real PostgreSQL, a real
// SIGKILL or SIGTERM; what happened is read from the lease rows, the audit log
// and the nodes' logs.

#include "support/sharing.hpp"

#include <catch2/catch.hpp>

#include <csignal>
#include <iostream>
#include <map>
#include <string>
#include <sys/wait.h>
#include <vector>

using namespace drover::testing;
using namespace drover::testing::cluster_harness;
using namespace std::chrono_literals;

namespace {

/// c3 of three sharing coordinators, with four attempts running on its
/// worker nodes' agents, is stopped by `sig` and started again at once
/// under its node id (`extra`: more options for all three): it takes back
/// exactly its share, the attempts run on and each job completes once.
/// `attempt_ttl_ms`: the agents try their own coordinator alone for half
/// of it before they fail over, from when its port closes.
void stop_and_restart_at_once(int sig, const std::vector<std::string>& extra,
                              const std::string& attempt_ttl_ms) {
  cluster c;
  sharing s{c};
  // Two worker nodes with an agent for each coordinator, two slots each.
  // An attempt lease TTL of 6 s (after a kill): an agent tries its own
  // coordinator alone for half of it (3 s) before it fails over, time
  // enough for c3 to start again on a busy machine. A partition lease TTL of 10
  // s: c3 is back well before its dead instance's heartbeat is stale (one lease
  // TTL; checked below).
  std::vector<std::string> ttl{"--attempt-lease-ttl-ms", attempt_ttl_ms,
                               "--lease-ttl-ms", "10000"};
  ttl.insert(ttl.end(), extra.begin(), extra.end());
  s.start_three_with_workers("cpu=6", ttl);
  INFO(s.logs_of({"c1", "c2", "c3", "w1", "w2"}));
  std::vector<std::string> jobs;
  for (int i = 0; i < 4; ++i)
    jobs.push_back(s.submit("c3", 10000));
  for (const auto& id : jobs)
    REQUIRE(c.wait_running(id, 30s));
  // c3 dies (or stops) and is started again at once (a supervisor
  // restarting it),
  // after its agents found its port closed: they wait for it rather than
  // fail over at once (as they did before), and it adopts their attempts
  // once it holds its partitions again.
  std::map<std::string, int> takes;
  for (const auto* name : {"c1", "c2"})
    takes[name] = c.log_count(name, "took partitions");
  s.nodes["c3"]->signal(sig);
  auto st = s.nodes["c3"]->wait_exit(30s);
  REQUIRE(st);
  if (sig == SIGTERM) {
    // An orderly stop (exit 0) that kept the share.
    CHECK(WIFEXITED(*st));
    CHECK(WEXITSTATUS(*st) == 0);
    CHECK(c.log_count("c3", "kept this node id's share") == 1);
  }
  for (const auto* w : {"w1", "w2"})
    REQUIRE(c.wait_log(w,
                       "its first coordinator does not answer: trying it "
                       "alone a while before failing over home=127.0.0.1:"
                           + std::to_string(s.ports.at("c3")),
                       10s));
  s.start("c3", false, ttl);
  // The case at hand: the new c3 announced itself while the dead one's
  // heartbeat was fresh (else c1 and c2 rightly take its partitions).
  // (Its row may come a round after its "ready".)
  const std::string gap_sql
      = "SELECT (extract(epoch FROM n.started_at - o.heartbeat_at) * "
        "1000)::bigint FROM drover.coordinators n, drover.coordinators o "
        "WHERE n.node_id = 'c3' AND o.node_id = 'c3' AND n.started_at > "
        "o.started_at";
  REQUIRE(poll_until(
      [&] {
        auto conn = must(drover::pg::connection::open(c.url()));
        return run(conn, gap_sql).rows() == 1;
      },
      10s));
  auto gap_ms = scalar(c.url(), gap_sql);
  INFO("the new c3 announced itself " << gap_ms
                                      << " ms after the dead one's last beat");
  REQUIRE(gap_ms < 10000);
  REQUIRE(poll_until([&] { return s.spread_over({"c1", "c2", "c3"}); }, 30s));
  c.check_all_done_once(jobs, 90s);
  constexpr int worker_lost_kind = 14;
  int moved = 0;
  for (const auto& id : jobs)
    moved += s.owner_of(id) == "c3" ? 0 : 1;
  // The restarted c3 is the same member as the dead one (its node id): the
  // others' shares never changed, so it took back every partition of its
  // predecessor, and c1 and c2 took none. (As a new member, the shares
  // were split four ways until the dead one's heartbeat was stale, and c1
  // and c2 took some of its old partitions: 1 to 3 of the 4 attempts.)
  std::cout << "share_test: " << moved
            << " of 4 attempts are in partitions c3 did not take back\n";
  CHECK(moved == 0);
  for (const auto* name : {"c1", "c2"}) {
    INFO(name);
    CHECK(c.log_count(name, "took partitions") == takes[name]);
  }
  for (const auto& id : jobs) {
    INFO(id << " (partition now " << s.owner_of(id) << "'s)");
    CHECK(c.events(id, started_kind) == 1);
    CHECK(c.events(id, worker_lost_kind) == 0);
  }
  for (const auto* w : {"w1", "w2"}) {
    INFO(w);
    // Its log goes on after the restart: the second join is the new one's.
    CHECK(
        c.log_count("c3", "worker node joined node=" + std::string{w} + ".c3 ")
        == 2);
    CHECK_FALSE(s.joined("c1", std::string{w} + ".c3"));
    CHECK_FALSE(s.joined("c2", std::string{w} + ".c3"));
  }
}

} // namespace

TEST_CASE("a coordinator killed and restarted at once gets its agents back "
          "and its attempts on worker nodes run on, once",
          "[pg][cluster][process][share]") {
  stop_and_restart_at_once(SIGKILL, {}, "6000");
}

TEST_CASE("a coordinator stopped with --keep-share-on-stop and restarted at "
          "once keeps its share, and its attempts run on, once",
          "[pg][cluster][process][share]") {
  // SIGTERM without the option hands the share over at once and leaves
  // the members: c1 and c2 take c3's partitions and hand them back when
  // it returns. With it, a stop is a restart's first half, as a crash is.
  // The agents lose c3 when its orderly stop begins (it lets its worker
  // nodes go first, up to 2 s): an attempt lease TTL of 12 s gives them 6 s
  // alone with it, for the stop and the start.
  stop_and_restart_at_once(SIGTERM, {"--keep-share-on-stop"}, "12000");
}

TEST_CASE("a coordinator paused and replaced under its node id hands over "
          "and stops when it wakes, losing and repeating no job",
          "[pg][cluster][process][share]") {
  cluster c;
  sharing s{c};
  s.start_three();
  INFO(s.logs_of({"c1", "c2", "c3", "c3b"}));
  std::map<std::string, int> takes;
  for (const auto* name : {"c1", "c2"})
    takes[name] = c.log_count(name, "took partitions");
  // A backlog on all three (4 local slots each, 36 jobs of 1 s): c3's share
  // still has waiting jobs when it is paused.
  std::vector<std::string> jobs;
  for (int i = 0; i < 12; ++i)
    for (const auto* name : {"c1", "c2", "c3"})
      jobs.push_back(s.submit(name, 1000));
  // c3 stops answering (paused); its supervisor starts another process
  // under its node id (here on another port). The paused one's row stops
  // beating: the new one starts (a live one would be refused) and takes
  // c3's partitions as their leases expire -- the same member, so c1 and
  // c2 take none.
  s.nodes["c3"]->signal(SIGSTOP);
  auto started = std::chrono::steady_clock::now();
  s.start("c3b", true, {"--node-id", "c3"});
  REQUIRE(poll_until(
      [&] {
        return s.spread_over({"c1", "c2", "c3"})
               && c.log_count("c3b", "took partitions") > 0;
      },
      20s));
  auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - started);
  std::cout << "share_restart_test: a process started under a paused c3's "
               "node id held its share "
            << took.count() << " ms after it was started (lease TTL 2000 ms)\n";
  // Woken, the old c3 finds its leases taken over (its writes are refused
  // by the epoch), and a newer instance of its node id: it stops, orderly.
  s.nodes["c3"]->signal(SIGCONT);
  REQUIRE(c.wait_log("c3",
                     "replaced: a newer coordinator runs under this node id; "
                     "stopping",
                     20s));
  auto st = s.nodes["c3"]->wait_exit(30s);
  REQUIRE(st);
  // Exit 0: a unit that restarts on failure does not start it again.
  CHECK(WIFEXITED(*st));
  CHECK(WEXITSTATUS(*st) == 0);
  CHECK(s.spread_over({"c1", "c2", "c3"}));
  for (const auto* name : {"c1", "c2"}) {
    INFO(name);
    CHECK(c.log_count(name, "took partitions") == takes[name]);
  }
  c.check_all_done_once(jobs, 90s);
  // And the new one serves: a job submitted to it completes.
  auto again = s.submit("c3b", 50);
  c.check_all_done_once({again}, 30s);
}

TEST_CASE("a coordinator started under the node id of one that runs is "
          "refused, and the running one goes on",
          "[pg][cluster][process][share]") {
  cluster c;
  sharing s{c};
  s.start_three();
  // (A longer lease TTL than the others' for it alone -- it never joins:
  // it waits up to half of it, 2 s, for c3 to beat.)
  auto code = c.exit_code_of(
      "c3b", free_port(),
      {"--node-id", "c3", "--share-partitions", "--lease-ttl-ms", "4000"});
  INFO(tail_of(c.logs.path() + "/c3b.log"));
  CHECK(code == 2);
  CHECK(c.log_count("c3b", "another coordinator runs under this node id: "
                           "give each coordinator its own --node-id")
        == 1);
  CHECK_FALSE(s.nodes["c3"]->wait_exit(1ms));
  CHECK(s.spread_over({"c1", "c2", "c3"}));
  CHECK(c.log_count("c3", "replaced") == 0);
  auto id = s.submit("c3", 50);
  c.check_all_done_once({id}, 30s);
}
