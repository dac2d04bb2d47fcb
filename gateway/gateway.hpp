#pragma once

// The HTTP gateway role: REST, server-sent events and WebSocket in front of
// a node's API actor (actors/api.hpp). It holds no job state: every request
// becomes messages to the API actor (from a short-lived CAF actor per
// request, or one per event stream), so the same gateway can later sit in
// front of a cluster. Endpoints, status codes and bodies: docs/api.md.

#include "gateway/auth.hpp"
#include "gateway/server.hpp"
#include "runtime/api_protocol.hpp"
#include "runtime/codec.hpp"

#include <caf/actor.hpp>
#include <caf/expected.hpp>
#include <caf/fwd.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace drover::http {

struct gateway_config {
  std::string host = "127.0.0.1";
  /// 0 picks a free port (see gateway::port()).
  uint16_t port = 8080;
  /// Asio threads serving connections.
  size_t threads = 1;
  server_limits limits;
  /// No keys = development mode (loopback only).
  std::vector<api_key> keys;
  /// Requests per second per key unless the key says otherwise; 0 = none.
  double default_rate = 1000;
  /// Open SSE and WebSocket subscriptions per key.
  size_t max_streams_per_key = 1000;
  /// Most jobs in one POST /api/jobs/batch.
  size_t max_batch = 10000;
  /// Deepest JSON nesting in request bodies.
  size_t max_json_depth = 64;
  /// How long one call to the node may take before the client gets 503.
  std::chrono::milliseconds request_timeout{10000};
  /// SSE comment interval that keeps proxies (and dead-peer detection)
  /// going.
  std::chrono::milliseconds keepalive_interval{15000};
  // -- browsers (gateway/browser_policy.hpp, gateway/stream_token.hpp) --
  /// Extra Host names ("name" or "name:port").
  std::vector<std::string> allowed_hosts;
  /// CORS allow-list: exact origins "scheme://host[:port]".
  std::vector<std::string> cors_origins;
  /// Stream-token key bytes (>= 32); empty = a random one (start() makes
  /// it; such tokens die with the process and no other gateway verifies
  /// them).
  std::string stream_token_key;
  /// Lifetime of minted stream tokens (1 s to 10 min).
  std::chrono::seconds stream_token_ttl{300};
};

/// True for 127.0.0.0/8, ::1 and "localhost".
bool is_loopback_host(const std::string& host);

class gateway {
public:
  /// Validates the config (development mode only on loopback: errc::bad_config
  /// otherwise), listens and starts serving.
  static caf::expected<std::unique_ptr<gateway>>
  start(caf::actor_system& sys, api_actor api, gateway_config cfg);

  virtual ~gateway() = default;
  virtual uint16_t port() const = 0;
  virtual bool development_mode() const = 0;
  virtual void stop() = 0;
};

} // namespace drover::http
