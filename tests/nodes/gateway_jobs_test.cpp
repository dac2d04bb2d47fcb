// Process tests of the HTTP gateway, jobs: submit, poll, result,
// idempotency, batches, cancel, list and the DLQ. A real drover-node (role
// all, memory store) serving HTTP on a free port, and real HTTP clients
// (tests/support/http_client.hpp) talking to it over TCP. The other gateway
// process tests: gateway_streams_test.cpp, gateway_ops_test.cpp.
//
// Every wait is on an event with a deadline: the node's "ready" line, an
// HTTP answer, the next SSE event or WebSocket message, a server closing a
// connection, a process exit. A job's start and end are awaited on its
// event stream, not by polling. One loop polls, with a pause and a deadline:
// the test of the poll pattern (polling is what it tests). API keys are
// random per run and their SHA-256 is computed by `sha256sum`, as
// docs/api.md tells operators to do.

#include "support/gateway_api.hpp"
#include "support/gateway_node.hpp"
#include "support/gateway_reads.hpp"
#include "support/http_client.hpp"
#include "support/json_value.hpp"
#include "support/process.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <map>
#include <random>
#include <set>
#include <string>
#include <sys/wait.h>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using namespace drover::testing::gateway_api;
using drover::testing::clock_type;
using drover::testing::gateway_node;
using drover::testing::header_fields;
using drover::testing::http_client;
using drover::testing::http_connection;
using drover::testing::http_response;
using drover::testing::json_value;
using drover::testing::parse_json;
using drover::testing::process;
using drover::testing::run_to_exit;
using drover::testing::sleep_job;
using drover::testing::sse_event;
using drover::testing::sse_stream;
using drover::testing::time_left;
using drover::testing::ws_client;
using verb = boost::beast::http::verb;
using drover::testing::gateway_reads::all_pages;
using drover::testing::gateway_reads::events_of;

// -- submit, poll, result -----------------------------------------------------

TEST_CASE("submit, poll until completed and fetch the result", "[gateway]") {
  gateway_node node;
  auto c = node.client();

  SECTION("a sleep job") {
    auto res = c.post("/api/jobs", sleep_job(1500, 5));
    INFO(res.body);
    REQUIRE(res.status == 202);
    auto doc = body_of(res);
    auto id = doc["job_id"].str();
    CHECK(doc["status"].str() == "queued");
    CHECK(doc["check_status_url"].str() == "/api/jobs/" + id);
    CHECK(res.header("Location") == "/api/jobs/" + id);
    CHECK(res.header("Content-Type") == "application/json");

    // The client pattern under test is polling: GET every 100 ms (the
    // client's cadence; a real client would back off) until the job is
    // completed, with a deadline.
    std::vector<std::string> seen;
    double last_progress = -1;
    json_value job;
    auto deadline = clock_type::now() + 30s;
    for (;;) {
      job = get_job(c, id);
      auto status = job["status"].str();
      if (seen.empty() || seen.back() != status)
        seen.push_back(status);
      auto progress = job["progress"].num();
      CHECK(progress >= last_progress);
      last_progress = progress;
      if (status == "completed")
        break;
      CHECK((status == "queued" || status == "processing"));
      CHECK(job["result_url"].is_null());
      REQUIRE(clock_type::now() < deadline);
      std::this_thread::sleep_for(100ms);
    }
    INFO("statuses seen: " << seen.size());
    // 1.5 s of processing cannot hide from polls 100 ms apart.
    CHECK(std::find(seen.begin(), seen.end(), "processing") != seen.end());
    CHECK(job["job_id"].str() == id);
    CHECK(job["type"].str() == "sleep");
    CHECK(job["attempt"].integer() == 1);
    CHECK(job["progress"].num() == 100);
    CHECK(job["error"].is_null());
    CHECK(job["eta_seconds"].is_null());
    CHECK(job["finished_at"].is_string());
    CHECK(job["started_at"].is_string());
    CHECK(job["result_url"].str() == "/api/jobs/" + id + "/result");

    auto result = c.get(job["result_url"].str());
    INFO(result.body);
    CHECK(result.status == 200);
    CHECK(body_of(result)["slept_ms"].integer() == 1500);
  }

  SECTION("an exec job with argv") {
    auto id = submit(c, R"({"type": "exec", "input": {"argv": ["/bin/sh", "-c",
      "echo PROGRESS 50 half; printf 'hello from %s' gateway"]},
      "priority": "high", "max_attempts": 2, "timeout_seconds": 30})");
    auto job = await_end(node, "", id);
    INFO(job.doc());
    CHECK(job["status"].str() == "completed");
    CHECK(job["priority"].str() == "high");
    CHECK(job["max_attempts"].integer() == 2);
    CHECK(job["timeout_seconds"].num() == 30);
    auto result = c.get("/api/jobs/" + id + "/result");
    INFO(result.body);
    REQUIRE(result.status == 200);
    auto out = body_of(result);
    CHECK(out["exit_code"].integer() == 0);
    CHECK(out["stdout_tail"].str() == "hello from gateway");
  }

  SECTION("the result of an unfinished job is 409 not_completed") {
    auto id = submit(c, R"({"type": "sleep", "input": {"ms": 10},
                            "delay_seconds": 3600})");
    auto job = get_job(c, id);
    CHECK(job["status"].str() == "scheduled");
    CHECK(job["run_at"].is_string());
    auto res = c.get("/api/jobs/" + id + "/result");
    CHECK(res.status == 409);
    CHECK(error_code_of(res) == "not_completed");
  }
}

TEST_CASE("Idempotency-Key: same key and body give the same job, another "
          "body is 422",
          "[gateway]") {
  gateway_node node;
  auto c = node.client();
  auto body = sleep_job(10, 1);
  auto first = c.post("/api/jobs", body, {{"Idempotency-Key", "order-42"}});
  INFO(first.body);
  REQUIRE(first.status == 202);
  auto id = body_of(first)["job_id"].str();

  auto again = c.post("/api/jobs", body, {{"Idempotency-Key", "order-42"}});
  INFO(again.body);
  REQUIRE(again.status == 202);
  CHECK(body_of(again)["job_id"].str() == id);
  CHECK(again.header("Location") == "/api/jobs/" + id);

  // The same key in the body is the same key.
  auto in_body = c.post("/api/jobs", R"({"type": "sleep", "input": {"ms": 10,
    "steps": 1}, "idempotency_key": "order-42"})");
  INFO(in_body.body);
  REQUIRE(in_body.status == 202);
  CHECK(body_of(in_body)["job_id"].str() == id);

  auto conflict = c.post("/api/jobs", sleep_job(20, 1),
                         {{"Idempotency-Key", "order-42"}});
  CHECK(conflict.status == 422);
  CHECK(error_code_of(conflict) == "idempotency_conflict");

  auto differ = c.post("/api/jobs",
                       R"({"type": "sleep", "input": {"ms": 10},
                           "idempotency_key": "a"})",
                       {{"Idempotency-Key", "b"}});
  CHECK(differ.status == 400);
  CHECK(error_code_of(differ) == "invalid_request");

  // Exactly one job exists, and it carries the key.
  auto ids = all_pages(c, "/api/jobs", 100);
  REQUIRE(ids.size() == 1);
  CHECK(ids[0] == id);
  CHECK(get_job(c, id)["idempotency_key"].str() == "order-42");

  // Another key is another job.
  auto other = submit(c, body, {{"Idempotency-Key", "order-43"}});
  CHECK(other != id);
}

TEST_CASE("a batch of 500 valid and 2 invalid jobs: per-item ids and errors",
          "[gateway]") {
  gateway_node node;
  auto c = node.client();
  constexpr size_t total = 502;
  const std::set<size_t> bad_type{137};  // refused by the node (unknown type)
  const std::set<size_t> bad_field{401}; // refused by the parser
  std::string body = R"({"jobs": [)";
  for (size_t i = 0; i < total; ++i) {
    if (i > 0)
      body += ',';
    if (bad_type.count(i) > 0)
      body += R"({"type": "no-such-type"})";
    else if (bad_field.count(i) > 0)
      body += R"({"type": "sleep", "input": {"ms": 0}, "colour": "red"})";
    else
      body += R"({"type": "sleep", "input": {"ms": 0}, "idempotency_key": "b)"
              + std::to_string(i) + "\"}";
  }
  body += "]}";
  auto res = c.call(verb::post, "/api/jobs/batch", body, {}, 30s);
  INFO(res.body.substr(0, 2000));
  REQUIRE(res.status == 200);
  auto doc = body_of(res);
  CHECK(doc["accepted"].integer() == 500);
  CHECK(doc["rejected"].integer() == 2);
  auto& results = doc["results"];
  REQUIRE(results.size() == total);
  std::set<std::string> ids;
  for (size_t i = 0; i < total; ++i) {
    auto& r = results[i];
    INFO("item " << i);
    if (bad_type.count(i) > 0 || bad_field.count(i) > 0) {
      CHECK_FALSE(r.has("job_id"));
      CHECK(r["status"].integer() == 400);
      CHECK(r["error"]["code"].str() == "invalid_request");
      if (bad_field.count(i) > 0)
        CHECK(r["error"]["message"].str().find("jobs[401].colour")
              != std::string::npos);
      else
        CHECK(r["error"]["message"].str().find("no-such-type")
              != std::string::npos);
    } else {
      CHECK(r["status"].str() == "queued");
      auto id = r["job_id"].str();
      CHECK(r["check_status_url"].str() == "/api/jobs/" + id);
      ids.insert(id);
    }
  }
  CHECK(ids.size() == 500);

  // Every accepted job exists (and nothing else does); a sample is
  // fetched one by one, with its own idempotency key.
  auto listed = all_pages(c, "/api/jobs", 1000);
  CHECK(std::set<std::string>(listed.begin(), listed.end()) == ids);
  CHECK(listed.size() == 500);
  for (size_t i : {size_t{0}, size_t{250}, size_t{501}}) {
    auto job = get_job(c, results[i]["job_id"].str());
    CHECK(job["idempotency_key"].str() == "b" + std::to_string(i));
  }

  // Idempotency keys hold across batches: the same item again is the same
  // job, a reused key with another body is that item's 422.
  auto again = c.post("/api/jobs/batch", R"({"jobs": [
    {"type": "sleep", "input": {"ms": 0}, "idempotency_key": "b0"},
    {"type": "sleep", "input": {"ms": 5}, "idempotency_key": "b1"},
    {"type": "sleep", "input": {"ms": 0}, "idempotency_key": "fresh"}]})");
  INFO(again.body);
  REQUIRE(again.status == 200);
  auto second = body_of(again);
  CHECK(second["accepted"].integer() == 2);
  CHECK(second["rejected"].integer() == 1);
  CHECK(second["results"][0]["job_id"].str() == results[0]["job_id"].str());
  CHECK(second["results"][1]["status"].integer() == 422);
  CHECK(second["results"][1]["error"]["code"].str() == "idempotency_conflict");
  CHECK(ids.count(second["results"][2]["job_id"].str()) == 0);
}

// -- cancel, list, DLQ --------------------------------------------------------

TEST_CASE("cancelling a running sleep job ends it as cancelled", "[gateway]") {
  gateway_node node;
  auto c = node.client();
  auto id = submit(c, sleep_job(60000, 600));
  sse_stream s{node.port(), "/api/jobs/" + id + "/stream"};
  REQUIRE(s.head().status == 200);
  // Wait for the attempt to start.
  std::vector<sse_event> evs;
  for (;;) {
    auto ev = s.next(30s);
    REQUIRE(ev);
    if (ev->is_comment())
      continue;
    evs.push_back(*ev);
    if (ev->event == "status"
        && parse_json(ev->data)["kind"].str() == "started")
      break;
  }
  auto asked = clock_type::now();
  auto res = c.post("/api/jobs/" + id + "/cancel",
                    R"({"reason": "stopped by the test"})");
  INFO(res.body);
  REQUIRE(res.status == 202);
  auto answered = body_of(res);
  CHECK(answered["job_id"].str() == id);
  CHECK((answered["cancel_requested"].boolean()
         || answered["status"].str() == "cancelled"));
  // The stream ends with `cancelled`, long before the 60 s sleep would.
  while (auto ev = s.next(15s))
    if (!ev->is_comment())
      evs.push_back(*ev);
  REQUIRE(s.complete());
  CHECK(evs.back().event == "cancelled");
  CHECK(clock_type::now() - asked < 15s);

  auto job = get_job(c, id);
  CHECK(job["status"].str() == "cancelled");
  CHECK(job["finished_at"].is_string());
  CHECK(job["result_url"].is_null());
  auto log = events_of(c, id);
  CHECK(std::count_if(
            log["events"].items().begin(), log["events"].items().end(),
            [](auto& e) { return e["kind"].str() == "cancel_requested"; })
        == 1);
  CHECK(log["events"][log["events"].size() - 1]["kind"].str() == "cancelled");
  // Who asked and why is in the audit log, on both events.
  for (auto& e : log["events"].items())
    if (e["kind"].str() == "cancel_requested" || e["kind"].str() == "cancelled")
      CHECK_THAT(e["details"]["reason"].str(),
                 Catch::Contains("requested with API key 'development': "
                                 "stopped by the test"));

  // A finished job cannot be cancelled again.
  auto again = c.post("/api/jobs/" + id + "/cancel", "");
  CHECK(again.status == 409);
  CHECK(error_code_of(again) == "conflict");

  // A scheduled job is cancelled at once.
  auto later = submit(c, R"({"type": "sleep", "input": {"ms": 1},
                             "delay_seconds": 3600})");
  auto cancelled = c.post("/api/jobs/" + later + "/cancel", "");
  REQUIRE(cancelled.status == 202);
  CHECK(get_job(c, later)["status"].str() == "cancelled");
  auto later_log = events_of(c, later);
  CHECK(later_log["events"][later_log["events"].size() - 1]["details"]["reason"]
            .str()
        == "cancelled before it ran: requested with API key 'development'");
}

TEST_CASE("list: filters and cursor paging see every job exactly once",
          "[gateway]") {
  gateway_node node;
  auto c = node.client();
  std::vector<std::string> submitted;
  std::set<std::string> scheduled, exec;
  for (int i = 0; i < 23; ++i) {
    std::string id;
    if (i % 4 == 1) {
      id = submit(c, R"({"type": "sleep", "input": {"ms": 1},
                         "delay_seconds": 3600})");
      scheduled.insert(id);
    } else if (i % 4 == 3) {
      id = submit(c, R"({"type": "exec", "input": {"argv": ["/bin/true"]}})");
      exec.insert(id);
    } else {
      id = submit(c, sleep_job(0, 0));
    }
    submitted.push_back(id);
  }

  size_t pages = 0;
  auto ids = all_pages(c, "/api/jobs", 4, &pages);
  CHECK(pages == 6);
  CHECK(ids.size() == submitted.size());
  CHECK(std::set<std::string>(ids.begin(), ids.end()).size() == ids.size());
  // Submission order (ids sort by time).
  CHECK(ids == submitted);

  auto only_scheduled = all_pages(c, "/api/jobs?status=scheduled", 2, &pages);
  CHECK(std::set<std::string>(only_scheduled.begin(), only_scheduled.end())
        == scheduled);
  CHECK(only_scheduled.size() == scheduled.size());
  CHECK(pages == 3);
  auto only_exec = all_pages(c, "/api/jobs?type=exec", 3);
  CHECK(std::set<std::string>(only_exec.begin(), only_exec.end()) == exec);
  CHECK(only_exec.size() == exec.size());
  auto neither = all_pages(c, "/api/jobs?status=scheduled&type=exec", 10);
  CHECK(neither.empty());

  for (auto bad : {"/api/jobs?limit=0", "/api/jobs?limit=1001",
                   "/api/jobs?limit=ten", "/api/jobs?status=sleeping",
                   "/api/jobs?colour=red", "/api/jobs?cursor=no%20id"}) {
    INFO(bad);
    auto res = c.get(bad);
    CHECK(res.status == 400);
    CHECK(error_code_of(res) == "invalid_request");
  }
}

TEST_CASE("DLQ: a permanently failed job is listed and retried", "[gateway]") {
  gateway_node node;
  auto c = node.client();
  auto failing
      = submit(c, R"({"type": "exec", "input": {"argv": ["/bin/false"]},
                               "max_attempts": 1})");
  // Fails on its first run, succeeds once redriven.
  auto flag = node.dir() + "/ran-once";
  auto flaky = submit(c, R"({"type": "exec", "input": {"argv": ["/bin/sh", "-c",
    "if [ -e )" + flag + R"( ]; then printf second-run; else touch )"
                             + flag + R"(; exit 3; fi"]}, "max_attempts": 1})");
  auto healthy = submit(c, sleep_job(0, 0));
  for (auto& id : {failing, flaky}) {
    auto job = await_end(node, "", id);
    INFO(job.doc());
    CHECK(job["status"].str() == "failed");
    CHECK(job["dead_lettered"].boolean());
    CHECK(job["attempt"].integer() == 1);
  }
  CHECK(get_job(c, failing)["error"]["code"].str() == "exit_1");
  CHECK(get_job(c, flaky)["error"]["code"].str() == "exit_3");
  await_end(node, "", healthy);

  auto dlq = all_pages(c, "/api/dlq", 10);
  CHECK(std::set<std::string>(dlq.begin(), dlq.end())
        == std::set<std::string>{failing, flaky});

  auto not_dead = c.post("/api/dlq/" + healthy + "/retry", "");
  CHECK(not_dead.status == 409);
  CHECK(error_code_of(not_dead) == "not_dead_lettered");
  auto unknown = c.post("/api/dlq/nosuchjob/retry", "");
  CHECK(unknown.status == 404);

  for (auto& id : {failing, flaky}) {
    auto res = c.post("/api/dlq/" + id + "/retry", "");
    INFO(res.body);
    REQUIRE(res.status == 202);
    CHECK(body_of(res)["job_id"].str() == id);
    CHECK_FALSE(body_of(res)["dead_lettered"].boolean());
  }
  // The redriven jobs run again: the flaky one completes, /bin/false
  // fails again and is back in the DLQ.
  auto flaky_job = await_end(node, "", flaky);
  INFO(flaky_job.doc());
  CHECK(flaky_job["status"].str() == "completed");
  CHECK(flaky_job["attempt"].integer() == 2);
  auto out = c.get("/api/jobs/" + flaky + "/result");
  REQUIRE(out.status == 200);
  CHECK(body_of(out)["stdout_tail"].str() == "second-run");

  auto failing_job = await_end(node, "", failing);
  INFO(failing_job.doc());
  CHECK(failing_job["status"].str() == "failed");
  CHECK(failing_job["attempt"].integer() == 2);
  auto kinds = events_of(c, failing);
  std::vector<std::string> ks;
  for (auto& e : kinds["events"].items())
    ks.push_back(e["kind"].str());
  CHECK(std::count(ks.begin(), ks.end(), "redriven") == 1);
  CHECK(std::count(ks.begin(), ks.end(), "started") == 2);
  auto dlq_after = all_pages(c, "/api/dlq", 10);
  CHECK(dlq_after == std::vector<std::string>{failing});
}
