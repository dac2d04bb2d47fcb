// Unit tests of the gateway's browser rules (gateway/browser_policy.hpp)
// and stream tokens (gateway/stream_token.hpp): pure functions, fed with
// requests as Beast parses them. tests/nodes/browser_security_test.cpp
// checks the same rules against a running node.

#include "gateway/browser_policy.hpp"
#include "gateway/stream_token.hpp"

#include <catch2/catch.hpp>

#include <string>

using namespace drover::http;
namespace bhttp = boost::beast::http;

namespace {

request make(bhttp::verb method, std::string host,
             std::vector<std::pair<std::string, std::string>> headers = {},
             std::string body = {}) {
  request req{method, "/api/jobs", 11};
  if (!host.empty())
    req.set(bhttp::field::host, host);
  for (auto& kv : headers)
    req.set(kv.first, kv.second);
  req.body() = std::move(body);
  return req;
}

browser_policy policy(std::string listen, std::vector<std::string> hosts = {},
                      std::vector<std::string> origins = {}) {
  browser_policy_config cfg;
  cfg.listen_host = std::move(listen);
  cfg.port = 8080;
  cfg.allowed_hosts = std::move(hosts);
  cfg.cors_origins = std::move(origins);
  auto p = browser_policy::make(std::move(cfg));
  REQUIRE(p);
  return *p;
}

std::string header(const browser_verdict& v, const std::string& name) {
  for (auto& kv : v.headers)
    if (kv.first == name)
      return kv.second;
  return {};
}

} // namespace

TEST_CASE("Host names accepted per listener", "[browser_policy]") {
  auto loopback = policy("127.0.0.1", {"drover.test:9000"});
  auto status = [](const browser_policy& p, const std::string& host) {
    return p.check(make(bhttp::verb::get, host)).status;
  };
  CHECK(status(loopback, "127.0.0.1:8080") == 0);
  CHECK(status(loopback, "localhost:8080") == 0);
  CHECK(status(loopback, "[::1]:8080") == 0);
  CHECK(status(loopback, "localhost") == 0); // no port: not a rebinding
  CHECK(status(loopback, "localhost:8081") == 421);
  CHECK(status(loopback, "drover.test:9000") == 0);
  CHECK(status(loopback, "drover.test:8080") == 421);
  CHECK(status(loopback, "evil.example:8080") == 421);
  CHECK(status(loopback, "127.0.0.1.nip.io:8080") == 421);
  CHECK(status(loopback, "user@127.0.0.1:8080") == 400);
  CHECK(status(loopback, "127.0.0.1:80:80") == 400);
  CHECK(status(loopback, "") == 400); // HTTP/1.1 without Host
  auto specific = policy("10.1.2.3");
  CHECK(status(specific, "10.1.2.3:8080") == 0);
  CHECK(status(specific, "127.0.0.1:8080") == 421);
  auto wildcard = policy("0.0.0.0", {"api.example.com"});
  CHECK(status(wildcard, "127.0.0.1:8080") == 0);
  CHECK(status(wildcard, "api.example.com") == 0);
  CHECK(status(wildcard, "api.example.com:443") == 0);
  CHECK(status(wildcard, "10.1.2.3:8080") == 421);
  auto v6 = policy("::1");
  CHECK(status(v6, "[::1]:8080") == 0);
  CHECK(status(v6, "[::2]:8080") == 421);
}

TEST_CASE("Origin and Content-Type rules", "[browser_policy]") {
  auto p = policy("127.0.0.1", {}, {"http://localhost:5173"});
  auto post = [&](std::string origin, std::string type, std::string body) {
    std::vector<std::pair<std::string, std::string>> hs;
    if (!origin.empty())
      hs.emplace_back("Origin", origin);
    if (!type.empty())
      hs.emplace_back("Content-Type", type);
    return p.check(make(bhttp::verb::post, "127.0.0.1:8080", hs, body));
  };
  CHECK(post("", "application/json", "{}").status == 0);
  CHECK(post("", "", "").status == 0); // no body: curl -X POST
  CHECK(post("", "text/plain", "").status == 415);
  CHECK(post("", "", "{}").status == 415);
  CHECK(post("", "application/json;charset=\"UTF-8\"", "{}").status == 0);
  CHECK(post("", "application/json; charset=utf-16", "{}").status == 415);
  CHECK(post("", "application/jsonx", "{}").status == 415);
  CHECK(post("http://127.0.0.1:8080", "application/json", "{}").status == 0);
  CHECK(post("http://127.0.0.1", "application/json", "{}").status == 403);
  CHECK(post("http://localhost:8080", "application/json", "{}").status == 403);
  CHECK(post("null", "application/json", "{}").status == 403);
  auto listed = post("http://localhost:5173", "application/json", "{}");
  CHECK(listed.status == 0);
  CHECK(header(listed, "Access-Control-Allow-Origin")
        == "http://localhost:5173");
  CHECK(header(listed, "Vary") == "Origin");
  CHECK(header(listed, "Access-Control-Allow-Credentials").empty());
  // Read-only requests from any origin are answered, without CORS.
  auto get = p.check(make(bhttp::verb::get, "127.0.0.1:8080",
                          {{"Origin", "http://evil.example"}}));
  CHECK(get.status == 0);
  CHECK(header(get, "Access-Control-Allow-Origin").empty());
  // A WebSocket handshake is checked like a state change.
  auto ws = p.check(make(bhttp::verb::get, "127.0.0.1:8080",
                         {{"Origin", "http://evil.example"},
                          {"Connection", "Upgrade"},
                          {"Upgrade", "websocket"},
                          {"Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="},
                          {"Sec-WebSocket-Version", "13"}}));
  CHECK(ws.status == 403);
}

TEST_CASE("bad allow-list entries are configuration errors",
          "[browser_policy]") {
  for (auto origin :
       {"*", "null", "localhost:5173", "ftp://x.example", "http://x.example/",
        "http://X.example", "http://x.example:80", "https://x.example:443"}) {
    browser_policy_config cfg;
    cfg.cors_origins = {origin};
    INFO(origin);
    CHECK_FALSE(browser_policy::make(cfg));
  }
  browser_policy_config cfg;
  cfg.allowed_hosts = {"https://x.example"};
  CHECK_FALSE(browser_policy::make(cfg));
}

TEST_CASE("stream tokens round-trip and fail closed", "[stream_token]") {
  auto key = decode_stream_token_key(
      "hex:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f");
  REQUIRE(key);
  CHECK(key->size() == 32);
  CHECK_FALSE(decode_stream_token_key("hex:0001"));
  CHECK_FALSE(decode_stream_token_key("000102030405060708090a0b0c0d0e0f10111213"
                                      "1415161718191a1b1c1d1e1f"));
  CHECK_FALSE(decode_stream_token_key("base64:not base64!"));
  CHECK(decode_stream_token_key(
      "base64:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="));
  stream_grant g{"ci", "acme", "j1", 1000};
  auto token = mint_stream_token(*key, g);
  REQUIRE(token);
  auto ok = verify_stream_token(*key, *token, 999);
  REQUIRE(ok);
  CHECK(ok->key_name == "ci");
  CHECK(ok->tenant == "acme");
  CHECK(ok->job == "j1");
  CHECK_FALSE(verify_stream_token(*key, *token, 1000));       // expired
  CHECK_FALSE(verify_stream_token(*key, *token, 1000 - 601)); // too far
  CHECK_FALSE(verify_stream_token(random_stream_token_key(), *token, 999));
  CHECK_FALSE(verify_stream_token(*key, *token + "A", 999));
  CHECK_FALSE(verify_stream_token(*key, "", 999));
  CHECK_FALSE(verify_stream_token(*key, ".", 999));
  // One spelling per token: the MAC's last character carries two unused
  // bits; setting one spells the same bytes, and is refused.
  static constexpr std::string_view alphabet
      = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  auto respelt = *token;
  auto digit = alphabet.find(respelt.back());
  REQUIRE(digit != std::string_view::npos);
  CHECK(digit % 4 == 0); // 256 bits in 43 digits: the low two are unused
  respelt.back() = alphabet[digit ^ 1];
  CHECK_FALSE(verify_stream_token(*key, respelt, 999));
  g.tenant = "a\nb";
  CHECK_FALSE(mint_stream_token(*key, g));
}

TEST_CASE("targets are logged without their token", "[stream_token]") {
  CHECK(redact_token_in_target("/api/ws?token=abc.def")
        == "/api/ws?token=REDACTED");
  CHECK(redact_token_in_target("/api/jobs/j1/stream?a=1&tok%65n=x&b=2")
        == "/api/jobs/j1/stream?a=1&tok%65n=REDACTED&b=2");
  CHECK(redact_token_in_target("/api/jobs") == "/api/jobs");
  CHECK(redact_token_in_target("/x?tokens=1") == "/x?tokens=1");
}
