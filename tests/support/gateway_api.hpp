#pragma once

// Helpers of the gateway process tests: API keys as an operator makes them
// (random secret, SHA-256 by coreutils' sha256sum) and the API calls most
// tests make, each failing the test on an unexpected answer. Waits are on a
// job's event stream, with deadlines, never on polls.

#include "support/gateway_node.hpp"
#include "support/http_client.hpp"
#include "support/json_value.hpp"
#include "support/process.hpp"

#include <catch2/catch.hpp>

#include <chrono>
#include <ctime>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace drover::testing::gateway_api {

// -- keys ---------------------------------------------------------------------

inline std::string random_hex(size_t bytes) {
  static constexpr char hex[] = "0123456789abcdef";
  std::random_device rd;
  std::string out;
  for (size_t i = 0; i < bytes; ++i) {
    auto b = rd() & 0xFF;
    out += hex[b >> 4];
    out += hex[b & 0xF];
  }
  return out;
}

/// SHA-256 of `text` in hex, computed by coreutils' sha256sum.
inline std::string sha256sum(const std::string& text) {
  // The secrets are [a-z0-9_] only: safe inside single quotes.
  auto [rc, out]
      = run_to_exit({"/bin/sh", "-c", "printf %s '" + text + "' | sha256sum"});
  REQUIRE(rc == 0);
  REQUIRE(out.size() >= 64);
  auto hex = out.substr(0, 64);
  REQUIRE(hex.find_first_not_of("0123456789abcdef") == std::string::npos);
  return hex;
}

/// An API key: the secret a client presents and the node's config line.
struct api_key {
  std::string name;
  std::string tenant;
  std::string scopes;
  std::string rate; // "" = the node's default
  std::string secret;

  api_key(std::string n, std::string t, std::string s, std::string r = {})
      : name(std::move(n)),
        tenant(std::move(t)),
        scopes(std::move(s)),
        rate(std::move(r)),
        secret("drv_" + random_hex(24)) {
    // nop
  }

  std::string option() const {
    auto spec = name + ":" + sha256sum(secret) + ":" + tenant + ":" + scopes;
    if (!rate.empty())
      spec += ":" + rate;
    return spec;
  }
};

/// `--api-key <spec>` for each key.
inline std::vector<std::string>
key_options(const std::vector<const api_key*>& keys) {
  std::vector<std::string> out;
  for (auto* k : keys) {
    out.push_back("--api-key");
    out.push_back(k->option());
  }
  return out;
}

// -- API helpers --------------------------------------------------------------

inline json_value body_of(const http_response& res) {
  INFO("status " << res.status << ", body: " << res.body);
  return parse_json(res.body);
}

/// The error code of an `{"error": {"code", "message"}}` answer.
inline std::string error_code_of(const http_response& res) {
  auto doc = body_of(res);
  REQUIRE(doc["error"]["message"].str().size() > 0);
  return doc["error"]["code"].str();
}

/// Submits `body`; must be accepted (202). Returns the job id.
inline std::string submit(const http_client& c, const std::string& body,
                          header_fields headers = {}) {
  auto res = c.post("/api/jobs", body, std::move(headers));
  INFO(res.body);
  REQUIRE(res.status == 202);
  auto id = body_of(res)["job_id"].str();
  REQUIRE(!id.empty());
  return id;
}

/// Unix ms of an RFC 3339 UTC time with milliseconds
/// ("2026-12-02T19:20:04.010Z").
inline int64_t unix_ms(const std::string& at) {
  REQUIRE(at.size() == 24);
  std::tm tm{};
  tm.tm_year = std::stoi(at.substr(0, 4)) - 1900;
  tm.tm_mon = std::stoi(at.substr(5, 2)) - 1;
  tm.tm_mday = std::stoi(at.substr(8, 2));
  tm.tm_hour = std::stoi(at.substr(11, 2));
  tm.tm_min = std::stoi(at.substr(14, 2));
  tm.tm_sec = std::stoi(at.substr(17, 2));
  return static_cast<int64_t>(timegm(&tm)) * 1000 + std::stoi(at.substr(20, 3));
}

/// [started, ended] of the job's only attempt, from its audit log.
inline std::pair<int64_t, int64_t> run_interval(const http_client& c,
                                                const std::string& id) {
  auto res = c.get("/api/jobs/" + id + "/events");
  INFO(res.body);
  REQUIRE(res.status == 200);
  int64_t started = -1, ended = -1;
  for (auto& ev : body_of(res)["events"].items()) {
    if (ev["kind"].str() == "started") {
      CHECK(started == -1); // one attempt
      started = unix_ms(ev["at"].str());
    }
    if (ev["kind"].str() == "completed")
      ended = unix_ms(ev["at"].str());
  }
  REQUIRE(started >= 0);
  REQUIRE(ended >= started);
  return {started, ended};
}

inline json_value get_job(const http_client& c, const std::string& id) {
  auto res = c.get("/api/jobs/" + id);
  INFO(res.body);
  REQUIRE(res.status == 200);
  return body_of(res);
}

/// Reads a job's SSE stream until the server ends it; returns its events
/// (comments dropped). The stream must end within `timeout`.
inline std::vector<sse_event>
stream_to_end(uint16_t port, const std::string& key, const std::string& id,
              std::chrono::milliseconds timeout = std::chrono::seconds{30},
              header_fields headers = {}, const std::string& query = {}) {
  if (!key.empty())
    headers.emplace_back("Authorization", "Bearer " + key);
  sse_stream s{port, "/api/jobs/" + id + "/stream" + query, headers};
  INFO(s.head().body);
  REQUIRE(s.head().status == 200);
  std::vector<sse_event> out;
  auto deadline = clock_type::now() + timeout;
  for (;;) {
    auto ev = s.next(time_left(deadline));
    if (!ev)
      break;
    if (!ev->is_comment())
      out.push_back(std::move(*ev));
  }
  INFO(out.size() << " events; last: "
                  << (out.empty() ? std::string{"-"} : out.back().event));
  REQUIRE_FALSE(s.timed_out());
  REQUIRE(s.complete());
  return out;
}

/// A job's SSE stream read across a fault (a coordinator killed while the
/// job runs): first() reads until the first progress event, rest() from
/// there to the end.
class stream_across {
public:
  stream_across(uint16_t port, const std::string& id)
      : s_{port, "/api/jobs/" + id + "/stream"} {
    INFO(s_.head().body);
    REQUIRE(s_.head().status == 200);
  }

  /// The percent of the first progress event (live or from the log),
  /// within `timeout` (scaled).
  double first(std::chrono::milliseconds timeout) {
    auto deadline = clock_type::now() + scaled(timeout);
    for (;;) {
      auto ev = s_.next(time_left(deadline));
      REQUIRE(ev);
      if (is_progress(*ev))
        return percent_of(*ev);
    }
  }

  /// What the rest of the stream showed.
  struct rest_of {
    /// The last event's name ("completed" for a job that ended well).
    std::string last;
    /// Live progress events (sent as the worker reports, without an id;
    /// those from the log carry their sequence) and their highest percent
    /// (-1 for none).
    int live = 0;
    double live_top = -1;
    /// "error" events.
    int errors = 0;
  };

  /// Reads to the end; the stream must end properly within `timeout`
  /// (scaled).
  rest_of rest(std::chrono::milliseconds timeout) {
    rest_of out;
    auto deadline = clock_type::now() + scaled(timeout);
    while (auto ev = s_.next(time_left(deadline))) {
      if (ev->is_comment())
        continue;
      out.last = ev->event;
      out.errors += ev->event == "error";
      if (is_progress(*ev) && ev->id.empty()) {
        ++out.live;
        out.live_top = std::max(out.live_top, percent_of(*ev));
      }
    }
    INFO("last event: " << out.last);
    CHECK_FALSE(s_.timed_out());
    CHECK(s_.complete());
    return out;
  }

private:
  static bool is_progress(const sse_event& e) {
    return e.event == "progress" || e.event == "stage";
  }
  /// A live report's percent, or a logged `progressed` event's (in its
  /// details: docs/api.md).
  static double percent_of(const sse_event& e) {
    auto data = parse_json(e.data);
    if (data.has("details"))
      return data["details"]["percent"].num();
    return data["percent"].num();
  }
  sse_stream s_;
};

/// `{"type": "exec", "input": {"argv": [...]<more>}<outer>}`.
inline std::string exec_job(const std::vector<std::string>& argv,
                            const std::string& more = {},
                            const std::string& outer = {}) {
  std::string out = R"({"type": "exec", "input": {"argv": [)";
  for (size_t i = 0; i < argv.size(); ++i)
    out += (i == 0 ? "\"" : ", \"") + argv[i] + "\"";
  return out + "]" + more + "}" + outer + "}";
}

/// Waits (on the job's event stream) until the job has ended; returns the
/// job resource.
inline json_value await_end(const gateway_node& node, const std::string& key,
                            const std::string& id) {
  stream_to_end(node.port(), key, id);
  return get_job(node.client(key), id);
}

/// Waits (on the job's event stream) until its attempt has started. Only
/// progress is pushed live (transitions come from the log), so the job
/// should report progress: its first report brings `started` with it. Only
/// progress is pushed live (transitions come from the log), so the job
/// should report progress: its first report brings `started` with it.
inline void await_started(const gateway_node& node, const std::string& key,
                          const std::string& id) {
  header_fields headers;
  if (!key.empty())
    headers.emplace_back("Authorization", "Bearer " + key);
  sse_stream s{node.port(), "/api/jobs/" + id + "/stream", headers};
  REQUIRE(s.head().status == 200);
  auto deadline = clock_type::now() + std::chrono::seconds{30};
  for (;;) {
    auto ev = s.next(time_left(deadline));
    REQUIRE(ev);
    if (ev->event == "status"
        && parse_json(ev->data)["kind"].str() == "started")
      return;
  }
}

} // namespace drover::testing::gateway_api
