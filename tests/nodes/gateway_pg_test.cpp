// The HTTP gateway in front of the PostgreSQL store while PostgreSQL is
// down: a throwaway cluster (tests/support/pg_cluster.hpp) stopped with
// `pg_ctl stop -m immediate` under a running drover-node. Submits during the
// outage must be 503 `unavailable` with Retry-After, never 202, and must
// create nothing; /readyz says 503; after PostgreSQL restarts, the gateway
// accepts submits again and the job in flight during the outage completes.
//
// Waits are on events with deadlines (the node's ready line, HTTP answers,
// a job's event stream), except the wait for the store to reconnect: no
// event announces it, so /readyz is asked again, with a pause, until it
// says ready or the deadline passes.

#include "support/gateway_node.hpp"
#include "support/http_client.hpp"
#include "support/json_value.hpp"
#include "support/pg_cluster.hpp"

#include <catch2/catch.hpp>

#include <chrono>
#include <iostream>
#include <set>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using drover::testing::clock_type;
using drover::testing::gateway_node;
using drover::testing::http_client;
using drover::testing::http_response;
using drover::testing::parse_json;
using drover::testing::sleep_job;
using drover::testing::sse_stream;
using drover::testing::throwaway_cluster;
using drover::testing::time_left;

namespace {

/// Reads the job's event stream until the server ends it; returns the
/// name of the last event.
std::string last_stream_event(uint16_t port, const std::string& id) {
  sse_stream s{port, "/api/jobs/" + id + "/stream"};
  INFO(s.head().body);
  REQUIRE(s.head().status == 200);
  std::string last;
  auto deadline = clock_type::now() + 60s;
  while (auto ev = s.next(time_left(deadline)))
    if (!ev->is_comment())
      last = ev->event;
  REQUIRE_FALSE(s.timed_out());
  REQUIRE(s.complete());
  return last;
}

/// A 503 as docs/api.md describes it.
void check_unavailable(const http_response& res) {
  INFO("status " << res.status << ": " << res.body);
  CHECK(res.status == 503);
  CHECK(res.header("Retry-After") == "1");
  if (res.status == 503)
    CHECK(parse_json(res.body)["error"]["code"].str() == "unavailable");
}

} // namespace

TEST_CASE("gateway: with PostgreSQL stopped, submits are 503 and create "
          "nothing, and are accepted again after the restart",
          "[pg][faults][gateway]") {
  throwaway_cluster cluster;
  gateway_node node{{"--store", "postgres", "--pg-url", cluster.url()}};
  auto c = node.client();
  CHECK(c.get("/readyz").status == 200);

  // In flight when PostgreSQL goes: it must still complete afterwards.
  auto first = c.post("/api/jobs", sleep_job(1500, 3),
                      {{"Idempotency-Key", "before"}});
  INFO(first.body);
  REQUIRE(first.status == 202);
  auto in_flight = parse_json(first.body)["job_id"].str();

  cluster.stop_immediately();

  // During the outage: every submit is refused, single or batched.
  for (int i = 0; i < 5; ++i) {
    auto res = c.post("/api/jobs", sleep_job(10, 1),
                      {{"Idempotency-Key", "during-" + std::to_string(i)}});
    check_unavailable(res);
  }
  auto batch = c.post("/api/jobs/batch",
                      R"({"jobs": [{"type": "sleep", "input": {"ms": 1},
                                    "idempotency_key": "during-batch-0"},
                                   {"type": "sleep", "input": {"ms": 1},
                                    "idempotency_key": "during-batch-1"}]})");
  INFO(batch.body);
  if (batch.status == 200) {
    // Refused item by item.
    auto items = parse_json(batch.body);
    CHECK(items["accepted"].integer() == 0);
    for (auto& r : items["results"].items()) {
      CHECK(r["status"].integer() == 503);
      CHECK(r["error"]["code"].str() == "unavailable");
    }
  } else {
    // Refused as a whole (one commit for the whole batch).
    check_unavailable(batch);
  }
  check_unavailable(c.get("/readyz"));
  // The gateway itself is alive.
  CHECK(c.get("/healthz").status == 200);

  // PostgreSQL comes back. The store reconnects on its own schedule, so
  // /readyz is asked again, with a pause, until it says ready; until then
  // it may only be 503s.
  cluster.start();
  auto deadline = clock_type::now() + 60s;
  for (;;) {
    auto ready = c.get("/readyz");
    if (ready.status == 200)
      break;
    check_unavailable(ready);
    REQUIRE(clock_type::now() < deadline);
    std::this_thread::sleep_for(100ms);
  }
  // /readyz asks the store's write path: once it says ready, a submit is
  // accepted at once.
  auto after
      = c.post("/api/jobs", sleep_job(10, 1), {{"Idempotency-Key", "after"}});
  INFO(after.body);
  CHECK(after.status == 202);
  CHECK(last_stream_event(node.port(), in_flight) == "completed");
  auto job = parse_json(c.get("/api/jobs/" + in_flight).body);
  CHECK(job["status"].str() == "completed");

  // Nothing refused was created: exactly the two accepted keys exist.
  auto list = c.get("/api/jobs?limit=100");
  REQUIRE(list.status == 200);
  std::set<std::string> keys;
  auto page = parse_json(list.body);
  for (auto& j : page["data"].items())
    keys.insert(j["idempotency_key"].str());
  CHECK(keys == std::set<std::string>{"before", "after"});
  node.stop();
  std::cout << "gateway_pg_test: batch during the outage: HTTP " << batch.status
            << std::endl;
}
