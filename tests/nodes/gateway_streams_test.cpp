// Process tests of the HTTP gateway, history and streams: the events
// endpoint, SSE and WebSocket. A real drover-node (role all, memory store)
// serving HTTP on a free port, and real HTTP, SSE and WebSocket clients
// (tests/support/http_client.hpp) talking to it over TCP.
//
// Every wait is on an event with a deadline: the node's "ready" line, an
// HTTP answer, the next SSE event or WebSocket message, a server closing a
// connection, a process exit. A job's start and end are awaited on its
// event stream, not by polling. API keys are random per run and their SHA-256
// is computed by `sha256sum`, as docs/api.md tells operators to do.

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
using drover::testing::gateway_reads::events_of;

namespace {

/// (sequence, kind) of one audit-log transition.
using transition = std::pair<int64_t, std::string>;

bool is_progress_event(const std::string& name) {
  return name == "progress" || name == "stage";
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

} // namespace

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
