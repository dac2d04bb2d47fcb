// Agents that failed over go home while the attempts they run for the
// coordinator they failed over to go on (docs/cluster.md, "Several active
// coordinators"): a coordinator restarted after a long outage gets its
// agents back at once, not when the last attempt they ran elsewhere ends,
// and the attempts whose partitions it takes back come home with it. Real
// processes, a real PostgreSQL, a real SIGKILL; what happened is read from
// the lease rows, the audit log and the nodes' logs.

#include "support/sharing.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <csignal>
#include <iostream>
#include <map>
#include <set>
#include <string>
#include <vector>

using namespace drover::testing;
using namespace drover::testing::cluster_harness;
using namespace std::chrono_literals;

TEST_CASE("agents that failed over go home when their coordinator is back "
          "while the attempts they ran there go on, each once",
          "[pg][cluster][process][share]") {
  cluster c;
  sharing s{c};
  // Two worker nodes with an agent for each coordinator, ten slots each.
  s.start_three_with_workers("cpu=30");
  INFO(s.logs_of({"c1", "c2", "c3", "w1", "w2"}));
  // Twelve 50 s jobs through c3, on its agents, in twelve of its
  // partitions; c3 killed.
  auto run = s.run_on_c3_agents_then_kill(12, 50000);
  auto& jobs = run.jobs;
  auto& machine = run.machine;
  auto joined_at = s.failed_over("c3", {"c1", "c2"});
  // Those whose partitions the survivor the agent joined took are adopted
  // there: they report to it through the agent that failed over (nothing
  // is cancelled here, unlike the case in share_test.cpp: every one of them
  // runs for 50 s).
  std::vector<std::string> kept;
  for (const auto& id : jobs)
    if (s.owner_of(id) == joined_at[machine[id]])
      kept.push_back(id);
  REQUIRE(!kept.empty());
  // More 50 s jobs through each survivor an agent joined, in its own
  // partitions: as many as the slots of its own agents (ten on each node)
  // and up to four free slots of the failed-over agents there, so that
  // every one runs at once and at least one runs on those agents (eight
  // of their twenty slots are free between the survivors).
  std::map<std::string, int> free_there;
  for (const auto& [w, at] : joined_at) {
    int busy = 0;
    for (const auto& id : jobs)
      busy += machine[id] == w;
    free_there[at] += 10 - busy;
  }
  std::vector<std::string> extra, extra_on_c3;
  for (const auto& [at, free] : free_there)
    for (int i = 0; i < 20 + std::min(free, 4); ++i)
      extra.push_back(s.submit(at, 50000));
  for (const auto& id : extra) {
    auto owner = s.owner_of(id);
    REQUIRE(c.wait_running(id, 30s));
    if (c.worker_of(id, s.admin.at(owner)).find(".c3/") != std::string::npos)
      extra_on_c3.push_back(id);
  }
  INFO(extra_on_c3.size() << " of " << extra.size()
                          << " new jobs run on the failed-over agents");
  REQUIRE(!extra_on_c3.empty());
  kept.insert(kept.end(), extra_on_c3.begin(), extra_on_c3.end());
  jobs.insert(jobs.end(), extra.begin(), extra.end());
  // c3 comes back long after its agents failed over: they go home at once,
  // with every attempt still running (before, the kept ones held them
  // away for the rest of their 50 s).
  s.restart_c3_agents_home(joined_at, jobs, 25s);
  // Every attempt ends once, where it began, whichever coordinator owns
  // its partition at the end.
  c.check_all_done_once(jobs, 150s);
  constexpr int worker_lost_kind = 14;
  int moved = 0, home = 0;
  for (const auto& id : jobs) {
    INFO(id << " (partition now " << s.owner_of(id) << "'s)");
    CHECK(c.events(id, started_kind) == 1);
    CHECK(c.events(id, worker_lost_kind) == 0);
  }
  for (const auto& id : kept) {
    auto owner = s.owner_of(id);
    if (owner == "c3")
      ++home;
    else
      moved += c.log_count(owner, "the attempt's reports come through "
                                  "another slot of its machine now job="
                                      + id)
               > 0;
  }
  for (const auto* w : {"w1", "w2"})
    CHECK(c.log_count(w, "nobody took over a handed-over attempt") == 0);
  // Each kept one either stayed with the survivor (its reports moved to
  // the node's agent joined there) or went home with its partition.
  CHECK(moved + home == static_cast<int>(kept.size()));
  std::cout << "share_home_test: " << kept.size() << " attempts ran for "
            << "the survivor their agent failed over to (" << extra_on_c3.size()
            << " of them leased there); " << moved
            << " moved to the node's agent joined there, " << home
            << " came home with their partitions\n";
}
