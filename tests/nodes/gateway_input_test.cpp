// Process tests of what the gateway and the node accept (issue 11 items 1,
// 5 and 6): bad text anywhere in a request is a 400 naming the field and
// creates nothing; handler inputs are checked at submit; idempotency
// compares inputs canonically; state conflicts are 409s; a plain GET shows
// the live progress and ETA a stream shows; counters say since when they
// count; the DLQ can be purged over HTTP. A real drover-node (memory
// store), real HTTP clients; waits are on event streams with deadlines.

#include "support/gateway_api.hpp"
#include "support/gateway_node.hpp"
#include "support/http_client.hpp"
#include "support/json_value.hpp"

#include <catch2/catch.hpp>

#include <chrono>
#include <set>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using namespace drover::testing::gateway_api;
using drover::testing::clock_type;
using drover::testing::gateway_node;
using drover::testing::http_client;
using drover::testing::http_response;
using drover::testing::json_value;
using drover::testing::parse_json;
using drover::testing::sleep_job;
using drover::testing::sse_stream;
using drover::testing::time_left;
using verb = boost::beast::http::verb;

namespace {

/// The answer must be a 400 whose message starts with `field`.
void check_refused(const http_response& res, const std::string& field,
                   const std::string& what = {}) {
  INFO("status " << res.status << ": " << res.body);
  REQUIRE(res.status == 400);
  auto message = body_of(res)["error"]["message"].str();
  CHECK(message.rfind(field, 0) == 0);
  if (!what.empty())
    CHECK(message.find(what) != std::string::npos);
  // What comes back is valid UTF-8 JSON without the offending bytes.
  CHECK(res.body.find('\xc0') == std::string::npos);
  CHECK(res.body.find('\xff') == std::string::npos);
}

size_t job_count(const http_client& c) {
  auto res = c.get("/api/jobs?limit=1000");
  REQUIRE(res.status == 200);
  return body_of(res)["data"].items().size();
}

} // namespace

TEST_CASE("bad text in any part of a request is a 400 naming the field and "
          "creates nothing",
          "[gateway][input]") {
  gateway_node node;
  auto c = node.client();
  // The issue's poison: an overlong '/' in the idempotency key.
  check_refused(c.post("/api/jobs",
                       "{\"type\": \"sleep\", \"input\": {\"ms\": 1}, "
                       "\"idempotency_key\": \"\xc0\xaf\"}"),
                "idempotency_key", "not valid UTF-8");
  // Deep inside the input.
  check_refused(
      c.post(
          "/api/jobs",
          "{\"type\": \"exec\", \"input\": {\"argv\": [\"echo\", \"\xff\"]}}"),
      "input.argv[1]", "not valid UTF-8");
  check_refused(c.post("/api/jobs", R"({"type": "exec", "input": {"argv":
                                        ["echo", "a\u0000b"]}})"),
                "input.argv[1]", "NUL");
  // Headers.
  check_refused(
      c.post("/api/jobs", sleep_job(1, 1), {{"Idempotency-Key", "\xc0\xaf"}}),
      "Idempotency-Key header", "not valid UTF-8");
  check_refused(c.post("/api/jobs", sleep_job(1, 1), {{"Idempotency-Key", ""}}),
                "Idempotency-Key header", "must not be empty");
  // Query and path, percent-encoded.
  check_refused(c.get("/api/jobs?type=%C0%AF"), "query parameter 'type'",
                "not valid UTF-8");
  check_refused(c.get("/api/jobs?type=a%00b"), "query parameter 'type'", "NUL");
  check_refused(c.get("/api/jobs/%C0%AF"), "path", "not valid UTF-8");
  // A batch: the bad item alone is refused.
  auto batch = c.post("/api/jobs/batch",
                      "{\"jobs\": [" + sleep_job(1, 1)
                          + ", {\"type\": \"sleep\", \"input\": {\"ms\": 1}, "
                            "\"idempotency_key\": \"\xed\xa0\x80\"}]}");
  INFO(batch.body);
  // The whole body is checked before its items: a body with invalid UTF-8
  // is refused whole, naming the item.
  check_refused(batch, "jobs[1].idempotency_key", "not valid UTF-8");
  CHECK(job_count(c) == 0);
}

TEST_CASE("strict JSON: duplicate names, unpaired surrogates and an empty "
          "idempotency key are 400s",
          "[gateway][input]") {
  gateway_node node;
  auto c = node.client();
  check_refused(c.post("/api/jobs", R"({"type": "sleep", "type": "exec",
                                        "input": {"ms": 1}})"),
                "type", "appears twice");
  check_refused(c.post("/api/jobs", R"({"type": "sleep",
                                        "input": {"ms": 1, "ms": 2}})"),
                "input.ms", "appears twice");
  check_refused(c.post("/api/jobs", R"({"type": "sleep", "input": {"ms": 1},
                                        "idempotency_key": "\ud800"})"),
                "idempotency_key", "unpaired UTF-16 surrogate");
  check_refused(c.post("/api/jobs", R"({"type": "sleep", "input": {"ms": 1},
                                        "idempotency_key": ""})"),
                "idempotency_key", "must not be empty");
  CHECK(job_count(c) == 0);
}

TEST_CASE("handler inputs and resources are checked at submit",
          "[gateway][input]") {
  gateway_node node;
  auto c = node.client();
  check_refused(c.post("/api/jobs", R"({"type": "exec", "input": {}})"),
                "input", "'argv' is required");
  check_refused(c.post("/api/jobs", R"({"type": "exec"})"), "input");
  check_refused(c.post("/api/jobs",
                       R"({"type": "exec", "input": {"argv": ["echo", 7]}})"),
                "input", "argv[1]");
  check_refused(c.post("/api/jobs", R"({"type": "sleep", "input":
                                        {"ms": "abc"}})"),
                "input", "ms");
  // The node has cpu slots only.
  check_refused(c.post("/api/jobs", R"({"type": "sleep", "input": {"ms": 1},
                                        "resources": {"gpu": 1}})"),
                "no worker has slots of resource class 'gpu'");
  CHECK(job_count(c) == 0);
  // A good one still goes through.
  auto id = submit(c, sleep_job(1, 1));
  CHECK(await_end(node, "", id)["status"].str() == "completed");
}

TEST_CASE("idempotency compares inputs canonically", "[gateway][input]") {
  gateway_node node;
  auto c = node.client();
  auto first = submit(c, R"({"type": "sleep", "input": {"ms": 1, "steps": 1},
                             "idempotency_key": "k1"})");
  auto again = submit(c, R"({"idempotency_key": "k1", "type": "sleep",
                             "input": {"steps": 1, "ms": 1}})");
  CHECK(again == first);
  auto other = c.post("/api/jobs", R"({"type": "sleep", "input": {"ms": 2,
                                       "steps": 1}, "idempotency_key": "k1"})");
  CHECK(other.status == 422);
  CHECK(job_count(c) == 1);
}

TEST_CASE("state conflicts are 409s with a user-facing message",
          "[gateway][input]") {
  gateway_node node;
  auto c = node.client();
  auto done = submit(c, sleep_job(1, 1));
  await_end(node, "", done);
  auto cancel = c.post("/api/jobs/" + done + "/cancel", "");
  INFO(cancel.body);
  CHECK(cancel.status == 409);

  // Two retries of one dead-lettered job at once: one wins, the other is
  // a conflict (never a 400 carrying the state machine's internals). The
  // job takes 2 s to fail again: a job that failed at once could be back
  // in the dead-letter queue before the second retry arrives (seen in CI
  // on a loaded machine), and then both retries rightly succeed.
  auto failing = submit(c, R"({"type": "exec", "input": {"argv":
                               ["/bin/sh", "-c", "sleep 2; exit 1"]},
                               "max_attempts": 1})");
  REQUIRE(await_end(node, "", failing)["dead_lettered"].boolean());
  for (int round = 0; round < 3; ++round) {
    std::vector<http_response> answers(2);
    std::thread other{
        [&] { answers[1] = c.post("/api/dlq/" + failing + "/retry", ""); }};
    answers[0] = c.post("/api/dlq/" + failing + "/retry", "");
    other.join();
    std::multiset<unsigned> statuses{answers[0].status, answers[1].status};
    INFO(answers[0].body << " / " << answers[1].body);
    CHECK(statuses == std::multiset<unsigned>{202, 409});
    for (auto& a : answers)
      if (a.status == 409) {
        auto msg = body_of(a)["error"]["message"].str();
        CHECK(msg.find("seq") == std::string::npos);
        CHECK(msg.find("[status") == std::string::npos);
      }
    REQUIRE(await_end(node, "", failing)["dead_lettered"].boolean());
  }
}

TEST_CASE("GET shows the live progress and ETA a stream shows",
          "[gateway][input]") {
  gateway_node node;
  auto c = node.client();
  auto id = submit(c, sleep_job(4000, 20));
  sse_stream s{node.port(), "/api/jobs/" + id + "/stream"};
  REQUIRE(s.head().status == 200);
  auto deadline = clock_type::now() + 30s;
  double streamed = 0;
  int progress_events = 0;
  while (progress_events < 3) {
    auto ev = s.next(time_left(deadline));
    REQUIRE(ev);
    if (ev->event == "progress" || ev->event == "stage") {
      streamed = parse_json(ev->data)["percent"].num();
      ++progress_events;
    }
  }
  auto job = get_job(c, id);
  INFO(job.doc());
  REQUIRE(job["status"].str() == "processing");
  // At least as far as the stream had got (the store alone lags up to the
  // persist interval), and with the ETA the stream computes.
  CHECK(job["progress"].num() >= streamed);
  REQUIRE(job["eta_seconds"].is_number());
  CHECK(job["eta_seconds"].num() > 0);
  CHECK(job["eta_seconds"].num() < 30);
  await_end(node, "", id);
  auto finished = get_job(c, id);
  CHECK(finished["eta_seconds"].is_null());
  CHECK(finished["progress"].num() == 100);
}

TEST_CASE("queue counters say since when they count", "[gateway][input]") {
  gateway_node node;
  auto c = node.client();
  auto id = submit(c, sleep_job(1, 1));
  await_end(node, "", id);
  auto q = body_of(c.get("/api/admin/queues"));
  INFO(q.doc());
  CHECK(q["completed_total"].integer() == 1);
  CHECK(q["counters_since"].is_string());
  CHECK(q["counters_since"].str().size() == 24); // RFC 3339 with ms
}

TEST_CASE("DLQ purge over HTTP", "[gateway][input]") {
  gateway_node node;
  auto c = node.client();
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i)
    ids.push_back(submit(c, R"({"type": "exec", "input": {"argv":
                                ["/bin/false"]}, "max_attempts": 1})"));
  for (auto& id : ids)
    REQUIRE(await_end(node, "", id)["dead_lettered"].boolean());
  auto healthy = submit(c, sleep_job(1, 1));
  await_end(node, "", healthy);

  auto one = c.call(verb::delete_, "/api/dlq/" + ids[0]);
  INFO(one.body);
  REQUIRE(one.status == 200);
  CHECK_FALSE(body_of(one)["dead_lettered"].boolean());
  CHECK(body_of(one)["status"].str() == "failed");
  auto again = c.call(verb::delete_, "/api/dlq/" + ids[0]);
  CHECK(again.status == 409);
  CHECK(c.call(verb::delete_, "/api/dlq/" + healthy).status == 409);
  CHECK(c.call(verb::delete_, "/api/dlq/nosuchjob").status == 404);
  CHECK(c.call(verb::post, "/api/dlq/" + ids[1]).status == 405);

  auto all = c.call(verb::delete_, "/api/dlq");
  INFO(all.body);
  REQUIRE(all.status == 200);
  CHECK(body_of(all)["purged"].integer() == 2);
  auto left = body_of(c.get("/api/dlq"));
  CHECK(left["data"].items().empty());
  // The history keeps the purge.
  auto events = body_of(c.get("/api/jobs/" + ids[1] + "/events"));
  bool purged = false;
  for (auto& e : events["events"].items())
    purged = purged || e["kind"].str() == "purged";
  CHECK(purged);
}
