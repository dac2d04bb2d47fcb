// Process tests of the HTTP gateway: a real drover-node (role all, memory
// store) serving HTTP on a free port, and real HTTP, SSE and WebSocket
// clients (tests/support/http_client.hpp) talking to it over TCP.
//
// Every wait is on an event with a deadline: the node's "ready" line, an
// HTTP answer, the next SSE event or WebSocket message, a server closing a
// connection, a process exit. A job's start and end are awaited on its
// event stream, not by polling. Two loops do poll, with a pause and a
// deadline: the test of the poll pattern (polling is what it tests) and the
// wait for the server to free a stream slot after a client hung up (no
// event tells a client). API keys are random per run and their SHA-256 is
// computed by `sha256sum`, as docs/api.md tells operators to do.

#include "support/gateway_api.hpp"
#include "support/gateway_node.hpp"
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

namespace {

/// (sequence, kind) of one audit-log transition.
using transition = std::pair<int64_t, std::string>;

bool is_progress_event(const std::string& name) {
  return name == "progress" || name == "stage";
}

/// The job's audit log, as GET /api/jobs/{id}/events returns it.
json_value events_of(const http_client& c, const std::string& id) {
  auto res = c.get("/api/jobs/" + id + "/events");
  INFO(res.body);
  REQUIRE(res.status == 200);
  auto doc = body_of(res);
  REQUIRE(doc["job_id"].str() == id);
  return doc;
}

/// The log's transitions: every event but progress snapshots.
std::vector<transition> log_transitions(const json_value& events) {
  std::vector<transition> out;
  for (auto& e : events["events"].items())
    if (e["kind"].str() != "progressed")
      out.emplace_back(e["sequence"].integer(), e["kind"].str());
  return out;
}

/// The transitions an SSE stream carried (events with an id that are not
/// progress); each one's data must be the log event with that sequence.
std::vector<transition> stream_transitions(const std::vector<sse_event>& evs) {
  std::vector<transition> out;
  for (auto& ev : evs) {
    if (ev.id.empty() || is_progress_event(ev.event))
      continue;
    auto data = parse_json(ev.data);
    INFO(ev.data);
    REQUIRE(data["sequence"].integer() == std::stoll(ev.id));
    out.emplace_back(data["sequence"].integer(), data["kind"].str());
  }
  return out;
}

/// Ids of the events that have one, in stream order.
std::vector<int64_t> ids_of(const std::vector<sse_event>& evs) {
  std::vector<int64_t> out;
  for (auto& ev : evs)
    if (!ev.id.empty())
      out.push_back(std::stoll(ev.id));
  return out;
}

/// (attempt, percent) of a progress event: a live report carries them at
/// the top level, a logged snapshot under "details".
std::pair<int64_t, double> progress_of(const sse_event& ev) {
  auto data = parse_json(ev.data);
  if (data.has("details"))
    return {data["attempt"].integer(), data["details"]["percent"].num()};
  return {data["attempt"].integer(), data["percent"].num()};
}

/// Checks that percent never decreases within an attempt; returns the
/// number of progress events.
size_t check_monotonic_progress(const std::vector<sse_event>& evs) {
  size_t n = 0;
  int64_t attempt = -1;
  double last = -1;
  for (auto& ev : evs) {
    if (!is_progress_event(ev.event))
      continue;
    ++n;
    auto [a, p] = progress_of(ev);
    INFO("progress event " << n << ": " << ev.data);
    CHECK(p >= 0);
    CHECK(p <= 100);
    if (a == attempt)
      CHECK(p >= last);
    CHECK(a >= attempt);
    attempt = a;
    last = p;
  }
  return n;
}

bool strictly_increasing(const std::vector<int64_t>& xs) {
  for (size_t i = 1; i < xs.size(); ++i)
    if (xs[i] <= xs[i - 1])
      return false;
  return true;
}

/// Every page of `target` (which has no cursor yet) with `limit`; returns
/// the ids in order and checks the paging fields on the way.
std::vector<std::string> all_pages(const http_client& c,
                                   const std::string& target, int limit,
                                   size_t* pages = nullptr) {
  std::vector<std::string> ids;
  std::string cursor;
  size_t n = 0;
  auto sep = target.find('?') == std::string::npos ? "?" : "&";
  for (;;) {
    REQUIRE(n < 10000);
    auto url = target + sep + "limit=" + std::to_string(limit);
    if (!cursor.empty())
      url += "&cursor=" + cursor;
    auto res = c.get(url);
    INFO(url << " -> " << res.body);
    REQUIRE(res.status == 200);
    auto doc = body_of(res);
    ++n;
    auto& data = doc["data"];
    CHECK(data.size() <= static_cast<size_t>(limit));
    for (auto& job : data.items())
      ids.push_back(job["job_id"].str());
    if (!doc["has_more"].boolean()) {
      CHECK(doc["next_cursor"].is_null());
      break;
    }
    CHECK(data.size() == static_cast<size_t>(limit));
    cursor = doc["next_cursor"].str();
    CHECK(cursor == ids.back());
  }
  if (pages != nullptr)
    *pages = n;
  return ids;
}

} // namespace

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

// -- history and streams ------------------------------------------------------

TEST_CASE("the events endpoint returns the gapless history", "[gateway]") {
  gateway_node node;
  auto c = node.client();
  auto id = submit(c, sleep_job(1200, 4));
  auto job = await_end(node, "", id);
  REQUIRE(job["status"].str() == "completed");
  auto doc = events_of(c, id);
  auto& evs = doc["events"];
  REQUIRE(evs.size() >= 3);
  std::vector<std::string> kinds;
  for (size_t i = 0; i < evs.size(); ++i) {
    auto& e = evs[i];
    INFO("event " << i);
    CHECK(e["job_id"].str() == id);
    CHECK(e["sequence"].integer() == static_cast<int64_t>(i + 1));
    auto at = e["at"].str();
    CHECK(at.size() == 24); // 2026-11-29T23:59:01.123Z
    CHECK(at.back() == 'Z');
    CHECK(e["details"].is_object());
    kinds.push_back(e["kind"].str());
  }
  CHECK(kinds.front() == "submitted");
  CHECK(evs[0]["details"]["spec"]["type"].str() == "sleep");
  CHECK(kinds.back() == "completed");
  CHECK(evs[evs.size() - 1]["details"]["result"]["slept_ms"].integer() == 1200);
  CHECK(evs[evs.size() - 1]["attempt"].integer() == 1);
  CHECK(std::count(kinds.begin(), kinds.end(), "started") == 1);
  auto started = std::find(kinds.begin(), kinds.end(), "started");
  auto completed = std::find(kinds.begin(), kinds.end(), "completed");
  CHECK(started < completed);
  // Logged progress lies between start and end, and never goes down.
  double last = -1;
  for (size_t i = 0; i < evs.size(); ++i) {
    if (kinds[i] != "progressed")
      continue;
    CHECK(i > static_cast<size_t>(started - kinds.begin()));
    auto p = evs[i]["details"]["percent"].num();
    CHECK(p >= last);
    last = p;
  }

  // Paged with `after` and `limit`: the same events, each once, in order.
  std::vector<int64_t> paged;
  std::string after = "0";
  for (int pages = 0; pages < 100; ++pages) {
    auto res = c.get("/api/jobs/" + id + "/events?limit=2&after=" + after);
    INFO(res.body);
    REQUIRE(res.status == 200);
    auto page = body_of(res);
    REQUIRE(page["events"].size() <= 2);
    for (size_t i = 0; i < page["events"].size(); ++i)
      paged.push_back(page["events"][i]["sequence"].integer());
    if (!page["has_more"].boolean()) {
      CHECK(page["next_after"].is_null());
      break;
    }
    after = std::to_string(page["next_after"].integer());
    CHECK(page["next_after"].integer() == paged.back());
  }
  REQUIRE(paged.size() == evs.size());
  for (size_t i = 0; i < paged.size(); ++i)
    CHECK(paged[i] == static_cast<int64_t>(i + 1));
  auto past = c.get("/api/jobs/" + id + "/events?after=1000000");
  REQUIRE(past.status == 200);
  CHECK(body_of(past)["events"].size() == 0);
  CHECK_FALSE(body_of(past)["has_more"].boolean());
  for (const char* bad : {"limit=0", "limit=1001", "after=-1", "after=abc",
                          "after=", "limit=2x", "since=3"}) {
    INFO(bad);
    auto res = c.get("/api/jobs/" + id + "/events?" + bad);
    CHECK(res.status == 400);
    CHECK(body_of(res)["error"]["code"].str() == "invalid_request");
  }
  CHECK(c.get("/api/jobs/j0000000000000/events?limit=5").status == 404);
}

TEST_CASE("SSE streams a job to completion with increasing ids and "
          "monotonic progress",
          "[gateway][sse]") {
  gateway_node node;
  auto c = node.client();
  auto id = submit(c, sleep_job(2000, 20));
  sse_stream s{node.port(), "/api/jobs/" + id + "/stream"};
  REQUIRE(s.head().status == 200);
  CHECK(s.head().header("Content-Type") == "text/event-stream");
  std::vector<sse_event> evs;
  auto deadline = clock_type::now() + 30s;
  while (auto ev = s.next(time_left(deadline)))
    if (!ev->is_comment())
      evs.push_back(std::move(*ev));
  REQUIRE_FALSE(s.timed_out());
  REQUIRE(s.complete());
  CHECK(s.retry_ms() == 2000);
  REQUIRE(!evs.empty());

  auto ids = ids_of(evs);
  INFO(ids.size() << " events with ids of " << evs.size());
  CHECK(strictly_increasing(ids));
  CHECK(evs.back().event == "completed");
  CHECK(parse_json(evs.back().data)["details"]["result"]["slept_ms"].integer()
        == 2000);
  // 20 steps over 2 s, coalesced to at most one per 100 ms: several
  // progress events arrive between start and end.
  auto progress = check_monotonic_progress(evs);
  CHECK(progress >= 3);
  auto started = std::find_if(evs.begin(), evs.end(), [](auto& e) {
    return e.event == "status" && parse_json(e.data)["kind"].str() == "started";
  });
  REQUIRE(started != evs.end());
  CHECK(std::none_of(evs.begin(), started,
                     [](auto& e) { return is_progress_event(e.event); }));
  // Live reports carry an ETA once the rate is known.
  size_t with_eta = 0;
  for (auto& e : evs) {
    if (!is_progress_event(e.event) || !e.id.empty())
      continue;
    auto eta = parse_json(e.data)["eta_seconds"];
    if (eta.is_number()) {
      CHECK(eta.num() >= 0);
      ++with_eta;
    }
  }
  CHECK(with_eta >= 1);
  auto last_progress = std::find_if(evs.rbegin(), evs.rend(), [](auto& e) {
    return is_progress_event(e.event);
  });
  REQUIRE(last_progress != evs.rend());
  CHECK(progress_of(*last_progress).second == 100);
  // The transitions are exactly the log's.
  CHECK(stream_transitions(evs) == log_transitions(events_of(c, id)));
  // Nothing after the terminal event.
  CHECK(std::count_if(evs.begin(), evs.end(),
                      [](auto& e) { return e.event == "completed"; })
        == 1);
}

/// On a node with one slot: a long job that takes the slot (started), and
/// the job `body` queued behind it, so that the second job's `started`
/// happens live while a test streams it. Returns {blocker, queued}.
std::pair<std::string, std::string>
queued_behind_blocker(const gateway_node& node, const http_client& c,
                      const std::string& body) {
  auto blocker = submit(c, sleep_job(60000, 600));
  await_started(node, "", blocker);
  return {blocker, submit(c, body)};
}

TEST_CASE("SSE sends a transition that happens while streaming before the "
          "progress that follows it",
          "[gateway][sse]") {
  gateway_node node{{"--slots", "cpu=1"}};
  auto c = node.client();
  auto [blocker, id] = queued_behind_blocker(node, c, sleep_job(1500, 15));
  sse_stream s{node.port(), "/api/jobs/" + id + "/stream"};
  REQUIRE(s.head().status == 200);
  std::vector<sse_event> evs;
  auto first = s.next(10s);
  REQUIRE(first);
  evs.push_back(*first); // the history is out
  CHECK(get_job(c, id)["status"].str() == "queued");
  REQUIRE(c.post("/api/jobs/" + blocker + "/cancel", "").status == 202);
  auto deadline = clock_type::now() + 30s;
  while (auto ev = s.next(time_left(deadline)))
    if (!ev->is_comment())
      evs.push_back(std::move(*ev));
  REQUIRE(s.complete());
  auto started = std::find_if(evs.begin(), evs.end(), [](auto& e) {
    return e.event == "status" && parse_json(e.data)["kind"].str() == "started";
  });
  REQUIRE(started != evs.end());
  CHECK(std::none_of(evs.begin(), started,
                     [](auto& e) { return is_progress_event(e.event); }));
  CHECK(std::any_of(started, evs.end(),
                    [](auto& e) { return is_progress_event(e.event); }));
  CHECK(evs.back().event == "completed");
  CHECK(strictly_increasing(ids_of(evs)));
  CHECK(stream_transitions(evs) == log_transitions(events_of(c, id)));
}

TEST_CASE("SSE sends a transition of a job without progress reports as it "
          "happens",
          "[gateway][sse]") {
  // steps 0: the job reports no progress at all, so nothing but the
  // transition notification can bring `started` before the end.
  gateway_node node{{"--slots", "cpu=1"}};
  auto c = node.client();
  auto [blocker, id] = queued_behind_blocker(node, c, sleep_job(60000, 0));
  sse_stream s{node.port(), "/api/jobs/" + id + "/stream"};
  REQUIRE(s.head().status == 200);
  auto deadline = clock_type::now() + 30s;
  auto next_event = [&] {
    for (;;) {
      auto ev = s.next(time_left(deadline));
      REQUIRE(ev);
      if (!ev->is_comment())
        return *ev;
    }
  };
  auto submitted = next_event();
  CHECK(parse_json(submitted.data)["kind"].str() == "submitted");
  REQUIRE(c.post("/api/jobs/" + blocker + "/cancel", "").status == 202);
  // The job now starts and runs for a minute without a report: `started`
  // must arrive while it runs.
  auto started = next_event();
  CHECK(started.event == "status");
  CHECK(parse_json(started.data)["kind"].str() == "started");
  CHECK(get_job(c, id)["status"].str() == "processing");
  REQUIRE(c.post("/api/jobs/" + id + "/cancel", "").status == 202);
  std::vector<sse_event> rest;
  while (auto ev = s.next(time_left(deadline)))
    if (!ev->is_comment())
      rest.push_back(std::move(*ev));
  REQUIRE(s.complete());
  REQUIRE_FALSE(rest.empty());
  CHECK(rest.back().event == "cancelled");
}

TEST_CASE("SSE resumes with Last-Event-ID without gaps or duplicates",
          "[gateway][sse]") {
  gateway_node node;
  auto c = node.client();
  auto id = submit(c, sleep_job(3000, 10));

  // First half: up to the `started` transition, then the client goes away.
  std::vector<sse_event> first;
  int64_t cut = 0;
  {
    sse_stream s{node.port(), "/api/jobs/" + id + "/stream"};
    REQUIRE(s.head().status == 200);
    auto deadline = clock_type::now() + 30s;
    while (cut == 0) {
      auto ev = s.next(time_left(deadline));
      REQUIRE(ev);
      if (ev->is_comment())
        continue;
      first.push_back(*ev);
      if (!ev->id.empty() && ev->event == "status"
          && parse_json(ev->data)["kind"].str() == "started")
        cut = std::stoll(ev->id);
    }
    s.close();
  }
  REQUIRE(cut > 0);

  // Second half: resumed after `cut`, to the end.
  auto second = stream_to_end(node.port(), "", id, 30s,
                              {{"Last-Event-ID", std::to_string(cut)}});
  REQUIRE(!second.empty());
  CHECK(second.back().event == "completed");
  auto second_ids = ids_of(second);
  for (auto x : second_ids)
    CHECK(x > cut);
  CHECK(strictly_increasing(second_ids));
  auto first_ids = ids_of(first);
  CHECK(strictly_increasing(first_ids));
  CHECK(first_ids.back() == cut);
  check_monotonic_progress(second);

  // Together, every transition exactly once.
  auto all = stream_transitions(first);
  auto rest = stream_transitions(second);
  all.insert(all.end(), rest.begin(), rest.end());
  auto log = log_transitions(events_of(c, id));
  CHECK(all == log);

  // The finished job streams the same rest of its history and ends; the
  // query parameter works as the header does.
  auto replay = stream_to_end(node.port(), "", id, 30s, {},
                              "?last_event_id=" + std::to_string(cut));
  CHECK(stream_transitions(replay) == rest);
  for (auto x : ids_of(replay))
    CHECK(x > cut);

  // A Last-Event-ID that is not a sequence number is refused.
  sse_stream bad{
      node.port(), "/api/jobs/" + id + "/stream", {{"Last-Event-ID", "abc"}}};
  CHECK(bad.head().status == 400);
}

TEST_CASE("SSE keep-alive comments arrive every --sse-keepalive-ms",
          "[gateway][sse]") {
  gateway_node node{{"--sse-keepalive-ms", "200"}};
  auto c = node.client();
  // No progress reports: only keep-alives can arrive while it sleeps.
  auto id = submit(c, sleep_job(20000, 0));
  sse_stream s{node.port(), "/api/jobs/" + id + "/stream"};
  REQUIRE(s.head().status == 200);
  size_t comments = 0;
  auto started = clock_type::now();
  while (comments < 3) {
    auto ev = s.next(5s);
    REQUIRE(ev);
    if (ev->is_comment()) {
      CHECK(ev->comment == " keep-alive");
      ++comments;
    } else {
      CHECK(ev->event == "status");
    }
  }
  // Three at 200 ms intervals: well before a 15 s default would allow.
  CHECK(clock_type::now() - started < 10s);
  s.close();
  auto res = c.post("/api/jobs/" + id + "/cancel", "");
  CHECK(res.status == 202);
}

TEST_CASE("WebSocket streams two jobs to their ends", "[gateway][ws]") {
  gateway_node node;
  auto c = node.client();
  auto a = submit(c, sleep_job(1000, 4));
  auto b = submit(c, sleep_job(1500, 3));
  ws_client ws{node.port(), "/api/ws"};
  REQUIRE(ws.ok());
  REQUIRE(ws.send(R"({"action": "subscribe", "job_id": ")" + a + "\"}"));
  REQUIRE(ws.send(R"({"action": "subscribe", "job_id": ")" + b
                  + R"(", "last_event_id": 0})"));
  REQUIRE(ws.send(R"({"action": "subscribe", "job_id": "nope123"})"));

  std::map<std::string, std::vector<json_value>> events;
  std::set<std::string> ended;
  bool unknown_refused = false;
  auto deadline = clock_type::now() + 30s;
  while (ended.size() < 2 || !unknown_refused) {
    auto msg = ws.receive(time_left(deadline));
    REQUIRE(msg);
    auto doc = parse_json(*msg);
    auto type = doc["type"].str();
    auto job = doc["job_id"].str();
    if (type == "error") {
      CHECK(job == "nope123");
      CHECK(doc["status"].integer() == 404);
      CHECK(doc["error"]["code"].str() == "not_found");
      unknown_refused = true;
      continue;
    }
    REQUIRE((job == a || job == b));
    CHECK(ended.count(job) == 0); // nothing after a job's end
    if (type == "end") {
      ended.insert(job);
      continue;
    }
    REQUIRE(type == "event");
    events[job].push_back(doc);
  }
  for (auto& id : {a, b}) {
    INFO("job " << id);
    auto& evs = events[id];
    REQUIRE(!evs.empty());
    std::vector<int64_t> ids;
    std::vector<transition> transitions;
    size_t progress = 0;
    double last = -1;
    for (auto& e : evs) {
      auto name = e["event"].str();
      if (is_progress_event(name)) {
        ++progress;
        auto& data = e["data"];
        auto p = data.has("details") ? data["details"]["percent"].num()
                                     : data["percent"].num();
        CHECK(p >= last);
        last = p;
      }
      if (e["id"].is_null())
        continue;
      ids.push_back(e["id"].integer());
      if (!is_progress_event(name))
        transitions.emplace_back(e["data"]["sequence"].integer(),
                                 e["data"]["kind"].str());
    }
    CHECK(strictly_increasing(ids));
    CHECK(evs.back()["event"].str() == "completed");
    CHECK(progress >= 1);
    CHECK(transitions == log_transitions(events_of(c, id)));
  }
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

// -- operations ---------------------------------------------------------------

TEST_CASE("admin endpoints return the tree and the queues", "[gateway]") {
  api_key admin{"ops", "ops", "read,admin"};
  api_key user{"app", "acme", "submit,read"};
  gateway_node node{key_options({&admin, &user})};
  auto c = node.client(admin.secret);

  auto tree = c.get("/api/admin/tree");
  INFO(tree.body);
  REQUIRE(tree.status == 200);
  auto t = body_of(tree);
  CHECK(t["name"].str() == "node:gw-test");
  CHECK(t["kind"].str() == "supervisor");
  REQUIRE(t["children"].size() >= 1);
  // Every node of the tree has a name, a kind and a state.
  std::vector<const json_value*> todo{&t};
  size_t nodes = 0;
  while (!todo.empty()) {
    auto* n = todo.back();
    todo.pop_back();
    ++nodes;
    CHECK(!(*n)["name"].str().empty());
    CHECK((*n)["kind"].is_string());
    CHECK((*n)["state"].is_string());
    if (n->has("children"))
      for (auto& child : (*n)["children"].items())
        todo.push_back(&child);
  }
  CHECK(nodes >= 3);

  auto q1 = c.get("/api/admin/queues");
  INFO(q1.body);
  REQUIRE(q1.status == 200);
  auto first = body_of(q1);
  for (auto prio : {"high", "normal", "low"}) {
    INFO(prio);
    auto& p = first["priorities"][prio];
    CHECK(p["depth"].integer() == 0);
    CHECK(p["oldest_age_seconds"].num() == 0);
    CHECK(p["dispatched_total"].integer() == 0);
    CHECK(p["dispatched_per_second"].is_null()); // first sample
  }
  for (auto field : {"delayed", "running", "idle_workers", "completed_total",
                     "failed_total", "cancelled_total", "retried_total"})
    CHECK(first[field].is_number());
  CHECK(first["idle_workers"].integer() == 4);

  auto id = submit(node.client(user.secret),
                   R"({"type": "sleep", "input": {"ms": 0},
                                          "priority": "high"})");
  await_end(node, user.secret, id);
  auto q2 = c.get("/api/admin/queues");
  REQUIRE(q2.status == 200);
  auto second = body_of(q2);
  CHECK(second["priorities"]["high"]["dispatched_total"].integer() == 1);
  CHECK(second["priorities"]["high"]["dispatched_per_second"].num() > 0);
  CHECK(second["completed_total"].integer() == 1);

  // A running job shows in the tree, under the queue, and in the queues.
  auto running = submit(node.client(user.secret), sleep_job(30000, 300));
  await_started(node, user.secret, running);
  auto live = c.get("/api/admin/tree");
  REQUIRE(live.status == 200);
  auto lt = body_of(live);
  bool listed = false;
  std::vector<const json_value*> walk{&lt};
  while (!walk.empty()) {
    auto* n = walk.back();
    walk.pop_back();
    if ((*n)["name"].str() == "job " + running)
      listed = true;
    if (n->has("children"))
      for (auto& child : (*n)["children"].items())
        walk.push_back(&child);
  }
  CHECK(listed);
  auto q3 = c.get("/api/admin/queues");
  REQUIRE(q3.status == 200);
  CHECK(body_of(q3)["running"].integer() == 1);
  CHECK(body_of(q3)["idle_workers"].integer() == 3);
  CHECK(node.client(user.secret)
            .post("/api/jobs/" + running + "/cancel", "")
            .status
        == 202);

  // Without the admin scope: 403.
  auto denied = node.client(user.secret).get("/api/admin/tree");
  CHECK(denied.status == 403);
  CHECK(error_code_of(denied) == "forbidden");
  CHECK(node.client(user.secret).get("/api/admin/queues").status == 403);
}

TEST_CASE("healthz and readyz answer without a key", "[gateway]") {
  api_key key{"app", "acme", "submit,read"};
  gateway_node node{key_options({&key})};
  auto c = node.client();
  auto health = c.get("/healthz");
  CHECK(health.status == 200);
  CHECK(body_of(health)["status"].str() == "ok");
  auto ready = c.get("/readyz");
  CHECK(ready.status == 200);
  CHECK(body_of(ready)["status"].str() == "ready");
  auto post = c.post("/healthz", "");
  CHECK(post.status == 405);
  CHECK(post.header("Allow") == "GET");
  // The API itself does need one.
  CHECK(c.get("/api/jobs").status == 401);
  node.stop();
}

// -- errors -------------------------------------------------------------------

TEST_CASE("every error status from a real bad request", "[gateway][errors]") {
  api_key acme{"acme-app", "acme", "submit,read"};
  api_key reader{"acme-reader", "acme", "read"};
  gateway_node node{[&] {
    auto opts = key_options({&acme, &reader});
    for (auto x : {"--http-max-body-bytes", "2048", "--http-max-header-bytes",
                   "2048", "--http-max-batch", "10"})
      opts.push_back(x);
    return opts;
  }()};
  auto c = node.client(acme.secret);

  SECTION("400 malformed JSON") {
    auto res = c.post("/api/jobs", R"({"type": "sleep", "input": )");
    CHECK(res.status == 400);
    CHECK(error_code_of(res) == "malformed_json");
    auto not_json = c.post("/api/jobs", "type=sleep");
    CHECK(not_json.status == 400);
    CHECK(error_code_of(not_json) == "malformed_json");
  }
  SECTION("400 unknown field, wrong type, missing type, too deep") {
    auto res = c.post("/api/jobs", R"({"type": "sleep", "max_atempts": 3})");
    CHECK(res.status == 400);
    CHECK(error_code_of(res) == "invalid_request");
    CHECK(body_of(res)["error"]["message"].str().find("max_atempts")
          != std::string::npos);
    auto wrong
        = c.post("/api/jobs", R"({"type": "sleep", "max_attempts": "3"})");
    CHECK(wrong.status == 400);
    CHECK(error_code_of(wrong) == "invalid_request");
    auto untyped = c.post("/api/jobs", R"({"input": {"ms": 1}})");
    CHECK(untyped.status == 400);
    CHECK(error_code_of(untyped) == "invalid_request");
    auto tenant
        = c.post("/api/jobs", R"({"type": "sleep", "tenant": "globex"})");
    CHECK(tenant.status == 400);
    std::string deep = R"({"type": "sleep", "input": )";
    for (int i = 0; i < 100; ++i)
      deep += "[";
    for (int i = 0; i < 100; ++i)
      deep += "]";
    deep += "}";
    auto too_deep = c.post("/api/jobs", deep);
    CHECK(too_deep.status == 400);
    CHECK(error_code_of(too_deep) == "too_deep");
    // The node's own validation: a type it does not know.
    auto unknown = c.post("/api/jobs", R"({"type": "no-such-type"})");
    CHECK(unknown.status == 400);
    CHECK(error_code_of(unknown) == "invalid_request");
  }
  SECTION("413 oversized body and oversized batch") {
    std::string big = R"({"type": "sleep", "input": {"pad": ")"
                      + std::string(4096, 'x') + "\"}}";
    http_connection conn{node.port()};
    REQUIRE(conn.connected());
    auto res = conn.request(verb::post, "/api/jobs", big,
                            {{"Authorization", "Bearer " + acme.secret}});
    REQUIRE(res);
    CHECK(res->status == 413);
    CHECK(error_code_of(*res) == "too_large");
    std::string batch = R"({"jobs": [)";
    for (int i = 0; i < 11; ++i)
      batch += std::string{i > 0 ? "," : ""} + R"({"type": "sleep"})";
    batch += "]}";
    auto too_many = c.post("/api/jobs/batch", batch);
    CHECK(too_many.status == 413);
    CHECK(error_code_of(too_many) == "too_large");
    // Nothing was created.
    CHECK(all_pages(c, "/api/jobs", 100).empty());
  }
  SECTION("431 huge header") {
    auto res = c.get("/api/jobs", {{"X-Padding", std::string(8192, 'p')}});
    CHECK(res.status == 431);
    CHECK(error_code_of(res) == "headers_too_large");
  }
  SECTION("401 missing or wrong key") {
    auto none = node.client().get("/api/jobs");
    CHECK(none.status == 401);
    CHECK(none.header("WWW-Authenticate") == "Bearer");
    CHECK(error_code_of(none) == "unauthorized");
    auto wrong = node.client("drv_" + random_hex(24)).get("/api/jobs");
    CHECK(wrong.status == 401);
    CHECK(error_code_of(wrong) == "unauthorized");
    // The hash itself is not a key.
    auto hash = node.client(sha256sum(acme.secret)).get("/api/jobs");
    CHECK(hash.status == 401);
    auto basic = node.client().get("/api/jobs",
                                   {{"Authorization", "Basic " + acme.secret}});
    CHECK(basic.status == 401);
    auto post = node.client().post("/api/jobs", sleep_job(1, 1));
    CHECK(post.status == 401);
    CHECK(all_pages(c, "/api/jobs", 100).empty());
    // Streams too: an event stream and a WebSocket upgrade without a key.
    sse_stream stream{node.port(), "/api/jobs/j0000000000000/stream"};
    CHECK(stream.head().status == 401);
    ws_client ws{node.port(), "/api/ws"};
    CHECK_FALSE(ws.ok());
    CHECK(ws.status() == 401);
  }
  SECTION("403 missing scope") {
    auto res = node.client(reader.secret).post("/api/jobs", sleep_job(1, 1));
    CHECK(res.status == 403);
    CHECK(error_code_of(res) == "forbidden");
    auto id = submit(c, sleep_job(1, 1));
    auto cancel
        = node.client(reader.secret).post("/api/jobs/" + id + "/cancel", "");
    CHECK(cancel.status == 403);
    // Reading is in its scope.
    CHECK(node.client(reader.secret).get("/api/jobs/" + id).status == 200);
  }
  SECTION("404 unknown job and endpoint") {
    auto res = c.get("/api/jobs/j0000000000000");
    CHECK(res.status == 404);
    CHECK(error_code_of(res) == "not_found");
    CHECK(c.get("/api/nothing-here").status == 404);
    CHECK(c.get("/api/jobs/bad%20id").status == 404);
  }
  SECTION("405 wrong method") {
    auto id = submit(c, sleep_job(1, 1));
    auto del = c.call(verb::delete_, "/api/jobs/" + id);
    CHECK(del.status == 405);
    CHECK(del.header("Allow") == "GET");
    CHECK(error_code_of(del) == "method_not_allowed");
    auto put = c.call(verb::put, "/api/jobs", "{}");
    CHECK(put.status == 405);
    CHECK(put.header("Allow") == "GET, POST");
    auto get_cancel = c.get("/api/jobs/" + id + "/cancel");
    CHECK(get_cancel.status == 405);
    CHECK(get_cancel.header("Allow") == "POST");
  }
  SECTION("the node still serves after all that") {
    auto id = submit(c, sleep_job(1, 1));
    auto job = await_end(node, acme.secret, id);
    CHECK(job["status"].str() == "completed");
    CHECK(job["tenant"].str() == "acme");
  }
}

TEST_CASE("a tenant never sees another tenant's jobs", "[gateway][errors]") {
  api_key a{"a-app", "tenant-a", "submit,read"};
  api_key b{"b-app", "tenant-b", "submit,read"};
  gateway_node node{key_options({&a, &b})};
  auto ca = node.client(a.secret);
  auto cb = node.client(b.secret);
  auto a_job = submit(ca, sleep_job(20000, 200));
  auto a_done = submit(ca, sleep_job(0, 0));
  auto b_job = submit(cb, sleep_job(0, 0));
  await_end(node, a.secret, a_done);
  await_end(node, b.secret, b_job);
  await_started(node, a.secret, a_job);

  CHECK(get_job(ca, a_job)["tenant"].str() == "tenant-a");
  for (auto& target :
       {"/api/jobs/" + a_job, "/api/jobs/" + a_job + "/events",
        "/api/jobs/" + a_done + "/result", "/api/jobs/" + a_job + "/stream"}) {
    INFO("B reads " << target);
    auto res = cb.get(target);
    CHECK(res.status == 404);
    CHECK(error_code_of(res) == "not_found");
  }
  // Cancel and retry as B: 404, and A's job keeps running.
  auto cancel = cb.post("/api/jobs/" + a_job + "/cancel", "");
  CHECK(cancel.status == 404);
  CHECK(cb.post("/api/dlq/" + a_job + "/retry", "").status == 404);
  CHECK(get_job(ca, a_job)["cancel_requested"].boolean() == false);

  // B's list shows B's job only, A's list A's two.
  CHECK(all_pages(cb, "/api/jobs", 100) == std::vector<std::string>{b_job});
  auto a_list = all_pages(ca, "/api/jobs", 1);
  CHECK(std::set<std::string>(a_list.begin(), a_list.end())
        == std::set<std::string>{a_job, a_done});
  // A's job is processing; B has none.
  CHECK(all_pages(ca, "/api/jobs?status=processing", 100)
        == std::vector<std::string>{a_job});
  CHECK(all_pages(cb, "/api/jobs?status=processing", 100).empty());

  // Nor over a WebSocket.
  ws_client ws{
      node.port(), "/api/ws", {{"Authorization", "Bearer " + b.secret}}};
  REQUIRE(ws.ok());
  REQUIRE(ws.send(R"({"action": "subscribe", "job_id": ")" + a_job + "\"}"));
  auto msg = ws.receive(10s);
  REQUIRE(msg);
  auto doc = parse_json(*msg);
  CHECK(doc["type"].str() == "error");
  CHECK(doc["status"].integer() == 404);
  CHECK(doc["job_id"].str() == a_job);

  // The same body with the same idempotency key is a different job per
  // tenant: keys are per tenant.
  auto ka = submit(ca, sleep_job(0, 0), {{"Idempotency-Key", "shared"}});
  auto kb = submit(cb, sleep_job(0, 0), {{"Idempotency-Key", "shared"}});
  CHECK(ka != kb);
  CHECK(ca.post("/api/jobs/" + a_job + "/cancel", "").status == 202);
}

TEST_CASE("429 with Retry-After for a key over its rate", "[gateway][errors]") {
  api_key slow{"slow", "acme", "submit,read", "2"};
  api_key fast{"fast", "acme", "submit,read"};
  gateway_node node{key_options({&slow, &fast})};
  auto c = node.client(slow.secret);
  // Burst of 2 (one second's worth), then 2 per second: of six requests
  // sent back to back, the third cannot pass unless a whole half second
  // went by between two of them.
  std::vector<unsigned> statuses;
  http_response limited;
  for (int i = 0; i < 6; ++i) {
    auto res = c.get("/api/jobs");
    statuses.push_back(res.status);
    if (res.status == 429 && limited.status == 0)
      limited = res;
  }
  INFO("statuses: " << statuses[0] << " " << statuses[1] << " " << statuses[2]
                    << " " << statuses[3] << " " << statuses[4] << " "
                    << statuses[5]);
  CHECK(statuses[0] == 200);
  REQUIRE(limited.status == 429);
  CHECK(error_code_of(limited) == "rate_limited");
  auto after = limited.header("Retry-After");
  REQUIRE(!after.empty());
  CHECK(std::stoi(after) >= 1);
  CHECK(std::stoi(after) <= 1); // one token comes back within 0.5 s
  CHECK(std::count(statuses.begin(), statuses.end(), 429u) >= 3);
  // A rate-limited submit creates nothing.
  auto refused = c.post("/api/jobs", sleep_job(0, 0));
  if (refused.status == 429) {
    auto listed = all_pages(node.client(fast.secret), "/api/jobs", 100);
    CHECK(listed.empty());
  }
  // The limit is per key: another key of the same tenant is not limited.
  for (int i = 0; i < 6; ++i)
    CHECK(node.client(fast.secret).get("/api/jobs").status == 200);
}

TEST_CASE("429 too_many_streams over --http-max-streams-per-key",
          "[gateway][errors]") {
  api_key k{"k", "acme", "submit,read"};
  api_key other{"other", "acme", "submit,read"};
  gateway_node node{[&] {
    auto opts = key_options({&k, &other});
    opts.push_back("--http-max-streams-per-key");
    opts.push_back("1");
    return opts;
  }()};
  auto c = node.client(k.secret);
  auto id = submit(c, sleep_job(30000, 0));
  header_fields auth{{"Authorization", "Bearer " + k.secret}};
  auto open_first = std::make_unique<sse_stream>(
      node.port(), "/api/jobs/" + id + "/stream", auth);
  REQUIRE(open_first->head().status == 200);
  REQUIRE(open_first->next(10s)); // the stream is up: `submitted`

  sse_stream second{node.port(), "/api/jobs/" + id + "/stream", auth};
  CHECK(second.head().status == 429);
  CHECK(error_code_of(second.head()) == "too_many_streams");
  CHECK(!second.head().header("Retry-After").empty());
  // A WebSocket subscription counts against the same limit.
  ws_client ws{node.port(), "/api/ws", auth};
  REQUIRE(ws.ok());
  REQUIRE(ws.send(R"({"action": "subscribe", "job_id": ")" + id + "\"}"));
  auto msg = ws.receive(10s);
  REQUIRE(msg);
  auto doc = parse_json(*msg);
  CHECK(doc["type"].str() == "error");
  CHECK(doc["status"].integer() == 429);
  CHECK(doc["error"]["code"].str() == "too_many_streams");

  // Another key has its own allowance.
  sse_stream theirs{node.port(),
                    "/api/jobs/" + id + "/stream",
                    {{"Authorization", "Bearer " + other.secret}}};
  CHECK(theirs.head().status == 200);

  // Closing the first stream frees the slot. The server learns of the
  // close asynchronously and there is no event a client could wait on,
  // so this retries with a pause, bounded by a deadline.
  open_first->close();
  open_first.reset();
  auto deadline = clock_type::now() + 10s;
  unsigned status = 0;
  for (;;) {
    sse_stream again{node.port(), "/api/jobs/" + id + "/stream", auth};
    status = again.head().status;
    if (status != 429 || clock_type::now() > deadline)
      break;
    std::this_thread::sleep_for(50ms);
  }
  CHECK(status == 200);
  CHECK(c.post("/api/jobs/" + id + "/cancel", "").status == 202);
}

// -- listening and connections ------------------------------------------------

TEST_CASE("development mode refuses a non-loopback --http-host",
          "[gateway][config]") {
  process node{{DROVER_NODE_BIN, "--node-id", "open-dev", "--admin-port", "0",
                "--http-port", "0", "--http-host", "0.0.0.0"}};
  auto st = node.wait_exit(30s);
  REQUIRE(st);
  auto out = node.drain_all();
  INFO(out);
  REQUIRE(WIFEXITED(*st));
  CHECK(WEXITSTATUS(*st) == 2);
  CHECK(out.find("no API keys are configured") != std::string::npos);
  CHECK(out.find("0.0.0.0") != std::string::npos);
  CHECK(out.find("ready") == std::string::npos);

  // With a key the same interface is served; without keys on loopback the
  // node warns loudly and says so in its ready line.
  api_key key{"app", "acme", "read"};
  gateway_node keyed{{"--http-host", "0.0.0.0", "--api-key", key.option()}};
  CHECK(keyed.ready_line().find("http=0.0.0.0:") != std::string::npos);
  CHECK(keyed.ready_line().find("development") == std::string::npos);
  CHECK(keyed.client(key.secret).get("/api/jobs").status == 200);

  gateway_node dev;
  CHECK(dev.ready_line().find(" development_mode=true") != std::string::npos);
  CHECK(dev.log().find("DEVELOPMENT MODE") != std::string::npos);
}

TEST_CASE("a slow or idle client is disconnected after "
          "--http-idle-timeout-ms",
          "[gateway][limits]") {
  gateway_node node{{"--http-idle-timeout-ms", "500"}};

  SECTION("half a request") {
    http_connection conn{node.port()};
    REQUIRE(conn.connected());
    auto sent = clock_type::now();
    REQUIRE(conn.write_raw("POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                           "Content-Type: application/json\r\n"
                           "Content-Length: 100\r\n\r\n{\"type\": \"sl"));
    std::string received;
    CHECK(conn.wait_closed(10s, &received));
    auto waited = clock_type::now() - sent;
    CHECK(waited >= 400ms); // the timeout, not an immediate refusal
    CHECK(waited < 10s);
    CHECK(received.empty()); // no answer to half a request
    // Nothing was submitted.
    CHECK(all_pages(node.client(), "/api/jobs", 10).empty());
  }
  SECTION("headers trickling in") {
    http_connection conn{node.port()};
    REQUIRE(conn.connected());
    REQUIRE(conn.write_raw("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"));
    CHECK(conn.wait_closed(10s));
  }
  SECTION("an idle keep-alive connection") {
    http_connection conn{node.port()};
    REQUIRE(conn.connected());
    auto res = conn.request(verb::get, "/healthz");
    REQUIRE(res);
    CHECK(res->status == 200);
    auto answered = clock_type::now();
    CHECK(conn.wait_closed(10s));
    CHECK(clock_type::now() - answered >= 400ms);
  }
  // The gateway serves others meanwhile and afterwards.
  CHECK(node.client().get("/healthz").status == 200);
}
