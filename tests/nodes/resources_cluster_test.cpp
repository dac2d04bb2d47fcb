// Routing by resources and elastic slots on a real cluster (issue 15 items 5
// and 6; runtime/resources.hpp, actors/node_link_slots.cpp): a coordinator
// on a private PostgreSQL database and worker processes. Where jobs ran
// comes from their records, how many ran at once from the audit log, the
// slots a node is offered from the node list.

#include "support/cluster.hpp"
#include "support/process.hpp"
#include "support/test_db.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

using namespace drover;
using namespace std::chrono_literals;
using drover::testing::droverctl;
using drover::testing::job_id_of;
using drover::testing::must;
using drover::testing::poll_until;
using drover::testing::run;
using drover::testing::tail_of;
using drover::testing::time_scale;
using namespace drover::testing::cluster_harness;

namespace {

/// Submits a sleep of `ms` needing `resources` ("class=1,pool=n,...").
std::string submit_needing(cluster& c, int ms, const std::string& resources) {
  auto [rc, out]
      = droverctl({"submit", "sleep", "--port", c.admin, "--input",
                   "{\"ms\":" + std::to_string(ms * time_scale()) + "}",
                   "--resources", resources});
  INFO(out);
  REQUIRE(rc == 0);
  return job_id_of(out);
}

/// The most of `jobs` that ran at once, from their `started` and
/// `completed` events (both taken on the coordinator). A slot or pool
/// freed by one job's outcome can start the next before the first's
/// `completed` event is stamped (two supervisors write concurrently): an
/// end counts `slack` earlier, far less than the jobs' length, so a real
/// overlap still shows.
size_t most_at_once(const std::string& url,
                    const std::vector<std::string>& jobs) {
  const int64_t slack = 50 * time_scale();
  auto conn = must(drover::pg::connection::open(url));
  std::string list;
  for (const auto& j : jobs)
    list += (list.empty() ? "'" : ",'") + j + "'";
  auto res = run(
      conn, "SELECT at_ms, CASE kind WHEN " + std::to_string(started_kind)
                + " THEN 1 ELSE -1 END FROM drover.events WHERE "
                  "job_id IN ("
                + list + ") AND kind IN (" + std::to_string(started_kind) + ","
                + std::to_string(completed_kind) + ") ORDER BY at_ms, 2");
  std::vector<std::pair<int64_t, int>> steps;
  for (int i = 0; i < res.rows(); ++i)
    steps.emplace_back(std::stoll(std::string{res.value(i, 0)}),
                       std::stoi(std::string{res.value(i, 1)}));
  REQUIRE(steps.size() == 2 * jobs.size());
  for (auto& s : steps)
    if (s.second < 0)
      s.first -= slack;
  std::sort(steps.begin(), steps.end());
  int now = 0;
  int most = 0;
  for (auto& s : steps) { // ends before starts at the same ms
    now += s.second;
    most = std::max(most, now);
  }
  return static_cast<size_t>(most);
}

} // namespace

TEST_CASE("resources: jobs needing a gpu and memory run only on the node "
          "that has them, its pool bounds how many at once, and a job no "
          "node could run says why",
          "[pg][cluster][process][resources]") {
  cluster c;
  c.start_coordinator();
  c.start_worker("plain", {"--slots", "cpu=4"});
  c.start_worker("big",
                 {"--slots", "cpu=4,gpu=1", "--resources", "memory_gb=8"});
  // Four 4 GB jobs on cpu slots: only the node with the pool runs them,
  // two at a time (both nodes have free cpu slots throughout).
  std::vector<std::string> memory_jobs;
  for (int i = 0; i < 4; ++i)
    memory_jobs.push_back(submit_needing(c, 400, "cpu=1,memory_gb=4"));
  // Two gpu jobs drawing memory too: the gpu slot is on "big" only.
  std::vector<std::string> gpu_jobs;
  for (int i = 0; i < 2; ++i)
    gpu_jobs.push_back(submit_needing(c, 50, "gpu=1,memory_gb=1"));
  // A job needing more memory than any node has: it waits, and says why.
  auto never = submit_needing(c, 10, "cpu=1,memory_gb=16");
  auto all = memory_jobs;
  all.insert(all.end(), gpu_jobs.begin(), gpu_jobs.end());
  INFO(tail_of(c.logs.path() + "/coord.log"));
  REQUIRE(poll_until(
      [&] {
        for (auto& j : all)
          if (c.events(j, completed_kind) == 0)
            return false;
        return true;
      },
      60s));
  for (auto& j : memory_jobs)
    CHECK(c.worker_of(j).rfind("big/cpu-", 0) == 0);
  for (auto& j : gpu_jobs)
    CHECK(c.worker_of(j).rfind("big/gpu-", 0) == 0);
  auto most = most_at_once(c.url(), memory_jobs);
  INFO("4 GB jobs at once on an 8 GB node: " << most);
  CHECK(most <= 2);
  CHECK(most == 2); // and the pool was used: not one at a time
  auto [rc, out] = droverctl({"get", never, "--port", c.admin, "--json"});
  INFO(out);
  REQUIRE(rc == 0);
  CHECK(out.find("\"status\":\"queued\"") != std::string::npos);
  CHECK(out.find("has memory_gb=16 (node big lacks memory_gb=16 (it has 8), "
                 "node plain lacks memory_gb=16 (it has 0))")
        != std::string::npos);
  CHECK(c.events(never, started_kind) == 0);
  // The node list's "unrunnable" view names its resources.
  auto [nrc, nodes] = droverctl({"nodes", "--port", c.admin, "--json"});
  INFO(nodes);
  CHECK(nrc == 0);
  CHECK(nodes.find("memory_gb=16") != std::string::npos);
}

namespace {

/// A number after `key` in `text` (-1 if absent).
int64_t number_after(const std::string& text, const std::string& key) {
  auto at = text.find(key);
  if (at == std::string::npos)
    return -1;
  return std::stoll(text.substr(at + key.size()));
}

} // namespace

TEST_CASE("elastic: a worker node's slots grow under a backlog and shrink "
          "when idle",
          "[pg][cluster][process][elastic]") {
  cluster c;
  c.start_coordinator();
  c.start_worker("el", {"--slots", "cpu=4", "--elastic-slots", "cpu=1",
                        "--elastic-idle-ms", "300"});
  auto nodes = [&] {
    auto [rc, out] = droverctl({"nodes", "--port", c.admin, "--json"});
    REQUIRE(rc == 0);
    return out;
  };
  const std::string slots_key = "\"elastic\":{\"cpu\":{\"slots\":";
  INFO(nodes());
  CHECK(number_after(nodes(), slots_key) == 1);
  // A backlog: 16 jobs of 400 ms submitted at once on a node that starts
  // with one slot.
  std::vector<std::string> jobs;
  for (int i = 0; i < 16; ++i)
    jobs.push_back(c.submit(400));
  c.check_all_done_once(jobs, 60s);
  auto most = most_at_once(c.url(), jobs);
  INFO("most jobs at once: " << most);
  CHECK(most == 4); // grown to every slot it has, never beyond
  auto grown = number_after(nodes(), "\"elastic_grown\":");
  CHECK(grown >= 3);
  // Idle: back to one slot, one withdrawal at a time.
  std::string last;
  CHECK(poll_until(
      [&] {
        last = nodes();
        return number_after(last, slots_key) == 1;
      },
      20s));
  INFO(last);
  CHECK(number_after(last, "\"elastic_shrunk\":") >= 3);
  // And it grows again for the next backlog.
  std::vector<std::string> again;
  for (int i = 0; i < 8; ++i)
    again.push_back(c.submit(400));
  c.check_all_done_once(again, 60s);
  CHECK(most_at_once(c.url(), again) >= 2);
  CHECK(number_after(nodes(), "\"elastic_grown\":") > grown);
}
