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

/// Whether two of `runs` overlap in time.
bool any_overlap(std::vector<std::pair<int64_t, int64_t>> runs) {
  std::sort(runs.begin(), runs.end());
  for (size_t i = 1; i < runs.size(); ++i)
    if (runs[i].first < runs[i - 1].second)
      return true;
  return false;
}

/// The most of `runs` running at one time.
size_t max_overlap(const std::vector<std::pair<int64_t, int64_t>>& runs) {
  std::vector<std::pair<int64_t, int>> edges; // ends sort before starts
  for (auto& [start, end] : runs) {
    edges.emplace_back(start, 1);
    edges.emplace_back(end, -1);
  }
  std::sort(edges.begin(), edges.end());
  size_t most = 0, now = 0;
  for (auto& e : edges) {
    now = e.second > 0 ? now + 1 : now - 1;
    most = std::max(most, now);
  }
  return most;
}

/// A sleep job of `ms` naming its own concurrency key.
std::string keyed_sleep(int ms, const std::string& key, int limit = 0) {
  auto job = sleep_job(ms, 4);
  job.pop_back();
  job += R"(, "concurrency_key": ")" + key + "\"";
  if (limit > 0)
    job += R"(, "concurrency_limit": )" + std::to_string(limit);
  return job + "}";
}

} // namespace

TEST_CASE("concurrency: a job's own key holds the jobs naming it to its "
          "limit while other keys and tenants run side by side",
          "[gateway][concurrency]") {
  api_key a{"a-app", "tenant-a", "submit,read"};
  api_key b{"b-app", "tenant-b", "submit,read"};
  auto options = key_options({&a, &b});
  options.insert(options.end(), {"--slots", "cpu=6"});
  gateway_node node{options};
  auto ca = node.client(a.secret);
  auto cb = node.client(b.secret);
  // Tenant a: three jobs of user:1 (limit 1), three of user:2 (limit 2);
  // tenant b: two of its own user:1, a key apart from a's.
  std::vector<std::string> u1, u2, b1;
  for (int i = 0; i < 3; ++i)
    u1.push_back(submit(ca, keyed_sleep(700, "user:1")));
  for (int i = 0; i < 3; ++i)
    u2.push_back(submit(ca, keyed_sleep(700, "user:2", 2)));
  for (int i = 0; i < 2; ++i)
    b1.push_back(submit(cb, keyed_sleep(700, "user:1")));
  await_started(node, a.secret, u1[0]);
  // A held-back job says which key holds it, and its record shows the key.
  auto held = body_of(ca.get("/api/jobs/" + u1[2]));
  // The third of user:1 cannot start before the first two ran (1.4 s).
  REQUIRE(held["status"].str() == "queued");
  CHECK(held["waiting_for"].str()
        == "a free slot of its concurrency key 'user:1' (1 of 1 running; 2 "
           "job(s) wait for one)");
  CHECK(held["concurrency_key"].str() == "user:1");
  CHECK(held["concurrency_limit"].integer() == 1);
  auto runs_of = [&](const http_client& c, const std::string& secret,
                     const std::vector<std::string>& ids) {
    std::vector<std::pair<int64_t, int64_t>> runs;
    for (auto& id : ids) {
      CHECK(await_end(node, secret, id)["status"].str() == "completed");
      runs.push_back(run_interval(c, id));
    }
    return runs;
  };
  auto r1 = runs_of(ca, a.secret, u1);
  auto r2 = runs_of(ca, a.secret, u2);
  auto rb = runs_of(cb, b.secret, b1);
  CHECK(max_overlap(r1) == 1);
  CHECK(max_overlap(r2) == 2); // its limit, and reached: 6 slots were free
  CHECK(max_overlap(rb) == 1);
  // Keys are per tenant: b's user:1 ran beside a's.
  CHECK(any_overlap({r1[0], rb[0]}));
}

TEST_CASE("concurrency: jobs of one key with different limits start first "
          "come first served",
          "[gateway][concurrency]") {
  gateway_node node{{"--slots", "cpu=4"}};
  auto c = node.client();
  // a1 (limit 2) runs; b (limit 1) must wait until nothing of the key
  // runs; a2 and a3 (limit 2) could start beside a1 but come after b: they
  // wait behind it rather than overtake it (for good, under a steady flow
  // of limit-2 jobs).
  auto a1 = submit(c, keyed_sleep(800, "k", 2));
  await_started(node, "", a1);
  auto b = submit(c, keyed_sleep(300, "k", 1));
  auto a2 = submit(c, keyed_sleep(300, "k", 2));
  auto a3 = submit(c, keyed_sleep(300, "k", 2));
  for (auto& id : {a1, b, a2, a3})
    CHECK(await_end(node, "", id)["status"].str() == "completed");
  auto ra1 = run_interval(c, a1);
  auto rb = run_interval(c, b);
  auto ra2 = run_interval(c, a2);
  auto ra3 = run_interval(c, a3);
  CHECK(rb.first >= ra1.second); // alone, as its limit says
  // Not before b: b could start only once a1 ended, so neither may start
  // earlier. (b, a2 and a3 may be dispatched in one pass: their supervisors
  // stamp `started` on two scheduler threads, a millisecond either way, so
  // comparing a2's stamp with b's would measure the threads, not the order.)
  CHECK(ra2.first >= ra1.second);
  CHECK(ra3.first >= ra1.second);
  CHECK(max_overlap({ra1, rb, ra2, ra3}) <= 2);
}

TEST_CASE("concurrency: a job under its own key and its type's limit holds "
          "both, and a cancelled job hands its slots on",
          "[gateway][concurrency]") {
  gateway_node node{{"--slots", "cpu=6", "--concurrency-limit", "sleep=2"}};
  auto c = node.client();
  // Four keys, two jobs each, submitted key by key: the type's limit (2)
  // binds first, each key's (1) within it.
  std::vector<std::vector<std::string>> by_key(4);
  for (int k = 0; k < 4; ++k)
    for (int i = 0; i < 2; ++i)
      by_key[k].push_back(
          submit(c, keyed_sleep(500, "user:" + std::to_string(k))));
  // One more of user:0, cancelled while it waits: whatever slots it held
  // go on, and every other job still runs.
  auto gone = submit(c, keyed_sleep(500, "user:0"));
  REQUIRE(c.post("/api/jobs/" + gone + "/cancel", "").status == 202);
  CHECK(await_end(node, "", gone)["status"].str() == "cancelled");
  std::vector<std::pair<int64_t, int64_t>> all;
  for (auto& ids : by_key) {
    std::vector<std::pair<int64_t, int64_t>> runs;
    for (auto& id : ids) {
      CHECK(await_end(node, "", id)["status"].str() == "completed");
      runs.push_back(run_interval(c, id));
    }
    CHECK_FALSE(any_overlap(runs)); // each key: 1 at a time
    all.insert(all.end(), runs.begin(), runs.end());
  }
  CHECK(max_overlap(all) == 2); // the type: 2 at a time, and reached
}

TEST_CASE("concurrency: a job's own key and limit are checked at submit",
          "[gateway][concurrency]") {
  gateway_node node{{"--slots", "cpu=1"}};
  auto c = node.client();
  auto refused = [&](const std::string& fields, const std::string& message) {
    auto res = c.post("/api/jobs",
                      R"({"type": "sleep", "input": {"ms": 1})" + fields + "}");
    INFO(res.body);
    CHECK(res.status == 400);
    CHECK(res.body.find(message) != std::string::npos);
  };
  refused(R"(, "concurrency_limit": 2)",
          "concurrency_limit needs a concurrency_key");
  refused(R"(, "concurrency_key": "u", "concurrency_limit": 0)",
          "concurrency_limit");
  refused(R"(, "concurrency_key": "u", "concurrency_limit": 1000001)",
          "concurrency_limit");
  refused(R"(, "concurrency_key": "u", "concurrency_limit": 1.5)",
          "concurrency_limit");
  refused(R"(, "concurrency_key": "u\u0001")",
          "concurrency_key: contains a control character");
  refused(R"(, "concurrency_key": ")" + std::string(300, 'k') + "\"",
          "concurrency_key is longer than");
  // Nothing was created by the refusals.
  auto list = body_of(c.get("/api/jobs"));
  CHECK(list["data"].size() == 0);
}

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
