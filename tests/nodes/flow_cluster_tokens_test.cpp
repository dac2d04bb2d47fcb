// Rate limiters on a real cluster (runtime/flow_control.hpp, docs/jobs.md
// "Rate limits and circuit breakers"): tokens at dispatch and taken mid-job,
// jobs naming two limits, and a kill -9 of the coordinator. A coordinator
// on a private PostgreSQL database, two worker processes, a gateway node
// for the HTTP API. Every figure is read from the audit log
// (drover.events) and the control log (drover.control_log), not from the
// node's own counters; the helpers are in tests/support/flow_cluster.hpp.

#include "support/cluster.hpp"
#include "support/flow_cluster.hpp"
#include "support/gateway_api.hpp"
#include "support/gateway_node.hpp"
#include "support/http_client.hpp"
#include "support/process.hpp"
#include "support/scratch.hpp"
#include "support/test_db.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <fstream>
#include <iostream>
#include <set>
#include <string>
#include <sys/stat.h>
#include <vector>

using namespace drover;
using namespace std::chrono_literals;
using drover::testing::droverctl;
using drover::testing::http_client;
using drover::testing::must;
using drover::testing::poll_until;
using drover::testing::process;
using drover::testing::run;
using drover::testing::scalar;
using drover::testing::scratch_dir;
using drover::testing::tail_of;
using drover::testing::gateway_api::api_key;
using drover::testing::gateway_api::key_options;
using namespace drover::testing::cluster_harness;
using namespace drover::testing::flow_cluster;

TEST_CASE("flow: a 20/s rate limit holds across two worker nodes, measured "
          "from the audit log",
          "[pg][cluster][process][flow]") {
  cluster c;
  // burst=1: no second's worth saved up while the workers join, so any
  // window of T seconds holds at most 1 + 20 T starts.
  auto gw
      = start_two_workers(c, {"--rate-limit", "mail:rate=20,burst=1"}, "cpu=4");
  auto client = gw->client();
  // 8 slots for jobs of 20 ms: without the limit they would start at
  // hundreds per second.
  const int n = 160;
  std::vector<std::string> items(
      n, R"({"type":"sleep","input":{"ms":20},"rate_limit_key":"mail"})");
  auto ids = submit_batch(client, items);
  c.check_all_done_once(ids, 60s);

  auto starts = start_times(c.url());
  REQUIRE(starts.size() == static_cast<size_t>(n));
  // Any 1 s window: at most 1 + 20 starts (the audit time of a start is
  // taken on the coordinator when the worker reports it: +1 for that
  // jitter at a window's edge).
  size_t most = 0;
  for (size_t i = 0, j = 0; i < starts.size(); ++i) {
    while (starts[i] - starts[j] >= 1000)
      ++j;
    most = std::max(most, i - j + 1);
  }
  INFO("most starts in a 1 s window: " << most);
  CHECK(most <= 22);
  // Over the whole run the rate is 20/s within 10 %: the limit is not
  // exceeded, and jobs do not wait longer than it requires.
  double seconds = static_cast<double>(starts.back() - starts.front()) / 1000;
  double rate = (n - 1) / seconds;
  INFO("measured " << rate << " starts/s over " << seconds << " s");
  CHECK(rate <= 20 * 1.05);
  CHECK(rate >= 20 * 0.9);
  // Both worker nodes ran them: the limit is the cluster's, not a node's.
  std::set<std::string> nodes;
  for (size_t i = 0; i < ids.size(); i += 10)
    nodes.insert(node_of(c.worker_of(ids[i])));
  CHECK(nodes == std::set<std::string>{"w1", "w2"});
  // The limiter's authority started with an empty bucket, recorded in the
  // control log with its partition's epoch.
  CHECK(control_states(c.url(), "mail") == std::vector<std::string>{"active"});
  CHECK(scalar(c.url(), "SELECT min(epoch) FROM drover.control_log") >= 1);
  // A key the coordinator does not declare is refused, nothing created.
  auto before = scalar(c.url(), "SELECT count(*) FROM drover.jobs");
  auto bad = client.post(
      "/api/jobs", R"({"type":"sleep","input":{"ms":1},"rate_limit_key":"x"})");
  CHECK(bad.status == 400);
  CHECK(bad.body.find("not declared") != std::string::npos);
  CHECK(scalar(c.url(), "SELECT count(*) FROM drover.jobs") == before);
}

TEST_CASE("flow: tokens taken mid-job hold a 20/s limit across two worker "
          "nodes",
          "[pg][cluster][process][flow]") {
  cluster c;
  auto gw
      = start_two_workers(c, {"--rate-limit", "mail:rate=20,burst=1"}, "cpu=4");
  auto client = gw->client();
  // Eight jobs at once on eight slots, each taking 15 tokens one at a
  // time (a job sending 15 mails): 8 tokens for their dispatch and 120
  // taken mid-job, all from the one bucket on the coordinator.
  const int n = 8;
  const int per_job = 15;
  std::vector<std::string> items(
      n, R"({"type":"sleep","input":{"ms":0,"tokens":15},)"
         R"("rate_limit_key":"mail"})");
  auto ids = submit_batch(client, items);
  c.check_all_done_once(ids, 60s);
  auto span = span_ms(c.url(), {}, {started_kind, completed_kind});
  const int tokens = n * (per_job + 1);
  // The first dispatch took the one token the bucket held; every other
  // token needed 50 ms of refill. The mid-job takes came after the first
  // start, so they took at least (tokens - 2) / 20 s after it.
  double seconds = static_cast<double>(span) / 1000;
  double floor_s = (tokens - 2) / 20.0;
  std::cout << "flow_cluster_test: " << tokens << " tokens (8 dispatches, "
            << n * per_job << " taken mid-job) in " << seconds
            << " s; the limit allows " << floor_s << " s at the earliest\n";
  INFO(tokens << " tokens in " << seconds << " s (the limit allows them in "
              << floor_s << " s at the earliest)");
  CHECK(seconds >= floor_s * 0.98);
  // ...and not much later: takes wait for the next token, not for polls.
  CHECK(seconds <= floor_s * 1.25 + 1);
  // The authority counted every token it granted, dispatch and mid-job.
  auto flow = client.get("/api/admin/flow");
  INFO(flow.body);
  REQUIRE(flow.status == 200);
  CHECK(flow.body.find("\"granted\":" + std::to_string(tokens))
        != std::string::npos);
  // Both nodes ran the jobs: their takes went through their own links.
  std::set<std::string> nodes;
  for (auto& id : ids)
    nodes.insert(node_of(c.worker_of(id)));
  CHECK(nodes == std::set<std::string>{"w1", "w2"});
  // Every job's result says how many it took.
  auto [rc, out] = droverctl({"result", ids[0], "--port", c.admin, "--json"});
  INFO("droverctl result: " << rc << " " << out);
  CHECK(rc == 0);
  CHECK(out.find(R"("tokens":15)") != std::string::npos);
  // A job taking tokens without naming a rate limit fails for good, at
  // once, saying why.
  auto lone = submit_batch(client, {R"({"type":"sleep","input":)"
                                    R"({"ms":0,"tokens":1}})"});
  c.check_all_done_once({}, 30s);
  auto [rc2, got] = droverctl({"get", lone[0], "--port", c.admin, "--json"});
  INFO(got);
  CHECK(got.find("no_rate_limit") != std::string::npos);
  CHECK(got.find(R"("status":"failed")") != std::string::npos);
}

TEST_CASE("flow: jobs naming two rate limits take a token of each mid-job "
          "on worker nodes while jobs naming one are not held by the other",
          "[pg][cluster][process][flow]") {
  cluster c;
  auto gw = start_two_workers(c,
                              {"--rate-limit", "provider:rate=100,burst=1",
                               "--rate-limit", "share:rate=10,burst=1"},
                              "cpu=4");
  auto client = gw->client();
  // Four jobs under both limits and four under the provider's only, each
  // taking 5 tokens: 24 of the share's (10/s: 2.3 s at least) and 48 of
  // the provider's (100/s: 0.5 s).
  std::vector<std::string> items;
  for (int i = 0; i < 4; ++i)
    items.push_back(R"({"type":"sleep","input":{"ms":0,"tokens":5},)"
                    R"("rate_limit_keys":["provider","share"]})");
  for (int i = 0; i < 4; ++i)
    items.push_back(R"({"type":"sleep","input":{"ms":0,"tokens":5},)"
                    R"("rate_limit_key":"provider"})");
  auto ids = submit_batch(client, items);
  c.check_all_done_once(ids, 60s);
  // Every token counted once per limit: the takes of jobs with different
  // limits were never merged on a worker node.
  auto flow = client.get("/api/admin/flow");
  INFO(flow.body);
  REQUIRE(flow.status == 200);
  CHECK(flow.body.find(R"("key":"provider")") != std::string::npos);
  auto granted_of = [&](const std::string& key) {
    auto at = flow.body.find("\"key\":\"" + key + "\"");
    REQUIRE(at != std::string::npos);
    auto g = flow.body.find("\"granted\":", at);
    return std::stoi(flow.body.substr(g + 10));
  };
  CHECK(granted_of("provider") == 48);
  CHECK(granted_of("share") == 24);
  auto span = [&](size_t from, size_t to) {
    return span_ms(c.url(), {ids.begin() + from, ids.begin() + to},
                   {started_kind, completed_kind});
  };
  auto both_ms = span(0, 4);
  auto one_ms = span(4, 8);
  std::cout << "flow_cluster_test: two limits: 24 tokens of 10/s in " << both_ms
            << " ms; the provider-only jobs in " << one_ms << " ms\n";
  CHECK(both_ms >= (24 - 2) * 100 * 0.98);
  CHECK(one_ms < both_ms);
}

TEST_CASE("flow: jobs taking tokens on a worker node ride out a kill -9 of "
          "the coordinator: adopted, not failed, and the limit holds",
          "[pg][cluster][process][flow]") {
  cluster c;
  std::vector<std::string> opts{"--gateway-join-secret", gateway_secret,
                                "--rate-limit", "mail:rate=10,burst=1"};
  c.start_coordinator(opts);
  c.start_worker("w1", {"--slots", "cpu=4"});
  gateway gw{c};
  auto client = gw.client();
  // Four jobs of 20 tokens at 10/s: 8 s of taking, cut in the middle.
  std::vector<std::string> items(
      4, R"({"type":"sleep","input":{"ms":0,"tokens":20},)"
         R"("rate_limit_key":"mail"})");
  auto ids = submit_batch(client, items);
  REQUIRE(poll_until([&] { return c.all_started(ids); }, 20s));
  auto cut = std::chrono::steady_clock::now();
  // Some tokens taken (the first dispatches and a second of takes).
  REQUIRE(poll_until(
      [&] {
        auto res = client.get("/api/admin/flow");
        auto at = res.body.find("\"granted\":");
        return at != std::string::npos
               && std::stoi(res.body.substr(at + 10)) >= 15;
      },
      20s));
  c.coordinator->signal(SIGKILL);
  REQUIRE(c.coordinator->wait_exit(10s));
  c.start_coordinator(opts);
  c.check_all_done_once(ids, 60s);
  // Adopted: one attempt each, none failed or lost; the takes that met no
  // coordinator (or one still recovering) asked again.
  for (auto& id : ids) {
    INFO(id);
    CHECK(c.events(id, started_kind) == 1);
    CHECK(c.events(id, lease_expired_kind) == 0);
  }
  CHECK(scalar(c.url(), "SELECT count(*) FROM drover.events WHERE kind = 8")
        == 0); // failed
  // 84 tokens at 10/s, whatever the restart: at least 8 s from the first
  // start (the old authority's bucket is not handed on; the new one starts
  // empty and waits a block).
  auto elapsed = std::chrono::steady_clock::now() - cut;
  auto span = span_ms(c.url(), {}, {started_kind, completed_kind});
  std::cout << "flow_cluster_test: 4 x 20 tokens at 10/s across a kill -9 of "
               "the coordinator: first start to last completion "
            << span << " ms\n";
  CHECK(span >= 8000 * 0.95);
  CHECK(elapsed < 60s);
}
