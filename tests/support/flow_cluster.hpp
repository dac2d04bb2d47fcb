#pragma once

// Helpers of the rate limiter and circuit breaker tests on a real cluster
// (tests/nodes/flow_cluster_*_test.cpp): a gateway node in front of the
// coordinator, batches submitted through it, and figures read from the
// audit log (drover.events) and the control log (drover.control_log).

#include "support/cluster.hpp"
#include "support/gateway_node.hpp"
#include "support/http_client.hpp"
#include "support/process.hpp"
#include "support/scratch.hpp"
#include "support/test_db.hpp"

#include <catch2/catch.hpp>

#include <memory>
#include <string>
#include <vector>

namespace drover::testing::flow_cluster {

using namespace std::chrono_literals;

inline const std::string gateway_secret = "flow-test-gateway-secret-0123456789";

/// `args` and then `extra`.
inline std::vector<std::string> with(std::vector<std::string> args,
                                     const std::vector<std::string>& extra) {
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

/// A gateway node in front of `c` (with `extra` options, e.g. its API
/// keys: the gateway authenticates and gives each job its key's tenant);
/// its HTTP client.
struct gateway {
  explicit gateway(cluster_harness::cluster& c,
                   const std::vector<std::string>& extra = {})
      : proc{with(c.gateway_args("gw", gateway_secret), extra),
             c.logs.path() + "/gw.log"} {
    auto ready = proc.wait_for_line("ready", 30s);
    INFO(tail_of(c.logs.path() + "/gw.log"));
    REQUIRE(ready);
    port = drover::testing::http_port_of(*ready);
  }
  /// Presenting `key` ("" = none).
  http_client client(const std::string& key = {}) const {
    return http_client{port, key};
  }
  process proc;
  uint16_t port = 0;
};

/// Submits `items` (JSON objects) as one batch; their job ids, in order.
inline std::vector<std::string>
submit_batch(const http_client& c, const std::vector<std::string>& items) {
  std::string body = "{\"jobs\":[";
  for (size_t i = 0; i < items.size(); ++i)
    body += (i > 0 ? "," : "") + items[i];
  body += "]}";
  auto res = c.post("/api/jobs/batch", body);
  INFO(res.body.substr(0, 2000));
  REQUIRE(res.status < 300);
  std::vector<std::string> ids;
  const std::string key = "\"job_id\":\"";
  for (auto at = res.body.find(key); at != std::string::npos;
       at = res.body.find(key, at + 1)) {
    auto from = at + key.size();
    ids.push_back(res.body.substr(from, res.body.find('"', from) - from));
  }
  REQUIRE(ids.size() == items.size());
  return ids;
}

/// Unix ms of every `started` event, ascending.
inline std::vector<int64_t> start_times(const std::string& url) {
  auto conn = must(drover::pg::connection::open(url));
  auto res = run(conn, "SELECT at_ms FROM drover.events WHERE kind = "
                           + std::to_string(cluster_harness::started_kind)
                           + " ORDER BY at_ms");
  std::vector<int64_t> out;
  for (int i = 0; i < res.rows(); ++i)
    out.push_back(std::stoll(std::string{res.value(i, 0)}));
  return out;
}

/// Milliseconds from the first to the last event of `kinds` of the jobs
/// `ids` (every job when empty), from the audit log.
inline int64_t span_ms(const std::string& url,
                       const std::vector<std::string>& ids,
                       const std::vector<int>& kinds) {
  std::string in, of;
  for (auto& id : ids)
    in += (in.empty() ? "'" : ",'") + id + "'";
  for (auto k : kinds)
    of += (of.empty() ? "" : ",") + std::to_string(k);
  auto conn = must(drover::pg::connection::open(url));
  return std::stoll(std::string{
      run(conn, "SELECT max(at_ms) - min(at_ms) FROM drover.events WHERE "
                "kind IN ("
                    + of + ")"
                    + (in.empty() ? "" : " AND job_id IN (" + in + ")"))
          .value(0, 0)});
}

/// A coordinator with `options` (and the gateway's join secret), worker
/// nodes w1 and w2 with `slots` each, and a gateway node in front.
inline std::unique_ptr<gateway>
start_two_workers(cluster_harness::cluster& c, std::vector<std::string> options,
                  const std::string& slots) {
  c.start_coordinator(with({"--gateway-join-secret", gateway_secret}, options));
  c.start_worker("w1", {"--slots", slots});
  c.start_worker("w2", {"--slots", slots});
  return std::make_unique<gateway>(c);
}

/// The states of the control log for `key`, oldest first.
inline std::vector<std::string> control_states(const std::string& url,
                                               const std::string& key) {
  auto conn = must(drover::pg::connection::open(url));
  auto res = run(conn, "SELECT state FROM drover.control_log WHERE key = '"
                           + key + "' ORDER BY sequence");
  std::vector<std::string> out;
  for (int i = 0; i < res.rows(); ++i)
    out.emplace_back(res.value(i, 0));
  return out;
}

} // namespace drover::testing::flow_cluster
