// Process tests of the HTTP gateway, operations and errors: admin
// endpoints, health, every error status, tenants, rate and stream limits,
// listening and slow clients. A real drover-node (role all, memory store)
// serving HTTP on a free port, and real HTTP and SSE clients
// (tests/support/http_client.hpp) talking to it over TCP.
//
// Every wait is on an event with a deadline: the node's "ready" line, an
// HTTP answer, the next SSE event or WebSocket message, a server closing a
// connection, a process exit. A job's start and end are awaited on its
// event stream, not by polling. One loop polls, with a pause and a deadline:
// the wait for the server to free a stream slot after a client hung up (no
// event tells a client). API keys are random per run and their SHA-256 is
// computed by `sha256sum`, as docs/api.md tells operators to do.

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
