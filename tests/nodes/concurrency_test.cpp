// Concurrency limits on a real node (runtime/concurrency.hpp, docs/jobs.md
// "Concurrency limits"): checked from each job's audit log, not from the
// node's own counters.

#include "support/gateway_api.hpp"
#include "support/gateway_node.hpp"
#include "support/http_client.hpp"
#include "support/json_value.hpp"
#include "support/process.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <ctime>
#include <string>
#include <utility>
#include <vector>

using namespace drover::testing::gateway_api;
using drover::testing::expect_node_refuses;
using drover::testing::gateway_node;
using drover::testing::http_client;
using drover::testing::http_response;
using drover::testing::sleep_job;

namespace {

/// Unix ms of an RFC 3339 UTC time with milliseconds
/// ("2026-12-02T19:20:04.010Z").
int64_t unix_ms(const std::string& at) {
  REQUIRE(at.size() == 24);
  std::tm tm{};
  tm.tm_year = std::stoi(at.substr(0, 4)) - 1900;
  tm.tm_mon = std::stoi(at.substr(5, 2)) - 1;
  tm.tm_mday = std::stoi(at.substr(8, 2));
  tm.tm_hour = std::stoi(at.substr(11, 2));
  tm.tm_min = std::stoi(at.substr(14, 2));
  tm.tm_sec = std::stoi(at.substr(17, 2));
  return static_cast<int64_t>(timegm(&tm)) * 1000 + std::stoi(at.substr(20, 3));
}

/// [started, ended] of the job's only attempt, from its audit log.
std::pair<int64_t, int64_t> run_interval(const http_client& c,
                                         const std::string& id) {
  auto res = c.get("/api/jobs/" + id + "/events");
  INFO(res.body);
  REQUIRE(res.status == 200);
  int64_t started = -1, ended = -1;
  for (auto& ev : body_of(res)["events"].items()) {
    if (ev["kind"].str() == "started") {
      CHECK(started == -1); // one attempt
      started = unix_ms(ev["at"].str());
    }
    if (ev["kind"].str() == "completed")
      ended = unix_ms(ev["at"].str());
  }
  REQUIRE(started >= 0);
  REQUIRE(ended >= started);
  return {started, ended};
}

/// Whether two of `runs` overlap in time.
bool any_overlap(std::vector<std::pair<int64_t, int64_t>> runs) {
  std::sort(runs.begin(), runs.end());
  for (size_t i = 1; i < runs.size(); ++i)
    if (runs[i].first < runs[i - 1].second)
      return true;
  return false;
}

} // namespace

TEST_CASE("concurrency: a limit of 1 on a job type is never exceeded, and the "
          "jobs held back wait without a worker",
          "[gateway][concurrency]") {
  gateway_node node{{"--slots", "cpu=4", "--concurrency-limit", "sleep=1"}};
  auto c = node.client();
  std::vector<std::string> ids;
  for (int i = 0; i < 4; ++i)
    ids.push_back(submit(c, sleep_job(800, 4)));
  await_started(node, "", ids[0]);
  // One runs, three wait as ready jobs, and three workers stay idle: the
  // held-back jobs do not occupy them.
  auto q = c.get("/api/admin/queues");
  REQUIRE(q.status == 200);
  auto view = body_of(q);
  CHECK(view["running"].integer() == 1);
  CHECK(view["priorities"]["normal"]["depth"].integer() == 3);
  CHECK(view["idle_workers"].integer() == 3);
  // A held-back job's status says what it waits for.
  auto held = body_of(c.get("/api/jobs/" + ids[3]));
  CHECK(held["waiting_for"].str()
        == "a free slot of its concurrency limit (1 of 1 running; 3 job(s) "
           "wait for one)");
  // A held-back job can be cancelled: it leaves its place behind the key
  // and never starts.
  auto cancelled = submit(c, sleep_job(800, 4));
  REQUIRE(c.post("/api/jobs/" + cancelled + "/cancel", "").status == 202);
  CHECK(await_end(node, "", cancelled)["status"].str() == "cancelled");
  auto events = body_of(c.get("/api/jobs/" + cancelled + "/events"));
  for (auto& ev : events["events"].items())
    CHECK(ev["kind"].str() != "started");
  // A job of another type is not held back.
  auto other
      = submit(c, R"({"type": "exec", "input": {"argv": ["/bin/true"]}})");
  CHECK(await_end(node, "", other)["status"].str() == "completed");

  std::vector<std::pair<int64_t, int64_t>> runs;
  for (auto& id : ids) {
    CHECK(await_end(node, "", id)["status"].str() == "completed");
    runs.push_back(run_interval(c, id));
  }
  CHECK_FALSE(any_overlap(runs));
}

TEST_CASE("concurrency: a job woken from behind its key and cancelled before "
          "a worker took it hands its slot to the next",
          "[gateway][concurrency]") {
  gateway_node node{{"--slots", "cpu=2", "--concurrency-limit", "sleep=1"}};
  auto c = node.client();
  // Worker 1 runs `first`; worker 2, idle, tries `woken` and `next` and
  // parks them behind the key (each submit is answered after the queue
  // placed the job), then takes `other`.
  auto first = submit(c, sleep_job(800, 8));
  await_started(node, "", first);
  auto woken = submit(c, sleep_job(100, 1));
  auto next = submit(c, sleep_job(100, 1));
  // Report progress (so their start shows on their streams), then run 3 s.
  auto three_s = [](const char* prio) {
    return exec_job({"sh", "-c", "echo \\\"PROGRESS 1 busy\\\"; sleep 3"}, "",
                    std::string{R"(, "priority": ")"} + prio + "\"");
  };
  auto other = submit(c, three_s("normal"));
  await_started(node, "", other);
  // Waits in the ready queue: when `first` ends, its worker takes this high
  // job, and `woken` comes back from behind the key holding its slot, with
  // no worker free.
  auto busy = submit(c, three_s("high"));
  await_end(node, "", first);
  await_started(node, "", busy);
  REQUIRE(c.post("/api/jobs/" + woken + "/cancel", "").status == 202);
  CHECK(await_end(node, "", woken)["status"].str() == "cancelled");
  // The slot went on to `next`, which runs once a worker is free.
  CHECK(await_end(node, "", next)["status"].str() == "completed");
  CHECK(await_end(node, "", other)["status"].str() == "completed");
  CHECK(await_end(node, "", busy)["status"].str() == "completed");
}

TEST_CASE("concurrency: a limit per tenant holds each tenant to it while "
          "tenants run side by side",
          "[gateway][concurrency]") {
  api_key a{"a-app", "tenant-a", "submit,read"};
  api_key b{"b-app", "tenant-b", "submit,read"};
  auto options = key_options({&a, &b});
  options.insert(options.end(),
                 {"--slots", "cpu=4", "--concurrency-limit", "sleep=1/tenant"});
  gateway_node node{options};
  auto ca = node.client(a.secret);
  auto cb = node.client(b.secret);
  std::vector<std::string> as, bs;
  for (int i = 0; i < 2; ++i) {
    as.push_back(submit(ca, sleep_job(800, 4)));
    bs.push_back(submit(cb, sleep_job(800, 4)));
  }
  std::vector<std::pair<int64_t, int64_t>> a_runs, b_runs;
  for (auto& id : as) {
    await_end(node, a.secret, id);
    a_runs.push_back(run_interval(ca, id));
  }
  for (auto& id : bs) {
    await_end(node, b.secret, id);
    b_runs.push_back(run_interval(cb, id));
  }
  CHECK_FALSE(any_overlap(a_runs));
  CHECK_FALSE(any_overlap(b_runs));
  // The first job of each tenant started at once, side by side (4 slots).
  CHECK(any_overlap({a_runs[0], b_runs[0]}));
}

TEST_CASE("concurrency: a limit naming no job type, or badly written, stops "
          "the node at start",
          "[gateway][concurrency]") {
  expect_node_refuses({"--concurrency-limit", "nope=1"},
                      "concurrency-limit: no job type 'nope'");
  expect_node_refuses({"--concurrency-limit", "sleep=0"},
                      "not a count within [1, 1000000]");
  expect_node_refuses({"--concurrency-limit", "sleep=1/user"},
                      "is not a scope");
}

TEST_CASE("fairness: a tenant with a 100:1 backlog does not starve the other, "
          "and tenants progress at their weights",
          "[gateway][fairness]") {
  api_key a{"a-app", "tenant-a", "submit,read"};
  api_key b{"b-app", "tenant-b", "submit,read"};
  auto options = key_options({&a, &b});
  // One slot: the order of starts is the queue's order. Tenant b weighs 2.
  options.insert(options.end(),
                 {"--slots", "cpu=1", "--tenant-weight", "tenant-b=2"});
  gateway_node node{options};
  auto ca = node.client(a.secret);
  auto cb = node.client(b.secret);
  auto batch = [](int n) {
    std::string body = "{\"jobs\":[";
    for (int i = 0; i < n; ++i)
      body += (i > 0 ? "," : "") + sleep_job(5, 1);
    return body + "]}";
  };
  auto ids_of = [](const http_response& res) {
    INFO(res.body.substr(0, 500));
    REQUIRE(res.status < 300);
    std::vector<std::string> ids;
    for (auto& item : body_of(res)["results"].items())
      ids.push_back(item["job_id"].str());
    return ids;
  };
  auto as = ids_of(ca.post("/api/jobs/batch", batch(200)));
  // b's twenty come after a's two hundred.
  auto bs = ids_of(cb.post("/api/jobs/batch", batch(20)));
  std::vector<std::pair<int64_t, char>> starts;
  for (auto& id : bs) {
    await_end(node, b.secret, id);
    starts.emplace_back(run_interval(cb, id).first, 'b');
  }
  for (auto& id : as) {
    await_end(node, a.secret, id);
    starts.emplace_back(run_interval(ca, id).first, 'a');
  }
  std::sort(starts.begin(), starts.end());
  size_t first_b = starts.size(), last_b = 0;
  for (size_t i = 0; i < starts.size(); ++i)
    if (starts[i].second == 'b') {
      first_b = std::min(first_b, i);
      last_b = i;
    }
  // Without fairness b's jobs would start after a's 200 (FIFO).
  INFO("b's starts at positions " << first_b << " to " << last_b);
  CHECK(last_b < 45);
  // While both had jobs ready, a had half of b's share: 10 of a's between
  // b's first and last, within a turn or two.
  size_t a_between = 0;
  for (size_t i = first_b; i <= last_b; ++i)
    a_between += starts[i].second == 'a' ? 1 : 0;
  CHECK(a_between >= 8);
  CHECK(a_between <= 12);
}
