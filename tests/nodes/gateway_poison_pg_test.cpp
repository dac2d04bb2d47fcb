// One poison request among many good ones, through the HTTP gateway in
// front of the PostgreSQL store (issue 11 item 1): 100 concurrent submits
// and one whose idempotency key is invalid UTF-8. The poison one alone is
// refused (400 naming the field); every good one is acknowledged (202) and
// completes; /readyz, asked throughout, never leaves 200. Before the fix
// the poison made PostgreSQL reject the whole group-commit transaction and
// every client in it got a 503.

#include "support/gateway_api.hpp"
#include "support/gateway_node.hpp"
#include "support/http_client.hpp"
#include "support/test_db.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

using namespace drover::testing::gateway_api;
using drover::testing::gateway_node;
using drover::testing::http_client;
using drover::testing::http_response;
using drover::testing::test_db;

TEST_CASE("a poison submit among 100 concurrent good ones fails alone and "
          "readyz stays 200",
          "[pg][gateway][input]") {
  test_db db;
  gateway_node node{{"--store", "postgres", "--pg-url", db.url()}};
  auto c = node.client();
  REQUIRE(c.get("/readyz").status == 200);

  std::atomic<bool> burst_done{false};
  std::vector<unsigned> readyz;
  std::thread watcher{[&] {
    // Observes /readyz for as long as the burst lasts: each answer is a
    // sample that must be 200 (this loop is the observation, not a wait).
    while (!burst_done.load())
      readyz.push_back(c.get("/readyz").status);
  }};

  constexpr int good = 100;
  std::vector<http_response> answers(good);
  http_response poison_body;
  http_response poison_header;
  std::vector<std::thread> clients;
  for (int i = 0; i < good; ++i)
    clients.emplace_back([&, i] {
      answers[i] = c.post("/api/jobs", drover::testing::sleep_job(1, 1),
                          {{"Idempotency-Key", "good-" + std::to_string(i)}});
    });
  clients.emplace_back([&] {
    poison_body
        = c.post("/api/jobs", "{\"type\": \"sleep\", \"input\": {\"ms\": 1}, "
                              "\"idempotency_key\": \"\xc0\xaf\"}");
  });
  clients.emplace_back([&] {
    poison_header = c.post("/api/jobs", drover::testing::sleep_job(1, 1),
                           {{"Idempotency-Key", "\xc0\xaf"}});
  });
  for (auto& t : clients)
    t.join();
  burst_done = true;
  watcher.join();

  INFO(poison_body.body);
  CHECK(poison_body.status == 400);
  CHECK(
      body_of(poison_body)["error"]["message"].str().rfind("idempotency_key", 0)
      == 0);
  INFO(poison_header.body);
  CHECK(poison_header.status == 400);
  std::vector<std::string> ids;
  for (auto& a : answers) {
    INFO(a.body);
    REQUIRE(a.status == 202);
    ids.push_back(body_of(a)["job_id"].str());
  }
  REQUIRE_FALSE(readyz.empty());
  for (auto status : readyz)
    CHECK(status == 200);
  // Every acknowledged job runs to completion.
  for (auto& id : ids)
    CHECK(await_end(node, "", id)["status"].str() == "completed");
  CHECK(c.get("/readyz").status == 200);
}
