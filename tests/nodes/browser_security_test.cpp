// Process tests of the gateway's browser rules (gateway/browser_policy.hpp)
// and stream tokens (gateway/stream_token.hpp): a real drover-node serving
// HTTP, and raw HTTP, SSE and WebSocket clients that send what a hostile
// page's browser would send (Origin, a foreign Host, text/plain bodies).
// tests/browser/browser_test.mjs drives a real Chromium against a node.
//
// Waits are on answers and event streams with deadlines. One loop polls,
// with a pause and a deadline: waiting for a webhook attempt to be logged
// (nothing pushes it to a client; that is what the test is about).

#include "gateway/stream_token.hpp"
#include "support/gateway_api.hpp"
#include "support/gateway_node.hpp"
#include "support/http_client.hpp"
#include "support/json_value.hpp"
#include "support/webhook_receiver.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <string>
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
using drover::testing::parse_json;
using drover::testing::sleep_job;
using drover::testing::sse_stream;
using drover::testing::time_left;
using drover::testing::webhook_receiver;
using drover::testing::ws_client;
using verb = boost::beast::http::verb;

namespace {

constexpr auto evil = "http://evil.example";

/// Job ids the node holds (development mode: all of them).
/// The kind of the last event of the job's audit log.
std::string last_logged_kind(const http_client& c, const std::string& id) {
  auto res = c.get("/api/jobs/" + id + "/events");
  REQUIRE(res.status == 200);
  auto doc = body_of(res);
  auto& evs = doc["events"].items();
  REQUIRE_FALSE(evs.empty());
  return evs.back()["kind"].str();
}

size_t job_count(const http_client& c) {
  auto res = c.get("/api/jobs?limit=1000");
  REQUIRE(res.status == 200);
  return body_of(res)["data"].size();
}

std::string host_of(const gateway_node& node, const std::string& name) {
  return name + ":" + std::to_string(node.port());
}

/// The raw answer to `bytes` sent on a fresh connection.
http_response raw_exchange(uint16_t port, const std::string& bytes) {
  http_connection conn{port};
  REQUIRE(conn.connected());
  REQUIRE(conn.write_raw(bytes));
  auto res = conn.read_response();
  REQUIRE(res);
  return *res;
}

/// Mints a stream token with the key's secret; must succeed.
std::string mint(const http_client& c, const std::string& path) {
  auto res = c.post(path, {});
  INFO(res.body);
  REQUIRE(res.status == 200);
  auto doc = body_of(res);
  auto token = doc["token"].str();
  REQUIRE(token.size() > 40);
  REQUIRE(doc["expires_at"].str().size() == 24); // RFC 3339 with ms
  return token;
}

} // namespace

// -- CSRF and DNS rebinding
// -----------------------------------------------------

TEST_CASE("a cross-origin text/plain POST gets 415 and creates no job",
          "[browser]") {
  gateway_node node;
  auto c = node.client();
  // What an HTML form or a no-cors fetch on any site may send without a
  // preflight: text/plain, with or without the page's Origin.
  for (auto headers :
       {header_fields{{"Content-Type", "text/plain"}, {"Origin", evil}},
        header_fields{{"Content-Type", "text/plain"}},
        header_fields{{"Content-Type", "application/x-www-form-urlencoded"},
                      {"Origin", evil}},
        header_fields{{"Content-Type", "application/json; charset=latin1"}}}) {
    auto res
        = c.post("/api/jobs",
                 R"({"type": "exec", "input": {"argv": ["true"]}})", headers);
    INFO(res.body);
    CHECK(res.status == 415);
    CHECK(error_code_of(res) == "unsupported_media_type");
  }
  CHECK(job_count(c) == 0);
  // The same body as JSON (parameters allowed) is what works.
  auto ok = c.post("/api/jobs", sleep_job(1, 1),
                   {{"Content-Type", "application/json; charset=UTF-8"}});
  CHECK(ok.status == 202);
  CHECK(job_count(c) == 1);
}

TEST_CASE(
    "a foreign Host is refused with 421, a missing Host on HTTP/1.1 with 400",
    "[browser]") {
  gateway_node node{{"--http-allowed-host", "drover.test"}};
  auto c = node.client();
  for (const std::string& host : std::vector<std::string>{
           std::string{"evil.example"}, host_of(node, "evil.example"),
           host_of(node, "127.0.0.2"), "127.0.0.1:1",
           "localhost.evil.example"}) {
    auto res = c.get("/api/jobs", {{"Host", host}});
    INFO(host << " -> " << res.body);
    CHECK(res.status == 421);
    CHECK(error_code_of(res) == "misdirected_request");
  }
  for (const std::string& host : std::vector<std::string>{
           host_of(node, "127.0.0.1"), host_of(node, "localhost"),
           host_of(node, "LOCALHOST"), host_of(node, "[::1]"),
           std::string{"drover.test"}, std::string{"drover.test:443"}}) {
    auto res = c.get("/api/jobs", {{"Host", host}});
    INFO(host << " -> " << res.body);
    CHECK(res.status == 200);
  }
  auto res = raw_exchange(node.port(), "GET /healthz HTTP/1.1\r\n\r\n");
  CHECK(res.status == 400);
  res = raw_exchange(node.port(), "GET /healthz HTTP/1.0\r\n\r\n");
  CHECK(res.status == 200);
}

TEST_CASE("a foreign-origin JSON POST gets 403 and creates nothing, while same "
          "origin and listed origins pass",
          "[browser]") {
  auto page = std::string{"http://localhost:5173"};
  gateway_node node{{"--http-cors-origin", page}};
  auto c = node.client();
  for (const std::string& origin : std::vector<std::string>{
           std::string{evil}, std::string{"null"}, "http://localhost:5174",
           "https://localhost:5173",
           "http://127.0.0.1:" + std::to_string(node.port() + 1)}) {
    auto res = c.post("/api/jobs", sleep_job(1, 1), {{"Origin", origin}});
    INFO(origin << " -> " << res.body);
    CHECK(res.status == 403);
    CHECK(error_code_of(res) == "forbidden_origin");
    CHECK(res.header("Access-Control-Allow-Origin").empty());
    // Other state-changing methods too.
    auto del = c.call(verb::delete_, "/api/dlq/j1", {}, {{"Origin", origin}});
    CHECK(del.status == 403);
  }
  CHECK(job_count(c) == 0);
  // Same origin: the page the gateway itself would serve.
  auto same
      = c.post("/api/jobs", sleep_job(1, 1),
               {{"Origin", "http://127.0.0.1:" + std::to_string(node.port())},
                {"Host", host_of(node, "127.0.0.1")}});
  CHECK(same.status == 202);
  CHECK(same.header("Access-Control-Allow-Origin").empty());
  // A listed origin, with the CORS headers its page needs to read answers.
  auto listed = c.post("/api/jobs", sleep_job(1, 1), {{"Origin", page}});
  CHECK(listed.status == 202);
  CHECK(listed.header("Access-Control-Allow-Origin") == page);
  CHECK(listed.header("Vary").find("Origin") != std::string::npos);
  CHECK(listed.header("Access-Control-Expose-Headers").find("Location")
        != std::string::npos);
  CHECK(listed.header("Access-Control-Allow-Credentials").empty());
  CHECK(job_count(c) == 2);
  // A GET from a foreign origin is answered (nothing changes) but without
  // CORS headers, so the foreign page cannot read it.
  auto read = c.get("/api/jobs", {{"Origin", evil}});
  CHECK(read.status == 200);
  CHECK(read.header("Access-Control-Allow-Origin").empty());
  CHECK(read.header("Vary") == "Origin");
  // Errors reach a listed page too (it can show them).
  auto bad = c.post("/api/jobs", "{", {{"Origin", page}});
  CHECK(bad.status == 400);
  CHECK(bad.header("Access-Control-Allow-Origin") == page);
}

TEST_CASE("a foreign-origin WebSocket upgrade is refused", "[browser][ws]") {
  auto page = std::string{"http://localhost:5173"};
  gateway_node node{{"--http-cors-origin", page}};
  ws_client foreign{node.port(), "/api/ws", {{"Origin", evil}}};
  CHECK_FALSE(foreign.ok());
  CHECK(foreign.status() == 403);
  ws_client null_origin{node.port(), "/api/ws", {{"Origin", "null"}}};
  CHECK_FALSE(null_origin.ok());
  ws_client listed{node.port(), "/api/ws", {{"Origin", page}}};
  CHECK(listed.ok());
  ws_client no_origin{node.port(), "/api/ws"}; // not a browser
  CHECK(no_origin.ok());
}

TEST_CASE("CORS preflight: an allowed origin gets the rules, another 403 "
          "without CORS headers",
          "[browser]") {
  auto page = std::string{"https://app.example.com"};
  gateway_node node{{"--http-cors-origin", page + ",http://localhost:3000"}};
  auto c = node.client();
  header_fields ask{{"Access-Control-Request-Method", "POST"},
                    {"Access-Control-Request-Headers",
                     "authorization,content-type,idempotency-key"}};
  auto allowed = ask;
  allowed.emplace_back("Origin", page);
  auto res = c.call(verb::options, "/api/jobs", {}, allowed);
  INFO(res.body);
  CHECK(res.status == 204);
  CHECK(res.body.empty());
  CHECK(res.header("Access-Control-Allow-Origin") == page);
  CHECK(res.header("Access-Control-Allow-Methods").find("POST")
        != std::string::npos);
  auto hdrs = res.header("Access-Control-Allow-Headers");
  for (auto h :
       {"Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID"})
    CHECK(hdrs.find(h) != std::string::npos);
  CHECK(res.header("Access-Control-Max-Age") == "600");
  CHECK(res.header("Vary").find("Origin") != std::string::npos);
  CHECK(res.header("Access-Control-Allow-Credentials").empty());
  CHECK(res.header("Content-Length").empty());
  for (const std::string& origin : std::vector<std::string>{
           std::string{evil}, std::string{"null"},
           std::string{"https://app.example.com.evil.example"},
           std::string{"http://app.example.com"}}) {
    auto refused = ask;
    refused.emplace_back("Origin", origin);
    res = c.call(verb::options, "/api/jobs", {}, refused);
    INFO(origin);
    CHECK(res.status == 403);
    CHECK(res.header("Access-Control-Allow-Origin").empty());
    CHECK(res.header("Access-Control-Allow-Methods").empty());
  }
  // Preflights need no key: browsers never send one with them.
  api_key reader{"reader", "acme", "read"};
  gateway_node keyed{
      {"--api-key", reader.option(), "--http-cors-origin", page}};
  res = keyed.client().call(verb::options, "/api/jobs", {}, allowed);
  CHECK(res.status == 204);
}

TEST_CASE("bad --http-cors-origin and --http-allowed-host entries stop the "
          "node with exit 2",
          "[browser]") {
  for (auto args :
       {std::vector<std::string>{"--http-cors-origin", "*"},
        std::vector<std::string>{"--http-cors-origin", "null"},
        std::vector<std::string>{"--http-cors-origin", "http://x.example/path"},
        std::vector<std::string>{"--http-cors-origin", "http://X.example"},
        std::vector<std::string>{"--http-cors-origin", "https://x.example:443"},
        std::vector<std::string>{"--http-allowed-host", "http://x.example"},
        std::vector<std::string>{"--stream-token-key", "hex:abcd"},
        std::vector<std::string>{"--stream-token-ttl-s", "601"}}) {
    std::vector<std::string> argv{
        DROVER_NODE_BIN, "--node-id", "bad", "--admin-port", "0",
        "--http-port",   "0"};
    argv.insert(argv.end(), args.begin(), args.end());
    auto [rc, out] = drover::testing::run_to_exit(argv);
    INFO(args[0] << " " << args[1] << ": " << out);
    CHECK(rc == 2);
  }
}

// -- stream tokens
// --------------------------------------------------------------

TEST_CASE("stream tokens: mint, use, expired, forged, other job, other "
          "endpoints, never in the node's output",
          "[browser][token]") {
  api_key owner{"owner", "acme", "submit,read,admin"};
  api_key other{"other", "globex", "submit,read"};
  auto key_hex = random_hex(32);
  gateway_node node{{"--api-key", owner.option(), "--api-key", other.option(),
                     "--stream-token-key", "hex:" + key_hex}};
  auto c = node.client(owner.secret);
  auto anonymous = node.client();
  auto id = submit(c, sleep_job(300, 3));
  auto second = submit(c, sleep_job(1, 1));
  auto token = mint(c, "/api/jobs/" + id + "/stream-token");
  std::vector<std::string> tokens{token};

  // Used: the whole stream without an Authorization header.
  auto evs = stream_to_end(node.port(), {}, id, 30s, {}, "?token=" + token);
  REQUIRE_FALSE(evs.empty());
  CHECK(evs.back().event == "completed");

  auto refused = [&](const std::string& target, unsigned status = 401) {
    auto res = anonymous.get(target);
    INFO(target << " -> " << res.body);
    CHECK(res.status == status);
    // No answer repeats a token.
    for (auto& t : tokens)
      CHECK(res.body.find(t) == std::string::npos);
    return res;
  };
  // Not valid on any other endpoint, nor on another job's stream.
  refused("/api/jobs/" + id + "?token=" + token);
  refused("/api/jobs/" + id + "/events?token=" + token);
  refused("/api/jobs/" + id + "/result?token=" + token);
  refused("/api/jobs?token=" + token);
  refused("/api/admin/queues?token=" + token);
  refused("/api/jobs/" + second + "/stream?token=" + token);
  // Not with a key as well.
  auto both = c.get("/api/jobs/" + id + "/stream?token=" + token);
  CHECK(both.status == 400);
  auto post = anonymous.post("/api/jobs?token=" + token, sleep_job(1, 1));
  CHECK(post.status == 401);

  // Forged: a flipped MAC character, another key, an edited payload.
  auto flipped = token;
  flipped.back() = flipped.back() == 'A' ? 'B' : 'A';
  tokens.push_back(flipped);
  refused("/api/jobs/" + id + "/stream?token=" + flipped);
  auto hex = std::string{"hex:"} + key_hex;
  auto key = drover::http::decode_stream_token_key(hex);
  REQUIRE(key);
  drover::http::stream_grant grant;
  grant.key_name = owner.name;
  grant.tenant = owner.tenant;
  grant.job = id;
  grant.expires_at = drover::http::unix_seconds_now() + 60;
  auto wrong_key = drover::http::mint_stream_token(
      drover::http::random_stream_token_key(), grant);
  REQUIRE(wrong_key);
  tokens.push_back(*wrong_key);
  refused("/api/jobs/" + id + "/stream?token=" + *wrong_key);
  // An edited payload: the MAC no longer matches it.
  auto good = drover::http::mint_stream_token(*key, grant);
  REQUIRE(good);
  tokens.push_back(*good);
  auto dot = good->find('.');
  auto tampered = good->substr(0, dot - 2)
                  + (good->substr(dot - 2, 2) == "xx" ? "yy" : "xx")
                  + good->substr(dot);
  tokens.push_back(tampered);
  {
    // Untampered, the same token is accepted (the history of the job).
    sse_stream s{node.port(), "/api/jobs/" + id + "/stream?token=" + *good};
    CHECK(s.head().status == 200);
    s.close();
  }
  refused("/api/jobs/" + id + "/stream?token=" + tampered);
  refused("/api/jobs/" + id + "/stream?token=garbage");
  // Expired: minted with the node's key a second ago.
  grant.expires_at = drover::http::unix_seconds_now() - 1;
  auto expired = drover::http::mint_stream_token(*key, grant);
  REQUIRE(expired);
  tokens.push_back(*expired);
  auto res = refused("/api/jobs/" + id + "/stream?token=" + *expired);
  CHECK(body_of(res)["error"]["message"].str().find("expired")
        != std::string::npos);
  // Too far ahead (more than 10 minutes): refused as well.
  grant.expires_at = drover::http::unix_seconds_now() + 3600;
  auto too_long = drover::http::mint_stream_token(*key, grant);
  REQUIRE(too_long);
  tokens.push_back(*too_long);
  refused("/api/jobs/" + id + "/stream?token=" + *too_long);
  // A valid token of a key whose tenant does not own the job: 404, as
  // with the key itself.
  grant.key_name = other.name;
  grant.tenant = other.tenant;
  grant.expires_at = drover::http::unix_seconds_now() + 60;
  auto globex = drover::http::mint_stream_token(*key, grant);
  REQUIRE(globex);
  tokens.push_back(*globex);
  refused("/api/jobs/" + id + "/stream?token=" + *globex, 404);
  // ...and minting one for that job with that key is a 404 too.
  auto foreign
      = node.client(other.secret).post("/api/jobs/" + id + "/stream-token", {});
  CHECK(foreign.status == 404);

  // WebSocket: a job token subscribes to its job only; a "*" token to any
  // job of the tenant.
  {
    ws_client ws{node.port(), "/api/ws?token=" + token};
    REQUIRE(ws.ok());
    REQUIRE(ws.send(R"({"action": "subscribe", "job_id": ")" + second + "\"}"));
    auto msg = ws.receive();
    REQUIRE(msg);
    auto doc = parse_json(*msg);
    CHECK(doc["type"].str() == "error");
    CHECK(doc["status"].integer() == 401);
    REQUIRE(ws.send(R"({"action": "subscribe", "job_id": ")" + id + "\"}"));
    bool ended = false;
    auto deadline = clock_type::now() + 30s;
    while (!ended) {
      auto m = ws.receive(time_left(deadline));
      REQUIRE(m);
      ended = parse_json(*m)["type"].str() == "end";
    }
  }
  auto any = mint(c, "/api/stream-token");
  tokens.push_back(any);
  {
    ws_client ws{node.port(), "/api/ws?token=" + any};
    REQUIRE(ws.ok());
    REQUIRE(ws.send(R"({"action": "subscribe", "job_id": ")" + second + "\"}"));
    auto deadline = clock_type::now() + 30s;
    bool ended = false;
    while (!ended) {
      auto m = ws.receive(time_left(deadline));
      REQUIRE(m);
      auto doc = parse_json(*m);
      REQUIRE(doc["type"].str() != "error");
      ended = doc["type"].str() == "end";
    }
  }
  // A "*" token is for WebSockets, not for SSE.
  refused("/api/jobs/" + id + "/stream?token=" + any);
  ws_client forged_ws{node.port(), "/api/ws?token=" + flipped};
  CHECK_FALSE(forged_ws.ok());
  CHECK(forged_ws.status() == 401);

  // Nothing the node wrote contains a token.
  node.stop();
  auto log = node.log();
  for (auto& t : tokens)
    CHECK(log.find(t) == std::string::npos);
}

// -- the end of a stream
// ----------------------------------------------------------

TEST_CASE("a finished job's stream answers 204 once nothing is new, and "
          "webhook attempts are 'webhook' events",
          "[browser][sse]") {
  webhook_receiver receiver{{drover::testing::reply{200}}};
  gateway_node node{{"--webhook-allow", "127.0.0.1/32"}};
  auto c = node.client();
  auto stats = [&] {
    auto res = c.get("/api/admin/streams");
    REQUIRE(res.status == 200);
    auto doc = body_of(res);
    return std::make_pair(doc["stream_requests"].integer(),
                          doc["finished_no_content"].integer());
  };
  auto id = submit(c, R"({"type": "sleep", "input": {"ms": 50, "steps": 2},
                          "callback_url": ")"
                          + receiver.url() + "\"}");
  auto first = stream_to_end(node.port(), {}, id);
  // The stream ends at the terminal event, or just after the webhook
  // attempt when that was logged first (a fast receiver): nothing else.
  auto done_at = std::find_if(first.begin(), first.end(), [](const auto& ev) {
    return ev.event == "completed";
  });
  REQUIRE(done_at != first.end());
  CHECK(first.end() - done_at <= 2);
  if (first.end() - done_at == 2)
    CHECK(first.back().event == "webhook");
  auto terminal = done_at->id;
  REQUIRE_FALSE(terminal.empty());
  // The webhook attempt is logged after the terminal event.
  auto deadline = clock_type::now() + 20s;
  for (;;) {
    if (last_logged_kind(c, id) == "webhook_attempted")
      break;
    REQUIRE(clock_type::now() < deadline);
    std::this_thread::sleep_for(50ms);
  }
  // A client resuming after the terminal event gets the attempt, named
  // "webhook", and then the stream ends...
  auto rest
      = stream_to_end(node.port(), {}, id, 30s, {{"Last-Event-ID", terminal}});
  REQUIRE(rest.size() == 1);
  CHECK(rest[0].event == "webhook");
  CHECK(parse_json(rest[0].data)["kind"].str() == "webhook_attempted");
  // ...and resuming after that is 204: an EventSource stops there.
  sse_stream done{node.port(),
                  "/api/jobs/" + id + "/stream",
                  {{"Last-Event-ID", rest[0].id}}};
  CHECK(done.head().status == 204);
  CHECK(done.head().body.empty());
  CHECK(stats() == std::make_pair(int64_t{3}, int64_t{1}));
  // The full history still streams (and ends) for a new client.
  auto again = stream_to_end(node.port(), {}, id);
  CHECK(again.back().event == "webhook");
  CHECK(stats() == std::make_pair(int64_t{4}, int64_t{1}));
}
