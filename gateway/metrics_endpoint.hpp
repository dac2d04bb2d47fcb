#pragma once

// A listener that serves one thing: GET /metrics, the Prometheus text of a
// node that has no HTTP gateway (a worker node's --metrics-port;
// docs/operations.md, "Metrics of a worker node"). It knows nothing about
// where the figures come from: `source` produces the text for each scrape.
//
// Every request is taken as hostile and every client as a possible
// browser. In this order:
// 1. Host (gateway/browser_policy.hpp, rule 1): on loopback only the
//    loopback names with the bound port, so a DNS-rebinding page never
//    reads the figures; otherwise the listen address and the configured
//    names. 400 or 421.
// 2. The path: /metrics (a query is ignored), else 404.
// 3. The method: GET or HEAD, else 405 with Allow.
// 4. The bearer token, when one is configured: "Authorization: Bearer
//    <token>", compared in constant time; else 401 with WWW-Authenticate.
// Requests are small and quick or they go: headers up to 8 KiB, no body
// (413), 10 s to read a request or write an answer, 32 connections at
// most (gateway/server.hpp). Answers carry Cache-Control: no-store and
// X-Content-Type-Options: nosniff; errors are short text/plain.

#include "gateway/server.hpp"

#include <caf/expected.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace drover::http {

struct metrics_endpoint_config {
  std::string host = "127.0.0.1";
  /// 0 picks a free port (tests).
  uint16_t port = 0;
  /// Empty = none: the caller allows that on loopback only.
  std::string bearer_token;
  /// Extra names the Host header may carry ("name" or "name:port").
  std::vector<std::string> allowed_hosts;
  /// The option that sets allowed_hosts, for error messages.
  std::string allowed_hosts_option = "--metrics-allowed-host";
};

/// Produces one scrape's text: calls `done` exactly once, from any thread,
/// with the exposition or an error (answered 503).
using metrics_source
    = std::function<void(std::function<void(caf::expected<std::string>)> done)>;

class metrics_endpoint {
public:
  /// Listens and starts serving on a thread of its own. errc::bad_config
  /// for a bad allowed host or an address it cannot listen on.
  static caf::expected<std::unique_ptr<metrics_endpoint>>
  start(metrics_endpoint_config cfg, metrics_source source);

  virtual ~metrics_endpoint() = default;

  /// The bound port.
  virtual uint16_t port() const = 0;

  /// Stops listening and closes the connections; `source` is not called
  /// any more once this returns (answers still under way are dropped).
  virtual void stop() = 0;
};

} // namespace drover::http
